"""DICOM slices: one convention (rescale, header window, clip), round trips in the source's representation,
derived series per run, preamble detection, sizes checked before decoding."""

from __future__ import annotations

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")

from dicom_files import ct_slice, write_slice  # noqa: E402

from recon.runtime import limits  # noqa: E402
from recon.runtime.io.dicom import read_dicom  # noqa: E402
from recon.runtime.io.dicom_derived import Derivation, write_dicom  # noqa: E402
from recon.runtime.io.imageio import ImageIOError, detect_format, read_image, write_image  # noqa: E402

rng = np.random.default_rng(0)


def test_dicom_applies_rescale_and_writes_a_derived_slice_with_the_same_geometry(tmp_path):
    pixels = rng.integers(0, 4096, (8, 6), dtype=np.uint16)
    source = write_slice(tmp_path / "slice.dcm", pixels, bits_stored=12)
    image = read_image(tmp_path / "slice.dcm")
    assert image.meta["window"] == (-1024.0, 3071.0) and image.meta["window_from"] == "stored range"
    np.testing.assert_allclose(image.data, pixels / 4095, atol=1e-6)
    write_image(tmp_path / "out.dcm", image.data, image)
    out = pydicom.dcmread(tmp_path / "out.dcm")
    assert out.SOPInstanceUID != source.SOPInstanceUID
    assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
    assert out.StudyInstanceUID == source.StudyInstanceUID and out.PatientID == source.PatientID
    assert out.FrameOfReferenceUID == source.FrameOfReferenceUID
    assert out.SeriesInstanceUID != source.SeriesInstanceUID
    assert list(out.PixelSpacing) == [0.7, 0.7] and list(out.ImagePositionPatient) == [-100.0, -120.0, 35.5]
    assert list(out.ImageOrientationPatient) == [1, 0, 0, 0, 1, 0]
    assert out.SliceThickness == 1.25 and out.SpacingBetweenSlices == 1.25
    assert (out.BitsAllocated, out.BitsStored, out.PixelRepresentation) == (16, 12, 0)
    np.testing.assert_array_equal(out.pixel_array, pixels)
    assert list(out.ImageType) == ["DERIVED", "SECONDARY"]
    assert out.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    # slices of one source series written in one process land in one derived series
    write_image(tmp_path / "out2.dcm", image.data, image)
    assert pydicom.dcmread(tmp_path / "out2.dcm").SeriesInstanceUID == out.SeriesInstanceUID


def test_the_header_window_maps_hounsfield_units_to_0_1_and_clips(tmp_path):
    ct_slice(tmp_path / "ct.dcm", rng, size=64)  # int16, slope 1, intercept -1024, window 40/400
    image = read_image(tmp_path / "ct.dcm")
    hu = pydicom.dcmread(tmp_path / "ct.dcm").pixel_array.astype(np.float64) - 1024
    # PS3.3 C.11.2.1.2.1 LINEAR: the ramp runs from c - 0.5 - (w - 1)/2 to c - 0.5 + (w - 1)/2
    assert image.meta["window"] == (-160.0, 239.0) and image.meta["window_from"] == "header"
    np.testing.assert_allclose(image.data, np.clip((hu + 160) / 399, 0, 1), atol=1e-6)
    assert image.data.dtype == np.float32 and 0 < image.data.mean() < 1


def test_a_multi_valued_window_takes_its_first_preset(tmp_path):
    write_slice(tmp_path / "a.dcm", np.full((4, 4), 1064, np.uint16), window=(["40", "400"], ["400", "2000"]))
    image = read_image(tmp_path / "a.dcm")
    assert image.meta["window"] == (-160.0, 239.0)
    np.testing.assert_allclose(image.data, (40 + 160) / 399, atol=1e-6)


def test_a_given_window_overrides_the_header_and_an_unusable_header_window_falls_back(tmp_path):
    write_slice(tmp_path / "a.dcm", np.full((4, 4), 1024, np.uint16), window=("40", "0"), bits_stored=12)
    assert read_image(tmp_path / "a.dcm").meta["window"] == (-1024.0, 3071.0)  # width 0: stored range
    image = read_image(tmp_path / "a.dcm", dicom_window=(-1000, 1000))
    assert image.meta["window_from"] == "given"
    np.testing.assert_allclose(image.data, 0.5, atol=1e-6)
    with pytest.raises(ImageIOError, match=r"a.dcm: DICOM window \(5, 5\) is empty"):
        read_image(tmp_path / "a.dcm", dicom_window=(5, 5))


