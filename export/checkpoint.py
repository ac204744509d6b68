"""A user's checkpoint → their network's weights: the formats a researcher's training leaves behind.

- `.safetensors` (read with `safetensors.torch.load_file`: no code runs);
- anything else through `torch.load(weights_only=True)` (plain tensors and containers only, never a pickle
  that runs code): a plain state dict, or a dict holding one under "state_dict" (PyTorch Lightning) or
  "model" (recon-train's own last.pt / best.pt, and many hand-written loops);
- key prefixes that wrappers add (`module.` from DataParallel/DDP, `model.` from Lightning modules) are
  removed when that makes the keys match the network's.

A mismatch is reported as two lines, the missing keys and the unexpected ones, never as a half-loaded network.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from recon.export.errors import ExportError

if TYPE_CHECKING:
    import torch

PREFIXES = ("module.", "model.", "net.", "network.")
NESTED = ("state_dict", "model", "model_state_dict", "network")
SHOWN_KEYS = 8  # keys listed per line before "… (N more)"


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors stored in `path` (see the module docstring for the formats); ExportError otherwise."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise ExportError(f"--weights {path}: no such file")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as error:
            raise ExportError(f"--weights {path}: not a readable safetensors file ({error})") from None
    try:
        data: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle refusals, truncated zip files, foreign formats: the user's file
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ExportError(
            f"--weights {path}: torch.load(weights_only=True) cannot read it ({first}); save the "
            "state dict (torch.save(model.state_dict(), path)) or use safetensors"
        ) from None
    for key in NESTED:
        if isinstance(data, dict) and isinstance(data.get(key), dict) and _tensors_only(data[key]):
            data = data[key]
            break
    if not isinstance(data, dict) or not data or not _tensors_only(data):
        raise ExportError(
            f"--weights {path}: holds no state dict (a dict of tensors, or one under "
            f"{', '.join(repr(k) for k in NESTED)})"
        )
    return dict(data)


def _tensors_only(data: dict[Any, Any]) -> bool:
    import torch

    return all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in data.items())


def _strip(state: dict[str, Any], prefix: str) -> dict[str, Any]:
    return {k[len(prefix) :] if k.startswith(prefix) else k: v for k, v in state.items()}


def match_keys(state: dict[str, Any], expected: set[str]) -> dict[str, Any]:
    """`state` with wrapper prefixes removed, as long as each removal brings more keys into `expected`."""
    best = state
    changed = True
    while changed:
        changed = False
        for prefix in PREFIXES:
            if not any(k.startswith(prefix) for k in best):
                continue
            stripped = _strip(best, prefix)
            if len(expected & set(stripped)) > len(expected & set(best)):
                best, changed = stripped, True
    return best


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:SHOWN_KEYS])
    return shown + (f" … ({len(keys) - SHOWN_KEYS} more)" if len(keys) > SHOWN_KEYS else "")


def load_into(network: torch.nn.Module, path: Path) -> dict[str, Any]:
    """Load the checkpoint at `path` into `network` strictly; returns {"format", "stripped_prefix"}."""
    state = read_state_dict(path)
    expected = set(network.state_dict())
    matched = match_keys(state, expected)
    missing = sorted(expected - set(matched))
    unexpected = sorted(set(matched) - expected)
    if missing or unexpected:
        lines = [f"--weights {path} does not fit the network ({len(expected)} keys expected):"]
        if missing:
            lines.append(f"  missing keys ({len(missing)}): {_listing(missing)}")
        if unexpected:
            lines.append(f"  unexpected keys ({len(unexpected)}): {_listing(unexpected)}")
        raise ExportError("\n".join(lines))
    own = network.state_dict()
    wrong = [k for k in sorted(matched) if tuple(matched[k].shape) != tuple(own[k].shape)]
    if wrong:
        shapes = ", ".join(
            f"{k} {tuple(matched[k].shape)} vs {tuple(own[k].shape)}" for k in wrong[:SHOWN_KEYS]
        )
        raise ExportError(
            f"--weights {path} does not fit the network: {len(wrong)} tensor(s) of another shape "
            f"(checkpoint vs network): {shapes}; were the --network-arg values the training's?"
        )
    network.load_state_dict(matched, strict=True)
    prefix = None
    if matched is not state:
        first = next(iter(state))
        prefix = first[: len(first) - len(next(iter(matched)))] or None
    kind = "safetensors" if Path(path).suffix == ".safetensors" else "torch"
    return {"format": kind, "stripped_prefix": prefix}
