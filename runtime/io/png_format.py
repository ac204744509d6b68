"""PNG through Pillow: 8- and 16-bit grayscale; colour, palette and alpha refused."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import numpy as np

from recon.runtime.io.image_file import ImageFile, ImageIOError
from recon.runtime.io.image_format import (
    ImageFormat,
    ReadOptions,
    check_declared,
    refuse_palette,
    unit_to_dtype,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class PngFormat(ImageFormat):
    name = "png"
    suffixes = (".png",)

    def sniff(self, head: bytes) -> bool:
        return head.startswith(PNG_SIGNATURE)

    def read(self, path: Path, handle: BinaryIO | None, options: ReadOptions) -> ImageFile:
        from PIL import Image

        assert handle is not None
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
            if mode in ("P", "PA"):
                refuse_palette(path, "PNG", "palette image (colour type 3)")
            if mode not in ("L", "I;16", "I;16B", "I", "F"):
                raise ImageIOError(
                    f"{path}: PNG mode {mode} (colour or alpha); recon reconstructs "
                    "single-channel images, convert it to 8- or 16-bit grayscale first"
                )
            data = np.array(im)
        if mode == "I":  # Pillow opens some 16-bit files as 32-bit ints
            if data.min() < 0 or data.max() > 65535:
                raise ImageIOError(f"{path}: 32-bit integer PNG values outside 0..65535")
            data = data.astype(np.uint16)
        bits = 8 if data.dtype == np.uint8 else 16
        return ImageFile(path, "png", data, {"bits": bits})

    def write(self, path: Path, image: np.ndarray, like: ImageFile) -> None:
        from PIL import Image

        if image.ndim != 2:
            raise ImageIOError(f"{like.path}: PNG holds one 2-D image, got shape {image.shape}")
        data = unit_to_dtype(image, np.uint8 if like.meta.get("bits") == 8 else np.uint16)
        Image.fromarray(data).save(path, format="PNG")
