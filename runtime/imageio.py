"""Reading and writing the files recon-run takes: PNG, TIFF, NPY, DICOM. Outputs keep the input's format.

What `read_image` hands the Reconstructor:
- PNG 8/16-bit, TIFF and NPY integers: the stored integers (the Reconstructor scales them by dtype max);
  TIFF/NPY floats as they are (CT sinograms are NPY/TIFF, (n_angles, n_detectors)).
- DICOM (runtime/dicom.py): physical values (stored · RescaleSlope + RescaleIntercept) mapped to [0, 1]
  through a window (given, else the header's WindowCenter/Width, else the stored bits' range), clipped; the
  output goes back through the same window into the source's stored representation.
Writes are atomic (temp file beside the target, then rename).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from recon.runtime.files import temp_beside

SUFFIXES = {".png": "png", ".tif": "tiff", ".tiff": "tiff", ".npy": "npy", ".dcm": "dicom", ".dicom": "dicom"}


class ImageIOError(ValueError):
    """A file cannot be read or written as an image; the message names the file and why."""


@dataclass
class ImageFile:
    path: Path
    format: str  # "png" | "tiff" | "npy" | "dicom"
    data: np.ndarray  # (H, W) or (N, H, W)
    meta: dict[str, Any] = field(default_factory=dict)


def detect_format(path: str | os.PathLike) -> str | None:
    """The format by suffix; otherwise DICOM by its "DICM" preamble; None when neither.

    Any unknown suffix is sniffed: files named by UID (`1.2.840.113619.2.55.3.123`) have the pathlib
    suffix ".123".
    """
    path = Path(path)
    fmt = SUFFIXES.get(path.suffix.lower())
    if fmt is None and path.is_file():
        from recon.runtime.dicom import is_dicom_file

        if is_dicom_file(path):
            return "dicom"
    return fmt


def read_image(path: str | os.PathLike, dicom_window: tuple[float, float] | None = None) -> ImageFile:
    path = Path(path)
    fmt = detect_format(path)
    if fmt is None:
        raise ImageIOError(
            f"{path}: unknown image format; recon reads {', '.join(sorted(set(SUFFIXES)))} files"
        )
    if not path.is_file():
        raise ImageIOError(f"{path}: no such file")
    reader = {"png": _read_png, "tiff": _read_tiff, "npy": _read_npy}.get(fmt)
    try:
        image = _read_dicom(path, dicom_window) if fmt == "dicom" else reader(path)  # type: ignore[misc]
    except ImageIOError:
        raise
    except ImportError as error:
        raise ImageIOError(f"{path}: {error}") from None
    except Exception as error:  # each library raises its own types for damaged files
        reason = (str(error).strip().splitlines() or [""])[0]  # one line, whatever the library says
        raise ImageIOError(
            f"{path}: not a readable {fmt.upper()} file ({type(error).__name__}: {reason})"
        ) from None
    if image.data.ndim not in (2, 3) or 0 in image.data.shape:
        raise ImageIOError(f"{path}: expected a 2-D image (or a stack of them), got shape {image.data.shape}")
    return image


def write_image(path: str | os.PathLike, image: np.ndarray, like: ImageFile) -> Path:
    """Write `image` (float, nominally [0, 1]) in `like`'s format and bit depth, atomically."""
    path = Path(path)
    writer: Callable[[Path, np.ndarray, ImageFile], None] = {
        "png": _write_png,
        "tiff": _write_tiff,
        "npy": _write_npy,
        "dicom": _write_dicom,
    }[like.format]
    fd, tmp = temp_beside(path)  # a plain file's permissions, not mkstemp's 0600
    os.close(fd)
    try:
        writer(Path(tmp), np.asarray(image), like)
        os.replace(tmp, path)
    except BaseException as error:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(error, (ImageIOError, OSError)) or not isinstance(error, Exception):
            raise
        # e.g. pydicom meeting an element of a damaged input header only when it writes the copy
        reason = (str(error).strip().splitlines() or [""])[0]
        raise ImageIOError(
            f"{path}: cannot write the result for {like.path} as {like.format.upper()} "
            f"({type(error).__name__}: {reason}); the input's header may be damaged"
        ) from None
    return path


