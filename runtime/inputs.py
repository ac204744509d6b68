"""Turning what callers pass into what a graph takes, and back, with as few copies as possible.

A float32, C-contiguous, native-endian array passes through without a copy; everything else costs one.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def spatial_shape(shape: list[Any]) -> tuple[int | None, int | None]:
    """(H, W) from a manifest shape ["batch", 1, H, W]; a symbolic dim (string/null) accepts any size."""
    if len(shape) != 4:
        raise ValueError(f"manifest shape {shape} is not [batch, 1, H, W]")
    return tuple(d if isinstance(d, int) else None for d in shape[2:])  # type: ignore[return-value]


def _shape_text(hw: tuple[int | None, int | None], rank: int) -> str:
    h, w = ("H" if hw[0] is None else hw[0]), ("W" if hw[1] is None else hw[1])
    return {2: f"({h}, {w})", 3: f"(B, {h}, {w})"}.get(rank, f"(B, 1, {h}, {w})")


_FLOAT32 = np.dtype(np.float32)  # numpy's one native float32 descriptor; other float32s take the long way


def _as_numeric_array(images: Any, what: str) -> np.ndarray:
    """A plain ndarray of a numeric dtype, or ValueError."""
    if isinstance(images, np.ma.MaskedArray) and np.ma.is_masked(images):
        # np.asarray would hand the graph whatever lies under the mask
        raise ValueError(f"masked {what} array: fill the masked values first (e.g. .filled(0))")
    try:  # subclasses (np.matrix, masked arrays) become plain arrays: they would not broadcast to 4-D
        x = images if type(images) is np.ndarray else np.asarray(images)
    except (ValueError, TypeError) as error:  # ragged lists, objects that are not arrays
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ValueError(f"{what}s must be a numeric array, got {type(images).__name__} ({reason})") from None
    if x.dtype == np.bool_:
        raise ValueError(
            f"boolean {what}s are not accepted; pass floats (taken as they are) or integers "
            "(scaled to [0, 1] by their dtype's maximum)"
        )
    if x.dtype.kind not in "fiu":
        raise ValueError(f"{what}s must be a numeric array, got dtype {x.dtype}")
    return x


def _ranks_text(hw: tuple[int | None, int | None]) -> str:
    return f"(H, W), (B, H, W) or (B, 1, H, W) with (H, W) = {_shape_text(hw, 2)}"


def prepare_batch(
    images: Any,
    hw: tuple[int | None, int | None],
    what: str = "image",
    value_range: Any = None,
    scale_integers: bool = True,
) -> tuple[np.ndarray, int]:
    """(B, 1, H, W) float32 C-contiguous and the caller's rank (2, 3 or 4).

    Accepts (H, W), (B, H, W), (B, 1, H, W); floats as they are (float16/64 converted), integers scaled
    to [0, 1] by their dtype's maximum, or refused when `scale_integers` is false (a CT sinogram's
    integers have no known scale: dividing a ×100 fixed-point sinogram by 65535 gives a black image).
    Raises ValueError naming what was expected. With the artifact's input `value_range` [lo, hi], values
    further than one range-width outside it are refused, whatever the dtype (one rule for integers and
    floats, for the API and recon-run): 0..255 floats fed to a [0, 1] network, or int16 -32768 scaled to
    -1.00003, give saturated images that look plausible, not an error.
    """
    # the common case, a plain native float32 array, skips the type checks: this runs on every call,
    # right after an inference has pushed the interpreter's own code out of the CPU's caches
    plain = type(images) is np.ndarray and images.dtype is _FLOAT32
    x = images if plain else _as_numeric_array(images, what)
    given = tuple(x.shape)
    rank = x.ndim
    if rank == 2:
        x = x[None, None]
    elif rank == 3:
        x = x[:, None]
    elif rank != 4 or x.shape[1] != 1:
        raise ValueError(f"{what} array has shape {tuple(x.shape)}; expected {_ranks_text(hw)}")
    if x.shape[0] == 0:
        raise ValueError(f"empty batch: got {what} shape {given}; pass at least one {what}")
    for got, want in zip(x.shape[2:], hw, strict=True):
        if want is not None and got != want:
            raise ValueError(
                f"{what} shape {given} does not fit this artifact; expected "
                f"{_shape_text(hw, rank)} (that is {_ranks_text(hw)})"
            )
    if x.dtype.kind in "ui":
        if not scale_integers:
            expected_range = f" in its input range {list(value_range)}" if value_range is not None else ""
            raise ValueError(
                f"integer {what}s ({x.dtype}) have no known scale for this artifact; convert them to "
                f"floats in the units it was trained on{expected_range} (e.g. line integrals, not "
                "fixed-point counts)"
            )
        # one pass: cast, scale and make contiguous together (order "C": the default "K" keeps a
        # transposed input's layout, which the backends refuse)
        scale = np.float32(1.0 / np.iinfo(x.dtype).max)
        x = np.multiply(x, scale, dtype=np.float32, order="C")
    elif x.dtype != np.float32:  # float16/float64, or float32 of the other byte order
        with np.errstate(over="ignore"):  # float64 beyond float32's range: Inf, refused just below
            x = x.astype(np.float32)
    if not x.flags.c_contiguous:  # negative strides, slices, transposes
        x = np.ascontiguousarray(x)
    # min/max propagate NaN and see ±Inf without allocating a mask; the mask only when reporting
    low, high = x.min(), x.max()
    if not (math.isfinite(low) and math.isfinite(high)):
        bad = int(np.count_nonzero(~np.isfinite(x)))
        raise ValueError(
            f"{what} holds {bad} NaN/Inf value(s) (after conversion to float32); "
            "replace them before reconstruction"
        )
    if value_range is not None:
        lo, hi = float(value_range[0]), float(value_range[1])
        span = hi - lo
        if low < lo - span or high > hi + span:
            raise ValueError(
                f"{what} values span [{float(low):.6g}, {float(high):.6g}], far outside the artifact's input "
                f"range [{lo:g}, {hi:g}]; scale them into it first (integers are divided by their dtype's "
                "maximum; 8-bit floats need /255)"
            )
    return x, rank


def check_output(
    output: np.ndarray, batch: np.ndarray, what: str = "image", input_range: Any = None
) -> tuple[float, float]:
    """Refuse NaN/Inf in a graph's output: clipping would turn them into a plausible-looking image.
    Returns the output's (min, max).

    Finite inputs far outside the trained range (or FP16 graphs fed values above 65504) overflow inside
    the network; the error says so rather than returning saturated pixels.
    """
    low, high = output.min(), output.max()
    if np.isfinite(low) and np.isfinite(high):
        return float(low), float(high)
    bad = int(np.count_nonzero(~np.isfinite(output)))
    expected = f" {list(input_range)}" if input_range is not None else ""
    raise ValueError(
        f"the network produced {bad} NaN/Inf value(s) for {what}s with values in "
        f"[{float(batch.min()):.6g}, {float(batch.max()):.6g}]; inputs that far outside the range the "
        f"artifact was trained on overflow inside it, scale them to its input value range{expected}"
    )


def finish_batch(output: np.ndarray, rank: int, value_range: tuple[float, float] | None) -> np.ndarray:
    """Clip in place to `value_range` (when given) and return the caller's rank."""
    if value_range is not None:
        np.clip(output, value_range[0], value_range[1], out=output)
    if rank == 2:
        return output[0, 0]
    if rank == 3:
        return output[:, 0]
    return output


