"""A 512² CT artifact at 180 views, end to end: recon-export at the scanner's geometry, recon-simulate a
sinogram there, recon-run it (slow: the 512² FBP parity and simulation take minutes on a CPU)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BIN = Path(sys.executable).parent


@pytest.mark.slow
def test_a_512_ct_artifact_at_180_views_reconstructs_a_sinogram(tmp_path):
    geometry = ["--task", "ct", "--image-size", "512", "--views", "180"]
    artifact, sinograms, out = tmp_path / "cnn-ct-512", tmp_path / "in", tmp_path / "out"
    export = [str(BIN / "recon-export"), "--model", "cnn", "--random-init", *geometry, "--batch", "1:1:2",
              "--engine", "none", "--threads", "2", "--quiet", "--out", str(artifact)]  # fmt: skip
    subprocess.run(export, check=True, capture_output=True, text=True)
    manifest = json.loads((artifact / "manifest.json").read_text())
    assert manifest["input"]["shape"] == ["batch", 1, 180, 725]  # ceil(√2·512) detector bins
    assert manifest["output"]["shape"] == ["batch", 1, 512, 512]
    assert manifest["task_config"]["n_views"] == 180

    simulate = [str(BIN / "recon-simulate"), *geometry, "--phantoms", "1", "--out", str(sinograms)]
    subprocess.run(simulate, check=True, capture_output=True, text=True)
    run = [str(BIN / "recon-run"), str(artifact), str(sinograms / "measurements" / "phantom000.npy"),
           "--out", str(out), "--backend", "cpu"]  # fmt: skip
    result = subprocess.run(run, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    image = np.load(out / "phantom000.npy")
    assert image.shape == (512, 512) and np.isfinite(image).all()
