"""Fixtures for the C++ host tests: the library built by `make host`, and small artifacts exported once."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # host_ctypes
sys.path.insert(0, str(ROOT / "tests" / "runtime"))  # runtime_artifacts
sys.path.insert(0, str(ROOT / "tests" / "hardening"))  # the hostile-artifact cases

from host_ctypes import load_library  # noqa: E402

BUILD = ROOT / "build" / "host"
# Small geometries (a few seconds each to export on 2 cores); the deblur graph takes any size, so padded and
# tiled plans run on it; the CT graph has a fixed sinogram shape.
EXPORTS = {
    "deblur": {"task_overrides": {"image_size": 32}, "int8": True, "calibration_images": 4},
    "ct": {"task_overrides": {"image_size": 32, "n_views": 20}},
}


@pytest.fixture(scope="session")
def host_build() -> Path:
    """build/host after `make host-build` (`make host` without the venv step; apt packages installed by the
    Makefile when missing and running as root)."""
    missing = [tool for tool in ("cmake", "g++") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"the C++ host needs {' and '.join(missing)} (apt-get install cmake g++), not found here")
    result = subprocess.run(
        ["make", "host-build", f"PY={sys.executable}"], cwd=ROOT, capture_output=True, text=True, timeout=1800
    )
    output = f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    assert result.returncode == 0, f"make host-build failed:\n{output}"
    return BUILD


@pytest.fixture(scope="session")
def host_lib(host_build):
    return load_library(host_build)


@pytest.fixture(scope="session")
def host_artifacts(tmp_path_factory) -> dict[str, Path]:
    """Really exported artifacts (recon-export's code, the shipped CNN weights at a small size) with their
    consistency graphs: deblur (FP32 + INT8) and CT."""
    try:
        from recon.export.exporter import ExportOptions, export_artifact
    except ImportError as error:  # the training extra (torch) is not installed
        pytest.skip(f"recon-export is not usable here ({error})")
    root = tmp_path_factory.mktemp("host-artifacts")
    made = {}
    for task, options in EXPORTS.items():
        out = root / f"cnn-{task}"
        export_artifact(
            ExportOptions(
                model="cnn",
                task=task,
                out=out,
                engine="none",
                batch=(1, 4, 8),
                threads=1,
                consistency_images=16,
                allow_geometry_change=True,
                geometry_heldout=2,
                **options,
            )
        )
        made[task] = out
    return made
