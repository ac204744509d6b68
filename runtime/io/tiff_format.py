"""TIFF through tifffile: every page as one (N, H, W) stack or the file is refused; one polarity for all.

Compressed TIFF (LZW, JPEG, ...) is decoded by `imagecodecs` where tifffile needs it (the [tiff] extra);
deflate decodes without it (tifffile falls back to zlib).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from recon.runtime import limits
from recon.runtime.io.image_file import ImageFile, ImageIOError
from recon.runtime.io.image_format import (
    ImageFormat,
    ReadOptions,
    check_declared,
    refuse_palette,
    unit_to_dtype,
)

# TIFF PhotometricInterpretation (tag 262) values; tifffile.PHOTOMETRIC names them the same
MINISWHITE, MINISBLACK, PALETTE = 0, 1, 3
POLARITY = {MINISWHITE: "miniswhite", MINISBLACK: "minisblack"}


class TiffFormat(ImageFormat):
    name = "tiff"
    suffixes = (".tif", ".tiff")

    def sniff(self, head: bytes) -> bool:
        return head[:4] in (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")

    def read(self, path: Path, handle: BinaryIO | None, options: ReadOptions) -> ImageFile:
        """Every page of the file, as one (N, H, W) stack, or the file is refused: nothing is dropped.

        tifffile files pages under several series when they differ (a page stored differently, a
        thumbnail); `series[0]` alone would drop the others. One series holding every page is read as
        tifffile shapes it; otherwise the pages must share one shape and type and are stacked. Shapes and
        types come from the headers, so nothing is decoded before the size check.

        PhotometricInterpretation: MINISBLACK as stored; MINISWHITE (0 displays white) as stored too, and
        written back as MINISWHITE, so the output displays as the input does (as DICOM MONOCHROME1);
        PALETTE and every colour space refused.
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
            polarity = _polarity(path, pages)
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
            _check_codec(path, pages[0])
            data = read().reshape(shape)
        return ImageFile(path, "tiff", data, {"dtype": str(data.dtype), "photometric": polarity})

    def write(self, path: Path, image: np.ndarray, like: ImageFile) -> None:
        """Integers back in the input's type (the inverse of the scaling by its maximum); floats float32."""
        import tifffile

        dtype = np.dtype(like.meta.get("dtype") or "float32")
        data = unit_to_dtype(image, dtype) if dtype.kind in "ui" else image.astype(np.float32)
        # explicit: tifffile stores a (3, H, W) or (4, H, W) stack as planar RGB(A) by default
        tifffile.imwrite(path, data, photometric=like.meta.get("photometric") or "minisblack")


def _check_codec(path: Path, page: Any) -> None:
    """A compression tifffile decodes only through imagecodecs (LZW, JPEG, ...) names the extra to install."""
    compression = getattr(page, "compression", 1)
    if int(compression) in (1, 8, 32946):  # none, and deflate: tifffile falls back to zlib
        return
    try:
        import imagecodecs  # noqa: F401
    except ImportError:
        name = getattr(compression, "name", str(compression))
        raise ImageIOError(
            f"{path}: TIFF compressed with {name}, which needs imagecodecs: `pip install recon[tiff]`"
        ) from None


def _polarity(path: Path, pages: list) -> str:
    """ "minisblack" or "miniswhite", the same for every page; palettes and colour spaces refused."""
    found = {int(page.photometric) for page in pages}
    if PALETTE in found:
        refuse_palette(path, "TIFF", "PhotometricInterpretation PALETTE")
    unknown = found - set(POLARITY)
    if unknown:
        import tifffile

        known = {int(v) for v in tifffile.PHOTOMETRIC}
        names = ", ".join(tifffile.PHOTOMETRIC(v).name if v in known else str(v) for v in sorted(unknown))
        raise ImageIOError(
            f"{path}: TIFF PhotometricInterpretation {names}; recon reads grayscale (MINISBLACK or "
            "MINISWHITE) pages, convert it to one channel first"
        )
    if len(found) > 1:
        raise ImageIOError(
            f"{path}: TIFF pages of both polarities (MINISBLACK and MINISWHITE); split the file first"
        )
    return POLARITY[found.pop()]
