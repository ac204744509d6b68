"""What other installed parts of recon register for the runtime to find, without the runtime importing them.

The runtime imports nothing of `recon.training` or `recon.export` (DESIGN: data flows one way). A feature that
needs torch lives in the layer that owns torch and registers itself here through a Python entry point
(`importlib.metadata`, the mechanism pip installs console scripts with), declared in pyproject.toml:

    [project.entry-points."recon.commands"]          # extra `recon` subcommands (click commands)
    info = "recon.training.info:main"
    [project.entry-points."recon.bench_references"]  # extra rows for recon-bench (see bench_cli)
    torch = "recon.export.reference:torch_reports"

A base install without the training extra still lists them; loading one that needs torch then fails with the
plugin's own one-line message.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from typing import Any

COMMANDS = "recon.commands"
BENCH_REFERENCES = "recon.bench_references"


class PluginError(RuntimeError):
    """A registered plugin is missing or cannot be loaded; the message says what to install."""


def registered(group: str) -> dict[str, EntryPoint]:
    """The entry points of `group`, by name (the first one wins when two distributions use a name)."""
    found: dict[str, EntryPoint] = {}
    for point in entry_points(group=group):
        found.setdefault(point.name, point)
    return found


def load(group: str, name: str, needs: str) -> Any:
    """The object registered as `name` in `group`; `needs` says what to install when it is not there."""
    point = registered(group).get(name)
    if point is None:
        raise PluginError(f"{needs} (nothing is registered as {name!r} in entry point group {group!r})")
    try:
        return point.load()
    except ImportError as error:
        raise PluginError(f"{needs} ({error})") from None
