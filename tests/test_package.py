"""The package layout and the runtime boundary."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

RUNTIME = Path(__file__).resolve().parents[1] / "runtime"
FORBIDDEN = ("torch", "recon.training", "recon.export")  # and everything below them


def test_the_three_folders_install_as_recon_subpackages():
    import recon.export
    import recon.runtime
    import recon.training
    import recon.weights

    assert recon.training.__file__.replace("\\", "/").endswith("training/__init__.py")
    assert recon.export.__file__.replace("\\", "/").endswith("export/__init__.py")
    assert recon.runtime.__file__.replace("\\", "/").endswith("runtime/__init__.py")
    assert recon.weights.WEIGHTS_DIR.name == "weights"


def _forbidden(module: str) -> bool:
    return any(module == name or module.startswith(name + ".") for name in FORBIDDEN)


def forbidden_imports(source: str, package: str = "recon.runtime") -> list[tuple[int, str]]:
    """(line, module) of every import of torch / recon.training / recon.export in `source`, wherever it sits:
    module level or inside a function, `import x`, `from x import y`, relative imports that climb out of
    the runtime, and `importlib.import_module("x")` / `__import__("x")` with a literal name."""
    found = []
    for node in ast.walk(ast.parse(source)):
        modules: list[str] = []
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the runtime package
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            modules = [base] + [f"{base}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                modules = [node.args[0].value]
        found += [(node.lineno, module) for module in modules if _forbidden(module)]
    return found


def _package_of(path: Path) -> str:
    """The package a runtime file sits in (what its relative imports resolve against)."""
    return ".".join(["recon", "runtime", *path.relative_to(RUNTIME).parent.parts])


def test_no_file_under_runtime_imports_torch_training_or_export():
    files = sorted(RUNTIME.rglob("*.py"))
    assert len(files) > 10  # the scan really reads the runtime
    offences = [
        f"{path.relative_to(RUNTIME.parent)}:{line}: {module}"
        for path in files
        for line, module in forbidden_imports(path.read_text(encoding="utf-8"), _package_of(path))
    ]
    assert not offences, "the runtime must not import these (DESIGN.md, data flows one way):\n" + "\n".join(
        offences
    )


@pytest.mark.parametrize(
    "source",
    [
        "import torch",
        "import torch.nn as nn",
        "from torch import nn",
        "def f():\n    import recon.training.info\n",
        "def f():\n    from recon.export.reference import torch_pipeline\n",
        "from recon import training",
        "from recon import export as e",
        "from .. import training",
        "from ..export import parity",
        ("from ...training import tasks", "recon.runtime.backends"),
        "import importlib\nimportlib.import_module('recon.training.tasks')",
        "from importlib import import_module\nimport_module('torch')",
        "__import__('torch.nn')",
        "class A:\n    def m(self):\n        if True:\n            import torch\n",
    ],
)
def test_the_scan_finds_a_forbidden_import_wherever_it_sits(source):
    source, package = source if isinstance(source, tuple) else (source, "recon.runtime")
    assert forbidden_imports(source, package)


@pytest.mark.parametrize(
    "source",
    [
        "import numpy",
        "from recon.runtime.manifest import load_manifest",
        "from . import plugins",
        "from .backends import base",
        "import torchvision_like_name_but_not_torch",
        "text = 'import torch'",
        "importlib.import_module(name)",
    ],
)
def test_the_scan_lets_allowed_imports_through(source):
    assert not forbidden_imports(source)
