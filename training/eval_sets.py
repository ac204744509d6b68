"""Named evaluation sets beyond the synthetic held-out set: real slices nobody here made, per-slice numbers.

`recon-eval --set NAME` evaluates a checkpoint on one of `EVAL_SETS`; each entry says where its images come
from, their size, the split rule and the licence, and the weights cards copy that description next to the
numbers (`card_entry`). A slice's measurement is simulated from the slice itself (seeded per slice), so FBP
(or the blurred image) and the network are scored against the same ground truth, PSNR with peak 1 on [0, 1].

Reading rule for real DICOM slices: the runtime's own reader (`recon.runtime.io.imageio.read_image`), physical
values (HU for CT) through the header's WindowCenter/WindowWidth, as `recon-run` reads them; a CT slice whose
header has no window is read through the soft-tissue window L40/W400 (HU −160…240), the window
scripts/ct_dicom_series.py writes, instead of the stored range (±32768 would squeeze the anatomy into 1% of
[0, 1]). Size: ``native`` keeps each slice's own size (the CT geometry follows it: same views, detectors
⌈√2·N⌉); an integer resizes the slice (anti-aliased), as `recon.training.data.load_image` does.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

SOFT_TISSUE_WINDOW = (-160.0, 240.0)  # L40 / W400 HU
SEED = 20_261_204


@dataclass(frozen=True)
class EvalSetInfo:
    name: str
    source: str
    size: str
    split: str
    licence: str
    files: tuple[str, ...] = ()  # pydicom test-data names (`pydicom.data.get_testdata_file`)


_PYDICOM_LICENCE = (
    "pydicom 3.0.2: MIT except the portions its dist-info/licenses/LICENSE lists; each test file's origin in "
    "pydicom/data/test_files/README.txt (CT_small: downsized from NEMA WG04 CT1_UNC); "
    "pydicom-data 1.0.0: MIT (its package metadata)"
)
EVAL_SETS: dict[str, EvalSetInfo] = {
    "heldout": EvalSetInfo(
        "heldout",
        "synthetic: ellipse phantoms (held-out seed stream) + crops of skimage camera, coins, clock, page",
        "32 images, 256²",
        "seed stream and source images never used in training (recon.training.data)",
        "scikit-image data docstrings: camera CC0 (Lav Varshney), coins 'no known copyright restrictions', "
        "clock public domain (Stefan van der Walt), page: none stated",
    ),
    "real-ct": EvalSetInfo(
        "real-ct",
        "real CT slices shipped in pydicom and pydicom-data: head (693_UNCR, J2K_pixelrep_mismatch), neck "
        "(bad_sequence), pancreas (explicit_VR-UN), CT_small",
        "4 × 512², 1 × 128² (native) or resized",
        "never trained or tuned on (the project's real held-out set, NOTES.md)",
        _PYDICOM_LICENCE,
        (
            "693_UNCR.dcm",
            "J2K_pixelrep_mismatch.dcm",
            "bad_sequence.dcm",
            "explicit_VR-UN.dcm",
            "CT_small.dcm",
        ),  # fmt: skip
    ),
    "real-mr": EvalSetInfo(
        "real-mr",
        "real MR slices shipped in pydicom-data: MR2_UNCR (1024²), MR-SIEMENS-DICOM-WithOverlays "
        "(484², abdomen)",
        "1024², 484² (native) or resized",
        "never trained or tuned on (the project's real held-out set, NOTES.md)",
        _PYDICOM_LICENCE,
        ("MR2_UNCR.dcm", "MR-SIEMENS-DICOM-WithOverlays.dcm"),
    ),
    "anatomy-heldout": EvalSetInfo(
        "anatomy-heldout",
        "held-out subjects of scripts/anatomy_slices.py: MNI152 2009a template (nilearn), ITK k-means T1 "
        "volume (insighttoolkit5-examples); 3 orientations",
        "48 × 256² (heldout256.npz) or 12 × 512² (heldout512.npz)",
        "by subject: no slice of these subjects is in the anatomy training stacks",
        "nilearn BSD-3-clause; insighttoolkit5-examples Apache-2.0 (see anatomy/card.json)",
    ),
}


def real_slice(name: str, size: int | None = None) -> np.ndarray:
    """One pydicom test-data slice as float32 in [0, 1] by the reading rule above (``size``: resized)."""
    from pydicom.data import get_testdata_file

    from recon.runtime.inputs import as_float_images
    from recon.runtime.io.dicom import header_window
    from recon.runtime.io.imageio import read_image

    path = get_testdata_file(name)  # pydicom's own files, then pydicom-data's (installed: no download)
    if path is None:
        raise FileNotFoundError(f"{name}: not found in pydicom's test data (pip install pydicom-data)")
    with warnings.catch_warnings():  # several test files carry deliberately odd headers
        warnings.simplefilter("ignore")
        import pydicom

        ds = pydicom.dcmread(path, stop_before_pixels=True)
        window = None
        if header_window(ds) is None and ds.get("Modality") == "CT":
            window = SOFT_TISSUE_WINDOW
        img = as_float_images(read_image(path, dicom_window=window).data).astype(np.float32)
    if size is not None and img.shape != (size, size):
        from skimage.transform import resize

        img = resize(img, (size, size), order=1, anti_aliasing=True).astype(np.float32)
    return img


def set_images(name: str, size: int | None, anatomy: str | Path = "anatomy") -> list[tuple[str, np.ndarray]]:
    """(label, image) pairs of an evaluation set other than ``heldout`` (``size`` None: native)."""
    info = EVAL_SETS[name]
    if info.files:
        return [(Path(f).stem, real_slice(f, size)) for f in info.files]
    if name == "anatomy-heldout":
        stack = f"heldout{512 if size == 512 else 256}.npz"
        path = Path(anatomy) / stack
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: python scripts/anatomy_slices.py --out {anatomy}")
        slices = np.load(path)["slices"].astype(np.float32) / 65535
        if size not in (None, 256, 512):
            from skimage.transform import resize

            slices = np.stack([resize(s, (size, size), order=1, anti_aliasing=True) for s in slices])
        return [(f"{stack}[{i}]", s.astype(np.float32)) for i, s in enumerate(slices)]
    raise ValueError(f"{name}: not a per-slice set")


@torch.no_grad()
def evaluate_slices(
    model, trained_cfg, images: list[tuple[str, np.ndarray]], seed: int = SEED, device: str = "cpu"
) -> dict:
    """Per-slice PSNR/SSIM of the baseline (FBP or blurred) and of ``model``; slice i's noise uses seed+i
    (drawn on the CPU: the same on every device). CT slices are simulated in the trained geometry at the
    slice's own size. ``device``: where the physics and the network run."""
    from recon.training.data import simulate_pairs
    from recon.training.fit import predict
    from recon.training.metrics import image_metrics

    rows = []
    for i, (label, img) in enumerate(images):
        cfg = trained_cfg
        if trained_cfg.task == "ct" and img.shape[0] != trained_cfg.image_size:
            cfg = trained_cfg.with_overrides(image_size=img.shape[0])
        pairs = simulate_pairs(torch.from_numpy(img)[None, None], cfg, seed=seed + i, device=device)
        out = predict(model.to(device), pairs.inputs, batch_size=1)
        m, b = image_metrics(out, pairs.targets), image_metrics(pairs.inputs, pairs.targets)
        rows.append({"slice": label, "size": list(img.shape), "model": m, "baseline": b,
                     "gain_db": m["psnr"] - b["psnr"]})  # fmt: skip
    gains = [r["gain_db"] for r in rows]
    return {
        "n": len(rows),
        "model": {k: float(np.mean([r["model"][k] for r in rows])) for k in ("psnr", "ssim", "re")},
        "baseline": {k: float(np.mean([r["baseline"][k] for r in rows])) for k in ("psnr", "ssim", "re")},
        "gain_db": {"mean": float(np.mean(gains)), "min": float(np.min(gains)), "max": float(np.max(gains))},
        "slices": rows,
    }


