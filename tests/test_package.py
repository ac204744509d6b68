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
        "from recon.runtime.artifact.manifest import load_manifest",
        "from . import plugins",
        "from .backends import base",
        "import torchvision_like_name_but_not_torch",
        "text = 'import torch'",
        "importlib.import_module(name)",
    ],
)
def test_the_scan_lets_allowed_imports_through(source):
    assert not forbidden_imports(source)


# The runtime's parts, bottom to top: a module imports only from its own part or from parts below it.
RUNTIME_PARTS = ("leaf", "io", "artifact", "backends", "core", "cli")


def runtime_part(module: str) -> str:
    """The part a runtime module belongs to: its sub-package, or "leaf"/"core" for the top-level files."""
    rest = module.removeprefix("recon.runtime").lstrip(".").split(".")
    if rest[0] in ("io", "artifact", "backends", "cli"):
        return rest[0]
    return "leaf" if rest[0] in ("limits", "plugins", "cache") else "core"


def runtime_import_graph() -> dict[str, set[str]]:
    """module -> runtime modules it imports, from the AST (lazy imports inside functions included)."""
    names = {}
    for path in RUNTIME.rglob("*.py"):
        parts = path.relative_to(RUNTIME).with_suffix("").parts
        parts = parts[:-1] if parts[-1] == "__init__" else parts
        names[".".join(("recon", "runtime", *parts))] = path
    graph: dict[str, set[str]] = {}
    for module, path in names.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
            for target in targets:
                # the longest known module the import names (a `from m import function` names m)
                while target and target not in names:
                    target = target.rpartition(".")[0]
                if target and target not in (module, "recon.runtime"):
                    edges.add(target)
        graph[module] = edges
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), each as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_the_runtime_has_no_import_circle():
    graph = runtime_import_graph()
    assert len(graph) > 20 and any(graph.values())  # the scan really reads the runtime
    assert not import_cycles(graph)


def test_each_runtime_part_imports_only_its_own_part_or_parts_below():
    upward = [
        f"{module} ({runtime_part(module)}) imports {target} ({runtime_part(target)})"
        for module, targets in runtime_import_graph().items()
        for target in sorted(targets)
        if RUNTIME_PARTS.index(runtime_part(target)) > RUNTIME_PARTS.index(runtime_part(module))
    ]
    assert not upward, "\n".join(upward)


def test_the_cycle_finder_finds_a_planted_circle():
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert not import_cycles({"a": {"b"}, "b": {"c"}, "c": set()})
