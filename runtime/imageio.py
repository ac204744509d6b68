"""Reading and writing the files recon-run takes: PNG, TIFF, NPY, DICOM. Outputs keep the input's format.

What `read_image` hands the Reconstructor:
- PNG 8/16-bit, TIFF and NPY integers: the stored integers (the Reconstructor scales them by dtype max);
  TIFF/NPY floats as they are (CT sinograms are NPY/TIFF, (n_angles, n_detectors)).
- DICOM: physical values (stored · RescaleSlope + RescaleIntercept) mapped to [0, 1] over a window,
  by default the physical range the stored bits can hold; the output goes back through the same window.
Writes are atomic (temp file beside the target, then rename).
"""

from __future__ import annotations

import copy
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
    """The format by suffix; DICOM files without a suffix by their "DICM" preamble; None otherwise."""
    path = Path(path)
    fmt = SUFFIXES.get(path.suffix.lower())
    if fmt is None and path.suffix == "" and path.is_file():
        with open(path, "rb") as handle:
            head = handle.read(132)
        if len(head) == 132 and head[128:] == b"DICM":
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


# -- DICOM (pydicom, optional) -----------------------------------------------------------------------------
def _import_pydicom() -> Any:
    try:
        import pydicom
    except ImportError:
        raise ImportError("reading DICOM needs pydicom: `pip install recon[dicom]`") from None
    return pydicom


def _stored_range(ds: Any) -> tuple[int, int]:
    bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 16)))
    if int(ds.get("PixelRepresentation", 0)) == 1:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def _ds_text(value: float) -> str:
    """A DICOM decimal string (at most 16 characters) as close to `value` as fits."""
    for digits in range(12, 0, -1):
        text = f"{value:.{digits}g}"
        if len(text) <= 16:
            return text
    return "0"


def _pixels(ds: Any, path: Path) -> np.ndarray:
    """`ds.pixel_array`, with compressed transfer syntaxes refused by name when no decoder is installed."""
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is None or not syntax.is_compressed:
        return ds.pixel_array
    try:
        from pydicom.pixels import get_decoder  # pydicom >= 3
    except ImportError:
        return ds.pixel_array
    try:
        decoder = get_decoder(syntax)
    except (NotImplementedError, ValueError):
        decoder = None
    if decoder is None or not decoder.is_available:
        needs = "; ".join(decoder.missing_dependencies) if decoder is not None else "none exists in pydicom"
        raise ImageIOError(
            f"{path}: compressed DICOM ({syntax.name!r}) and no decoder for it is installed ({needs}); "
            "install one, or convert the file to an uncompressed transfer syntax"
        )
    try:
        return ds.pixel_array
    except Exception as error:  # pydicom lists each plugin's failure on its own line: keep one line
        reason = " ".join(str(error).split())[:300]
        raise ImageIOError(
            f"{path}: compressed DICOM ({syntax.name}) could not be decoded ({reason})"
        ) from None


def _read_dicom(path: Path, window: tuple[float, float] | None) -> ImageFile:
    pydicom = _import_pydicom()
    ds = pydicom.dcmread(path)
    if "PixelData" not in ds:
        raise ImageIOError(f"{path}: DICOM file without pixel data")
    if int(ds.get("NumberOfFrames", 1) or 1) > 1 or int(ds.get("SamplesPerPixel", 1)) != 1:
        raise ImageIOError(
            f"{path}: multi-frame or colour DICOM; recon-run takes single-frame grayscale slices"
        )
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):  # PALETTE COLOR has one sample of indices
        raise ImageIOError(
            f"{path}: DICOM photometric interpretation {photometric!r}; recon-run takes grayscale "
            "(MONOCHROME1/2) slices"
        )
    # absent or empty tags mean slope 1, intercept 0; a present zero slope or a NaN is damage, not a
    # default (a zero slope would make every pixel the same physical value)
    slope = ds.get("RescaleSlope")
    intercept = ds.get("RescaleIntercept")
    slope = 1.0 if slope is None or str(slope).strip() == "" else float(slope)
    intercept = 0.0 if intercept is None or str(intercept).strip() == "" else float(intercept)
    if not (np.isfinite(slope) and np.isfinite(intercept) and slope != 0):
        raise ImageIOError(
            f"{path}: DICOM RescaleSlope {slope} / RescaleIntercept {intercept} cannot map stored to "
            "physical values (need a finite, non-zero slope and a finite intercept)"
        )
    physical = _pixels(ds, path).astype(np.float64) * slope + intercept
    if window is None:
        low, high = (intercept + slope * v for v in _stored_range(ds))
        window = (min(low, high), max(low, high))
    low, high = float(window[0]), float(window[1])
    if not high > low:
        raise ImageIOError(f"{path}: DICOM window {window} is empty; give LOW < HIGH")
    data = ((physical - low) / (high - low)).astype(np.float32)
    return ImageFile(path, "dicom", data, {"dataset": ds, "window": (low, high)})


def _write_dicom(path: Path, image: np.ndarray, like: ImageFile) -> None:
    pydicom = _import_pydicom()
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    if image.ndim != 2:
        raise ImageIOError(f"{like.path}: DICOM output is one 2-D slice, got shape {image.shape}")
    source = like.meta["dataset"]
    low, high = like.meta["window"]
    ds = copy.deepcopy(source)
    # a new instance derived from the source; slices of one source series share one new series
    ds.SOPInstanceUID = generate_uid()
    series = str(source.get("SeriesInstanceUID", source.get("StudyInstanceUID", "")))
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[series, "recon-derived"])
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.DerivationDescription = "reconstructed by recon"
    # uint16 over the same physical window: physical = stored * slope + intercept
    ds.Rows, ds.Columns = int(image.shape[0]), int(image.shape[1])
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    slope, intercept = _ds_text((high - low) / 65535), _ds_text(low)
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    for stale in ("SmallestImagePixelValue", "LargestImagePixelValue", "PixelPaddingValue"):
        if stale in ds:
            del ds[stale]
    # quantize against the slope/intercept as written (DS text), so readers recover the physical values
    physical = low + np.clip(image.astype(np.float64), 0.0, 1.0) * (high - low)
    stored = np.clip(np.rint((physical - float(intercept)) / float(slope)), 0, 65535).astype("<u2")
    ds.PixelData = stored.tobytes()
    ds["PixelData"].VR = "OW"
    ds.file_meta = copy.deepcopy(source.file_meta) if hasattr(source, "file_meta") else pydicom.Dataset()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.MediaStorageSOPClassUID = ds.get("SOPClassUID", "1.2.840.10008.5.1.4.1.1.7")
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian  # always uncompressed out
    ds.save_as(path, enforce_file_format=True)
