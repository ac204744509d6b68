"""bench/gpu_check.py (the short device check) on a machine without CUDA: it runs what the CPU can (recon's
device query, the profiles from the stored footprints, the backends' reasons) and lists every GPU part as
skipped with the reason, writing its JSON and markdown into --out."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_without_cuda_the_gpu_check_skips_its_gpu_parts_and_writes_its_report(tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is here: the check would run its GPU parts")
    footprints = ROOT / "bench" / "data" / "shipped_footprints.json"
    command = [sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--quick", "--models", "cnn-deblur",
               "--footprints", str(footprints), "--out", str(tmp_path)]  # fmt: skip
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((tmp_path / "gpu-check.json").read_text())
    assert report["cuda"] is False and "needs an NVIDIA GPU" in report["device"]["recon"]["error"]
    for part in ("copies", "accuracy", "latency"):
        assert report[part]["skipped"].startswith("no CUDA device"), part
    (row,) = report["profiles"]["rows"]
    assert row["model"] == "cnn-deblur" and row["within_limit"] and row["torch"] == "skipped: no CUDA device"
    assert "measured here: none" in report["footprints_from"]  # the stored footprint matches the weights
    assert "libnvinfer.so.10" in report["backends"]["tensorrt_provider_libraries"]
    assert "### profiles" in (tmp_path / "gpu-check.md").read_text()
