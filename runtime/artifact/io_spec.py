"""The manifest's "input"/"output" entries (`IOSpec`) and its "batch" entry (`BatchProfile`), parsed once.

    "input":  {"name": "measurement", "shape": ["batch", 1, H_in, W_in], "dtype": "float32",
               "layout": "NCHW" | "N1AD", "value_range": [lo, hi] | null}
    "output": {"name": "image", "shape": ["batch", 1, H, W], "dtype": "float32",
               "value_range": [0.0, 1.0], "clip": true}
    "batch":  {"min": 1, "opt": 8, "max": 32}

Both are frozen: what `load_manifest` checked is what every part of the runtime reads, with no dict key
looked up (and possibly missing) later. `to_json` writes the same JSON that was read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from recon.runtime import limits
from recon.runtime.artifact.errors import ArtifactError

FLOAT32_MAX = 3.4028234663852886e38
Dim = int | str | None  # an integer, or a name / null for "any size"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    """A finite number that float32 holds: value ranges are applied to float32 arrays."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) <= FLOAT32_MAX


def _shape_caps() -> tuple[int, int, int, int]:  # read at call time: hosts may raise the caps
    return limits.MAX_BATCH, 1, limits.MAX_IMAGE_SIDE, limits.MAX_IMAGE_SIDE


@dataclass(frozen=True)
class IOSpec:
    """One side of the graph: its tensor name, shape (batch, 1, H, W), dtype, layout and value range.

    `clip` (outputs): whether the runtime clips to `value_range`; None: not stated, which means yes.
    """

    name: str
    shape: tuple[Dim, ...]
    dtype: str = "float32"
    layout: str | None = None
    value_range: tuple[float, float] | None = None
    clip: bool | None = None

    @property
    def clips(self) -> bool:
        return self.clip is not False

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}
        if self.layout is not None:
            data["layout"] = self.layout
        data["value_range"] = None if self.value_range is None else list(self.value_range)
        if self.clip is not None:
            data["clip"] = self.clip
        return data

    @classmethod
    def from_json(cls, data: Any, side: str, source: str = "manifest.json") -> IOSpec:
        check_io_spec(data, side, source)
        value_range = data.get("value_range")
        layout = data.get("layout")
        if layout is not None and not (isinstance(layout, str) and len(layout) <= 16):
            raise ArtifactError(f"{source}: {side} layout must be a short string, got {layout!r}; re-export")
        dtype = data.get("dtype", "float32")
        if not (isinstance(dtype, str) and len(dtype) <= 16):
            raise ArtifactError(f"{source}: {side} dtype must be a short string, got {dtype!r}; re-export")
        return cls(
            name=data["name"],
            shape=tuple(data["shape"]),
            dtype=dtype,
            layout=layout,
            value_range=None if value_range is None else (float(value_range[0]), float(value_range[1])),
            clip=data.get("clip"),
        )


def check_io_spec(spec: Any, side: str, source: str = "manifest.json") -> None:
    """An "input"/"output" entry: a name, a shape [batch, 1, H, W], a value range lo < hi, a bool clip.

    H and W are positive integers up to limits.MAX_IMAGE_SIDE (H·W up to MAX_IMAGE_PIXELS), or a name /
    null for "any size"; the batch entry is a name, null or an integer up to limits.MAX_BATCH.
    """
    shape = spec.get("shape") if isinstance(spec, dict) else None
    if not (
        isinstance(spec, dict)
        and isinstance(spec.get("name"), str)
        and 0 < len(spec["name"]) <= 256
        and isinstance(shape, (list, tuple))
        and len(shape) == 4
        and shape[1] == 1
        and _is_int(shape[1])
        and all(
            (_is_int(d) and 0 < d <= top) or (isinstance(d, str) and len(d) <= 64) or d is None
            for d, top in zip(shape, _shape_caps(), strict=True)
        )
    ):
        raise ArtifactError(
            f"{source}: {side} needs a name and a shape [batch, 1, H, W] (H, W at most "
            f"{limits.MAX_IMAGE_SIDE}), got {spec!r}; re-export the artifact"
        )
    if _is_int(shape[2]) and _is_int(shape[3]) and shape[2] * shape[3] > limits.MAX_IMAGE_PIXELS:  # if capped
        raise ArtifactError(
            f"{source}: {side} shape {list(shape)} holds more than {limits.MAX_IMAGE_PIXELS} pixels per "
            "image (recon.runtime.limits.MAX_IMAGE_PIXELS); re-export the artifact"
        )
    value_range = spec.get("value_range")
    if value_range is not None and not (
        isinstance(value_range, (list, tuple))
        and len(value_range) == 2
        and all(map(_is_number, value_range))
        and value_range[0] < value_range[1]
    ):
        raise ArtifactError(
            f"{source}: {side} value_range must be null or [low, high] with low < high, both within "
            f"float32's range (±{FLOAT32_MAX:.4g}), got {value_range!r}; re-export the artifact"
        )
    if "clip" in spec and not isinstance(spec["clip"], bool):
        raise ArtifactError(f"{source}: {side} clip must be true or false, got {spec['clip']!r}; re-export")


@dataclass(frozen=True)
class BatchProfile:
    """The dynamic-batch profile: 1 <= min <= opt <= max <= limits.MAX_BATCH (also TensorRT's profile)."""

    min: int
    opt: int
    max: int

    def to_json(self) -> dict[str, int]:
        return {"min": self.min, "opt": self.opt, "max": self.max}

    def __str__(self) -> str:
        return f"{self.min}:{self.opt}:{self.max}"

    @classmethod
    def from_json(cls, data: Any, source: str = "manifest.json") -> BatchProfile:
        """ "max" required; "min" defaults to 1 and "opt" to "max" (artifacts that state only "max")."""
        if not isinstance(data, dict):
            raise ArtifactError(
                f"{source}: 'batch' must be a JSON object, got {data!r}; the artifact is damaged, "
                "re-export it"
            )
        check_batch(data, source)
        return cls(min=data.get("min", 1), opt=data.get("opt", data["max"]), max=data["max"])

    def check(self, source: str = "manifest.json") -> None:
        """For a profile built in code (load_manifest checks the ones it reads)."""
        check_batch(self.to_json(), source)


def check_batch(batch: dict[str, Any], source: str = "manifest.json") -> None:
    """The batch profile: integers 1..limits.MAX_BATCH, "max" required, min <= opt <= max where given."""
    if not (
        "max" in batch
        and set(batch) <= {"min", "opt", "max"}
        and all(_is_int(v) and 1 <= v <= limits.MAX_BATCH for v in batch.values())
        and batch.get("min", 1) <= batch.get("opt", batch["max"]) <= batch["max"]
    ):
        raise ArtifactError(
            f"{source}: batch profile {batch!r} must hold integers 1 <= min <= opt <= max <= "
            f"{limits.MAX_BATCH} (max required; recon.runtime.limits.MAX_BATCH); re-export the artifact"
        )
