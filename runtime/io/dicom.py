"""DICOM slices in and derived DICOM slices out: the one DICOM reader of recon (runtime and training).

The convention, one for every caller:
- physical values = stored · RescaleSlope + RescaleIntercept (Hounsfield units for CT);
- mapped to [0, 1] through a window [low, high] and clipped: the caller's window if given, else the header's
  first WindowCenter/WindowWidth (low = C − W/2, high = C + W/2; VOILUTFunction is taken as LINEAR), else the
  physical range the stored bits can hold;
- an output goes back through the same window into the source's stored representation (BitsAllocated,
  BitsStored, PixelRepresentation, RescaleSlope/Intercept, PhotometricInterpretation), clipped to the stored
  range, written as Explicit VR Little Endian whatever the input's transfer syntax. Physical values do not
  depend on the display polarity, so MONOCHROME1 stays MONOCHROME1 and displays as the source does.

Memory is bounded before any pixel is decoded: the header is read first (`stop_before_pixels`, large elements
deferred; deflated files inflated only up to what the header declares) and Rows × Columns × frames × bytes is
checked against `recon.runtime.limits`.

Writing derived slices (new series per run, what is stored outside the window) is runtime/io/dicom_derived.py.
pydicom (the `[dicom]` extra) is imported only when a DICOM file is read or written.
"""

from __future__ import annotations

import copy
import io
import math
import os
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from recon.runtime import limits
from recon.runtime.io.image_file import ImageFile, ImageIOError
from recon.runtime.io.image_format import refuse_palette, to_integers

# Room for everything in a file besides its pixels (header, overlays, private tags), and the most of a
# deflated stream inflated before the header has been checked.
HEADER_SLACK = 64 * 1024 * 1024
HEADER_PREFIX = 4 * 1024 * 1024
# Elements larger than this are not loaded while the header is checked (pydicom's `defer_size`).
_DEFER = 1024 * 1024


