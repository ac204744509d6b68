"""Rule 1 (issue 23): a pixel means what its header says, or the file is refused.

Every header field that changes how stored values scale or display is interpreted (tested against pydicom's
own `apply_modality_lut` / `apply_voi_lut`) or refused naming the field; writers scale back in float64 and
clip to the target type (no wrapping cast); a re-read of every written format gives the values back.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
tifffile = pytest.importorskip("tifffile")

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "runtime"))  # dicom_files

from dicom_files import write_slice  # noqa: E402
from fuzzing import recon_run  # noqa: E402
from runtime_artifacts import ANGLES, DETECTORS, H, W  # noqa: E402

from recon.runtime.inputs import as_float_images  # noqa: E402
from recon.runtime.io.imageio import ImageIOError, read_image, write_image  # noqa: E402

rng = np.random.default_rng(23)


def _with_extremes(dtype: str, shape: tuple[int, int] = (8, 8)) -> np.ndarray:
    """Random values of `dtype` whose first row holds its minimum, maximum and their neighbours."""
    info = np.iinfo(dtype)
    data = rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)
    data[0, :4] = [info.min, info.max, info.max - 1, info.min + 1]
    return data


def _tolerance(dtype: str) -> float:
    """What the float32 [0, 1] image between reader and writer can carry: exact up to 16 bits."""
    bits = np.dtype(dtype).itemsize * 8
    return 0.0 if bits <= 16 else float(np.iinfo(dtype).max) * 2.0**-23


def _check_round_trip(back: np.ndarray, data: np.ndarray, dtype: str) -> None:
    assert back.dtype == np.dtype(dtype), back.dtype
    np.testing.assert_allclose(
        back.astype(np.float64), data.astype(np.float64), rtol=0, atol=_tolerance(dtype)
    )
    # the top of the range exactly: float32 rounds 2**31 - 1 up to 2**31, and a wrapping cast made it
    # INT32_MIN (the brightest pixel written as the darkest)
    assert back[0, 1] == data[0, 1]


ROUND_TRIPS = [("png", "uint8"), ("png", "uint16")] + [
    (fmt, dtype)
    for fmt in ("tiff", "npy")
    for dtype in ("uint8", "int8", "uint16", "int16", "uint32", "int32", "float32")
]


@pytest.mark.parametrize(("fmt", "dtype"), ROUND_TRIPS, ids=[f"{f}-{d}" for f, d in ROUND_TRIPS])
def test_every_written_format_gives_its_values_back_when_re_read(tmp_path, fmt, dtype):
    """read → the runtime's scaling (by the type's maximum) → write → read gives the stored values."""
    data = rng.random((8, 8), dtype=np.float32) if dtype == "float32" else _with_extremes(dtype)
    if fmt == "png":
        from PIL import Image

        Image.fromarray(data).save(tmp_path / "in.png")
    elif fmt == "tiff":
        tifffile.imwrite(tmp_path / "in.tif", data)
    else:
        np.save(tmp_path / "in.npy", data)
    image = read_image(next(tmp_path.iterdir()))
    written = write_image(tmp_path / f"out.{fmt}", as_float_images(image.data), image)
    back = read_image(written).data
    if dtype == "float32":
        np.testing.assert_array_equal(back, data)
    else:
        _check_round_trip(back, data, dtype)


DICOM_TRIPS = {
    "uint8": dict(slope="0.5", intercept="-10.25"),
    "uint16-12-bit": dict(bits_stored=12, slope="1", intercept="-1024"),
    "int16": dict(slope="2", intercept="-3"),
    "uint32": dict(slope="0.001", intercept="-1000"),
    "int32": dict(slope="1", intercept="0"),
    "int32-negative-slope": dict(slope="-0.5", intercept="100"),
}


@pytest.mark.parametrize("case", DICOM_TRIPS)
def test_dicom_of_8_16_and_32_bits_keeps_every_stored_value_through_read_and_write(tmp_path, case):
    """No window in the header: the stored range maps to [0, 1] and back; the top of a 32-bit range was
    written back as INT32_MIN (signed) or 0 (unsigned)."""
    options = dict(DICOM_TRIPS[case])
    dtype = case.split("-")[0]
    data = _with_extremes(dtype)
    if options.get("bits_stored") == 12:
        data = np.clip(data, 0, 4095)
        data[0, :2] = [0, 4095]
    write_slice(tmp_path / "in.dcm", data, **options)
    image = read_image(tmp_path / "in.dcm")
    write_image(tmp_path / "out.dcm", image.data, image)
    out = pydicom.dcmread(tmp_path / "out.dcm")
    assert (out.RescaleSlope, out.RescaleIntercept) == (options["slope"], options["intercept"])
    _check_round_trip(out.pixel_array, data, dtype)


def _pydicom_unit(path: Path) -> np.ndarray:
    """pydicom's modality then VOI transform, rescaled from its output range to [0, 1]."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    ds = pydicom.dcmread(path)
    voi = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds)
    bits, signed = int(ds.BitsStored), int(ds.PixelRepresentation) == 1
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
    y_min, y_max = low * slope + intercept, high * slope + intercept
    return (voi - y_min) / (y_max - y_min)


@pytest.mark.parametrize("function", [None, "LINEAR", "LINEAR_EXACT"])
def test_a_header_window_maps_values_as_pydicoms_apply_voi_lut_does(tmp_path, function):
    hu = rng.integers(-400, 400, (16, 16)).astype(np.int16)
    hu[0, :6] = [-161, -160, -159, 238, 239, 240]  # around LINEAR's edges for 40/400
    tags = {} if function is None else {"VOILUTFunction": function}
    write_slice(tmp_path / "a.dcm", hu + 1024, window=("40", "400"), **tags)
    np.testing.assert_allclose(
        read_image(tmp_path / "a.dcm").data, _pydicom_unit(tmp_path / "a.dcm"), atol=1e-6
    )


