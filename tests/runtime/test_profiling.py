"""Latency reports: fields, JSON, histogram, overhead against bare onnxruntime."""

from __future__ import annotations

import json

import pytest

from recon.runtime.profiling import LatencyReport, profile, profile_against_bare, save_histogram


def test_a_report_has_percentiles_throughput_and_stages(deblur, tmp_path):
    report = profile(deblur, batch_size=4, iters=20, warmup=2)
    assert report.iters == 20 and report.batch_size == 4 and report.warmup == 2
    assert 0 < report.p50_ms <= report.p90_ms <= report.p95_ms <= report.p99_ms
    assert report.mean_ms > 0 and report.std_ms >= 0
    assert report.throughput == pytest.approx(4 / (report.mean_ms / 1e3))
    assert list(report.stage_ms()) == ["prepare", "compute", "finish"]  # ORT on the CPU tells these apart
    data = json.loads(json.dumps(report.to_json()))
    assert {
        "p50_ms",
        "p90_ms",
        "p95_ms",
        "p99_ms",
        "mean_ms",
        "std_ms",
        "throughput_img_s",
        "stages_ms",
        "backend",
        "precision",
    } <= set(data)
    assert len(data["latencies_ms"]) == 20
    report.save_json(tmp_path / "r.json")
    assert json.loads((tmp_path / "r.json").read_text())["batch_size"] == 4


def test_the_histogram_is_a_png(deblur, tmp_path):
    pytest.importorskip("matplotlib")
    report = profile(deblur, batch_size=1, iters=10, warmup=0)
    path = save_histogram([report, LatencyReport("other", 1, [0.001, 0.002])], tmp_path / "h.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_overhead_against_bare_onnxruntime_is_measured(deblur):
    ours, bare = profile_against_bare(deblur, batch_size=2, iters=10, warmup=1)
    assert ours.iters == bare.iters == 10
    assert ours.meta["overhead_vs_bare"] == pytest.approx(ours.p50_ms / bare.p50_ms)


def test_bad_arguments_are_refused(deblur):
    with pytest.raises(ValueError, match="iters >= 1"):
        profile(deblur, batch_size=1, iters=0)


def test_the_bare_comparison_can_use_a_second_session_with_the_same_options(deblur):
    ours, bare = profile_against_bare(deblur, batch_size=1, iters=4, warmup=0, new_session=True)
    assert ours.own_ms >= 0 and bare.iters == 4


def test_cpu_description_names_the_model_and_the_flags_that_rank_cpu_engines(tmp_path):
    from recon.runtime.profiling import cpu_description

    info = tmp_path / "cpuinfo"
    info.write_text("model name\t: AMD EPYC 7B13\nflags\t\t: fpu sse4_2 avx avx2 fma f16c\n\n" * 2)
    text = cpu_description(info)
    assert text.startswith("AMD EPYC 7B13, ") and text.endswith("flags: avx2, fma")
    assert "flags unknown" in cpu_description(tmp_path / "missing")