ROUND_TRIPS = {
    "unsigned-12-bit": dict(pixels=np.arange(0, 4096, 16, dtype=np.uint16).reshape(16, 16), bits_stored=12),
    "signed": dict(pixels=np.arange(-32768, 32768, 256, dtype=np.int16).reshape(16, 16), intercept="0"),
    "big-endian": dict(pixels=np.arange(0, 65536, 256, dtype=np.uint16).reshape(16, 16), big_endian=True),
    "monochrome1": dict(
        pixels=np.arange(0, 4096, 16, dtype=np.uint16).reshape(16, 16), photometric="MONOCHROME1"
    ),
    "slope-intercept": dict(
        pixels=np.arange(0, 256, dtype=np.uint8).reshape(16, 16), slope="0.5", intercept="-1000.25"
    ),
    "negative-slope": dict(pixels=np.arange(-2048, 2048, 16, dtype=np.int16).reshape(16, 16), slope="-2"),
}


@pytest.mark.parametrize("case", ROUND_TRIPS)
def test_an_identity_output_gives_back_the_stored_values_in_the_sources_representation(tmp_path, case):
    options = dict(ROUND_TRIPS[case])
    pixels = options.pop("pixels")
    source = write_slice(tmp_path / "in.dcm", pixels, **options)
    image = read_image(tmp_path / "in.dcm")
    write_image(tmp_path / "out.dcm", image.data, image)
    out = pydicom.dcmread(tmp_path / "out.dcm")
    assert out.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    for tag in ("BitsAllocated", "BitsStored", "PixelRepresentation", "PhotometricInterpretation"):
        assert out[tag].value == source[tag].value, tag
    assert (out.RescaleSlope, out.RescaleIntercept) == (source.RescaleSlope, source.RescaleIntercept)
    back = out.pixel_array.astype(np.int64)
    assert back.dtype.kind == "i" and np.abs(back - pixels.astype(np.int64)).max() <= 1
    # and a reader of the written file sees the same [0, 1] image
    np.testing.assert_allclose(read_image(tmp_path / "out.dcm").data, image.data, atol=1.0 / 4095)


def test_monochrome1_is_written_as_monochrome1_so_displays_do_not_invert(tmp_path):
    pixels = np.tile(np.arange(0, 4096, 256, dtype=np.uint16), (16, 1))
    write_slice(tmp_path / "in.dcm", pixels, photometric="MONOCHROME1", bits_stored=12)
    image = read_image(tmp_path / "in.dcm")
    write_image(tmp_path / "out.dcm", 1.0 - image.data, image)  # a model that inverts the physical values
    out = pydicom.dcmread(tmp_path / "out.dcm")
    assert out.PhotometricInterpretation == "MONOCHROME1"
    np.testing.assert_array_equal(out.pixel_array, 4095 - pixels)


def test_values_outside_the_window_keep_their_source_values_and_inside_it_come_within_one_lsb(tmp_path):
    hu = np.array([[-1000, -160, -100, 0], [100, 239, 240, 2000]], np.int16)
    write_slice(tmp_path / "in.dcm", hu + 1024, window=("40", "400"))
    image = read_image(tmp_path / "in.dcm")
    write_image(tmp_path / "out.dcm", image.data, image)
    out = pydicom.dcmread(tmp_path / "out.dcm")
    np.testing.assert_allclose(out.pixel_array.astype(int) - 1024, hu, atol=1)
    assert "kept from the source (3 pixels)" in out.DerivationDescription
    # clipping only when asked, and said in the output's tags
    image.meta["outside_window"] = "clip"
    write_image(tmp_path / "clipped.dcm", image.data, image)
    clipped = pydicom.dcmread(tmp_path / "clipped.dcm")
    np.testing.assert_allclose(clipped.pixel_array.astype(int) - 1024, np.clip(hu, -160, 239), atol=1)
    assert "values clipped to the window -160..239" in clipped.DerivationDescription


