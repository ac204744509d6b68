"""The machine and library versions a result was produced on: what a qualification record must name."""

from __future__ import annotations

import platform
import shutil
import subprocess
import sys
from importlib import metadata
from typing import Any

from recon.runtime.profiling import cpu_description

# the distributions whose versions change numbers (engines, numerics) or the artifact's reading of them
LIBRARIES = ("recon", "numpy", "onnxruntime", "onnxruntime-gpu", "openvino", "tensorrt", "onnx", "torch")


def library_versions(names: tuple[str, ...] = LIBRARIES) -> dict[str, str]:
    """Installed version of each distribution that is installed (importlib.metadata: no import, no cost)."""
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def gpu_description(timeout: float = 5.0) -> str | None:
    """ "<name>, driver <version>" of the first GPU nvidia-smi lists; None without one."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run(
            [smi, "--query-gpu=name,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    first = out.strip().splitlines()[0] if out.strip() else ""
    name, _, driver = first.partition(",")
    return f"{name.strip()}, driver {driver.strip()}" if name.strip() else None


def environment() -> dict[str, Any]:
    """CPU model and flags, OS, Python, library versions, GPU (when one answers)."""
    return {
        "cpu": cpu_description(),
        "os": f"{platform.system()} {platform.release()} {platform.machine()}",
        "python": sys.version.split()[0],
        "libraries": library_versions(),
        "gpu": gpu_description(),
    }