def _to_unsigned(image: np.ndarray, dtype: type) -> np.ndarray:
    top = np.iinfo(dtype).max
    return np.rint(np.clip(image, 0.0, 1.0) * top).astype(dtype)


# -- PNG (Pillow) ------------------------------------------------------------------------------------------
def _read_png(path: Path) -> ImageFile:
    from PIL import Image

    with Image.open(path) as im:
        if im.format != "PNG":
            raise ImageIOError(f"{path}: the content is {im.format}, not PNG")
        mode = im.mode
        if mode not in ("L", "I;16", "I;16B", "I", "F"):
            raise ImageIOError(
                f"{path}: PNG mode {mode} (colour, palette or alpha); recon reconstructs "
                "single-channel images, convert it to 8- or 16-bit grayscale first"
            )
        data = np.array(im)
    if mode == "I":  # Pillow opens some 16-bit files as 32-bit ints
        if data.min() < 0 or data.max() > 65535:
            raise ImageIOError(f"{path}: 32-bit integer PNG values outside 0..65535")
        data = data.astype(np.uint16)
    bits = 8 if data.dtype == np.uint8 else 16
    return ImageFile(path, "png", data, {"bits": bits})


def _write_png(path: Path, image: np.ndarray, like: ImageFile) -> None:
    from PIL import Image

    if image.ndim != 2:
        raise ImageIOError(f"{like.path}: PNG holds one 2-D image, got shape {image.shape}")
    data = _to_unsigned(image, np.uint8 if like.meta.get("bits") == 8 else np.uint16)
    Image.fromarray(data).save(path, format="PNG")


# -- TIFF (tifffile) ---------------------------------------------------------------------------------------
def _read_tiff(path: Path) -> ImageFile:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        if "S" in series.axes:
            raise ImageIOError(f"{path}: colour TIFF (axes {series.axes}); convert it to one channel first")
        data = series.asarray()
    if data.ndim == 3 and data.shape[0] == 1:
        data = data[0]
    return ImageFile(path, "tiff", data, {"dtype": str(data.dtype)})


def _write_tiff(path: Path, image: np.ndarray, like: ImageFile) -> None:
    import tifffile

    dtype = like.meta.get("dtype")
    data = (
        _to_unsigned(image, np.dtype(dtype).type)
        if dtype in ("uint8", "uint16")
        else image.astype(np.float32)
    )
    # explicit: tifffile stores a (3, H, W) or (4, H, W) stack as planar RGB(A) by default
    tifffile.imwrite(path, data, photometric="minisblack")


# -- NPY ---------------------------------------------------------------------------------------------------
def _read_npy(path: Path) -> ImageFile:
    data = np.load(path, allow_pickle=False)  # never unpickle what a scanner hands us
    if not isinstance(data, np.ndarray):
        raise ImageIOError(f"{path}: holds no array")
    return ImageFile(path, "npy", data, {"dtype": str(data.dtype)})


def _write_npy(path: Path, image: np.ndarray, like: ImageFile) -> None:
    with open(path, "wb") as handle:
        np.save(handle, image.astype(np.float32, copy=False), allow_pickle=False)


# -- DICOM: runtime/dicom.py (pydicom, the [dicom] extra, imported there only when needed) -------------------
def _read_dicom(path: Path, window: tuple[float, float] | None) -> ImageFile:
    from recon.runtime.dicom import read_dicom

    return read_dicom(path, window)


def _write_dicom(path: Path, image: np.ndarray, like: ImageFile) -> None:
    from recon.runtime.dicom import write_dicom

    write_dicom(path, image, like)
