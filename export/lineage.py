"""The manifest's "lineage": what produced an artifact, for the reviewer who qualifies it (a model card).

"lineage": {
  "recon_version": "0.1.0",
  "git": {"commit": "<40 hex>", "dirty": false} | null,   # the source checkout recon ran from, if any
  "weights": {"source": "shipped" | "user" | "random-init", "sha256": "<hex>" | null, "file": "name"},
  "training_data": {...} | null,      # the weight card's "data" (sources, held-out images, seed, ...)
  "training": {"command": "...", "steps": n, "best_validation": {...}} | null,   # from the card
  "export_options": {...},            # every ExportOptions field, paths as strings
  "libraries": {"torch": "...", "onnx": "...", "onnxruntime": "...", ...},
  "exported_on": {"cpu": "...", "os": "...", "python": "..."},
  "exported_at": "2026-12-04T15:00:00+00:00"
}
"""

from __future__ import annotations

import dataclasses
import datetime
import subprocess
from pathlib import Path
from typing import Any

from recon.runtime.environment import environment

SOURCE_ROOT = Path(__file__).resolve().parents[1]  # the checkout holding export/, runtime/, training/


def git_state(root: Path = SOURCE_ROOT) -> dict[str, Any] | None:
    """The commit recon runs from and whether tracked files differ from it; None outside a git checkout."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10, check=False
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if not commit:
        return None
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain(dataclasses.asdict(value))
    return value if isinstance(value, (str, int, float, bool, type(None))) else repr(value)


def export_lineage(options: Any, source: dict[str, Any]) -> dict[str, Any]:
    """The lineage entry for an export with these options and this weight source (load_network's)."""
    env = environment()
    training = source.get("card_training") or None
    if training:
        training = {k: training.get(k) for k in ("command", "steps", "best_validation", "hardware")}
    return {
        "recon_version": env["libraries"].get("recon", "unknown"),
        "git": git_state(),
        "weights": {
            "source": source.get("kind"),
            "sha256": source.get("weights_sha256"),
            "file": None if options.weights is None else Path(options.weights).name,
        },
        "training_data": source.get("card_data"),
        "training": training,
        "export_options": _plain(dataclasses.asdict(options)),
        "libraries": env["libraries"],
        "exported_on": {key: env[key] for key in ("cpu", "os", "python", "gpu")},
        "exported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
