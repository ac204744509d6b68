"""DICOM slices and series written with pydicom for the DICOM tests (real files, real headers)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def write_slice(
    path: Path,
    pixels: np.ndarray,
    *,
    series_uid: str | None = None,
    study_uid: str | None = None,
    frame_uid: str | None = None,
    instance: int | None = 1,
    position: tuple[float, float, float] = (-100.0, -120.0, 35.5),
    orientation: tuple[float, ...] = (1, 0, 0, 0, 1, 0),
    bits_stored: int | None = None,
    slope: str | None = "1",
    intercept: str | None = "-1024",
    window: tuple[Any, Any] | None = None,
    photometric: str = "MONOCHROME2",
    big_endian: bool = False,
    series_number: int = 3,
    series_description: str = "AXIAL 1.25mm",
    **tags: Any,
) -> Any:
    """One CT slice storing `pixels` (uint8/uint16/int16) as given; returns the dataset written."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRBigEndian, ExplicitVRLittleEndian, generate_uid

    pixels = np.asarray(pixels)
    bits = pixels.dtype.itemsize * 8
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRBigEndian if big_endian else ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.FrameOfReferenceUID = frame_uid or generate_uid()
    ds.Modality, ds.PatientID, ds.PatientName = "CT", "anon-7", "Anon^Seven"
    ds.SeriesNumber, ds.SeriesDescription = series_number, series_description
    if instance is not None:
        ds.InstanceNumber = instance
    ds.Rows, ds.Columns = pixels.shape
    ds.PixelSpacing = [0.7, 0.7]
    ds.ImagePositionPatient = list(position)
    ds.ImageOrientationPatient = list(orientation)
    ds.SliceThickness, ds.SpacingBetweenSlices = 1.25, 1.25
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    stored_bits = bits_stored or bits
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, stored_bits, stored_bits - 1
    ds.PixelRepresentation = int(pixels.dtype.kind == "i")
    if slope is not None:
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    for key, value in tags.items():
        setattr(ds, key, value)
    order = ">" if big_endian else "<"
    ds.PixelData = pixels.astype(pixels.dtype.newbyteorder(order)).tobytes()
    ds["PixelData"].VR = "OB" if bits == 8 else "OW"
    ds.save_as(path, enforce_file_format=True)
    return ds


def ct_slice(path: Path, rng: np.random.Generator, size: int = 512, **options: Any) -> Any:
    """A CT slice as scanners write it: int16 HU + 1024 (slope 1, intercept −1024), window 40/400."""
    hu = rng.normal(0, 300, (size, size)).clip(-1024, 3071)
    stored = np.rint(hu + 1024).astype(np.int16)
    options.setdefault("window", ("40", "400"))
    return write_slice(path, stored, **options)


def write_series(
    folder: Path,
    n_slices: int,
    rng: np.random.Generator,
    *,
    size: int = 32,
    series_uid: str | None = None,
    spacing: float = 1.25,
    orientation: tuple[float, ...] = (1, 0, 0, 0, 1, 0),
    name: Any = None,
    instance_numbers: bool = True,
    **options: Any,
) -> tuple[str, list[tuple[Path, Any]]]:
    """`n_slices` slices of one series stacked along the orientation's normal, slice k at k·spacing.

    `name(k)` names slice k's file (default: a UID-style name with an unknown suffix). Returns the series
    UID and (path, dataset) per slice in anatomical order.
    """
    from pydicom.uid import generate_uid

    series_uid = series_uid or generate_uid()
    study, frame = generate_uid(), generate_uid()
    row, col = np.array(orientation[:3], float), np.array(orientation[3:], float)
    normal = np.cross(row, col)
    origin = np.array([-100.0, -120.0, 35.5])
    written = []
    for k in range(n_slices):
        path = folder / (name(k) if name else f"{generate_uid()}")
        pixels = (rng.integers(0, 4096, (size, size)) // 16 * 16 + k % 16).astype(np.uint16)  # k in the LSBs
        ds = write_slice(
            path,
            pixels,
            series_uid=series_uid,
            study_uid=study,
            frame_uid=frame,
            instance=k + 1 if instance_numbers else None,
            position=tuple(origin + k * spacing * normal),
            orientation=orientation,
            bits_stored=12,
            **options,
        )
        written.append((path, ds))
    return series_uid, written
