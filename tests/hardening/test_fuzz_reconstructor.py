"""Fuzzing `Reconstructor.run`: every input gives the reference result or a clear error, never garbage.

The oracle is independent of `recon.runtime.inputs`: it decides validity from the array itself and
computes the expected output in float64 numpy from the graphs' own weights (conv, matmul, x / max(x),
4 x). Inputs: ranks 0-5, wrong channels and H/W, empty and huge batches, every numeric dtype in both
byte orders, bool/complex/str/object/datetime, Fortran/transposed/negative-stride/strided/broadcast/
read-only/masked arrays and nested lists; values in [0, 1], wide, all-zero, constant, extreme, spiky,
NaN/Inf.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from fuzzing import SCALES, assert_clear, fuzz_settings
from hardening_artifacts import GAIN, conv3x3
from hypothesis import given, note
from hypothesis import strategies as st
from runtime_artifacts import ANGLES, CONV_B, CONV_W, CT_MATRIX, DETECTORS, H, N, W

from recon.runtime import Reconstructor

F32_MAX = float(np.finfo(np.float32).max)
F32_TINY = float(np.finfo(np.float32).tiny)


@dataclass
class Target:
    """A Reconstructor and what the oracle needs to know about its graph."""

    name: str
    input_hw: tuple[int, int]
    output_hw: tuple[int, int]
    reference: Callable[[np.ndarray], np.ndarray]  # (B, 1, h, w) float64 -> (B, 1, H, W) float64
    gain: float  # bound on |intermediate| / max|input|: beyond F32_MAX / 2 float32 may overflow
    rtol: float  # error relative to gain * max|input|
    artifact: str
    precision: str = "fp32"
    overflow_above: float = np.inf  # inputs above this may overflow inside the graph (FP16: 65504)
    input_range: tuple[float, float] | None = None  # the manifest's input value range (None: unbounded)


def _normalize(x: np.ndarray) -> np.ndarray:
    peak = x.max(axis=(1, 2, 3), keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        return x / peak


CONV16_W = CONV_W[0, 0].astype(np.float16).astype(np.float64)
TARGETS = {
    "conv": Target(
        "conv", (H, W), (H, W), lambda x: conv3x3(x, CONV_W[0, 0], CONV_B[0]),
        float(np.abs(CONV_W).sum()), 2e-6, "conv", input_range=(0.0, 1.0),
    ),
    "conv-fp16": Target(
        "conv-fp16", (H, W), (H, W), lambda x: conv3x3(x, CONV16_W, np.float16(CONV_B[0])),
        float(np.abs(CONV_W).sum()), 2e-3, "conv", "fp16", overflow_above=6e4, input_range=(0.0, 1.0),
    ),
    "conv-padded": Target(
        "conv-padded", (H, W), (H, W), lambda x: conv3x3(x, CONV_W[0, 0], CONV_B[0]),
        float(np.abs(CONV_W).sum()), 2e-6, "conv-padded", input_range=(0.0, 1.0),
    ),
    "ct": Target(
        "ct", (ANGLES, DETECTORS), (N, N),
        lambda y: (y.reshape(len(y), -1) @ CT_MATRIX.astype(np.float64)).reshape(len(y), 1, N, N),
        float(np.abs(CT_MATRIX).sum(axis=0).max()), 1e-5, "ct",
    ),
    "normalize": Target("normalize", (H, W), (H, W), _normalize, 1.0, 1e-6, "normalize"),
    "gain": Target("gain", (H, W), (H, W), lambda x: GAIN * x, GAIN, 1e-6, "gain"),
}  # fmt: skip


@pytest.fixture(scope="module")
def reconstructors(hardening_artifacts):
    opened = {
        name: Reconstructor.from_artifact(
            hardening_artifacts[t.artifact], backend="cpu", precision=t.precision, threads=1
        )
        for name, t in TARGETS.items()
    }
    yield opened
    for reconstructor in opened.values():
        reconstructor.close()


# -- the cases ---------------------------------------------------------------------------------------------
NUMERIC = ["float32", "float64", "float16", ">f4", ">f8", "uint8", "uint16", ">u2", "uint32", "uint64",
           "int8", "int16", ">i4", "int32", "int64"]  # fmt: skip
NOT_NUMERIC = ["bool", "complex64", "<U3", "object", "datetime64[s]"]
DEFECTS = [None] * 6 + ["rank", "channels", "hw", "empty", "nonfinite", "dtype", "masked"]
VALUES = ["unit", "unit", "wide", "zeros", "constant", "extreme", "spikes"]
LAYOUTS = ["c", "c", "fortran", "transposed", "reversed", "strided", "broadcast", "readonly", "list", "ma"]


@dataclass
class Case:
    given: Any  # what run() receives
    values: np.ndarray  # the same values as a plain array (what the oracle reads)
    summary: str


def _values(rng: np.random.Generator, kind: str, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    if dtype.kind in "ui":
        info, native = np.iinfo(dtype), dtype.newbyteorder("=")
        low, high = int(info.min), int(info.max)
        if kind in ("unit", "wide"):
            return np.asarray(rng.integers(low, high, shape, dtype=native, endpoint=True)).astype(dtype)
        if kind == "zeros":
            return np.zeros(shape, dtype)
        if kind == "constant":
            return np.full(shape, rng.integers(low, high, dtype=native, endpoint=True), dtype)
        if kind == "extreme":
            return np.asarray(rng.choice(np.array([low, high, 0], dtype), shape)).astype(dtype)
        spikes = np.zeros(shape, dtype)
        if spikes.size:
            spikes.flat[rng.integers(0, spikes.size, 3)] = high
        return spikes
    top = float(np.finfo(dtype).max)
    if kind == "unit":
        data = np.asarray(rng.random(shape))
    elif kind == "wide":
        data = np.asarray(rng.uniform(-1e3, 1e3, shape))
    elif kind == "zeros":
        data = np.zeros(shape)
    elif kind == "constant":
        data = np.full(shape, rng.choice([0.5, -3.0, 1e-30, 7e4, 1e20]))
    elif kind == "extreme":  # float64 beyond float32's range becomes Inf when the runtime converts it
        data = np.asarray(rng.choice(np.array([top, -top, 1e38, 1e-40, F32_TINY, 0.0, 1.0]), shape))
    else:
        data = np.zeros(shape)
        if data.size:
            data.flat[rng.integers(0, data.size, 3)] = rng.choice([1e4, 1e30, top])
    with np.errstate(over="ignore"):
        return data.astype(dtype)


def _shape(draw: st.DrawFn, defect: str | None, hw: tuple[int, int]) -> tuple[int, ...]:
    h, w = hw
    batch = draw(st.one_of(st.integers(1, 20), st.integers(100, 2000)))
    rank = draw(st.sampled_from([2, 3, 4]))
    if defect == "empty":
        return draw(st.sampled_from([(0, h, w), (0, 1, h, w)]))
    if defect == "rank":
        return draw(st.sampled_from([(), (h,), (h * w,), (1, 1, 1, h, w), (batch, 1, h, w, 1)]))
    if defect == "channels":
        return (batch, draw(st.integers(2, 4)), h, w)
    if defect == "hw":
        dh, dw = draw(st.sampled_from([(1, 0), (0, 1), (-1, 0), (0, -3), (5, 5)]))
        h, w = max(1, h + dh), max(1, w + dw)
        if (h, w) == hw:
            h += 1
    return {2: (h, w), 3: (batch, h, w), 4: (batch, 1, h, w)}[rank]


def _layout(layout: str, a: np.ndarray) -> Any:
    if a.ndim < 2 or a.size == 0 or a.dtype.kind not in "fiub":
        return a
    if layout == "fortran":
        return np.asfortranarray(a)
    if layout == "transposed":  # stored with H and W swapped
        return np.swapaxes(np.ascontiguousarray(np.swapaxes(a, -1, -2)), -1, -2)
    if layout == "reversed":  # negative strides on every axis
        index = (slice(None, None, -1),) * a.ndim
        return np.ascontiguousarray(a[index])[index]
    if layout == "strided":
        big = np.zeros((*a.shape[:-1], 2 * a.shape[-1]), a.dtype)
        big[..., ::2] = a
        return big[..., ::2]
    if layout == "broadcast":  # zero strides: one image seen B times
        return np.broadcast_to(a[:1], a.shape) if a.ndim >= 3 else a
    if layout == "readonly":
        a.setflags(write=False)
        return a
    if layout == "list" and a.size <= 4096 and a.dtype.kind != "b":
        return a.tolist()
    if layout == "ma":
        return np.ma.masked_array(a)  # no mask: plain values
    return a


@st.composite
def cases(draw: st.DrawFn, hw: tuple[int, int]) -> Case:
    defect = draw(st.sampled_from(DEFECTS))
    shape = _shape(draw, defect, hw)
    dtype = np.dtype(draw(st.sampled_from(NOT_NUMERIC if defect == "dtype" else NUMERIC)))
    if defect == "nonfinite":
        dtype = np.dtype(draw(st.sampled_from(["float32", "float64", "float16", ">f4"])))
    kind = draw(st.sampled_from(VALUES))
    layout = draw(st.sampled_from(LAYOUTS))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if dtype.kind in "fiu":
        a = _values(rng, kind, dtype, shape)
    elif dtype.kind == "b":
        a = np.asarray(rng.random(shape) > 0.5)
    elif dtype.kind == "M":
        a = np.zeros(shape, dtype)
    else:
        a = np.zeros(shape).astype(dtype)
    if defect == "nonfinite" and a.size:
        a.flat[rng.integers(0, a.size, draw(st.integers(1, 3)))] = draw(
            st.sampled_from([np.nan, np.inf, -np.inf])
        )
    if defect == "masked" and a.size:
        mask = np.zeros(shape, bool)
        mask.flat[rng.integers(0, a.size)] = True
        return Case(np.ma.masked_array(a, mask=mask), a, f"masked {dtype} {shape}")
    given_ = _layout(layout, a)
    values = np.asarray(given_)
    return Case(given_, values.copy(), f"{defect} {dtype} {shape} {kind} {layout}")


# -- the oracle --------------------------------------------------------------------------------------------
def expected_error(target: Target, x: np.ndarray, masked: bool) -> tuple[str, str] | None:
    """(reason, pattern the error message must match), or None when the input is valid."""
    if masked:
        return "masked", "masked"
    if x.dtype == np.bool_:
        return "bool", "boolean"
    if x.dtype.kind not in "fiu":
        return "dtype", "numeric array"
    if x.ndim not in (2, 3, 4) or (x.ndim == 4 and x.shape[1] != 1):
        return "rank/channels", r"expected \(H, W\), \(B, H, W\) or \(B, 1, H, W\)"
    if x.ndim > 2 and x.shape[0] == 0:
        return "empty batch", "empty batch"
    if tuple(x.shape[-2:]) != target.input_hw:
        h, w = target.input_hw
        return "H/W", rf"expected .*\({h}, {w}\)"
    if x.dtype.kind in "ui" and target.artifact == "ct":  # a sinogram's integers have no known scale
        return "integer sinogram", "have no known scale"
    if x.dtype.kind == "f":
        with np.errstate(over="ignore"):
            values = x.astype(np.float32)
            if not np.isfinite(values).all():
                return "NaN/Inf input", "NaN/Inf value"
    else:  # integers: scaled by the dtype's maximum, then the same range rule as floats
        values = as_input(x).astype(np.float32)
    if target.input_range is not None and values.size:
        lo, hi = target.input_range
        if values.min() < lo - (hi - lo) or values.max() > hi + (hi - lo):
            return "far outside the input range", r"far outside the artifact's input range"
    return None


def as_input(x: np.ndarray) -> np.ndarray:
    """(B, 1, h, w) float64 of what the graph sees: integers / dtype max, floats rounded to float32."""
    if x.dtype.kind in "ui":
        unit = x.astype(np.float64) / np.iinfo(x.dtype).max
    else:
        unit = x.astype(np.float32).astype(np.float64)
    return unit.reshape(-1, 1, *x.shape[-2:])


def check(target: Target, reconstructor: Reconstructor, case: Case) -> str:
    note(case.summary)
    x = case.values
    errors = expected_error(target, x, isinstance(case.given, np.ma.MaskedArray) and case.given.mask.any())
    reference = None
    overflow = "either"  # for valid inputs: "yes" (must refuse), "no" (must succeed) or "either"
    if errors is None:
        x4 = as_input(x)
        bound = float(np.abs(x4).max()) * target.gain
        with np.errstate(all="ignore"):
            reference = target.reference(x4)
        finite = np.isfinite(reference) & (np.abs(reference) < F32_MAX)
        if target.name == "normalize":
            peak = np.abs(x4.max(axis=(1, 2, 3)))
            subnormal = bool(((peak > 0) & (peak < F32_TINY)).any())  # may be flushed to zero
            near = bool((np.abs(reference[finite]) > F32_MAX / 2).any())
            overflow = "either" if subnormal or near else ("no" if finite.all() else "yes")
        elif bound < F32_MAX / 2 and float(np.abs(x4).max()) <= target.overflow_above:
            overflow = "no"
        elif not finite.all():
            overflow = "yes"
        if overflow == "yes":
            errors = ("overflow", "the network produced .* NaN/Inf")
    try:
        out = reconstructor.run(case.given)
    except Exception as error:  # noqa: BLE001 - the point: every exception is judged
        if errors is None and overflow == "either":
            assert_clear(error, "the network produced .* NaN/Inf")
            return "refused (overflow)"  # float32 overflowed where float64 did not
        assert errors is not None, f"valid input refused: {type(error).__name__}: {error}"
        assert_clear(error, errors[1])
        return f"refused ({errors[0]})"
    assert errors is None, f"expected an error matching {errors}, got an output"
    h, w = target.output_hw
    rank = x.ndim
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    assert out.shape == {2: (h, w), 3: (len(x), h, w), 4: (len(x), 1, h, w)}[rank]
    assert np.isfinite(out).all() and out.min() >= 0.0 and out.max() <= 1.0  # value_range [0, 1]
    expected = np.clip(reference, 0.0, 1.0).reshape(out.shape)
    atol = 1e-5 + target.rtol * max(1.0, bound)
    np.testing.assert_allclose(out, expected, rtol=0, atol=atol)
    return "reconstructed"


@pytest.mark.parametrize("scale", SCALES)
def test_run_returns_the_reference_or_a_clear_error(reconstructors, scale):
    outcomes: dict[str, int] = {}

    @fuzz_settings(scale, quick=150)
    @given(data=st.data(), name=st.sampled_from(sorted(TARGETS)))
    def fuzz(data: st.DataObject, name: str) -> None:
        target = TARGETS[name]
        case = data.draw(cases(target.input_hw))
        before = np.array(case.values, copy=True)
        outcome = check(target, reconstructors[name], case)
        # the caller's array is never written to (outputs are new arrays)
        np.testing.assert_array_equal(np.asarray(case.given), before)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1

    fuzz()
    print(f"\nReconstructor.run fuzz ({scale}): {sum(outcomes.values())} cases {outcomes}")
    assert outcomes.get("reconstructed", 0) > len(outcomes)  # valid cases are not starved


def test_an_overflow_inside_the_graph_is_an_error_not_a_white_image(reconstructors):
    with pytest.raises(ValueError, match=r"produced 256 NaN/Inf .* scale them to its input value range"):
        reconstructors["gain"].run(np.full((H, W), 1e38, np.float32))


def test_an_all_zero_image_through_a_normalizing_graph_is_an_error_not_a_black_image(reconstructors):
    images = np.ones((3, H, W), np.uint8)
    images[1] = 0  # x / max(x) = 0 / 0
    with pytest.raises(ValueError, match=r"produced 256 NaN/Inf value\(s\) for images with values in \[0"):
        reconstructors["normalize"].run(images)
    np.testing.assert_array_equal(reconstructors["normalize"].run(images[[0, 2]]), np.ones((2, H, W)))


def test_transposed_integer_images_are_made_contiguous(reconstructors):
    stored = np.random.default_rng(0).integers(0, 255, (3, W, H), dtype=np.uint8)
    images = stored.transpose(0, 2, 1)  # (3, H, W), not C-contiguous
    expected = np.clip(conv3x3(images[:, None] / 255.0, CONV_W[0, 0], CONV_B[0]), 0, 1)[:, 0]
    np.testing.assert_allclose(reconstructors["conv"].run(images), expected, atol=1e-5)


@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
def test_masked_arrays_and_ragged_lists_are_refused_clearly(reconstructors):
    masked = np.ma.masked_array(np.zeros((H, W)), mask=np.eye(H, W, dtype=bool))
    with pytest.raises(ValueError, match="masked image array: fill the masked values"):
        reconstructors["conv"].run(masked)
    with pytest.raises(ValueError, match="images must be a numeric array, got list"):
        reconstructors["conv"].run([[0.0] * W, [0.0]])
    assert reconstructors["conv"].run(np.matrix(np.zeros((H, W)))).shape == (H, W)