def as_float_images(data: np.ndarray) -> np.ndarray:
    """Integers scaled to [0, 1] by their dtype's maximum (as `prepare_batch` does); floats unchanged."""
    if data.dtype == np.bool_:
        raise ValueError("boolean images are not accepted")
    if data.dtype.kind in "ui":
        return np.multiply(data, np.float32(1.0 / np.iinfo(data.dtype).max), dtype=np.float32)
    return data


def check_measurement(image: Any, task: str) -> None:
    """One rule for every container: a CT artifact takes the measurement as the file stores it, or refuses.

    `image` is a read file (runtime/io's ImageFile): when its values were mapped by recon (`scaled_by`, e.g.
    a DICOM window) they are no longer the measurement in the units the artifact was trained on, and
    reconstructing them would be a guess (a near-black image, exit 0). Integer NPY/TIFF arrays are refused
    for the same reason by `prepare_batch(scale_integers=False)`.
    """
    scaled_by = getattr(image, "scaled_by", None)
    if task == "ct" and scaled_by:
        raise ValueError(
            f"{image.path}: a CT artifact takes the measurement (sinogram) in the units it was trained on, "
            f"as stored; this file's values were mapped to [0, 1] by {scaled_by}, which is a guess, not the "
            "measurement: convert it to float NPY/TIFF line integrals"
        )


def within_load_contract(load: Any) -> Any:
    """`Reconstructor.from_artifact` raises only ArtifactError / BackendError: a MemoryError while loading
    (a large graph on a small machine or under a memory limit) becomes a BackendError naming the artifact."""
    import functools

    from recon.runtime.backends.base import BackendError

    @functools.wraps(load)
    def loaded(cls: Any, path: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return load(cls, path, *args, **kwargs)
        except MemoryError:
            raise BackendError(
                f"{path}: not enough memory to load this artifact (its files, the engine's session); free "
                "memory, raise the process's limit, or use a smaller artifact"
            ) from None

    return loaded
