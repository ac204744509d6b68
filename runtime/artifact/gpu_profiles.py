"""TensorRT optimization profiles as the manifest records them, and the choice of one for a request.

Derived at export time from the graph's size (recon.export.tensorrt_profile); read here by the native
TensorRT backend (which profile an execution context selects, how a batch is split) and the onnxruntime
TensorRT provider (its one profile).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Profile:
    """One optimization profile: batch (min, opt, max); side (min, opt, max) for a graph of symbolic H, W."""

    batch: tuple[int, int, int]
    side: tuple[int, int, int] | None = None

    def holds(self, batch: int, height: int | None = None, width: int | None = None) -> bool:
        if not self.batch[0] <= batch <= self.batch[2]:
            return False
        if self.side is None:
            return True
        return all(h is None or self.side[0] <= h <= self.side[2] for h in (height, width))

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"batch": list(self.batch)}
        if self.side is not None:
            data["side"] = list(self.side)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Profile:
        side = data.get("side")
        return cls(tuple(int(b) for b in data["batch"]), tuple(int(s) for s in side) if side else None)  # type: ignore[arg-type]


def choose_profile(profiles: Sequence[Profile], batch: int, height: int, width: int) -> tuple[int, int]:
    """(profile index, largest batch it takes at this size) for a request; the first profile holding the size
    and the batch, else the one holding the size with the largest batch (the caller splits the batch).
    ValueError when no profile holds the size."""
    fitting = [i for i, p in enumerate(profiles) if p.holds(p.batch[0], height, width)]
    if not fitting:
        sides = [p.side for p in profiles]
        raise ValueError(f"no TensorRT profile takes images of {height}×{width} (profile sides {sides})")
    for i in fitting:
        if profiles[i].holds(batch, height, width):
            return i, profiles[i].batch[2]
    best = max(fitting, key=lambda i: profiles[i].batch[2])
    return best, profiles[best].batch[2]
