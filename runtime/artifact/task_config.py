"""The task configuration: what a measurement is and how it was made, as one typed, plain-data object.

One home for the blur kernel and the CT geometry. Training builds its operators from it
(`recon.training.tasks.build_physics`), every command line takes it through one option set
(`recon.training.task_options`), and an artifact stores it once, as the manifest's ``"task_config"``.
Plain Python (no numpy, no torch) so the runtime, and any host reading the manifest, can use it.

    DeblurTask(kernel_kind="motion", kernel_size=7, angle=45.0, ...)   # image in, image out
    CTTask(n_views=60, n_detectors=363, detector_spacing=1.0, ...)      # sinogram in, image out

``to_json()`` / ``task_config_from_json()`` round-trip exactly; construction validates every field and
raises a ``ValueError`` that names it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

TASKS = ("deblur", "ct")
CT_FILTERS = ("ram-lak", "shepp-logan", "hann")
KERNEL_KINDS = ("motion", "gaussian")
MOTION_STYLES = ("centred", "course")
# Keys written by recon before the task configuration had its own type (weight cards, v1 manifests).
_LEGACY_KEYS = {"ct": {"n_angles": "n_views"}, "deblur": {"kind": "kernel_kind"}}


def default_n_detectors(image_size: int, detector_spacing: float = 1.0) -> int:
    """``ceil(√2 · N / spacing)``: the detector covers the image's diagonal (scikit-image's ``circle=False``
    width at unit spacing: 363 bins for N = 256). The one detector-count rule in recon."""
    return math.ceil(math.sqrt(2) * image_size / detector_spacing)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


_Rule = tuple[Callable[[Any], bool], str]  # (test, what is expected)


def _int_at_least(low: int) -> _Rule:
    return (lambda v: _is_int(v) and v >= low, f"an integer >= {low}")


def _one_of(choices: tuple[str, ...]) -> _Rule:
    return (lambda v: v in choices, f"one of {list(choices)}")


_REAL_AT_LEAST_0: _Rule = (lambda v: _is_real(v) and v >= 0, "a number >= 0")


class _TaskConfig:
    """What both task types share: validation, JSON round trip, overrides, the geometry comparison."""

    task: ClassVar[str]
    rules: ClassVar[dict[str, _Rule]]  # every field: (test, what is expected)
    # the fields that define the measurement operator; the rest (noise, simulation grid) only the data
    geometry_fields: ClassVar[tuple[str, ...]]
    image_size: int

    def _validate(self) -> None:
        for name, (ok, expected) in self.rules.items():
            value = getattr(self, name)
            if not ok(value):
                raise ValueError(f"{self.task} task config: {name} must be {expected}, got {value!r}")
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            if f.type == "float":  # 45 and 45.0 are the same angle: store one JSON form
                object.__setattr__(self, f.name, float(getattr(self, f.name)))

    def to_json(self) -> dict[str, Any]:
        return {"task": self.task, **dataclasses.asdict(self)}  # type: ignore[call-overload]

    def geometry(self) -> dict[str, Any]:
        """The fields an exported graph or trained network depends on (compare two configs with this)."""
        return {name: getattr(self, name) for name in self.geometry_fields}

    def with_overrides(self, **overrides: Any):
        """A copy with the overrides that are not None; strings (from a command line) are converted."""
        given = {_LEGACY_KEYS[self.task].get(k, k): v for k, v in overrides.items() if v is not None}
        known = {f.name for f in dataclasses.fields(self)}  # type: ignore[arg-type]
        unknown = sorted(set(given) - known)
        if unknown:
            raise ValueError(f"unknown {self.task} option(s) {unknown}; known: {sorted(known)}")
        changes = {key: _convert(self, key, value) for key, value in given.items()}
        return dataclasses.replace(self, **changes, **self._rederived(changes))  # type: ignore[type-var]

    def _rederived(self, changes: dict[str, Any]) -> dict[str, Any]:
        """Fields to reset to their derived default because the ones they follow changed."""
        return {}


@dataclass(frozen=True)
class DeblurTask(_TaskConfig):
    """Blur (motion line or Gaussian) + relative Gaussian noise; the measurement has the image's shape.

    Args:
        image_size: side of the (square) images trained on and used for export examples; the network
            itself is fully convolutional.
        kernel_kind: "motion" (a line of ``kernel_size`` taps at ``angle`` degrees) or "gaussian".
        kernel_size: side of the square kernel, >= 1.
        angle: motion direction in degrees.
        variance: Gaussian σ² (unused by motion blur), > 0.
        motion_style: "centred" or "course" (IPPy's off-centre rasterisation).
        noise_level: relative noise, ‖e‖ = level·‖Ax‖ per sample, >= 0.
    """

    task: ClassVar[str] = "deblur"
    geometry_fields: ClassVar[tuple[str, ...]] = (
        "kernel_kind",
        "kernel_size",
        "angle",
        "variance",
        "motion_style",
    )

    image_size: int = 256
    kernel_kind: str = "motion"
    kernel_size: int = 7
    angle: float = 45.0
    variance: float = 1.0
    motion_style: str = "centred"
    noise_level: float = 0.01

    rules: ClassVar[dict[str, _Rule]] = {
        "image_size": _int_at_least(2),
        "kernel_kind": _one_of(KERNEL_KINDS),
        "kernel_size": _int_at_least(1),
        "angle": (_is_real, "a finite number (degrees)"),
        "variance": (lambda v: _is_real(v) and v > 0, "a number > 0"),
        "motion_style": _one_of(MOTION_STYLES),
        "noise_level": _REAL_AT_LEAST_0,
    }

    def __post_init__(self) -> None:
        self._validate()


@dataclass(frozen=True)
class CTTask(_TaskConfig):
    """Parallel-beam CT: sinogram ``(B, 1, n_views, n_detectors)`` in, image ``(B, 1, N, N)`` out.

    Args:
        image_size: side N of the reconstructed square image (pixels of unit width).
        n_views: projections, equispaced over ``[0, angle_range)``.
        n_detectors: detector bins; default :func:`default_n_detectors` (the image's diagonal).
        detector_spacing: width of a detector bin in image pixels (> 0).
        angle_range: angular span in radians, in (0, 2π].
        filter: FBP ramp filter, one of ``CT_FILTERS``.
        noise_level: relative noise, ‖e‖ = level·‖Ax‖ per sample, >= 0.
        oversample: sinograms are simulated from a grid this many times finer (no inverse crime), >= 1.
    """

    task: ClassVar[str] = "ct"
    geometry_fields: ClassVar[tuple[str, ...]] = (
        "image_size",
        "n_views",
        "n_detectors",
        "detector_spacing",
        "angle_range",
        "filter",
    )

    image_size: int = 256
    n_views: int = 60
    n_detectors: int | None = field(default=None)
    detector_spacing: float = 1.0
    angle_range: float = math.pi
    filter: str = "ram-lak"
    noise_level: float = 0.01
    oversample: int = 2

    rules: ClassVar[dict[str, _Rule]] = {
        "image_size": _int_at_least(2),
        "n_views": _int_at_least(1),
        "detector_spacing": (lambda v: _is_real(v) and v > 0, "a number > 0 (image pixels)"),
        "n_detectors": _int_at_least(1),
        "angle_range": (lambda v: _is_real(v) and 0 < v <= 2 * math.pi, "in (0, 2π] (radians)"),
        "filter": _one_of(CT_FILTERS),
        "noise_level": _REAL_AT_LEAST_0,
        "oversample": _int_at_least(1),
    }

    def __post_init__(self) -> None:
        size, spacing = self.image_size, self.detector_spacing
        if self.n_detectors is None and _is_int(size) and _is_real(spacing) and spacing > 0:
            count = default_n_detectors(self.image_size, self.detector_spacing)
            object.__setattr__(self, "n_detectors", count)
        self._validate()

    def _rederived(self, changes: dict[str, Any]) -> dict[str, Any]:
        # a new image size or bin width without a detector count: the count follows the one rule
        if {"image_size", "detector_spacing"} & set(changes) and "n_detectors" not in changes:
            return {"n_detectors": None}
        return {}


TaskConfig = DeblurTask | CTTask
TASK_TYPES: dict[str, type[DeblurTask] | type[CTTask]] = {"deblur": DeblurTask, "ct": CTTask}


def _convert(cfg: Any, name: str, value: Any) -> Any:
    """A command-line string to the field's type (ints, floats); other values as they are."""
    if not isinstance(value, str):
        return value
    kind = {f.name: f.type for f in dataclasses.fields(cfg)}[name]
    try:
        if kind.startswith("int"):
            return int(value)
        if kind == "float":
            return float(value)
    except ValueError:
        raise ValueError(f"{cfg.task} task config: {name} must be a number, got {value!r}") from None
    return value


def task_config(task: str, **overrides: Any) -> TaskConfig:
    """The default configuration of ``task`` with the overrides that are not None."""
    if not isinstance(task, str) or task not in TASK_TYPES:
        raise ValueError(f"unknown task {task!r}; expected one of {list(TASKS)}")
    return TASK_TYPES[task]().with_overrides(**overrides)


def task_config_from_json(data: Any) -> TaskConfig:
    """Read a configuration written by ``to_json()`` (or a legacy dict: ``n_angles``, ``kind``)."""
    if not isinstance(data, dict):
        raise ValueError(f"a task config must be a JSON object, got {type(data).__name__}")
    task = data.get("task")
    if not isinstance(task, str) or task not in TASK_TYPES:
        raise ValueError(f"task config: task must be one of {list(TASKS)}, got {task!r}")
    values = {_LEGACY_KEYS[task].get(k, k): v for k, v in data.items() if k != "task"}
    known = {f.name for f in dataclasses.fields(TASK_TYPES[task])}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{task} task config: unknown field(s) {unknown}; known: {sorted(known)}")
    return TASK_TYPES[task](**values)
