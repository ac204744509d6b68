"""TensorRT optimization profiles from the graph: no tensor past 2³¹−1 elements, activations in a budget.

TensorRT refuses a tensor of more than INT32_MAX elements ("Conv doesn't support > INT32_MAX volume",
NVIDIA/TensorRT#4123, #1948), and each execution context reserves activation memory for its profile's
*maximum*. The export's defaults (sides 64:512:2048, batch 1:8:32) put the shipped ResUNet's 16
full-resolution channels at 32·16·2048² = 2³¹ elements. So the profile maximum comes from the graph:

1. `measure_footprint` runs the ONNX graph once or twice on onnxruntime (CPU) at a small probe size with every
   node output exposed, and keeps, per image, the widest tensor's element count and the peak of the live
   activation bytes (a tensor is live from its producer to its last consumer, in the graph's node order).
   A graph with symbolic H, W is probed at two sides (multiples of the network's padding) so that growth
   faster than the image area (attention over all pixels) is caught instead of extrapolated.
2. `derive_profiles` (plain numbers in, profiles out) keeps the requested ranges where they fit; where the
   full batch does not fit at the largest side it splits into two profiles: the full batch up to the largest
   side that takes it, and a smaller batch over the whole side range. The runtime picks the first profile
   that holds a request and splits a batch no profile holds (runtime/backends/tensorrt.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from recon.export.errors import ExportError
from recon.runtime.artifact.gpu_profiles import Profile

TENSOR_ELEMENT_LIMIT = 2**31 - 1  # INT32_MAX: TensorRT's largest tensor volume
DEFAULT_ACTIVATION_BUDGET_MB = 4096  # one execution context's activations at its profile max


@dataclass(frozen=True)
class GraphFootprint:
    """Per image: the widest tensor's elements and the peak live activation bytes, at `probe_side`.

    `scales_with_side` is False for a graph of fixed H, W (the numbers hold at any request); else they scale
    with the padded area: side S runs as ceil(S / multiple) · multiple."""

    widest_elements: int
    live_bytes: int
    probe_side: int
    multiple: int = 1
    scales_with_side: bool = True
    widest_tensor: str = ""

    def padded(self, side: int) -> int:
        return -(-int(side) // self.multiple) * self.multiple

    def _scale(self, side: int | None) -> float:
        if not self.scales_with_side or side is None:
            return 1.0
        return (self.padded(side) / self.padded(self.probe_side)) ** 2

    def elements(self, side: int | None) -> int:
        """The widest tensor's elements for one image of `side`² (an upper bound for any tensor)."""
        return math.ceil(self.widest_elements * self._scale(side))

    def activation_bytes(self, side: int | None) -> int:
        return math.ceil(self.live_bytes * self._scale(side))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def largest_batch(
    footprint: GraphFootprint, side: int | None, budget_bytes: int, limit: int = TENSOR_ELEMENT_LIMIT
) -> int:
    """The largest batch whose widest tensor stays within `limit` elements and activations within budget."""
    by_volume = limit // max(footprint.elements(side), 1)
    by_memory = budget_bytes // max(footprint.activation_bytes(side), 1)
    return int(min(by_volume, by_memory))


def _largest_side(
    footprint: GraphFootprint, lo: int, hi: int, batch: int, budget_bytes: int, limit: int
) -> int:
    """The largest side in lo..hi that takes `batch` (lo - 1 when none does); the cap falls as sides grow."""
    if largest_batch(footprint, lo, budget_bytes, limit) < batch:
        return lo - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if largest_batch(footprint, mid, budget_bytes, limit) >= batch:
            lo = mid
        else:
            hi = mid - 1
    return lo


def derive_profiles(
    footprint: GraphFootprint,
    batch: Sequence[int],
    side: Sequence[int] | None = None,
    budget_bytes: int = DEFAULT_ACTIVATION_BUDGET_MB << 20,
    limit: int = TENSOR_ELEMENT_LIMIT,
) -> list[Profile]:
    """Profiles covering `batch` × `side` (min, opt, max each) within the element limit and the budget.

    One profile when the whole range fits; else the full batch up to the largest side that takes it, then a
    smaller batch over every side. Refuses (ExportError) when one image of the largest side does not fit.
    """
    b_lo, b_opt, b_hi = (int(b) for b in batch)
    if not 1 <= b_lo <= b_opt <= b_hi:
        raise ExportError(f"the batch profile must satisfy 1 <= min <= opt <= max, got {b_lo}:{b_opt}:{b_hi}")
    s_lo, s_opt, s_hi = (int(s) for s in side) if side is not None else (0, 0, 0)
    largest = side[2] if side is not None else None
    cap_at_largest = largest_batch(footprint, largest, budget_bytes, limit)
    if cap_at_largest < 1:
        per_image = footprint.elements(largest)
        raise ExportError(
            f"one image{f' of {largest}²' if largest else ''} needs a tensor of {per_image:,} elements and "
            f"{footprint.activation_bytes(largest) / 2**20:,.0f} MiB of activations, over TensorRT's "
            f"{limit:,}-element limit or the {budget_bytes >> 20} MiB budget; lower --spatial MAX (larger "
            "images are then tiled) or raise the activation budget"
        )

    def clipped(hi: int) -> tuple[int, int, int]:
        return min(b_lo, hi), min(b_opt, hi), hi

    if cap_at_largest >= b_hi:
        return [Profile((b_lo, b_opt, b_hi), (s_lo, s_opt, s_hi) if side is not None else None)]
    if side is None:  # fixed size: only the batch can give way
        return [Profile(clipped(cap_at_largest))]
    first_batch = min(b_hi, largest_batch(footprint, s_lo, budget_bytes, limit))
    s_first = _largest_side(footprint, s_lo, s_hi, first_batch, budget_bytes, limit)
    profiles = [Profile(clipped(first_batch), (s_lo, min(s_opt, s_first), s_first))]
    opt_side = min(s_hi, max(s_opt, s_first + 1))
    profiles.append(Profile(clipped(cap_at_largest), (s_lo, opt_side, s_hi)))
    return profiles