def is_dicom_file(path: str | os.PathLike) -> bool:
    """True when the file carries the DICOM Part 10 preamble ("DICM" at byte 128); needs no pydicom."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def import_pydicom() -> Any:
    try:
        import pydicom
    except ImportError:
        raise ImportError("reading DICOM needs pydicom: `pip install recon[dicom]`") from None
    return pydicom


# -- the convention ----------------------------------------------------------------------------------------
def stored_range(ds: Any) -> tuple[int, int]:
    """The integers BitsStored can hold, signed when PixelRepresentation is 1."""
    bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 16)) or 16)
    if int(ds.get("PixelRepresentation", 0) or 0) == 1:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def rescale(ds: Any, path: Path) -> tuple[float, float]:
    """(slope, intercept); absent or empty tags mean 1 and 0, a zero or non-finite slope is damage."""
    slope, intercept = _number(ds.get("RescaleSlope")), _number(ds.get("RescaleIntercept"))
    slope = 1.0 if slope is None else slope
    intercept = 0.0 if intercept is None else intercept
    if not (math.isfinite(slope) and math.isfinite(intercept) and slope != 0):
        raise ImageIOError(
            f"{path}: DICOM RescaleSlope {slope} / RescaleIntercept {intercept} cannot map stored to "
            "physical values (need a finite, non-zero slope and a finite intercept)"
        )
    return slope, intercept


def header_window(ds: Any, path: Path = Path("?")) -> tuple[float, float] | None:
    """(low, high) from the first WindowCenter/WindowWidth, by VOILUTFunction; None when absent or unusable.

    PS3.3 C.11.2.1.2.1 (LINEAR, the default): the ramp runs from c − 0.5 − (w − 1)/2 to c − 0.5 + (w − 1)/2;
    C.11.2.1.3.2 (LINEAR_EXACT): from c − w/2 to c + w/2 (pydicom's `apply_voi_lut` computes the same,
    pixels/processing.py apply_windowing). SIGMOID is not a linear window: refused, naming the field.
    """
    center, width = _number(ds.get("WindowCenter")), _number(ds.get("WindowWidth"))
    if center is None or width is None or not (math.isfinite(center) and math.isfinite(width)):
        return None
    function = str(ds.get("VOILUTFunction", "") or "LINEAR").strip().upper()
    if function == "LINEAR_EXACT":
        return (center - width / 2, center + width / 2) if width > 0 else None
    if function == "LINEAR":
        return (center - 0.5 - (width - 1) / 2, center - 0.5 + (width - 1) / 2) if width > 1 else None
    raise ImageIOError(
        f"{path}: DICOM VOILUTFunction {function!r} is not a linear window; recon maps LINEAR and "
        "LINEAR_EXACT windows only: give the window to use (--dicom-window LOW,HIGH)"
    )


def check_value_fields(ds: Any, path: Path) -> None:
    """Refuse, naming the field, a header that maps stored values in a way recon does not interpret."""
    if ds.get("ModalityLUTSequence"):
        raise ImageIOError(
            f"{path}: DICOM ModalityLUTSequence (a lookup table from stored to physical values, instead "
            "of RescaleSlope/Intercept); recon does not interpret it, convert the file first"
        )


def window_of(
    ds: Any, path: Path, window: tuple[float, float] | None = None
) -> tuple[tuple[float, float], str]:
    """The window [low, high] the convention uses for `ds`, and where it came from."""
    if window is not None:
        low, high = float(window[0]), float(window[1])
        if not (math.isfinite(low) and math.isfinite(high) and high > low):
            raise ImageIOError(f"{path}: DICOM window {tuple(window)} is empty; give LOW < HIGH")
        return (low, high), "given"
    found = header_window(ds, path)
    if found is not None:
        return found, "header"
    if ds.get("VOILUTSequence"):
        raise ImageIOError(
            f"{path}: DICOM VOILUTSequence (a display lookup table) without a WindowCenter/Width; recon "
            "does not interpret it: give the window to use (--dicom-window LOW,HIGH)"
        )
    return stored_window(ds, path), "stored range"


def stored_window(ds: Any, path: Path) -> tuple[float, float]:
    """The physical values the stored bits can hold."""
    slope, intercept = rescale(ds, path)
    low, high = (intercept + slope * v for v in stored_range(ds))
    return min(low, high), max(low, high)


_CHUNK = 1 << 20  # pixels per float64 step: exact scaling without a float64 copy of the whole image


def to_unit(stored: np.ndarray, slope: float, intercept: float, window: tuple[float, float]) -> np.ndarray:
    """Stored integers → physical values → [0, 1] over the window, clipped; float32.

    Scaled in float64 chunk by chunk (32-bit stored values are not exact in float32), stored as float32.
    """
    low, high = window
    scale, offset = slope / (high - low), (intercept - low) / (high - low)
    flat = np.ascontiguousarray(stored).reshape(-1)
    unit = np.empty(flat.shape, np.float32)
    for start in range(0, flat.size, _CHUNK):
        part = flat[start : start + _CHUNK].astype(np.float64)
        part *= scale
        part += offset
        unit[start : start + _CHUNK] = np.clip(part, 0.0, 1.0, out=part)
    return unit.reshape(np.shape(stored))


def from_unit(image: np.ndarray, ds: Any, window: tuple[float, float]) -> np.ndarray:
    """[0, 1] → physical values over the window → the stored integers of `ds`'s representation.

    float64 all the way, clipped to the stored range before the cast (image_format.to_integers).
    """
    slope, intercept = rescale(ds, Path("?"))
    low, high = window
    unit = np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)
    return to_integers(
        unit, (high - low) / slope, (low - intercept) / slope, _storage_dtype(ds), stored_range(ds)
    )


def outside_window(stored: np.ndarray, ds: Any, window: tuple[float, float]) -> np.ndarray:
    """Where the stored values' physical values lie outside the window (the pixels the reader clipped)."""
    slope, intercept = rescale(ds, Path("?"))
    edges = sorted(((window[0] - intercept) / slope, (window[1] - intercept) / slope))
    return (stored < edges[0]) | (stored > edges[1])


def _number(value: Any) -> float | None:
    """A DS/IS value (first of several) as float; None when absent or empty."""
    if value is None:
        return None
    if not isinstance(value, (str, bytes, int, float)):  # MultiValue, list: several presets, first wins
        value = list(value)
        if not value:
            return None
        value = value[0]
    if isinstance(value, (str, bytes)) and not value.strip():
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _storage_dtype(ds: Any) -> np.dtype:
    bits = int(ds.get("BitsAllocated", 16))
    signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
    return np.dtype(f"<{'i' if signed else 'u'}{max(1, bits // 8)}")


