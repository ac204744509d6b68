"""Image files in and out: PNG 8/16-bit, TIFF float32/16-bit, NPY; one-line errors (DICOM: test_dicom.py)."""

from __future__ import annotations

import numpy as np
import pytest

from recon.runtime.io.imageio import ImageIOError, read_image, write_image

rng = np.random.default_rng(0)


@pytest.mark.parametrize(("dtype", "bits"), [(np.uint8, 8), (np.uint16, 16)])
def test_png_keeps_its_bit_depth(tmp_path, dtype, bits):
    from PIL import Image

    top = np.iinfo(dtype).max
    source = rng.integers(0, top, (12, 9), dtype=dtype)
    Image.fromarray(source).save(tmp_path / "in.png")
    image = read_image(tmp_path / "in.png")
    assert image.format == "png" and image.meta["bits"] == bits
    np.testing.assert_array_equal(image.data, source)
    result = rng.random((12, 9)).astype(np.float32)
    write_image(tmp_path / "out.png", result, image)
    back = read_image(tmp_path / "out.png")
    assert back.data.dtype == dtype
    np.testing.assert_allclose(back.data / top, result, atol=0.5 / top + 1e-7)


def test_colour_png_is_refused_with_what_to_do(tmp_path):
    from PIL import Image

    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(ImageIOError, match="rgb.png: PNG mode RGB .* convert it to 8- or 16-bit grayscale"):
        read_image(tmp_path / "rgb.png")


@pytest.mark.parametrize("dtype", [np.float32, np.uint16])
def test_tiff_keeps_float32_and_16_bit(tmp_path, dtype):
    import tifffile

    source = (
        rng.random((2, 6, 5)).astype(np.float32)
        if dtype == np.float32
        else rng.integers(0, 65535, (6, 5), dtype=np.uint16)
    )
    tifffile.imwrite(tmp_path / "in.tif", source)
    image = read_image(tmp_path / "in.tif")
    np.testing.assert_array_equal(image.data, source)
    result = rng.random(source.shape).astype(np.float32)
    write_image(tmp_path / "out.tif", result, image)
    back = read_image(tmp_path / "out.tif").data
    assert back.dtype == dtype
    if dtype == np.float32:
        np.testing.assert_array_equal(back, result)
    else:
        np.testing.assert_allclose(back / 65535, result, atol=1e-5)


def test_npy_round_trips_and_refuses_pickles(tmp_path):
    sinogram = rng.random((6, 10)).astype(np.float64)
    np.save(tmp_path / "s.npy", sinogram)
    image = read_image(tmp_path / "s.npy")
    np.testing.assert_array_equal(image.data, sinogram)
    write_image(tmp_path / "o.npy", sinogram.astype(np.float32), image)
    assert np.load(tmp_path / "o.npy").dtype == np.float32
    np.save(tmp_path / "p.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ImageIOError, match="p.npy: not a readable NPY file"):
        read_image(tmp_path / "p.npy")


@pytest.mark.parametrize("name", ["broken.png", "broken.tif", "broken.npy", "broken.dcm"])
def test_damaged_files_give_one_line_errors_naming_the_file(tmp_path, name):
    (tmp_path / name).write_bytes(b"this is not an image at all" * 10)
    with pytest.raises(ImageIOError, match=f"{name}: ") as info:
        read_image(tmp_path / name)
    assert "\n" not in str(info.value)


def test_unknown_suffixes_are_refused(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"x")
    with pytest.raises(ImageIOError, match="unknown image format"):
        read_image(tmp_path / "a.jpg")
