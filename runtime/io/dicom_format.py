"""DICOM as one of recon's formats: detection by the "DICM" preamble; the reading and writing convention
lives in runtime/io/dicom.py (pydicom, the [dicom] extra, imported there only when a file is read)."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import numpy as np

from recon.runtime.io.image_file import ImageFile
from recon.runtime.io.image_format import ImageFormat, ReadOptions


class DicomFormat(ImageFormat):
    name = "dicom"
    suffixes = (".dcm", ".dicom")
    reads_path = True  # pydicom opens the path itself (imageio checks it is a regular file first)

    def sniff(self, head: bytes) -> bool:
        return len(head) >= 132 and head[128:132] == b"DICM"

    def read(self, path: Path, handle: BinaryIO | None, options: ReadOptions) -> ImageFile:
        from recon.runtime.io.dicom import read_dicom

        return read_dicom(path, options.dicom_window)

    def write(self, path: Path, image: np.ndarray, like: ImageFile) -> None:
        from recon.runtime.io.dicom_derived import write_dicom

        write_dicom(path, image, like)