# -- reading -----------------------------------------------------------------------------------------------
def read_dicom(path: str | os.PathLike, window: tuple[float, float] | None = None) -> ImageFile:
    """One grayscale DICOM slice as float32 in [0, 1] (see the module's convention); refuses others clearly.

    `meta` holds the dataset ("dataset"), the window used ("window") and where it came from ("window_from").
    """
    path = Path(path)
    pydicom = import_pydicom()
    header, inflated = _read_header(path, pydicom)
    _check_kind(header, path)
    declared = check_declared_size(header, path)
    ds = _read_whole(path, pydicom, inflated, declared)
    if "PixelData" not in ds:
        raise ImageIOError(f"{path}: DICOM file without pixel data")
    check_value_fields(ds, path)
    slope, intercept = rescale(ds, path)
    used, source = window_of(ds, path, window)
    stored = _pixels(ds, path)
    data = to_unit(stored, slope, intercept, used)
    meta = {"dataset": ds, "window": used, "window_from": source, "stored": stored}
    return ImageFile(path, "dicom", data, meta, scaled_by=f"DICOM window {used[0]:g}..{used[1]:g}")


def _check_kind(ds: Any, path: Path) -> None:
    if int(ds.get("NumberOfFrames", 1) or 1) > 1 or int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        raise ImageIOError(
            f"{path}: multi-frame or colour DICOM; recon-run takes single-frame grayscale slices"
        )
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    if photometric == "PALETTE COLOR":
        refuse_palette(path, "DICOM", "PhotometricInterpretation PALETTE COLOR")
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):  # PALETTE COLOR has one sample of indices
        raise ImageIOError(
            f"{path}: DICOM photometric interpretation {photometric!r}; recon-run takes grayscale "
            "(MONOCHROME1/2) slices"
        )
    if int(ds.get("BitsAllocated", 16) or 0) not in (8, 16, 32):
        raise ImageIOError(
            f"{path}: DICOM BitsAllocated {ds.get('BitsAllocated')}; recon-run takes 8-, 16- or 32-bit pixels"
        )


