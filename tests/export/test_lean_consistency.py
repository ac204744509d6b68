"""A `recon[lean]`-only install (TensorRT's lean runtime, no onnxruntime, no OpenVINO) runs recon-run: the
consistency check, which needs one of those two, is skipped with a warning naming what to install and the
opt-out, and the JSON report records it, instead of failing the run (docs/gpu.md)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

# the packages made missing for real, in a fresh interpreter where importing them fails
BLOCK = "import sys\nsys.modules['onnxruntime'] = None\nsys.modules['openvino'] = None\n"
PROBE = "from recon.runtime.consistency import engine_missing\nprint(engine_missing())"


def test_without_onnxruntime_and_openvino_the_check_is_skipped_with_a_reason():
    out = subprocess.run([sys.executable, "-c", BLOCK + PROBE], capture_output=True, text=True, check=True)
    assert "neither is installed" in out.stdout and "recon[cpu]" in out.stdout
    assert "--no-consistency" in out.stdout
    here = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    assert here.stdout.strip() == ""  # this venv has onnxruntime: the check runs


def test_recon_run_writes_the_images_and_says_the_check_was_skipped(exported, tmp_path):
    # the network runs on onnxruntime here; only the check's engine probe answers as on a lean install
    directory, _ = exported("cnn", "deblur")
    np.save(tmp_path / "blurred.npy", np.full((32, 32), 0.5, np.float32))
    code = (
        "import recon.runtime.reconstructor as r\n"
        "r.consistency_engine_missing = lambda: 'the consistency check needs onnxruntime or OpenVINO'\n"
        "import sys\nfrom recon.runtime.cli.main import run_main\nsys.argv = ['recon-run', *sys.argv[1:]]\n"
        "run_main()"
    )
    args = [str(directory), str(tmp_path / "blurred.npy"), "--out", str(tmp_path / "out"), "--json"]
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "warning: the consistency check needs onnxruntime or OpenVINO" in result.stderr
    report = json.loads(result.stdout)
    assert report["consistency_skipped"] and report["consistency"] is None and report["flagged"] is None
    assert list((tmp_path / "out").iterdir())
