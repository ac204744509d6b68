"""Image files for the reader fuzzing: each written with its library and paired with what reading must give.

`write_variant(path, variant, data)` writes one file and returns an `Expectation`: the array `read_image`
must return, or the patterns its ImageIOError must match. Variants cover the valid forms recon-run reads
and the ones it must refuse (colour, palette, multi-frame, no pixel data, compressed without a decoder,
zero rescale slope, 1-D/4-D/empty/object arrays).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

PNG = ["png-L", "png-I16", "png-RGB", "png-RGBA", "png-P", "png-LA", "png-1"]
TIFF = ["tiff", "tiff-stack", "tiff-one-page", "tiff-rgb", "tiff-4d", "tiff-zlib", "tiff-big-endian"]
NPY = ["npy", "npy-stack", "npy-fortran", "npy-big-endian", "npy-0d", "npy-1d", "npy-4d", "npy-empty",
       "npy-object", "npy-structured"]  # fmt: skip
DICOM = ["dcm", "dcm-signed", "dcm-8bit", "dcm-no-rescale", "dcm-empty-rescale", "dcm-monochrome1",
         "dcm-big-endian", "dcm-deflated", "dcm-zero-slope", "dcm-nan-slope", "dcm-palette", "dcm-rgb",
         "dcm-multiframe", "dcm-no-pixels", "dcm-jpeg-lossless", "dcm-short-pixels",
         "dcm-no-suffix", "dcm-window", "dcm-uid-name"]  # fmt: skip
VARIANTS = PNG + TIFF + NPY + DICOM
READABLE = ["png-L", "png-I16", "tiff", "tiff-stack", "tiff-one-page", "tiff-zlib", "tiff-big-endian", "npy",
            "npy-stack", "npy-fortran", "npy-big-endian", "dcm", "dcm-signed", "dcm-8bit", "dcm-no-rescale",
            "dcm-empty-rescale", "dcm-monochrome1", "dcm-big-endian", "dcm-deflated",
            "dcm-no-suffix", "dcm-window", "dcm-uid-name"]  # fmt: skip
TIFF_DTYPES = ["uint8", "uint16", "int16", "uint32", "float16", "float32", "float64"]
NPY_DTYPES = [
    "uint8",
    "uint16",
    "int8",
    "int32",
    "int64",
    "float16",
    "float32",
    "float64",
    "bool",
    "complex64",
]


@dataclass
class Expectation:
    data: np.ndarray | None = None  # what read_image returns (None: it must refuse)
    errors: tuple[str, ...] = ()  # patterns one of which the refusal must match
    atol: float = 0.0


def refuse(*patterns: str) -> Expectation:
    return Expectation(errors=patterns)


def suffix(variant: str) -> str:
    family = variant.split("-")[0]
    if variant == "dcm-no-suffix":
        return ""
    if variant == "dcm-uid-name":  # scanners' export naming: the pathlib suffix is ".123"
        return ".1.2.840.113619.2.55.3.123"
    return {"png": ".png", "tiff": ".tif", "npy": ".npy", "dcm": ".dcm"}[family]


def write_variant(
    path: Path, variant: str, rng: np.random.Generator, h: int, w: int, dtype: str
) -> Expectation:
    family = variant.split("-")[0]
    writer = {"png": _png, "tiff": _tiff, "npy": _npy, "dcm": _dicom}[family]
    return writer(path, variant, rng, h, w, dtype)


def _png(path: Path, variant: str, rng: np.random.Generator, h: int, w: int, dtype: str) -> Expectation:
    from PIL import Image

    mode = variant.split("-", 1)[1]
    if mode == "I16":
        data = rng.integers(0, 65535, (h, w), dtype=np.uint16, endpoint=True)
        Image.fromarray(data).save(path)
        return Expectation(data)
    gray = rng.integers(0, 255, (h, w), dtype=np.uint8, endpoint=True)
    if mode == "L":
        Image.fromarray(gray).save(path)
        return Expectation(gray)
    image = Image.fromarray(gray).convert(mode)
    image.save(path)
    return refuse("PNG mode", r"PNG palette image \(colour type 3\) \(a colour map")


def _tiff(path: Path, variant: str, rng: np.random.Generator, h: int, w: int, dtype: str) -> Expectation:
    import tifffile

    def values(shape: tuple[int, ...]) -> np.ndarray:
        if np.dtype(dtype).kind == "f":
            return rng.normal(0, 100, shape).astype(dtype)
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)

    if variant == "tiff-rgb":
        tifffile.imwrite(path, rng.integers(0, 255, (h, w, 3), dtype=np.uint8), photometric="rgb")
        return refuse("PhotometricInterpretation RGB")
    if variant == "tiff-4d":
        tifffile.imwrite(path, values((2, 2, h, w)), photometric="minisblack")
        return refuse("expected a 2-D image")
    shape = {"tiff-stack": (int(rng.integers(2, 5)), h, w), "tiff-one-page": (1, h, w)}.get(variant, (h, w))
    data = values(shape)
    # a stack of 3 or 4 pages would be stored as planar RGB(A) unless told otherwise
    options: dict = {"photometric": "minisblack"}
    if variant == "tiff-zlib":
        options["compression"] = "zlib"
    if variant == "tiff-big-endian":
        options["byteorder"] = ">"
    tifffile.imwrite(path, data, **options)
    return Expectation(data[0] if variant == "tiff-one-page" else data)


def _npy(path: Path, variant: str, rng: np.random.Generator, h: int, w: int, dtype: str) -> Expectation:
    shapes = {
        "npy-stack": (3, h, w),
        "npy-0d": (),
        "npy-1d": (w,),
        "npy-4d": (2, 1, h, w),
        "npy-empty": (0, h, w),
    }
    shape = shapes.get(variant, (h, w))
    data = (rng.random(shape) * 200 - 50).astype(dtype)
    if variant == "npy-fortran":
        data = np.asfortranarray(data)
    elif variant == "npy-big-endian":
        data = data.astype(data.dtype.newbyteorder(">"))
    elif variant == "npy-object":
        data = np.empty((h, w), dtype=object)
        data[:] = 1
        np.save(path, data, allow_pickle=True)
        return refuse("not a readable NPY file")
    elif variant == "npy-structured":
        data = np.zeros((h, w), dtype=[("a", "<f4"), ("b", "<i2")])
    np.save(path, data)
    if variant in ("npy-0d", "npy-1d", "npy-4d", "npy-empty"):
        return refuse("expected a 2-D image")
    return Expectation(data)


def _dicom(path: Path, variant: str, rng: np.random.Generator, h: int, w: int, dtype: str) -> Expectation:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import (
        CTImageStorage,
        DeflatedExplicitVRLittleEndian,
        ExplicitVRBigEndian,
        ExplicitVRLittleEndian,
        JPEGLosslessSV1,
        generate_uid,
    )

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = {
        "dcm-big-endian": ExplicitVRBigEndian,
        "dcm-deflated": DeflatedExplicitVRLittleEndian,
        "dcm-jpeg-lossless": JPEGLosslessSV1,
    }.get(variant, ExplicitVRLittleEndian)
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.PatientID = "CT", "anon"
    ds.Rows, ds.Columns = h, w
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    signed, bits = variant == "dcm-signed", 8 if variant == "dcm-8bit" else 16
    stored_bits = 12 if bits == 16 else 8
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, stored_bits, stored_bits - 1
    ds.PixelRepresentation = int(signed)
    low, high = (
        (-(1 << (stored_bits - 1)), (1 << (stored_bits - 1)) - 1) if signed else (0, (1 << stored_bits) - 1)
    )
    storage = np.dtype(f"{'i' if signed else 'u'}{bits // 8}")
    stored = rng.integers(low, high, (h, w), endpoint=True).astype(storage)
    slope, intercept = 1.0, -1024.0
    ds.RescaleSlope, ds.RescaleIntercept = "1", "-1024"
    order = ">" if variant == "dcm-big-endian" else "<"
    ds.PixelData = stored.astype(storage.newbyteorder(order)).tobytes()
    ds["PixelData"].VR = "OB" if bits == 8 else "OW"
    expected: Expectation | None = None
    if variant == "dcm-no-rescale":
        del ds.RescaleSlope, ds.RescaleIntercept
        slope, intercept = 1.0, 0.0
    elif variant == "dcm-empty-rescale":
        ds.RescaleSlope, ds.RescaleIntercept = "", ""
        slope, intercept = 1.0, 0.0
    elif variant == "dcm-monochrome1":  # inverted display; the physical values are what recon reads
        ds.PhotometricInterpretation = "MONOCHROME1"
    elif variant == "dcm-window":  # several presets: the first (C 40, W 400) maps HU to [0, 1], clipped
        ds.WindowCenter, ds.WindowWidth = ["40", "300"], ["400", "1500"]
    elif variant in ("dcm-zero-slope", "dcm-nan-slope"):
        ds.RescaleSlope = "0" if variant == "dcm-zero-slope" else "NaN"
        expected = refuse("RescaleSlope")
    elif variant == "dcm-palette":
        ds.PhotometricInterpretation = "PALETTE COLOR"
        expected = refuse(r"PhotometricInterpretation PALETTE COLOR \(a colour map")
    elif variant == "dcm-rgb":
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
        ds.PixelData = rng.integers(0, 255, (h, w, 3), dtype=np.uint8).tobytes()
        expected = refuse("multi-frame or colour")
    elif variant == "dcm-multiframe":
        ds.NumberOfFrames = 2
        ds.PixelData = np.concatenate([stored, stored]).astype(storage).tobytes()
        expected = refuse("multi-frame or colour")
    elif variant == "dcm-no-pixels":
        del ds.PixelData
        expected = refuse("without pixel data")
    elif variant == "dcm-jpeg-lossless":  # a real CT archive syntax that needs pylibjpeg or gdcm
        ds.PixelData = encapsulate([b"\xff\xd8\xff\xc3 not really a jpeg \xff\xd9"])
        expected = refuse(
            r"compressed DICOM \('JPEG Lossless.*\) and no decoder for it is installed",
            r"compressed DICOM \('JPEG Lossless.*\) could not be decoded",
            r"compressed DICOM \('JPEG Lossless.*\) frame declares",
        )
    elif variant == "dcm-short-pixels":
        keep = len(ds.PixelData) // 2
        ds.PixelData = ds.PixelData[: keep - keep % 2]  # even: pydicom would pad an odd length back
        expected = refuse("not a readable DICOM file")
    ds.save_as(path, enforce_file_format=True)
    if expected is not None:
        return expected
    physical = stored.astype(np.float64) * slope + intercept
    lo, hi = sorted((intercept + slope * low, intercept + slope * high))
    if variant == "dcm-window":  # PS3.3 C.11.2.1.2.1 LINEAR: c - 0.5 -/+ (w - 1) / 2
        lo, hi = -160.0, 239.0
    return Expectation(np.clip((physical - lo) / (hi - lo), 0, 1).astype(np.float32), atol=1e-6)