def check_declared_size(ds: Any, path: Path) -> int:
    """Bytes the pixels declare (Rows × Columns × frames × samples × BitsAllocated/8), held to the limits."""
    try:
        rows, columns = int(ds.Rows), int(ds.Columns)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        bits = int(ds.get("BitsAllocated", 16) or 16)
    except (AttributeError, TypeError, ValueError):
        raise ImageIOError(f"{path}: DICOM header without usable Rows/Columns/BitsAllocated") from None
    pixels = rows * columns
    if min(rows, columns, frames, samples) < 1:
        raise ImageIOError(f"{path}: DICOM declares {rows}×{columns} pixels × {frames} frame(s): empty")
    if (
        max(rows, columns) > limits.MAX_IMAGE_SIDE
        or pixels > limits.MAX_IMAGE_PIXELS
        or frames > limits.MAX_IMAGES_PER_FILE
        or pixels * frames * samples > limits.MAX_PIXELS_PER_FILE
    ):
        raise ImageIOError(
            f"{path}: DICOM declares {rows}×{columns} pixels × {frames} frame(s), above recon's limits "
            f"(side ≤ {limits.MAX_IMAGE_SIDE}, ≤ {limits.MAX_IMAGE_PIXELS} pixels per image, "
            f"≤ {limits.MAX_PIXELS_PER_FILE} per file; recon.runtime.limits); not decoded"
        )
    return pixels * frames * samples * max(1, (bits + 7) // 8)


def _read_header(path: Path, pydicom: Any) -> tuple[Any, Any]:
    """The dataset up to the pixel data, and for deflated files the inflater that continues the stream.

    pydicom inflates a deflated file whole before parsing (filereader.read_partial: `zlib.decompress(
    fileobj.read())`), so a small file can declare gigabytes; here at most HEADER_PREFIX bytes are inflated
    before the header is checked.
    """
    meta = pydicom.filereader.read_file_meta_info(path)
    syntax = meta.get("TransferSyntaxUID")
    if syntax != pydicom.uid.DeflatedExplicitVRLittleEndian:
        return read_header_only(path, pydicom), None
    inflater = _Inflater(path, _dataset_offset(path, meta))
    inflater.inflate_to(HEADER_PREFIX)
    header = read_header_only(
        io.BytesIO(_as_explicit_little(meta, pydicom) + bytes(inflater.data)), pydicom, path
    )
    return header, inflater


def read_header_only(source: Path | io.BytesIO, pydicom: Any, name: Path | None = None) -> Any:
    """The dataset up to the pixel data, walking at most `limits.MAX_DICOM_ELEMENTS` elements.

    pydicom keeps every element it walks (a raw element each): a 64 MB header of 8-byte elements would
    hold millions of them. `read_partial`'s `stop_when` is called once per element, nested ones included
    (pydicom 3.0 filereader.read_dataset/read_sequence), which is where the count is kept; large values are
    deferred (`defer_size`), not loaded.
    """
    walked = 0
    shown = name or source

    def stop(tag: Any, vr: Any, length: int) -> bool:
        nonlocal walked
        walked += 1
        if walked > limits.MAX_DICOM_ELEMENTS:
            raise ImageIOError(
                f"{shown}: DICOM header holds more than {limits.MAX_DICOM_ELEMENTS} elements "
                "(recon.runtime.limits.MAX_DICOM_ELEMENTS); not read"
            )
        return tag in _PIXEL_TAGS

    if isinstance(source, io.BytesIO):
        return pydicom.filereader.read_partial(source, stop_when=stop, defer_size=_DEFER)
    with open(source, "rb") as handle:
        return pydicom.filereader.read_partial(handle, stop_when=stop, defer_size=_DEFER)


_PIXEL_TAGS = {0x7FE00010, 0x7FE00009, 0x7FE00008}  # PixelData, DoubleFloatPixelData, FloatPixelData


def _read_whole(path: Path, pydicom: Any, inflated: Any, declared: int) -> Any:
    if inflated is None:
        size = path.stat().st_size
        if size > declared + HEADER_SLACK:  # a header far larger than any scanner writes, or hidden payload
            raise ImageIOError(
                f"{path}: {size} bytes, far more than the {declared} bytes of pixels it declares; not read"
            )
        return pydicom.dcmread(path)
    inflated.inflate_to(declared + HEADER_SLACK)
    if not inflated.finished:
        raise ImageIOError(
            f"{path}: deflated DICOM inflates to more than the {declared} bytes of pixels it "
            "declares; not read"
        )
    meta = pydicom.filereader.read_file_meta_info(path)
    ds = pydicom.dcmread(io.BytesIO(_as_explicit_little(meta, pydicom) + bytes(inflated.data)))
    ds.filename = str(path)
    return ds


class _Inflater:
    """A raw-deflate stream read from the file and inflated on demand, never past the size asked for."""

    def __init__(self, path: Path, offset: int) -> None:
        self._engine = zlib.decompressobj(-zlib.MAX_WBITS)  # PS3.5 A.5: raw deflate, no zlib header
        self._path, self._offset = path, offset  # read in chunks: the compressed file is untrusted too
        self._pending = b""
        self._end_of_file = False
        self.data = bytearray()

    @property
    def finished(self) -> bool:
        return self._engine.eof or (self._end_of_file and not self._pending)

    def inflate_to(self, size: int) -> None:
        while not self.finished and len(self.data) < size:
            if not self._pending:
                with open(self._path, "rb") as handle:
                    handle.seek(self._offset)
                    self._pending = handle.read(1 << 20)
                self._offset += len(self._pending)
                self._end_of_file = len(self._pending) < 1 << 20
                if not self._pending:
                    break
            try:
                chunk = self._engine.decompress(self._pending, size + 1 - len(self.data))
            except zlib.error as error:
                raise ImageIOError(f"{self._path}: damaged deflated DICOM ({error})") from None
            self._pending = self._engine.unconsumed_tail
            self.data += chunk


def _dataset_offset(path: Path, meta: Any) -> int:
    """Where the dataset starts: after the preamble, "DICM" and the file meta group."""
    length = meta.get("FileMetaInformationGroupLength")
    if length is None or not is_dicom_file(path):
        raise ImageIOError(f"{path}: deflated DICOM without a preamble or meta group length")
    return 132 + 12 + int(length)  # (0002,0000) UL element: tag 4, VR 2, length 2, value 4


def _as_explicit_little(meta: Any, pydicom: Any) -> bytes:
    """A preamble and file meta group that declare the (inflated) dataset Explicit VR Little Endian."""
    meta = copy.deepcopy(meta)
    meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    buffer = io.BytesIO()
    buffer.write(b"\0" * 128 + b"DICM")
    pydicom.filewriter.write_file_meta_info(buffer, meta, enforce_standard=True)
    return buffer.getvalue()


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
            "`pip install recon[dicom]` brings pylibjpeg and its plugins, or convert the file to an "
            "uncompressed transfer syntax"
        )
    from recon.runtime.io.dicom_codestream import check_frame_size

    check_frame_size(ds, path, syntax)  # the codestream's own size, before a decoder allocates it
    try:
        return ds.pixel_array
    except Exception as error:  # pydicom lists each plugin's failure on its own line: keep one line
        reason = " ".join(str(error).split())[:300]
        raise ImageIOError(
            f"{path}: compressed DICOM ({syntax.name!r}) could not be decoded ({reason})"
        ) from None
