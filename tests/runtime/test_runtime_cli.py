"""recon-run, recon-bench and recon inspect, run as a user runs them (subprocesses)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cpu_backends import OPENVINO
from runtime_artifacts import ANGLES, DETECTORS, H, W, conv_reference, ct_reference

BIN = Path(sys.executable).parent


def cli(name: str, *args: str) -> subprocess.CompletedProcess:
    script = BIN / name
    command = (
        [str(script)]
        if script.exists()
        else [
            sys.executable,
            "-c",
            f"from recon.runtime.cli.main import {name.replace('recon-', '')}_main as m; m()",
        ]
    )
    return subprocess.run([*command, *map(str, args)], capture_output=True, text=True, timeout=120)


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.fixture
def inputs(tmp_path):
    from PIL import Image

    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (H, W), dtype=np.uint8)).save(folder / f"img{i}.png")
    np.save(folder / "stack.npy", rng.random((5, H, W), dtype=np.float32))
    return folder


AUTO_CPU = "openvino" if OPENVINO else "onnxruntime-cpu"  # what `auto` picks on a machine without a GPU


def test_recon_run_writes_each_input_in_its_format_with_its_name(deblur_artifact, inputs, tmp_path):
    out = tmp_path / "out"
    result = cli(
        "recon-run", deblur_artifact, inputs, "--out", out, "--batch", "2", "--threads", "1", "--json"
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["files"] == 4 and summary["images"] == 8 and summary["backend"] == AUTO_CPU
    assert sorted(p.name for p in out.iterdir()) == ["img0.png", "img1.png", "img2.png", "stack.npy"]
    from PIL import Image

    source = np.array(Image.open(inputs / "img1.png")) / 255.0
    restored = np.array(Image.open(out / "img1.png"))
    assert restored.dtype == np.uint8
    np.testing.assert_allclose(
        restored / 255, np.clip(conv_reference(source[None, None]), 0, 1)[0, 0], atol=0.003
    )
    stack = np.load(out / "stack.npy")
    assert stack.shape == (5, H, W) and stack.dtype == np.float32
    np.testing.assert_allclose(
        stack[:, None], np.clip(conv_reference(np.load(inputs / "stack.npy")[:, None]), 0, 1), atol=1e-5
    )


def test_recon_run_on_ct_sinograms(ct_artifact, tmp_path):
    import tifffile

    sinogram = np.random.default_rng(1).random((ANGLES, DETECTORS), dtype=np.float32)
    tifffile.imwrite(tmp_path / "s.tif", sinogram)
    result = cli("recon-run", ct_artifact, tmp_path / "s.tif", "--out", tmp_path / "o")
    assert result.returncode == 0, result.stderr
    assert "latency per run" in result.stdout
    image = tifffile.imread(tmp_path / "o" / "s.tif")
    np.testing.assert_allclose(image, np.clip(ct_reference(sinogram[None, None]), 0, 1)[0, 0], atol=1e-5)


def test_recon_run_never_overwrites_inputs_and_asks_before_overwriting_outputs(
    deblur_artifact, inputs, tmp_path
):
    before = (inputs / "img0.png").read_bytes()
    message = one_line_error(cli("recon-run", deblur_artifact, inputs, "--out", inputs))
    assert "would overwrite the input" in message
    assert (inputs / "img0.png").read_bytes() == before
    out = tmp_path / "out"
    assert cli("recon-run", deblur_artifact, inputs / "img0.png", "--out", out).returncode == 0
    assert "--force" in one_line_error(cli("recon-run", deblur_artifact, inputs / "img0.png", "--out", out))
    assert cli("recon-run", deblur_artifact, inputs / "img0.png", "--out", out, "--force").returncode == 0
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left behind


def test_user_mistakes_are_one_line_errors(deblur_artifact, ct_artifact, inputs, tmp_path):
    assert "unknown backend 'gpu'" in one_line_error(
        cli("recon-run", deblur_artifact, inputs, "--out", tmp_path / "o", "--backend", "gpu")
    )
    assert "offers only" in one_line_error(
        cli("recon-run", deblur_artifact, inputs, "--out", tmp_path / "o", "--backend", "cuda")
    )
    assert "does not fit this artifact; expected (6, 10)" in one_line_error(
        cli("recon-run", ct_artifact, inputs / "img0.png", "--out", tmp_path / "o")
    )
    assert "Missing option '--out'" in one_line_error(cli("recon-run", deblur_artifact, inputs))
    assert "no manifest.json" in one_line_error(cli("recon-run", inputs, inputs, "--out", tmp_path / "o"))


def test_recon_bench_prints_a_table_and_the_overhead_ratio(deblur_artifact, tmp_path):
    result = cli(
        "recon-bench",
        deblur_artifact,
        "--batch",
        "1,3",
        "--iters",
        "5",
        "--warmup",
        "1",
        "--threads",
        "1",
        "--json-out",
        tmp_path / "b.json",
        "--plot",
        tmp_path / "b.png",
    )
    assert result.returncode == 0, result.stderr
    assert "runtime overhead over the engine called directly" in result.stdout
    assert "batch 3" in result.stdout
    rows = json.loads((tmp_path / "b.json").read_text())["rows"]
    assert [r["batch_size"] for r in rows] == [1, 3] and all("overhead_vs_bare" in r for r in rows)
    assert (tmp_path / "b.png").read_bytes()[:4] == b"\x89PNG"


def test_recon_bench_all_times_every_installed_backend_and_precision_side_by_side(deblur_artifact, tmp_path):
    result = cli("recon-bench", deblur_artifact, "--backend", "all", "--batch", "1", "--iters", "2",
                 "--warmup", "0", "--threads", "1", "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    cells = {(r["backend"], r["precision"]) for r in json.loads(result.stdout)["rows"]}  # stdout: JSON alone
    # the summaries (on stderr with --json) name every cell apart: backend and precision, not backend alone
    for line in result.stderr.splitlines():
        if line.startswith(("runtime overhead", "consistency check (with")):
            named = re.findall(r"\(([^()]*, batch \d+)\)", line)
            assert len(named) == len(set(named)) > 1, line
    expected = {("onnxruntime-cpu", "fp32"), ("onnxruntime-cpu", "int8")}
    if OPENVINO:
        from recon.runtime.backends.openvino import bf16_refusal_here

        expected |= {("openvino", "fp32"), ("openvino", "int8")}
        assert (("openvino", "bf16") in cells) == (bf16_refusal_here() is None)
    assert expected <= cells


def test_recon_bench_lists_an_unavailable_backend_and_exits_non_zero(deblur_artifact):
    result = cli("recon-bench", deblur_artifact, "--backend", "cpu,cuda", "--batch", "1", "--iters", "3")
    assert result.returncode == 1
    assert "onnxruntime-cpu" in result.stdout and "unavailable" in result.stdout


def test_recon_inspect_summarises_and_verifies(deblur_artifact):
    result = cli("recon", "inspect", deblur_artifact, "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["verified"] and data["manifest"]["name"] == "test-deblur"
    text = cli("recon", "inspect", deblur_artifact).stdout
    assert "model.fp16.onnx" in text and "files verified" in text


@pytest.mark.parametrize("command", [("recon-run",), ("recon-bench",), ("recon", "inspect"), ("recon",)])
def test_every_command_has_help_with_examples(command):
    result = cli(*command, "--help")
    assert result.returncode == 0 and "Examples:" in result.stdout


def test_recon_run_writes_dicom_as_a_derived_dicom(deblur_artifact, tmp_path):
    pydicom = pytest.importorskip("pydicom")
    from dicom_files import write_slice

    pixels = np.random.default_rng(2).integers(0, 4096, (H, W), dtype=np.uint16)
    source = write_slice(tmp_path / "slice.dcm", pixels, bits_stored=12)
    result = cli(
        "recon-run",
        deblur_artifact,
        tmp_path / "slice.dcm",
        "--out",
        tmp_path / "o",
        "--dicom-window",
        "-1024,3071",
    )
    assert result.returncode == 0, result.stderr
    out = pydicom.dcmread(tmp_path / "o" / "slice.dcm")
    assert out.SOPInstanceUID != source.SOPInstanceUID and out.StudyInstanceUID == source.StudyInstanceUID
    unit = np.clip(conv_reference((pixels / 4095.0)[None, None]), 0, 1)[0, 0]
    physical = out.pixel_array * float(out.RescaleSlope) + float(out.RescaleIntercept)
    np.testing.assert_allclose(physical, -1024 + unit * 4095, atol=0.5)  # stored as the source: 1 HU steps


def test_the_recon_run_bench_runs_on_an_any_size_artifact(any_size_artifact, tmp_path):
    """bench/recon_run.py (docs/benchmarks.md, "The main job") drives recon-run as a site does: it must keep
    working as recon-run changes."""
    script = Path(__file__).resolve().parents[2] / "bench" / "recon_run.py"
    result = subprocess.run(
        [sys.executable, str(script), str(any_size_artifact), "--size", "32", "--batch", "2", "--few", "2",
         "--many", "4", "--rounds", "1", "--threads", "1", "--formats", "png,npy,dicom",
         "--json", str(tmp_path / "r.json")],
        capture_output=True, text=True, timeout=300, cwd=script.parents[1],
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads((tmp_path / "r.json").read_text())["rows"]
    assert [row["format"] for row in rows] == ["png", "npy", "dicom"]
    assert all(row["network_ms_per_image"] > 0 and "serial_ratio" in row for row in rows)
