"""The contract every file format implements (detect, header limits, decode, write), and what they share.

One class per format (png_format, tiff_format, npy_format, dicom_format), as MONAI's `ImageReader` does:
adding a format is one new class listed in `imageio.FORMATS`, not an entry in several parallel tables.

The rule every format follows (docs/reliability.md, rule 1): a pixel means what its header says, or the file
is refused. A header field that changes how stored values scale or display is either interpreted or refused
with one line naming the field; a display polarity that the output can carry (TIFF MINISWHITE, DICOM
MONOCHROME1) is written back as read; a colour map (palette) is refused in every format.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from recon.runtime import limits
from recon.runtime.io.image_file import ImageFile, ImageIOError


@dataclass(frozen=True)
class ReadOptions:
    """What a caller may say about inputs that their headers cannot (today: the DICOM window)."""

    dicom_window: tuple[float, float] | None = None


class ImageFormat:
    """One file format. Subclasses set `name` and `suffixes` and implement `read` and `write`."""

    name: str = ""
    suffixes: tuple[str, ...] = ()
    # True: `read` gets the path only (the library opens it itself, e.g. pydicom); else an open handle
    reads_path = False

    def sniff(self, head: bytes) -> bool:
        """True when the first bytes of a file of unknown suffix are this format's (default: never)."""
        return False

    def read(self, path: Path, handle: BinaryIO | None, options: ReadOptions) -> ImageFile:
        raise NotImplementedError

    def write(self, path: Path, image: np.ndarray, like: ImageFile) -> None:
        raise NotImplementedError


def check_declared(path: Path, fmt: str, images: int, height: int, width: int, itemsize: int) -> None:
    """Refuse, before decoding, a file whose header declares more than `recon.runtime.limits` allow."""
    pixels = height * width
    problems = [
        (max(height, width) > limits.MAX_IMAGE_SIDE, f"a side above {limits.MAX_IMAGE_SIDE} px"),
        (pixels > limits.MAX_IMAGE_PIXELS, f"more than {limits.MAX_IMAGE_PIXELS} pixels per image"),
        (images > limits.MAX_IMAGES_PER_FILE, f"more than {limits.MAX_IMAGES_PER_FILE} images"),
        (pixels * images > limits.MAX_PIXELS_PER_FILE, f"more than {limits.MAX_PIXELS_PER_FILE} pixels"),
        (
            pixels * images * itemsize > limits.MAX_DECODED_BYTES_PER_FILE,
            f"more than {limits.MAX_DECODED_BYTES_PER_FILE} bytes of pixels",
        ),
    ]
    too_much = [what for bad, what in problems if bad]
    if too_much:
        raise ImageIOError(
            f"{path}: {fmt} declares {images} image(s) of {height}×{width} ({too_much[0]}; "
            "recon.runtime.limits); not decoded"
        )


# Pixels converted per step: float64 scaling without a float64 copy of a whole 8192² image (512 MB).
_CHUNK = 1 << 20


def float64_limits(dtype: np.dtype) -> tuple[float, float]:
    """The integer type's range as float64 values that convert back without wrapping.

    float64(2⁶³ − 1) rounds up to 2⁶³, which `astype(int64)` wraps to −2⁶³: step below where needed.
    """
    info = np.iinfo(dtype)
    low, high = float(info.min), float(info.max)
    if int(high) > info.max:
        high = float(np.nextafter(high, 0.0))
    return low, high


def to_integers(
    values: np.ndarray,
    scale: float,
    offset: float,
    dtype: np.dtype | type,
    value_range: tuple[float, float] | None = None,
) -> np.ndarray:
    """rint(values · scale + offset), clipped to `value_range` (default: the dtype's range), as `dtype`.

    Computed in float64, chunk by chunk, then clipped and cast: float32 rounds 2³¹ − 1 up to 2³¹, and
    a cast of an out-of-range float wraps (the brightest pixel written as the darkest).
    """
    dtype = np.dtype(dtype)
    low, high = float64_limits(dtype)
    if value_range is not None:
        low, high = max(low, float(value_range[0])), min(high, float(value_range[1]))
    flat = np.ascontiguousarray(values).reshape(-1)
    out = np.empty(flat.shape, dtype)
    for start in range(0, flat.size, _CHUNK):
        part = flat[start : start + _CHUNK].astype(np.float64)
        part *= scale
        part += offset
        np.clip(np.rint(part, out=part), low, high, out=part)
        out[start : start + _CHUNK] = part
    return out.reshape(np.shape(values))


def unit_to_dtype(image: np.ndarray, dtype: np.dtype | type) -> np.ndarray:
    """The inverse of the runtime's integer scaling (`inputs.prepare_batch`: stored / dtype maximum)."""
    return to_integers(image, float(np.iinfo(np.dtype(dtype)).max), 0.0, dtype)


def refuse_palette(path: Path, fmt: str, field: str) -> None:
    raise ImageIOError(
        f"{path}: {fmt} {field} (a colour map: stored values are indices, not intensities); recon "
        "reconstructs grayscale intensities, convert it to 8- or 16-bit grayscale first"
    )
