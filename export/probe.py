"""What recon finds out about a network it did not write, by running it (never by trusting its class).

The network is a plain callable `(B, C, H, W) float32 → array` (a torch module in eval mode or an
onnxruntime session: `probe_network` does not care), so `--network`, `export_network(module)` and `--onnx`
are probed by the same code. Measured, in order:

1. channels: one in and one out, and output H × W equal to the input's (an image-to-image network);
2. the sizes it takes: sides m·q for odd q, for m = 1, 2, 4, …; the smallest m that works is the multiple it
   needs (recon then pads to it inside the graph, as for its own UNets). A network that takes only one size
   (learned positions, a Linear layer over the pixels) is "not fully convolutional": tiled at that size;
3. batch independence and determinism: each image run alone must give what it gives inside a batch
   (BatchNorm without running statistics, anything mixing the batch: refused; recon batches requests);
4. receptive field: the extent of the output an impulse changes, on the network's positive twin (exact,
   see impulse_field) or on random images. An output that changes up to the border of a 512² image is a
   global field (attention, instance normalisation, global pooling): recorded as null, tiles overlap by a
   quarter, and the report says tiles will differ from the whole image;
5. value range: the outputs on in-distribution inputs (the task's own network inputs).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from recon.export.errors import ExportError

Run = Callable[[np.ndarray], np.ndarray]
MULTIPLES = (1, 2, 4, 8, 16, 32, 64, 128)
BATCH_ATOL = 1e-4  # oneDNN picks other kernels for other batch sizes: ~1e-6 apart, far below this
FIELD_SIDES = (128, 512)  # impulse-probe sides: the second when the field reaches the first's border
FIELD_THRESHOLD = 1e-5  # relative to the largest change: Winograd tiles leak rounding noise around the field


@dataclass
class NetworkProbe:
    """The facts `probe_network` measured; `to_json` is the manifest's model.probe entry."""

    channels: int = 1
    fully_convolutional: bool = True
    multiple_of: int = 1
    fixed_size: int | None = None  # the one side a non fully convolutional network takes
    receptive_field: int | None = None  # px; None: global (or not measured: fixed size)
    field_probe_side: int | None = None
    field_method: str | None = None
    batch_independent: bool = True
    max_batch_difference: float = 0.0
    output_range: list[float] = field(default_factory=list)  # on in-distribution inputs
    input_range: list[float] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else type(error).__name__


def _try(run: Run, batch: np.ndarray) -> tuple[np.ndarray | None, str]:
    try:
        return np.asarray(run(batch)), ""
    except Exception as error:  # any failure of the user's network at this size is a fact, not a crash
        return None, _first_line(error)


