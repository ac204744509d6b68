"""NPY: the header (shape, dtype) checked first, the data only when it fits; never unpickled."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import numpy as np

from recon.runtime.io.image_file import ImageFile, ImageIOError
from recon.runtime.io.image_format import ImageFormat, ReadOptions, check_declared, unit_to_dtype


class NpyFormat(ImageFormat):
    name = "npy"
    suffixes = (".npy",)

    def sniff(self, head: bytes) -> bool:
        return head.startswith(b"\x93NUMPY")

    def read(self, path: Path, handle: BinaryIO | None, options: ReadOptions) -> ImageFile:
        assert handle is not None
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

    def write(self, path: Path, image: np.ndarray, like: ImageFile) -> None:
        """Integers back in the input's type (the inverse of the scaling by its maximum); floats float32."""
        dtype = np.dtype(like.meta.get("dtype") or "float32")
        data = unit_to_dtype(image, dtype) if dtype.kind in "ui" else image.astype(np.float32, copy=False)
        with open(path, "wb") as handle:
            np.save(handle, data, allow_pickle=False)
