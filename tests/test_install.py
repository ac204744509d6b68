"""The boundary, proven on a real install: a fresh venv with only `recon[cpu]` (no torch) runs an artifact.

This is also the regular (non-editable) install check: the wheel must carry recon.runtime and the CLIs.
"""

from __future__ import annotations

import json
import subprocess
import venv
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def lean_venv(tmp_path_factory) -> Path:
    """A venv holding recon[cpu] installed from a built wheel, and nothing of the training side."""
    home = tmp_path_factory.mktemp("lean-venv")
    venv.EnvBuilder(with_pip=True).create(home)
    python = home / "bin" / "python"
    result = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", f"{ROOT}[cpu]"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return home


def test_the_cpu_install_has_no_torch_and_no_training_code(lean_venv):
    code = (
        "import importlib.util, json, recon.runtime\n"
        "print(json.dumps({m: importlib.util.find_spec(m) is not None for m in\n"
        "    ['torch', 'recon.training', 'recon.export', 'recon.runtime', 'onnxruntime']}))\n"
    )
    result = subprocess.run(
        [str(lean_venv / "bin" / "python"), "-c", code], capture_output=True, text=True, cwd=lean_venv
    )
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert found == {
        "torch": False,
        "recon.training": True,
        "recon.export": True,
        "recon.runtime": True,
        "onnxruntime": True,
    }


def test_recon_run_in_the_cpu_install_reconstructs_with_an_exported_artifact(lean_venv, tmp_path):
    from recon.export import ExportOptions, export_artifact
    from recon.runtime import Reconstructor

    artifact = tmp_path / "cnn-deblur"
    export_artifact(
        ExportOptions(
            model="cnn",
            random_init=True,
            task_overrides={"image_size": 32},
            engine="none",
            batch=(1, 2, 4),
            out=artifact,
        )
    )
    image = np.random.default_rng(0).random((32, 32), dtype=np.float32)
    np.save(tmp_path / "blurred.npy", image)
    result = subprocess.run(
        [
            str(lean_venv / "bin" / "recon-run"),
            str(artifact),
            str(tmp_path / "blurred.npy"),
            "--out",
            str(tmp_path / "out"),
            "--backend",
            "cpu",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    restored = np.load(tmp_path / "out" / "blurred.npy")
    with Reconstructor.from_artifact(artifact, backend="cpu") as reference:
        np.testing.assert_allclose(restored, reference.run(image), atol=1e-6)


def test_recon_info_in_the_cpu_install_asks_for_the_training_extra(lean_venv):
    result = subprocess.run([str(lean_venv / "bin" / "recon"), "info", "cnn"], capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr == "error: recon info needs the training extra (torch): `pip install recon[train]`\n"
