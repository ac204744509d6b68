"""Write a synthetic CT series as a scanner exports it, for trying `recon-run` on DICOM.

    python scripts/ct_dicom_series.py ct-series/ --slices 40 --size 512

Slices are files named by UID (no suffix), int16 stored values with RescaleSlope 1 / RescaleIntercept −1024
(Hounsfield units), WindowCenter 40 / WindowWidth 400, 0.7 mm pixels, 1.25 mm apart along z, one study, one
frame of reference. The anatomy is scikit-image's Shepp-Logan phantom, scaled per slice and mapped to soft
tissue / bone / air HU values; it is not a patient. Needs pydicom and scikit-image.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--slices", type=int, default=40)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
    from skimage.data import shepp_logan_phantom
    from skimage.transform import resize

    rng = np.random.default_rng(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    phantom = resize(shepp_logan_phantom(), (args.size, args.size), order=1, anti_aliasing=True)
    for k in range(args.slices):
        scale = 1.0 - 0.3 * abs(k - args.slices / 2) / args.slices  # the body narrows towards the ends
        side = max(2, int(args.size * scale))
        body = np.zeros((args.size, args.size))
        o = (args.size - side) // 2
        body[o : o + side, o : o + side] = resize(phantom, (side, side), order=1)
        hu = np.where(body > 0, -100 + 300 * body, -1000) + rng.normal(0, 10, body.shape)  # air, tissue, bone
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.Modality, ds.PatientID, ds.PatientName = "CT", "PHANTOM-1", "Phantom^Shepp^Logan"
        ds.SeriesNumber, ds.SeriesDescription, ds.InstanceNumber = 2, "AXIAL 1.25mm (synthetic)", k + 1
        ds.Rows = ds.Columns = args.size
        ds.PixelSpacing = [0.7, 0.7]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-0.35 * args.size, -0.35 * args.size, 1.25 * k]
        ds.SliceThickness = ds.SpacingBetweenSlices = 1.25
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = "1", "-1024", "HU"
        ds.WindowCenter, ds.WindowWidth = "40", "400"
        ds.PixelData = np.clip(np.rint(hu + 1024), -32768, 32767).astype("<i2").tobytes()
        ds.save_as(args.out / ds.SOPInstanceUID, enforce_file_format=True)
    print(f"{args.slices} slices of {args.size}×{args.size} → {args.out}/ (series {series})")


if __name__ == "__main__":
    main()
