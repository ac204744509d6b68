"""Reading and writing the files recon-run takes: PNG, TIFF, NPY, DICOM. Outputs keep the input's format.

What `read_image` hands the Reconstructor:
- PNG 8/16-bit, TIFF and NPY integers: the stored integers (the Reconstructor scales them by dtype max);
  TIFF/NPY floats as they are (CT sinograms are NPY/TIFF, (n_angles, n_detectors)).
- DICOM (runtime/io/dicom.py): physical values (stored · RescaleSlope + RescaleIntercept) mapped to [0, 1]
  through a window (given, else the header's WindowCenter/Width, else the stored bits' range), clipped; the
  output goes back through the same window into the source's stored representation.
Writes are atomic (temp file beside the target, then rename).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np

from recon.runtime import limits
from recon.runtime.io.files import FileRefused, open_regular, temp_beside
from recon.runtime.io.image_file import ImageFile, ImageIOError

SUFFIXES = {".png": "png", ".tif": "tiff", ".tiff": "tiff", ".npy": "npy", ".dcm": "dicom", ".dicom": "dicom"}


def detect_format(path: str | os.PathLike) -> str | None:
    """The format by suffix; otherwise DICOM by its "DICM" preamble; None when neither.

    Any unknown suffix is sniffed: files named by UID (`1.2.840.113619.2.55.3.123`) have the pathlib
    suffix ".123".
    """
    path = Path(path)
    fmt = SUFFIXES.get(path.suffix.lower())
    if fmt is None and path.is_file():
        from recon.runtime.io.dicom import is_dicom_file

        if is_dicom_file(path):
            return "dicom"
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
    try:
        if fmt == "dicom":
            os.close(open_regular(path, follow_links=True))  # no FIFO/device; pydicom opens the path
            image = _read_dicom(path, dicom_window)
        else:
            reader = {"png": _read_png, "tiff": _read_tiff, "npy": _read_npy}[fmt]
            # opened through open_regular (no FIFO/device), with the path as its name (tifffile wants one)
            with open(path, "rb", opener=lambda name, _: open_regular(name, follow_links=True)) as handle:
                image = reader(path, handle)
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


def write_image(path: str | os.PathLike, image: np.ndarray, like: ImageFile) -> Path:
    """Write `image` (float, nominally [0, 1]) in `like`'s format and bit depth, atomically.

    Raises ImageIOError, one line naming `path`, for every failure: disk full, no permission, a name the
    file system refuses, or an input header that cannot be written back.
    """
    path = Path(path)
    writer: Callable[[Path, np.ndarray, ImageFile], None] = {
        "png": _write_png,
        "tiff": _write_tiff,
        "npy": _write_npy,
        "dicom": _write_dicom,
    }[like.format]
    tmp: Path | None = None
    try:
        fd, tmp = temp_beside(path)  # a plain file's permissions, not mkstemp's 0600
        os.close(fd)
        writer(Path(tmp), np.asarray(image), like)
        os.replace(tmp, path)
    except BaseException as error:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(error, ImageIOError) or not isinstance(error, Exception):
            raise
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


def _to_unsigned(image: np.ndarray, dtype: type) -> np.ndarray:
    top = np.iinfo(dtype).max
    return np.rint(np.clip(image, 0.0, 1.0) * top).astype(dtype)


# -- PNG (Pillow) ------------------------------------------------------------------------------------------
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _read_png(path: Path, handle: BinaryIO) -> ImageFile:
    from PIL import Image

    # The size from the IHDR chunk (signature, length, "IHDR", width, height), checked before Pillow
    # opens the file: Pillow's own DecompressionBomb check would warn first and only refuse at 179 Mpx.
    head = handle.read(24)
    if len(head) < 24 or head[:8] != PNG_SIGNATURE or head[12:16] != b"IHDR":
        raise ImageIOError(f"{path}: not a PNG file (no PNG signature and IHDR header)")
    width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    check_declared(path, "PNG", 1, height, width, 4)  # Pillow may hold up to 32 bits per pixel
    handle.seek(0)
    with Image.open(handle, formats=["PNG"]) as im:
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
def _read_tiff(path: Path, handle: BinaryIO) -> ImageFile:
    """Every page of the file, as one (N, H, W) stack, or the file is refused: nothing is dropped.

    tifffile files pages under several series when they differ (a page stored differently, a thumbnail);
    `series[0]` alone would drop the others. One series holding every page is read as tifffile shapes it;
    otherwise the pages must share one shape and type and are stacked. Shapes and types come from the
    headers, so nothing is decoded before the size check.
    """
    import tifffile

    with tifffile.TiffFile(handle) as tif:
        pages = []
        for page in tif.pages:  # stop one past the limit: an IFD chain may be endless
            pages.append(page)
            if len(pages) > limits.MAX_IMAGES_PER_FILE:
                break
        if not pages:
            raise ImageIOError(f"{path}: TIFF without pages")
        series = tif.series
        if len(series) == 1 and len(series[0].pages) == len(pages):
            shape, axes, dtype = tuple(series[0].shape), series[0].axes, series[0].dtype
            read = series[0].asarray
        else:  # several series: every page, if they agree
            kinds = sorted({(tuple(p.shape), str(p.dtype)) for p in pages})
            if len(kinds) > 1:
                listed = ", ".join(f"{'×'.join(map(str, s))} {d}" for s, d in kinds[:4])
                raise ImageIOError(
                    f"{path}: TIFF pages of different shapes or types ({listed}); recon reconstructs "
                    "every page or none: split the file into one file per shape"
                )
            ((page_shape, _),) = kinds
            shape, dtype = (len(pages), *page_shape), np.dtype(kinds[0][1])
            axes = "I" + ("YXS" if len(page_shape) == 3 else "YX")

            def read() -> np.ndarray:
                return np.stack([p.asarray().reshape(page_shape) for p in pages])

        if "S" in axes or len(shape) < 2:
            raise ImageIOError(
                f"{path}: colour TIFF (axes {axes}, shape {shape}); convert it to one channel first"
            )
        if len(shape) == 3 and shape[0] == 1:
            shape = shape[1:]
        if len(shape) > 3:  # volumes of volumes: which axis is the stack is not ours to guess
            raise ImageIOError(f"{path}: expected a 2-D image (or a stack of them), got shape {shape}")
        images = shape[0] if len(shape) == 3 else 1
        check_declared(path, "TIFF", images, *shape[-2:], np.dtype(dtype).itemsize)
        data = read().reshape(shape)
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
def _read_npy(path: Path, handle: BinaryIO) -> ImageFile:
    """The header (shape, dtype) is read and checked first; the data only when it fits the limits."""
    fmt = np.lib.format
    version = fmt.read_magic(handle)
    header_reader = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}.get(version)
    if header_reader is None:  # 3.0 only differs for non-Latin-1 field names: structured dtypes
        raise ImageIOError(
            f"{path}: not a readable NPY file (format version {version}; recon reads 1.0 and 2.0)"
        )
    shape, _, dtype = header_reader(handle)
    if dtype.hasobject:
        raise ImageIOError(f"{path}: not a readable NPY file (Python objects: pickles are never loaded)")
    if len(shape) not in (2, 3) or 0 in shape:
        raise ImageIOError(f"{path}: expected a 2-D image (or a stack of them), got shape {shape}")
    check_declared(path, "NPY", shape[0] if len(shape) == 3 else 1, shape[-2], shape[-1], dtype.itemsize)
    handle.seek(0)
    data = fmt.read_array(handle, allow_pickle=False)  # never unpickle what a scanner hands us
    return ImageFile(path, "npy", data, {"dtype": str(data.dtype)})


def _write_npy(path: Path, image: np.ndarray, like: ImageFile) -> None:
    with open(path, "wb") as handle:
        np.save(handle, image.astype(np.float32, copy=False), allow_pickle=False)


# -- DICOM: runtime/io/dicom.py (pydicom, the [dicom] extra, imported there only when needed) ---------
def _read_dicom(path: Path, window: tuple[float, float] | None) -> ImageFile:
    from recon.runtime.io.dicom import read_dicom

    return read_dicom(path, window)


def _write_dicom(path: Path, image: np.ndarray, like: ImageFile) -> None:
    from recon.runtime.io.dicom import write_dicom

    write_dicom(path, image, like)
