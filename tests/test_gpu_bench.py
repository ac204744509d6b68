"""bench/gpu.py (issues 7, 16): its quick run works end to end without a GPU and fills every field of its
JSON, the runtime paths included (onnxruntime on the CPU runs; each GPU backend is listed with why not)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu.py"
CNN_FLOPS_64 = 2 * 64 * 64 * 9 * (64 + 64 * 64 + 64)  # three 3×3 convs: 1→64→64→1 channels
CNN_PARAMS = 38145


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> tuple[subprocess.CompletedProcess, dict, str]:
    folder = tmp_path_factory.mktemp("gpu-bench")
    args = ["--quick", "--models", "cnn", "--batches", "1", "--iters", "2", "--warmup", "1", "--size", "64",
            "--runtime-paths"]  # fmt: skip
    outputs = ["--json", str(folder / "gpu.json"), "--markdown", str(folder / "gpu.md")]
    # a plain `python bench/gpu.py` from another folder, with recon installed
    proc = subprocess.run([sys.executable, str(SCRIPT), *args, *outputs], cwd=folder, capture_output=True,
                          text=True, timeout=400)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, json.loads((folder / "gpu.json").read_text()), (folder / "gpu.md").read_text()


def test_the_quick_run_reports_device_card_rates_and_settings(quick_run):
    _, report, _ = quick_run
    assert report["partial"] is False
    assert {"name", "driver", "torch"} <= set(report["device"])
    assert report["date"] and report["command"].startswith("python bench/gpu.py --quick")
    assert report["peaks"]["copy_gbps"] > 0 and report["peaks"]["fp32_tflops"] > 0
    settings = report["settings"]
    assert settings["models"] == ["cnn"] and settings["batches"] == [1] and settings["size"] == 64


def test_each_architecture_has_its_flops_and_bytes_and_ct_adds_its_fbp(quick_run):
    _, report, _ = quick_run
    models = {m["name"]: m for m in report["models"]}
    assert set(models) == {"cnn", "fbp"}
    cnn = models["cnn"]
    assert cnn["tasks"] == ["deblur", "ct"]  # one architecture, timed once for both tasks
    assert cnn["flops"] == CNN_FLOPS_64 and cnn["parameters"] == CNN_PARAMS
    assert cnn["param_bytes"] == 4 * CNN_PARAMS
    # at least the input read and two 64-channel activations written and read again
    assert cnn["activation_bytes"] > 4 * 64 * 64 * (1 + 4 * 64)


def test_every_timing_has_median_p99_count_and_roofline_multiple(quick_run):
    _, report, _ = quick_run
    variants = {"fp32", "fp32-cl"} if not torch.cuda.is_available() else set(report["settings"]["variants"])
    cnn = {r["variant"]: r for r in report["timings"] if r["model"] == "cnn"}
    assert set(cnn) == variants
    for row in report["timings"]:
        assert "error" not in row and "skipped" not in row, row
        assert 0 < row["median_ms"] <= row["p99_ms"] and row["iters"] == 2 and row["batch"] == 1
        assert row["roofline_multiple"] == pytest.approx(row["median_ms"] / row["floor_ms"])


def test_the_fp16_error_is_measured_for_each_model_and_task_on_held_out_inputs(quick_run):
    _, report, _ = quick_run
    assert [(a["model"], a["task"]) for a in report["accuracy"]] == [("cnn", "deblur"), ("cnn", "ct")]
    for entry in report["accuracy"]:
        assert entry["weights"].startswith(("weights/", "random init"))
        (result,) = [r for r in entry["results"] if r["variant"] == "fp16"]
        assert 0 <= result["max_abs"] < 0.05 and result["psnr"] > 40
        assert {"mean_abs", "psnr_truth_fp32", "psnr_truth", "trt_tolerance_ok"} <= set(result)


def test_markdown_goes_to_stdout_and_the_file_and_the_gpu_tests_are_accounted_for(quick_run):
    proc, report, markdown = quick_run
    assert proc.stdout == markdown and markdown.startswith("## GPU benchmark: ")
    for heading in ("### Latency", "### Reduced-precision error", "### Tests marked gpu", "### Notes"):
        assert heading in markdown
    assert "| cnn | 1 |" in markdown and "| fbp (60 views) | 1 |" in markdown
    if not torch.cuda.is_available():
        assert report["pytest"]["ran"] is False and "no CUDA" in report["pytest"]["reason"]
        assert any("no CUDA device" in note for note in report["notes"])


def test_the_runtime_paths_run_onnxruntime_here_and_name_why_each_gpu_backend_did_not(quick_run):
    _, report, markdown = quick_run
    (entry,) = report["runtime"]
    assert (entry["model"], entry["task"]) == ("cnn", "deblur") and "--fp16" in entry["export"]
    rows = {row["backend"]: row for row in entry["backends"]}
    assert list(rows) == ["onnxruntime-cpu", "onnxruntime-cuda", "onnxruntime-tensorrt", "tensorrt"]
    cpu = rows["onnxruntime-cpu"]
    assert cpu["precision"] == "fp32" and cpu["max_abs"] == 0 and cpu["trt_tolerance_ok"]
    (timing,) = cpu["timings"]
    assert timing["batch"] == 1 and timing["iters"] == 2 and 0 < timing["median_ms"] <= timing["p99_ms"]
    if report["runtime_availability"]["onnxruntime-cuda"]:  # no CUDA provider here: skipped, with why
        assert "no CUDA provider" in rows["onnxruntime-cuda"]["skipped"]
        assert "onnxruntime-cuda: not run, no CUDA provider" in markdown
    assert "### Deployment paths (recon.runtime)" in markdown
    assert "| cnn | deblur | onnxruntime-cpu | fp32 |" in markdown


def test_the_bench_loads_weights_with_the_packages_own_checks(tmp_path, monkeypatch):
    from recon.training import weights
    from recon.training.models import create_model

    model = create_model("cnn")
    weights.save_trained(model, {"model": model.config, "task_name": "deblur"}, tmp_path / "cnn-deblur")
    spec = importlib.util.spec_from_file_location("bench_gpu", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_gpu", bench)  # its dataclasses look their module up
    monkeypatch.syspath_prepend(str(SCRIPT.parent))  # as when run as a script: its siblings import
    spec.loader.exec_module(bench)
    assert not hasattr(bench, "read_safetensors") and not hasattr(bench, "ellipse_phantoms")
    monkeypatch.setattr(weights, "weights_dir", lambda: tmp_path)

    net, card, source = bench.load_network("cnn", "deblur")
    assert source == "weights/cnn-deblur.safetensors" and card["task_name"] == "deblur"
    for key, value in model.state_dict().items():
        assert torch.equal(net.state_dict()[key], value), key

    with open(tmp_path / "cnn-deblur.safetensors", "r+b") as f:
        f.seek(-4, 2)
        f.write(b"\x00\x00\x80\x7f")  # the last float becomes +inf
    with pytest.raises(weights.WeightsError, match="sha256"):
        bench.load_network("cnn", "deblur")