def test_each_run_writes_a_new_numbered_described_series_per_source_series(tmp_path):
    uid_a, uid_b = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    for name, uid in (("a1", uid_a), ("a2", uid_a), ("b1", uid_b)):
        write_slice(tmp_path / f"{name}.dcm", np.zeros((4, 4), np.uint16), series_uid=uid)
    runs = [
        Derivation("resunet deblur fp32", "model resunet, artifact resunet-deblur, fp32", run_number=41),
        Derivation("vit deblur fp16", "model vit, artifact vit-deblur, fp16", run_number=42),
    ]
    written: dict[tuple[int, str], pydicom.Dataset] = {}
    for r, run in enumerate(runs):
        for name in ("a1", "a2", "b1"):
            image = read_dicom(tmp_path / f"{name}.dcm")
            write_dicom(tmp_path / f"out-{r}-{name}.dcm", image.data, image, run)
            written[r, name] = pydicom.dcmread(tmp_path / f"out-{r}-{name}.dcm")
    for r in range(2):
        assert written[r, "a1"].SeriesInstanceUID == written[r, "a2"].SeriesInstanceUID
        assert written[r, "a1"].SeriesInstanceUID not in (uid_a, written[r, "b1"].SeriesInstanceUID)
    uids = {written[r, n].SeriesInstanceUID for r in range(2) for n in ("a1", "b1")}
    assert len(uids) == 4  # a run never reuses another run's series
    assert written[0, "a1"].SeriesNumber == 41003 and written[1, "a1"].SeriesNumber == 42003
    assert written[0, "a1"].SeriesDescription == "resunet deblur fp32"
    assert written[1, "b1"].DerivationDescription == "model vit, artifact vit-deblur, fp16"
    sops = {written[k].SOPInstanceUID for k in written}
    assert len(sops) == len(written)


def test_files_named_by_uid_are_detected_by_their_preamble_whatever_their_suffix(tmp_path):
    write_slice(tmp_path / "1.2.840.113619.2.55.3.123", np.zeros((4, 4), np.uint16))
    write_slice(tmp_path / "IM0001", np.zeros((4, 4), np.uint16))
    (tmp_path / "notes.123").write_bytes(b"x" * 200)
    assert detect_format(tmp_path / "1.2.840.113619.2.55.3.123") == "dicom"
    assert detect_format(tmp_path / "IM0001") == "dicom"
    assert detect_format(tmp_path / "notes.123") is None
    assert read_image(tmp_path / "1.2.840.113619.2.55.3.123").data.shape == (4, 4)


def test_a_slice_declaring_more_pixels_than_the_limits_is_refused_before_decoding(tmp_path, monkeypatch):
    # 16 × 16 pixels present, 20000 × 20000 declared: the header check refuses it, not a decoder
    ds = write_slice(tmp_path / "big.dcm", np.zeros((16, 16), np.uint16))
    ds.Rows = ds.Columns = 20000
    ds.save_as(tmp_path / "big.dcm", enforce_file_format=True)
    refusal = r"big.dcm: DICOM declares 20000×20000 pixels .* above recon's limits"
    with pytest.raises(ImageIOError, match=refusal):
        read_image(tmp_path / "big.dcm")
    # the limits are read at call time: a host may lower them
    write_slice(tmp_path / "small.dcm", np.zeros((64, 64), np.uint16))
    monkeypatch.setattr(limits, "MAX_IMAGE_SIDE", 32)
    with pytest.raises(ImageIOError, match="small.dcm: DICOM declares 64×64 pixels"):
        read_image(tmp_path / "small.dcm")


def test_a_512_ct_slice_keeps_its_header_and_hounsfield_units_through_read_and_write(tmp_path):
    source = ct_slice(tmp_path / "ct.dcm", rng, size=512)
    image = read_image(tmp_path / "ct.dcm")
    assert image.data.shape == (512, 512)
    write_image(tmp_path / "out.dcm", image.data, image)
    out = pydicom.dcmread(tmp_path / "out.dcm")
    assert (out.Rows, out.Columns, out.PixelRepresentation) == (512, 512, 1)
    assert (out.WindowCenter, out.WindowWidth) == (source.WindowCenter, source.WindowWidth)
    hu_in = source.pixel_array.astype(int) - 1024
    hu_out = out.pixel_array.astype(int) * float(out.RescaleSlope) + float(out.RescaleIntercept)
    np.testing.assert_allclose(hu_out, hu_in, atol=1)  # every value kept: the window only shaped the input
