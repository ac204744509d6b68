"""Training data: phantoms and crops, user file formats, held-out disjointness, deterministic samples."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recon.training import data
from recon.training.tasks import task_config


def test_phantoms_are_seeded_in_unit_range_and_any_size():
    a = data.phantom(96, np.random.default_rng(1))
    b = data.phantom(96, np.random.default_rng(1))
    c = data.phantom(96, np.random.default_rng(2))
    assert a.shape == (96, 96) and a.dtype == np.float32
    assert a.min() >= 0 and a.max() == pytest.approx(1.0)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert data.phantom(50, np.random.default_rng(0)).shape == (50, 50)


def test_natural_crops_are_normalized_and_random():
    img = data.source_image("brick")
    a = data.natural_crop(img, 64, np.random.default_rng(0))
    b = data.natural_crop(img, 64, np.random.default_rng(1))
    assert a.shape == (64, 64) and a.min() == 0 and a.max() == pytest.approx(1.0)
    assert not np.array_equal(a, b)
    # Images smaller than the rotated crop (page is 191 px high) are upscaled first.
    assert data.natural_crop(data.source_image("page"), 256, np.random.default_rng(0)).shape == (256, 256)


# ------------------------------------------------------------------------------------------------- formats
def _ramp(h=40, w=60) -> np.ndarray:
    return np.add.outer(np.arange(h), np.arange(w)).astype(np.float64)


@pytest.mark.parametrize("suffix", [".png", ".npy", ".tif"])
def test_image_files_load_normalized_and_resized(tmp_path, suffix):
    import tifffile
    from PIL import Image

    raw = _ramp()
    path = tmp_path / f"img{suffix}"
    if suffix == ".png":
        Image.fromarray((raw / raw.max() * 65535).astype(np.uint16)).save(path)
    elif suffix == ".npy":
        np.save(path, raw * 7 - 300)  # any float range
    else:
        tifffile.imwrite(path, (raw * 3).astype(np.float32))
    img = data.load_image(path)
    assert img.shape == raw.shape and img.dtype == np.float32
    np.testing.assert_allclose(img, raw / raw.max(), atol=1e-4)
    assert data.load_image(path, size=32).shape == (32, 32)


def _write_dicom(path, pixels: np.ndarray, slope: float, intercept: float, window=None) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if window:
        ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)


@pytest.mark.parametrize("window", [(40, 400), None])
def test_training_reads_a_dicom_slice_exactly_as_recon_run_does(tmp_path, window):
    from recon.runtime.inputs import as_float_images
    from recon.runtime.io.imageio import read_image

    raw = (np.arange(32 * 32).reshape(32, 32) * 2).astype(np.uint16)  # 0 … 2046
    _write_dicom(tmp_path / "a.dcm", raw, slope=2.0, intercept=-1024.0, window=window)
    deployed = as_float_images(read_image(tmp_path / "a.dcm").data)
    trained_on = data.load_image(tmp_path / "a.dcm")
    assert trained_on.dtype == np.float32 and trained_on.min() >= 0 and trained_on.max() <= 1
    np.testing.assert_array_equal(trained_on, deployed)  # one reader, one convention
    assert not hasattr(data, "read_dicom")  # no second DICOM implementation in training


def test_course_folder_layout(tmp_path):
    from PIL import Image

    for split, patients in (("train", ["p1", "p2"]), ("test", ["p3"])):
        for p in patients:
            (tmp_path / split / p).mkdir(parents=True)
            for k in range(2):
                Image.fromarray((_ramp() + k).astype(np.uint8)).save(tmp_path / split / p / f"{k}.png")
    assert len(data.list_images(tmp_path, "train")) == 4
    imgs = data.folder_images(tmp_path, "test", 24)
    assert imgs.shape == (2, 1, 24, 24) and float(imgs.max()) == pytest.approx(1.0)
    with pytest.raises(FileNotFoundError, match="no folder"):
        data.list_images(tmp_path, "valid")


# --------------------------------------------------------------------------------------------- disjointness
def test_heldout_sources_and_seeds_are_disjoint_from_training(monkeypatch):
    assert not set(data.HELDOUT_IMAGES) & set(data.TRAIN_IMAGES)
    requested = []
    real = data.source_image.__wrapped__
    monkeypatch.setattr(data, "source_image", lambda name: requested.append(name) or real(name))
    cfg = task_config("deblur")
    clean, _ = data.training_pool(cfg, n=12, size=64)
    data.validation_set(cfg, n=4, size=64)
    assert requested and not set(requested) & set(data.HELDOUT_IMAGES)
    requested.clear()
    heldout = data.clean_images(data._HELDOUT, 0, 12, 64, data.HELDOUT_IMAGES)
    assert set(requested) <= set(data.HELDOUT_IMAGES)
    # Same index, different seed stream: never the same phantom.
    flat_train, flat_test = clean.flatten(1), heldout.flatten(1)
    assert torch.cdist(flat_test, flat_train).min() > 1.0


def test_heldout_set_is_fixed():
    cfg = task_config("deblur")
    a = data.heldout_set(cfg, n=4, size=48)
    data._HELDOUT_CACHE.clear()
    b = data.heldout_set(cfg, n=4, size=48)
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)
    assert a.inputs.shape == (4, 1, 48, 48) and not torch.equal(a.inputs, a.targets)


def test_training_samples_are_a_function_of_seed_epoch_index():
    cfg = task_config("deblur")
    clean = data.clean_images(data._TRAIN, 0, 4, 64, ("brick",))
    ds = data.TrainingPairs(clean, cfg, crop=32, length=10, seed=0)
    x0, x = ds[3]
    assert x0.shape == x.shape == (1, 32, 32)
    assert torch.equal(ds[3][0], x0)
    ds.set_epoch(1)
    assert not torch.equal(ds[3][1], x)
    with pytest.raises(ValueError, match="crop"):
        data.TrainingPairs(clean, cfg, crop=128, length=1)
