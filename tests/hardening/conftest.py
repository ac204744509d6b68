"""Fixtures: the runtime tests' small artifacts plus the overflow/NaN artifacts of hardening_artifacts.py."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "runtime"))  # runtime_artifacts

from hardening_artifacts import add_flagging_check, build_special_artifact, export_cnn  # noqa: E402
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
        # the conv artifact with a consistency check that flags every output
        "flagging": add_flagging_check(build_artifact(root / "flagging", "deblur")),
    }


@pytest.fixture(scope="session")
def exported_cnn(tmp_path_factory) -> Path:
    try:
        import recon.export  # noqa: F401 - needs the training extra (torch)
    except ImportError as error:
        pytest.skip(f"recon-export is not usable here ({error})")
    return export_cnn(tmp_path_factory.mktemp("exported") / "cnn-deblur")