def card_entry(name: str, size: int | None, result: dict, command: str) -> dict:
    """What a weights card records for one set: the set's description, the size, the numbers, the command."""
    info = EVAL_SETS[name]
    summary = {k: v for k, v in result.items() if k not in ("slices", "size")}
    summary["slices"] = [
        {"slice": r["slice"], "size": r["size"], "model_psnr": round(r["model"]["psnr"], 2),
         "baseline_psnr": round(r["baseline"]["psnr"], 2), "gain_db": round(r["gain_db"], 2)}
        for r in result.get("slices", [])
    ]  # fmt: skip
    return {
        "set": name,
        "source": info.source,
        "size": "native" if size is None else f"{size}²",
        "split": info.split,
        "licence": info.licence,
        "command": command,
        **summary,
    }


def report_slices(model, model_name: str, task_cfg, set_name: str, size, anatomy, as_json: bool) -> str:
    """`recon-eval --set NAME` on a per-slice set: a row per slice (baseline, model, gain), then the mean
    (or the whole result as JSON)."""
    import json

    result = evaluate_slices(model, task_cfg, set_images(set_name, size, anatomy))
    result["set"], result["size"] = set_name, "native" if size is None else size
    if as_json:
        return json.dumps(result, indent=1)
    base = "FBP" if task_cfg.task == "ct" else "blurred"
    shown = "native size" if size is None else f"{size}²"
    lines = [
        f"{model_name}-{task_cfg.task} on {set_name} ({shown})",
        f"{'slice':34} {'size':>9} {base + ' dB':>9} {model_name + ' dB':>11} {'gain':>6}",
    ]
    for r in result["slices"]:
        shape = "×".join(map(str, r["size"]))
        lines.append(
            f"{r['slice']:34} {shape:>9} {r['baseline']['psnr']:9.2f} {r['model']['psnr']:11.2f} "
            f"{r['gain_db']:+6.2f}"
        )
    g = result["gain_db"]
    lines.append(
        f"mean gain {g['mean']:+.2f} dB (min {g['min']:+.2f}, max {g['max']:+.2f}) over {result['n']} slices"
    )
    return "\n".join(lines)