def profile_shapes(profile: Profile, input_chw: Sequence[int]) -> tuple[tuple[int, ...], ...]:
    """(min, opt, max) input shapes of a profile: N, C, H, W (H, W from `input_chw` for a fixed size)."""
    c, h, w = (int(d) for d in input_chw)
    if profile.side is None:
        return tuple((b, c, h, w) for b in profile.batch)
    return tuple((b, c, s, s) for b, s in zip(profile.batch, profile.side, strict=True))


# -- measuring the graph (onnx + onnxruntime, at export time) ----------------------------------------------
_FLOAT_TYPES = {"float32", "float16", "bfloat16", "float64"}


def _probe_run(model: Any, input_name: str, shape: Sequence[int]) -> tuple[int, str, int]:
    """(widest float tensor's elements, its name, peak live activation bytes) of one run at `shape`."""
    import numpy as np
    import onnx

    from recon.runtime.backends.onnxruntime import new_session, session_options

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    exposed = {o.name for o in probe.graph.output}
    for node in probe.graph.node:
        for name in node.output:
            if name and name not in exposed:  # onnxruntime infers the type of an untyped graph output
                probe.graph.output.append(onnx.ValueInfoProto(name=name))
                exposed.add(name)
    options = session_options(optimization_level="disable")  # the graph as written, unfused
    session = new_session(probe.SerializeToString(), options)
    names = [o.name for o in session.get_outputs()]
    values = dict(zip(names, session.run(None, {input_name: np.zeros(shape, np.float32)}), strict=True))
    initializers = {t.name for t in model.graph.initializer}
    constants = {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    activations = {
        n: v for n, v in values.items() if n not in initializers | constants and str(v.dtype) in _FLOAT_TYPES
    }
    widest_name = max(activations, key=lambda n: activations[n].size)
    last_use: dict[str, int] = {}
    for index, node in enumerate(model.graph.node):
        for name in node.input:
            last_use[name] = index
    graph_outputs = {o.name for o in model.graph.output}  # live to the end
    live, peak = 0, 0
    for index, node in enumerate(model.graph.node):
        live += sum(activations[o].nbytes for o in set(node.output) if o in activations)
        peak = max(peak, live)
        for name in set(node.input) | set(node.output):  # freed after their last consumer (or unused)
            if name in activations and name not in graph_outputs and last_use.get(name, index) <= index:
                live -= activations[name].nbytes
    return int(activations[widest_name].size), widest_name, int(peak)


def measure_footprint(
    onnx_path: str | Path,
    input_name: str,
    input_shape: Sequence[Any],
    multiple: int = 1,
    probe_side: int = 64,
) -> GraphFootprint:
    """The graph's per-image footprint (see the module doc). `input_shape` as the manifest gives it: batch
    first, then C, H, W as integers or names (symbolic H, W are probed at multiples of `multiple`)."""
    import onnx

    model = onnx.load(str(onnx_path))
    channels, height, width = input_shape[1:]
    if isinstance(height, int) and isinstance(width, int):
        elements, name, live = _probe_run(model, input_name, (1, channels, height, width))
        return GraphFootprint(elements, live, max(height, width), 1, False, name)
    small = -(-probe_side // multiple) * multiple
    large = 2 * small
    e_small, _, live_small = _probe_run(model, input_name, (1, channels, small, small))
    e_large, name, live_large = _probe_run(model, input_name, (1, channels, large, large))
    if e_large > 4.4 * e_small or live_large > 4.4 * live_small:  # faster than the area (4x): no scaling
        raise ExportError(
            f"the graph's widest tensor grows faster than the image area ({e_small:,} elements at {small}², "
            f"{e_large:,} at {large}²); profiles cannot be derived by scaling: export at a fixed size"
        )
    return GraphFootprint(
        max(e_large, 4 * e_small), max(live_large, 4 * live_small), large, multiple, True, name
    )


def provider_profile_entry(
    onnx_path: str | Path,
    input_name: str,
    input_shape: Sequence[Any],
    batch: Sequence[int],
    side: Sequence[int] | None,
    multiple: int = 1,
    budget_mb: int = DEFAULT_ACTIVATION_BUDGET_MB,
) -> dict[str, Any]:
    """The FP32 ONNX file's manifest `tensorrt` entry: the one profile onnxruntime's TensorRT provider gets.

    One profile, the derived one that covers every side (the provider's choice among several is not
    documented), so a batch above its max is split by the runtime (runtime/backends/onnxruntime.py). An
    `error` entry instead when one image does not fit: that provider then refuses to start, with the reason.
    """
    entry: dict[str, Any] = {"activation_budget_mb": int(budget_mb)}
    try:
        footprint = measure_footprint(onnx_path, input_name, input_shape, multiple)
    except Exception as error:  # a CPU export must not fail on the GPU provider's account; it refuses later
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        return {**entry, "error": f"the graph's size could not be measured for TensorRT profiles ({first})"}
    entry["footprint"] = footprint.to_json()
    try:
        profiles = derive_profiles(footprint, batch, side, int(budget_mb) << 20)
        entry["provider_profile"] = profiles[-1].to_json()
    except ExportError as error:
        entry["error"] = str(error)
    return entry
