"""What each layer imports is declared: a package that arrives only through another one's dependencies (scipy
through scikit-image) breaks the day that one drops it."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
EXTRAS = PROJECT["optional-dependencies"]
# import name -> the distributions that provide it (None: provided by the host, never pip-installed)
PROVIDED_BY = {
    "PIL": {"pillow"},
    "skimage": {"scikit-image"},
    "cuda": {"cuda-python"},
    "tensorrt": {"tensorrt-cu13", "tensorrt-cu12"},
    "onnxruntime": {"onnxruntime", "onnxruntime-gpu"},
    "google": {"tritonclient"},  # google.protobuf, from tritonclient[grpc]
    "triton_python_backend_utils": None,  # Triton's python backend provides it to model.py
}
LAYERS = {  # the extras whose packages a layer may import (besides the base dependencies)
    "training": ("train",),
    "runtime": ("cpu", "openvino", "gpu-cu13", "gpu-cu12", "lean-cu13", "lean-cu12", "dicom", "tiff", "plot"),
    "export": ("train", "cpu", "gpu-cu13", "gpu-cu12", "triton"),
}


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].lower()


def declared(extras: tuple[str, ...]) -> set[str]:
    """Distribution names of the base dependencies and `extras`, following `recon[...]` references."""
    names, todo, seen = {_name(r) for r in PROJECT["dependencies"]}, list(extras), set()
    while todo:
        extra = todo.pop()
        seen.add(extra)
        for requirement in EXTRAS[extra]:
            if _name(requirement) == "recon":
                todo += [e for e in re.findall(r"[\w-]+", requirement.split("[", 1)[1]) if e not in seen]
            else:
                names.add(_name(requirement))
    return names


def imported(folder: str) -> dict[str, set[str]]:
    """Top-level third-party modules imported anywhere under `folder` (lazily too) -> the files."""
    found: dict[str, set[str]] = {}
    for path in (ROOT / folder).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top not in sys.stdlib_module_names and top != "recon":
                    found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_every_package_a_layer_imports_is_declared_by_its_extras(layer):
    allowed = declared(LAYERS[layer])
    missing = {
        module: sorted(files)
        for module, files in imported(layer).items()
        if PROVIDED_BY.get(module, {module.lower()}) is not None
        and not PROVIDED_BY.get(module, {module.lower()}) & allowed
    }
    assert not missing, f"{layer}/ imports packages its extras {LAYERS[layer]} do not declare: {missing}"


def test_train_refers_to_dicom_and_plot_instead_of_repeating_them():
    assert any(_name(r) == "recon" and "dicom" in r and "plot" in r for r in EXTRAS["train"])
    assert not {"pydicom", "matplotlib"} & {_name(r) for r in EXTRAS["train"]}
