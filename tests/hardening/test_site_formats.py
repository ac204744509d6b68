"""Rule 6 (issue 23): the formats real sites send are read.

LZW- and deflate-compressed TIFF (imagecodecs, the [tiff] extra), and compressed DICOM transfer syntaxes
(pylibjpeg and its plugins, the [dicom] extra) with the frame's own declared size checked before decoding.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
tifffile = pytest.importorskip("tifffile")

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "runtime"))  # dicom_files

from dicom_files import write_slice  # noqa: E402

from recon.runtime.io.dicom_codestream import declared_frame_size  # noqa: E402
from recon.runtime.io.imageio import ImageIOError, read_image  # noqa: E402

rng = np.random.default_rng(6)


@pytest.mark.parametrize("compression", ["lzw", "adobe_deflate", "zstd"])
def test_compressed_tiff_is_read(tmp_path, compression):
    pytest.importorskip("imagecodecs", reason="the [tiff] extra")
    data = rng.integers(0, 65535, (2, 24, 20), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "c.tif", data, compression=compression)
    np.testing.assert_array_equal(read_image(tmp_path / "c.tif").data, data)


def _compressed(tmp_path: Path, syntax, **kwargs) -> tuple[Path, np.ndarray]:
    pixels = rng.integers(0, 4096, (64, 48), dtype=np.uint16)  # openjpeg's 6 resolutions need >= 32 px
    ds = write_slice(tmp_path / "plain.dcm", pixels, bits_stored=12)
    ds.compress(syntax, **kwargs)  # pydicom 3.0 Dataset.compress: encodes PixelData, sets the syntax
    ds.save_as(tmp_path / "packed.dcm", enforce_file_format=True)
    return tmp_path / "packed.dcm", pixels


@pytest.mark.parametrize("syntax", ["RLELossless", "JPEG2000Lossless"])
def test_compressed_dicom_decodes_to_the_stored_values(tmp_path, syntax):
    pytest.importorskip("pylibjpeg", reason="the [dicom] extra")
    path, pixels = _compressed(tmp_path, getattr(pydicom.uid, syntax))
    assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == getattr(pydicom.uid, syntax)
    np.testing.assert_array_equal(read_image(path).data, read_image(tmp_path / "plain.dcm").data)


def test_a_jpeg_2000_frame_larger_than_its_header_says_is_refused_undecoded(tmp_path):
    """The decoder allocates what the codestream declares: a small header cannot vouch for it."""
    pytest.importorskip("pylibjpeg", reason="the [dicom] extra")
    path, _ = _compressed(tmp_path, pydicom.uid.JPEG2000Lossless)
    ds = pydicom.dcmread(path)
    ds.Rows, ds.Columns = 16, 12  # the frame holds 64×48
    ds.save_as(tmp_path / "lying.dcm", enforce_file_format=True)
    with pytest.raises(ImageIOError, match=r"lying.dcm: compressed DICOM .* frame declares 64×48 pixels, its "
                                           r"header Rows × Columns 16×12; not decoded"):  # fmt: skip
        read_image(tmp_path / "lying.dcm")


def test_jpeg_frame_headers_are_read_from_real_codestreams():
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (40, 72), dtype=np.uint8)).save(buffer, format="JPEG")
    assert declared_frame_size(buffer.getvalue()) == (40, 72)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (40, 72), dtype=np.uint8)).save(buffer, format="JPEG2000")
    assert declared_frame_size(buffer.getvalue()) == (40, 72)  # a JP2 file: the SIZ inside its jp2c box
    assert declared_frame_size(b"\xff\xd8 not a marker") is None and declared_frame_size(b"") is None
