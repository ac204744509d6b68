"""Build the real-anatomy training and held-out slice stacks from volumes that ship inside packages.

    apt-get install mricron-data insighttoolkit5-examples     # Debian 12 packages (no download at run time)
    pip install nibabel && pip install --no-deps nilearn       # NIfTI reader; nilearn only for its data files
    python scripts/anatomy_slices.py --out anatomy             # ≈ 1 min on one core, ≈ 28 MB

Writes OUT/{train,heldout}{256,512}.npz (key `slices`: uint16 n × S × S, value / 65535 = the [0, 1] image) and
OUT/card.json (every slice's source, orientation, index and window; sources, licences, split rule). The
stacks are what `recon-train --anatomy OUT` mixes into the training pool (`recon.training.anatomy`).

Split rule: BY SUBJECT. Every slice of one subject (all files of it, all orientations) lands in one
split: Colin27 (mricron ch2, ch2better), the INIA19 macaque template and the ITK example slices train; the
MNI152 2009a template (nilearn) and the ITK k-means T1 volume are held out. pydicom's and pydicom-data's
CT/MR slices are never read here: they are the real held-out evaluation set (`recon-eval --set real-ct`).

Reading rule (one for all): the volume's values are clipped to its 99.9th percentile, each slice is padded
to a square with its background, resized to S × S (anti-aliased), then min–max normalised to [0, 1] as
`recon.training.data.normalize` does for every training image. Half of the slices (chosen by a fixed seed)
then pass through a random display window (low in [0, 0.35], high in [0.55, 1], clipped, renormalised): CT
is read through its header window (`recon.runtime.io.dicom`), which saturates bone and air, and an MRI
slice alone never shows such flat saturated regions.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

MRICRON = Path("/usr/share/mricron/templates")
ITK = Path("/usr/share/doc/insighttoolkit5-examples/examples/Data")

LICENCES = {  # what each package's own copyright/licence file says (read 2026-12-04); nothing more is claimed
    "mricron-data": "Debian mricron-data 1.2.20211006+dfsg-4: /usr/share/doc/mricron-data/copyright lists "
    "'Files: *  Copyright 2006-2010, Chris Rorden  License: BSD-3-clause' with no separate entry for the "
    "templates (Colin27 ch2*, INIA19)",
    "insighttoolkit5-examples": "Debian insighttoolkit5-examples 5.2.1: "
    "/usr/share/doc/insighttoolkit5-examples/copyright lists 'Files: *  "
    "Copyright 1999-2019 Insight Software Consortium, 2020 NumFOCUS  "
    "License: Apache-2.0'",
    "nilearn": "nilearn 0.14.1 (PyPI wheel): BSD-3-clause (dist-info/licenses/LICENSE) covering the package "
    "data; the wheel states no separate licence for the MNI ICBM152 2009a template file",
}

# (subject, file, package): one subject's files always share a split.
TRAIN_VOLUMES = [
    ("colin27", MRICRON / "ch2better.nii.gz", "mricron-data"),  # 0.5 mm, brain extracted
    ("colin27", MRICRON / "ch2.nii.gz", "mricron-data"),  # 1 mm, with skull and scalp
    ("inia19", MRICRON / "inia19-t1-brain.nii.gz", "mricron-data"),  # rhesus macaque template
]
TRAIN_SLICES_2D = [  # ITK example slices (single 2-D images)
    ("itk-brainweb", ITK / "BrainT1Slice.png"),
    ("itk-brainweb", ITK / "BrainProtonDensitySlice.png"),
    ("itk-brainweb", ITK / "BrainMidSagittalSlice.png"),
    ("itk-fat-mri", ITK / "FatMRISlice.png"),
    ("itk-visible-woman", ITK / "VisibleWomanHeadSlice.png"),
    ("itk-visible-woman", ITK / "VisibleWomanEyeSlice.png"),
]
TRAIN_RAW_2D = [
    ("itk-rat-lung-ct", ITK / "RatLungSlice1.raw"),
    ("itk-rat-lung-ct", ITK / "RatLungSlice2.raw"),
]
HELDOUT_VOLUMES = [
    ("mni152-2009a", "nilearn:mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz", "nilearn"),
    ("itk-kmeans-t1", ITK / "KmeansTest_T1UCharRaw.nii.gz", "insighttoolkit5-examples"),
]


def nilearn_file(name: str) -> Path:
    # nilearn ships its MNI152 templates as package data (nilearn/datasets/data/); reading the file directly
    # avoids nilearn's scikit-learn/pandas imports (load_mni152_template reads this same file).
    import importlib.util

    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("nilearn is not installed: pip install --no-deps nilearn")
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / name


def read_volume(path: str | Path) -> np.ndarray:
    import nibabel

    if isinstance(path, str) and path.startswith("nilearn:"):
        path = nilearn_file(path.split(":", 1)[1])
    vol = np.asanyarray(nibabel.load(str(path)).dataobj).astype(np.float32)
    return np.clip(vol, 0, np.percentile(vol, 99.9))


def square(img: np.ndarray) -> np.ndarray:
    h, w = img.shape
    side = max(h, w)
    out = np.full((side, side), float(img.min()), np.float32)
    out[(side - h) // 2 : (side - h) // 2 + h, (side - w) // 2 : (side - w) // 2 + w] = img
    return out


def to_unit(img: np.ndarray, size: int) -> np.ndarray:
    from skimage.transform import resize

    img = resize(square(img), (size, size), order=1, anti_aliasing=True).astype(np.float32)
    lo, hi = float(img.min()), float(img.max())
    return (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)


def window(img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, list[float]]:
    lo, hi = float(rng.uniform(0, 0.35)), float(rng.uniform(0.55, 1.0))
    return np.clip((img - lo) / (hi - lo), 0, 1), [round(lo, 4), round(hi, 4)]


def volume_slices(vol: np.ndarray, per_axis: int, min_fill: float = 0.2):
    """(axis, index, 2-D slice) at ``per_axis`` evenly spaced positions per axis among slices whose
    foreground (above 5% of the maximum) fills at least ``min_fill`` of the slice."""
    thresh = 0.05 * float(vol.max())
    for axis in range(3):
        fill = (vol > thresh).mean(axis=tuple(a for a in range(3) if a != axis))
        usable = np.flatnonzero(fill >= min_fill)
        if len(usable) == 0:
            continue
        for index in usable[np.linspace(0, len(usable) - 1, min(per_axis, len(usable))).round().astype(int)]:
            yield axis, int(index), np.rot90(np.take(vol, index, axis=axis))


def two_d_slices():
    from PIL import Image

    for subject, path in TRAIN_SLICES_2D:
        img = np.asarray(Image.open(path).convert("L"), np.float32)
        yield subject, path, img
    for subject, path in TRAIN_RAW_2D:  # MetaImage: 128×128 uint8 (RatLungSlice*.mha)
        yield subject, path, np.fromfile(path, np.uint8).reshape(128, 128).astype(np.float32)


def build(split: str, size: int, per_axis: int, rng: np.random.Generator) -> tuple[np.ndarray, list[dict]]:
    images, records = [], []

    def add(img: np.ndarray, record: dict) -> None:
        unit = to_unit(img, size)
        if rng.random() < 0.5:
            unit, record["window"] = window(unit, rng)
        images.append(np.round(unit * 65535).astype(np.uint16))
        records.append(record)

    volumes = TRAIN_VOLUMES if split == "train" else HELDOUT_VOLUMES
    for subject, path, package in volumes:
        vol = read_volume(path)
        for axis, index, img in volume_slices(vol, per_axis):
            add(img, {"subject": subject, "file": Path(str(path)).name, "package": package, "axis": axis,
                      "index": index})  # fmt: skip
    if split == "train" and size <= 256:
        for subject, path, img in two_d_slices():
            add(img, {"subject": subject, "file": path.name, "package": "insighttoolkit5-examples"})
    return np.stack(images), records


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="anatomy")
    parser.add_argument("--per-axis-256", type=int, default=40, help="train slices/volume/axis, 256²")
    parser.add_argument("--per-axis-512", type=int, default=4, help="train slices/volume/axis, 512²")
    parser.add_argument("--heldout-per-axis", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    card = {
        "split_rule": "by subject: all slices of one subject (every file, every orientation) in one split",
        "reading_rule": "clip at the volume's 99.9th percentile, pad to square, resize (anti-aliased), "
        "min-max normalise per slice; half the slices through a random display window",
        "licences": LICENCES,
        "train_subjects": sorted({v[0] for v in TRAIN_VOLUMES + TRAIN_SLICES_2D + TRAIN_RAW_2D}),
        "heldout_subjects": sorted({v[0] for v in HELDOUT_VOLUMES}),
        "not_used": "pydicom / pydicom-data CT and MR slices (the real held-out evaluation set)",
        "stacks": {},
    }
    plan = [("train", 256, args.per_axis_256), ("train", 512, args.per_axis_512),
            ("heldout", 256, args.heldout_per_axis), ("heldout", 512, 2)]  # fmt: skip
    for split, size, per_axis in plan:
        rng = np.random.default_rng([args.seed, size, split == "train"])
        stack, records = build(split, size, per_axis, rng)
        name = f"{split}{size}.npz"
        np.savez_compressed(out / name, slices=stack)  # mostly background: ≈ 3× smaller than .npy
        card["stacks"][name] = {
            "split": split,
            "size": size,
            "n": len(stack),
            "dtype": "uint16 (value / 65535), key 'slices'",
            "bytes": (out / name).stat().st_size,
            "slices": records,
        }
        print(f"{name}: {stack.shape} {(out / name).stat().st_size / 1e6:.1f} MB")
    (out / "card.json").write_text(json.dumps(card, indent=1))


if __name__ == "__main__":
    main()