def _odd_side(multiple: int, at_least: int) -> int:
    q = max(1, -(-at_least // multiple))
    return multiple * (q if q % 2 else q + 1)


def _takes(run: Run, height: int, width: int, rng: np.random.Generator) -> tuple[bool, str]:
    batch = rng.random((2, 1, height, width), dtype=np.float32)
    out, why = _try(run, batch)
    if out is None:
        return False, why
    if out.shape != batch.shape:
        return False, f"output {tuple(out.shape)} for input {tuple(batch.shape)}"
    return True, ""


def check_channels(run: Run, side: int, rng: np.random.Generator, declared: int | None) -> np.ndarray:
    """One channel in, one out, same H × W; ExportError naming what the network does instead."""
    if declared is not None and declared != 1:
        raise ExportError(
            f"the network takes {declared} input channels; recon's tasks are single-channel (one image "
            "in, one image out): build it with in_channels=1 / out_channels=1"
        )
    batch = rng.random((2, 1, side, side), dtype=np.float32)
    out, why = _try(run, batch)
    if out is None:
        raise ExportError(
            f"the network fails on a (2, 1, {side}, {side}) float32 input: {why}; a recon network maps "
            "(B, 1, H, W) images to (B, 1, H, W) images"
        )
    if out.ndim != 4 or out.shape[0] != 2:
        raise ExportError(
            f"the network returns shape {tuple(out.shape)} for (2, 1, {side}, {side}); expected "
            f"(2, 1, {side}, {side}) (one image per input image)"
        )
    if out.shape[1] != 1:
        raise ExportError(
            f"the network returns {out.shape[1]} channels; recon's tasks need exactly one output channel "
            "(build it with out_channels=1)"
        )
    if out.shape[2:] != batch.shape[2:]:
        raise ExportError(
            f"the network returns {out.shape[2]}×{out.shape[3]} for a {side}×{side} input; recon needs an "
            "image-to-image network (output the size of its input)"
        )
    return out


def find_sizes(run: Run, image_size: int, rng: np.random.Generator) -> tuple[bool, int, int | None, str]:
    """(fully convolutional, multiple, fixed size or None, why a fixed network refused other sizes)."""
    reason = ""
    for multiple in MULTIPLES:
        height = _odd_side(multiple, 40)
        width = _odd_side(multiple, height + 1)
        ok, why = _takes(run, height, width, rng)
        if ok:
            return True, multiple, None, ""
        reason = reason or why
    return False, 1, image_size, reason


def check_batch(run: Run, inputs: np.ndarray) -> float:
    """The largest difference between a batch's outputs and each image's output run alone (and a rerun)."""
    together = np.asarray(run(inputs))
    again = np.asarray(run(inputs))
    alone = np.concatenate([np.asarray(run(inputs[i : i + 1])) for i in range(len(inputs))])
    return float(max(np.max(np.abs(together - alone)), np.max(np.abs(together - again))))


OFFSETS = range(8)  # impulse positions: a stride-8 network's field depends on the pixel's phase


def _reach(changed: np.ndarray, row: int, col: int) -> tuple[int, bool]:
    """(farthest changed pixel from (row, col) along either axis, whether the change reaches the border)."""
    rows, cols = np.nonzero(changed)
    if rows.size == 0:
        return 0, False
    side = changed.shape[0]
    touches = rows.min() == 0 or cols.min() == 0 or rows.max() == side - 1 or cols.max() == side - 1
    reach = max(row - rows.min(), rows.max() - row, col - cols.min(), cols.max() - col)
    return int(reach), bool(touches)


def impulse_field(run: Run, side: int, seed: int, *, positive: bool = False) -> tuple[int, bool]:
    """(receptive field: 2·reach + 1 of the output an impulse changes, whether the change reaches the border).

    `positive`: `run` is the network's positive twin (`network_source.positive_twin`: weights made
    positive, biases and statistics zeroed, float64): on a zero image every output an impulse can reach
    becomes > 0 and nothing else moves, so the field is exact — no ReLU that happens to be off and no
    max-pool that picks another pixel can hide a path. Otherwise (an ONNX graph): random images, both signs,
    a change larger than FIELD_THRESHOLD of the largest one; a lower bound on nonlinear networks.
    """
    centre = side // 2
    reach, touches = 0, False
    if positive:
        batch = np.zeros((len(OFFSETS), 1, side, side), dtype=np.float64)
        for index, offset in enumerate(OFFSETS):
            batch[index, 0, centre + offset, centre + offset] = 1.0
        out = np.asarray(run(batch))
        for index, offset in enumerate(OFFSETS):
            r, t = _reach(out[index, 0] != 0, centre + offset, centre + offset)
            reach, touches = max(reach, r), touches or t
        return 2 * reach + 1, touches
    rng = np.random.default_rng(seed)
    changed = np.zeros((side, side), dtype=bool)
    for sign in (1.0, -1.0):  # two images, two signs: a ReLU off for one is on for the other
        base = rng.random((1, 1, side, side), dtype=np.float32)
        bumped = base.copy()
        bumped[0, 0, centre, centre] += sign * 0.5
        out = np.asarray(run(np.concatenate([base, bumped])), dtype=np.float64)
        delta = np.abs(out[1, 0] - out[0, 0])
        if delta.max() > 0:
            changed |= delta > FIELD_THRESHOLD * delta.max()
    reach, touches = _reach(changed, centre, centre)
    return 2 * reach + 1, touches


def measure_field(run: Run, multiple: int, seed: int, *, positive: bool = False) -> tuple[int | None, int]:
    """(receptive field in px, or None for a global one; the side it was measured at)."""
    side = FIELD_SIDES[0]
    for wanted in FIELD_SIDES:
        side = -(-wanted // multiple) * multiple if multiple > 1 else wanted + 1  # no padding inside
        extent, touches = impulse_field(run, side, seed, positive=positive)
        if not touches:
            return extent, side
    return None, side


def probe_network(
    run: Run,
    *,
    image_size: int,
    network_inputs: np.ndarray,
    declared_channels: int | None = None,
    padded: Callable[[int], Run] | None = None,
    positive_twin: Callable[[int], Run] | None = None,
    seed: int = 0,
) -> NetworkProbe:
    """Measure `run` (see the module docstring). `network_inputs`: in-distribution (N, 1, S, S) inputs of the
    network (deblur: blurred images; CT: FBP images). `padded(multiple)` returns the network wrapped to pad
    to that multiple (what will be exported), used for the checks after the size probe;
    `positive_twin(multiple)` the same for the network's positive twin (exact field, see impulse_field)."""
    rng = np.random.default_rng(seed)
    probe = NetworkProbe()
    if declared_channels is not None and declared_channels != 1:
        check_channels(run, image_size, rng, declared_channels)
    fully, multiple, fixed, why = find_sizes(run, image_size, rng)
    probe.fully_convolutional, probe.multiple_of, probe.fixed_size = fully, multiple, fixed
    side = fixed if fixed is not None else _odd_side(multiple, 32)
    check_channels(run, side, rng, declared_channels)
    if not fully:
        probe.warnings.append(
            f"takes only {fixed}×{fixed} images (other sizes: {why}); it is run on tiles of that size"
        )
    wrapped = padded(multiple) if (padded is not None and multiple > 1) else run
    if not fully and network_inputs.shape[-1] != fixed:
        raise ExportError(
            f"the network takes only {fixed}×{fixed} images but the task's images are "
            f"{network_inputs.shape[-2]}×{network_inputs.shape[-1]}; set --image-size {fixed}"
        )
    probe.max_batch_difference = check_batch(wrapped, network_inputs[:3])
    if probe.max_batch_difference > BATCH_ATOL:
        probe.batch_independent = False
        raise ExportError(
            f"the network's output for one image changes with the other images in its batch (or between two "
            f"runs): max difference {probe.max_batch_difference:.3g}; BatchNorm without running statistics "
            "(track_running_stats=False), dropout left active, or a layer that mixes the batch. recon "
            "batches requests, so this network would give each image a result that depends on its "
            "neighbours: refused"
        )
    if fully:
        twin = positive_twin(multiple) if positive_twin is not None else None
        probe.receptive_field, probe.field_probe_side = measure_field(
            twin or wrapped, multiple, seed, positive=twin is not None
        )
        probe.field_method = "positive twin, float64" if twin is not None else "random images (lower bound)"
        if probe.receptive_field is None:
            probe.warnings.append(
                f"the output changes across the whole {probe.field_probe_side}² image when one pixel "
                "changes (a global receptive field: instance/group normalisation, global pooling or "
                "attention): large images are taken whole up to the profile's max, tiles beyond that "
                "will not match the whole image exactly"
            )
    outputs = np.asarray(wrapped(network_inputs))
    probe.input_range = [float(network_inputs.min()), float(network_inputs.max())]
    probe.output_range = [float(outputs.min()), float(outputs.max())]
    if not np.all(np.isfinite(outputs)):
        raise ExportError("the network returns NaN or infinity on in-distribution inputs: refused")
    low, high = probe.output_range
    if low < -0.5 or high > 1.5:
        probe.warnings.append(
            f"outputs on in-distribution inputs span [{low:.3g}, {high:.3g}], the deployed images are "
            "clipped to [0, 1] (untrained, or trained on another scale)"
        )
    return probe
