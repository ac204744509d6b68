"""Fixtures: the runtime tests' small artifacts plus the overflow/NaN artifacts of hardening_artifacts.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "runtime"))  # runtime_artifacts

from hardening_artifacts import build_special_artifact  # noqa: E402
from runtime_artifacts import build_artifact  # noqa: E402


@pytest.fixture(scope="session")
def hardening_artifacts(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hardening")
    return {
        "conv": build_artifact(root / "conv", "deblur", with_fp16=True),
        # an odd profile (2..5): batches are split and the last chunk padded
        "conv-padded": build_artifact(root / "conv-padded", "deblur", min_batch=2, max_batch=5),
        "ct": build_artifact(root / "ct", "ct"),
        "normalize": build_special_artifact(root / "normalize", "normalize"),
        "gain": build_special_artifact(root / "gain", "gain"),
    }


def export_cnn(target: Path) -> Path:
    """A really exported artifact (recon-export, random weights): 3 convs, 64 filters, 64x64, FP32 + FP16."""
    try:
        import recon.export  # noqa: F401 - needs the training extra (torch)
    except ImportError as error:
        pytest.skip(f"recon-export is not usable here ({error})")
    command = [sys.executable, "-m", "recon.export.cli", "--model", "cnn", "--task", "deblur",
               "--random-init", "--size", "64", "--batch", "1:4:8", "--engine", "none", "--fp16",
               "--threads", "1", "--quiet", "--out", str(target)]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return target


@pytest.fixture(scope="session")
def exported_cnn(tmp_path_factory) -> Path:
    return export_cnn(tmp_path_factory.mktemp("exported") / "cnn-deblur")
