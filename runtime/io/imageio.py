"""Reading and writing the files recon-run takes: PNG, TIFF, NPY, DICOM. Outputs keep the input's format.

Each format is one class (runtime/io/image_format.py's contract: detect, header limits, decode, write),
listed once in FORMATS. What `read_image` hands the Reconstructor:
- PNG 8/16-bit, TIFF and NPY integers: the stored integers (the Reconstructor scales them by dtype max; the
  writers scale back by the same maximum into the same type); TIFF/NPY floats as they are (CT sinograms are
  NPY/TIFF, (n_angles, n_detectors)).
- DICOM (runtime/io/dicom.py): physical values (stored · RescaleSlope + RescaleIntercept) mapped to [0, 1]
  through a window (given, else the header's WindowCenter/Width, else the stored bits' range), clipped; the
  output goes back through the same window into the source's stored representation, and pixels the window
  clipped keep their source values.
Writes are atomic and never replace a file unless asked (temp file beside the target, then a no-replace
publish: runtime/io/files.publish).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from recon.runtime.io.dicom_format import DicomFormat
from recon.runtime.io.files import FileRefused, TargetExists, open_regular, publish, temp_name_beside
from recon.runtime.io.image_file import ImageFile, ImageIOError
from recon.runtime.io.image_format import ImageFormat, ReadOptions, check_declared
from recon.runtime.io.npy_format import NpyFormat
from recon.runtime.io.png_format import PngFormat
from recon.runtime.io.tiff_format import TiffFormat

__all__ = ["FORMATS", "SUFFIXES", "ImageFile", "ImageIOError", "check_declared", "detect_format",
           "read_image", "write_image"]  # fmt: skip

# The formats recon reads and writes; a new one is one class added here.
FORMATS: dict[str, ImageFormat] = {f.name: f for f in (PngFormat(), TiffFormat(), NpyFormat(), DicomFormat())}
SUFFIXES = {suffix: f.name for f in FORMATS.values() for suffix in f.suffixes}
_SNIFF_BYTES = 132  # enough for every format's signature (DICOM's "DICM" sits at byte 128)


def detect_format(path: str | os.PathLike) -> str | None:
    """The format by suffix; otherwise by the file's first bytes (each format's `sniff`); None when neither.

    Any unknown suffix is sniffed: files named by UID (`1.2.840.113619.2.55.3.123`) have the pathlib
    suffix ".123".
    """
    path = Path(path)
    fmt = SUFFIXES.get(path.suffix.lower())
    if fmt is None and path.is_file():
        try:
            with open(path, "rb") as handle:
                head = handle.read(_SNIFF_BYTES)
        except OSError:
            return None
        return next((f.name for f in FORMATS.values() if f.sniff(head)), None)
    return fmt


def read_image(path: str | os.PathLike, dicom_window: tuple[float, float] | None = None) -> ImageFile:
    """Read one image file; its declared size is checked against `recon.runtime.limits` before decoding.

    Raises ImageIOError (one line, naming the file) for anything that is not a readable image: unknown
    format, not a regular file (FIFO, device), damaged, too large, or pages of different shapes.
    """
    path = Path(path)
    if not path.exists():
        raise ImageIOError(f"{path}: no such file")
    fmt = detect_format(path)
    if fmt is None:
        raise ImageIOError(
            f"{path}: unknown image format; recon reads {', '.join(sorted(set(SUFFIXES)))} files"
        )
    reader, options = FORMATS[fmt], ReadOptions(dicom_window=dicom_window)
    try:
        if reader.reads_path:
            os.close(open_regular(path, follow_links=True))  # no FIFO/device; the library opens the path
            image = reader.read(path, None, options)
        else:
            # opened through open_regular (no FIFO/device), with the path as its name (tifffile wants one)
            with open(path, "rb", opener=lambda name, _: open_regular(name, follow_links=True)) as handle:
                image = reader.read(path, handle, options)
    except ImageIOError:
        raise
    except FileRefused as error:
        raise ImageIOError(str(error)) from None
    except ImportError as error:
        raise ImageIOError(f"{path}: {error}") from None
    except MemoryError:
        raise ImageIOError(f"{path}: not enough memory to decode it") from None
    except Exception as error:  # each library raises its own types for damaged files
        reason = (str(error).strip().splitlines() or [""])[0]  # one line, whatever the library says
        raise ImageIOError(
            f"{path}: not a readable {fmt.upper()} file ({type(error).__name__}: {reason})"
        ) from None
    if image.data.ndim not in (2, 3) or 0 in image.data.shape:
        raise ImageIOError(f"{path}: expected a 2-D image (or a stack of them), got shape {image.data.shape}")
    return image


def write_image(path: str | os.PathLike, image: np.ndarray, like: ImageFile, replace: bool = False) -> Path:
    """Write `image` (float, nominally [0, 1]) in `like`'s format and bit depth, atomically.

    An existing `path` is never replaced unless `replace` (recon-run's --force), even when another process
    created it while this one worked: that is this file's failure. Raises ImageIOError, one line naming
    `path`, for every failure: the name taken, disk full, no permission, a name the file system refuses,
    or an input header that cannot be written back.
    """
    path = Path(path)
    writer = FORMATS[like.format]
    tmp: Path | None = None
    try:
        for _ in range(100):
            tmp = temp_name_beside(path)  # recorded before it exists: any signal after this removes it
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # a plain file's permissions
            except FileExistsError:
                tmp = None
                continue
            os.close(fd)
            break
        else:
            raise FileExistsError(f"{path.parent}: could not create a temporary file beside {path.name}")
        writer.write(Path(tmp), np.asarray(image), like)
        publish(tmp, path, replace=replace)
    except BaseException as error:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(error, ImageIOError) or not isinstance(error, Exception):
            raise
        if isinstance(error, TargetExists):
            raise ImageIOError(str(error)) from None
        cause = _os_error_in(error)
        if cause is not None:  # numpy says "65536 requested and 20448 written", pydicom wraps it: say which
            reason = cause.strerror or (str(cause).strip().splitlines() or [type(cause).__name__])[0]
            raise ImageIOError(
                f"{path}: cannot write the result ({reason}); check the free space and permissions "
                f"of {path.parent}"
            ) from None
        # e.g. pydicom meeting an element of a damaged input header only when it writes the copy
        reason = (str(error).strip().splitlines() or [""])[0]
        raise ImageIOError(
            f"{path}: cannot write the result for {like.path} as {like.format.upper()} "
            f"({type(error).__name__}: {reason}); the input's header may be damaged"
        ) from None
    return path


def _os_error_in(error: BaseException) -> OSError | None:
    """The OSError behind `error`, preferring one with an errno (pydicom re-raises the disk's OSError as
    an OSError whose message is a whole traceback; numpy's has no errno, only "N requested, M written")."""
    found: list[OSError] = []
    current: BaseException | None = error
    for _ in range(16):  # a chain is short; a cycle must not loop
        if current is None:
            break
        if isinstance(current, OSError):
            found.append(current)
        current = current.__cause__ or current.__context__
    return next((e for e in found if e.strerror), found[0] if found else None)