def test_a_sigmoid_voi_function_is_refused_by_name_unless_a_window_is_given(tmp_path):
    write_slice(
        tmp_path / "a.dcm", np.full((4, 4), 1064, np.uint16), window=("40", "400"), VOILUTFunction="SIGMOID"
    )
    with pytest.raises(ImageIOError, match="a.dcm: DICOM VOILUTFunction 'SIGMOID' is not a linear window"):
        read_image(tmp_path / "a.dcm")
    assert read_image(tmp_path / "a.dcm", dicom_window=(-160, 240)).meta["window_from"] == "given"


def test_a_modality_lut_sequence_is_refused_by_name(tmp_path):
    from pydicom.dataset import Dataset

    item = Dataset()
    item.LUTDescriptor = [4096, 0, 16]
    item.ModalityLUTType = "HU"
    item.LUTData = np.arange(0, 8192, 2, dtype=np.uint16).tobytes()
    write_slice(tmp_path / "a.dcm", np.arange(16, dtype=np.uint16).reshape(4, 4), slope=None,
                ModalityLUTSequence=[item])  # fmt: skip
    with pytest.raises(ImageIOError, match="a.dcm: DICOM ModalityLUTSequence"):
        read_image(tmp_path / "a.dcm")


def test_a_miniswhite_tiff_is_written_back_as_miniswhite_with_its_values(tmp_path):
    """A MINISWHITE file written as MINISBLACK displayed as the negative of its input."""
    data = _with_extremes("uint16")
    tifffile.imwrite(tmp_path / "in.tif", data, photometric="miniswhite")
    image = read_image(tmp_path / "in.tif")
    write_image(tmp_path / "out.tif", as_float_images(image.data), image)
    with tifffile.TiffFile(tmp_path / "out.tif") as tif:
        assert tif.pages[0].photometric == tifffile.PHOTOMETRIC.MINISWHITE
        np.testing.assert_array_equal(tif.asarray(), data)


def test_a_colour_map_is_refused_in_every_format(tmp_path):
    """One rule: palette (indexed colour) images are refused, naming the field, whatever the container."""
    from PIL import Image

    indices = rng.integers(0, 255, (8, 8), dtype=np.uint8)
    colormap = rng.integers(0, 65535, (3, 256), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "p.tif", indices, photometric="palette", colormap=colormap)
    Image.fromarray(indices).convert("P").save(tmp_path / "p.png")
    write_slice(tmp_path / "p.dcm", indices, slope=None, photometric="PALETTE COLOR")
    for name, field in (("p.tif", "TIFF PhotometricInterpretation PALETTE"), ("p.png", "PNG palette image"),
                        ("p.dcm", "DICOM PhotometricInterpretation PALETTE COLOR")):  # fmt: skip
        with pytest.raises(ImageIOError, match=f"{name}: {field} .*a colour map"):
            read_image(tmp_path / name)


def test_a_ct_artifact_refuses_an_integer_dicom_sinogram_rather_than_window_it(hardening_artifacts, tmp_path):
    """The same integers as NPY are refused; a window would turn them into a guess (a near-black image)."""
    counts = rng.integers(0, 4000, (ANGLES, DETECTORS), dtype=np.uint16)
    write_slice(tmp_path / "sino.dcm", counts, slope="0.001", intercept="0")
    np.save(tmp_path / "sino.npy", counts)
    for name in ("sino.dcm", "sino.npy"):
        out = tmp_path / f"out-{name}"
        code, stderr = recon_run(hardening_artifacts["ct"], tmp_path / name, "--out", out)
        assert code == 1 and not (out / name).exists(), stderr
    assert (
        "a CT artifact takes the measurement"
        in recon_run(hardening_artifacts["ct"], tmp_path / "sino.dcm", "--out", tmp_path / "o")[1]
    )


def test_recon_run_stores_every_source_value_outside_the_window_by_default(hardening_artifacts, tmp_path):
    """A CT slice of -1024..1227 HU through a 40/400 window: air and bone stay as they were (the window
    shapes what the network sees, never what is stored); --dicom-clip clips and says so in the tags."""
    hu = rng.integers(-1024, 1228, (H, W)).astype(np.int16)
    write_slice(tmp_path / "ct.dcm", hu + 1024, window=("40", "400"))
    outside = (hu < -160) | (hu > 239)
    assert outside.mean() > 0.5
    code, stderr = recon_run(hardening_artifacts["conv"], tmp_path / "ct.dcm", "--out", tmp_path / "kept")
    assert code == 0, stderr
    out = pydicom.dcmread(tmp_path / "kept" / "ct.dcm")
    stored_hu = out.pixel_array.astype(int) + int(out.RescaleIntercept)
    np.testing.assert_array_equal(stored_hu[outside], hu[outside])
    assert "outside the window -160..239 kept from the source" in out.DerivationDescription
    code, stderr = recon_run(
        hardening_artifacts["conv"], tmp_path / "ct.dcm", "--out", tmp_path / "clipped", "--dicom-clip"
    )
    assert code == 0, stderr
    clipped = pydicom.dcmread(tmp_path / "clipped" / "ct.dcm")
    assert "values clipped to the window -160..239" in clipped.DerivationDescription
    assert clipped.pixel_array.astype(int).min() + int(clipped.RescaleIntercept) >= -160
