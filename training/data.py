"""Training and evaluation data: synthetic phantoms, image crops, user folders, simulated measurements.

Every image is float32 in [0, 1]. Randomness is always a function of explicit seeds, so a sample is a pure
function of (seed, epoch, index): that is what makes resume exact and DDP ranks agree.

Seeds are namespaced (`_TRAIN`, `_VALID`, `_HELDOUT` streams) and the held-out set is built from source
images that training never reads (`HELDOUT_IMAGES`), so the test set is disjoint from training by design.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from recon.runtime.artifact.task_config import TaskConfig

# skimage.data images available offline (bundled with the wheel). `cat` is `chelsea` again, so it is absent.
TRAIN_IMAGES = (
    "astronaut",
    "coffee",
    "chelsea",
    "brick",
    "grass",
    "gravel",
    "moon",
    "text",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "cell",
)
HELDOUT_IMAGES = ("camera", "coins", "clock", "page")

# Seed streams: the first word of every SeedSequence entropy, so streams can never collide.
_TRAIN, _VALID, _HELDOUT = 0, 1, 2
IMAGE_SUFFIXES = (".png", ".npy", ".tif", ".tiff", ".dcm")  # what recon-run reads too


# --------------------------------------------------------------------------------------------------- sources
def phantom(size: int, rng: np.random.Generator) -> np.ndarray:
    """A CT-like phantom (size, size) in [0, 1]: a body ellipse, random inner ellipses of random intensity,
    a smooth low-frequency texture, small high-contrast dots and thin lines (the hard cases for a network).
    """
    from scipy.ndimage import gaussian_filter
    from skimage.draw import line_aa

    c = (np.arange(size) + 0.5) / size * 2 - 1
    yy, xx = np.meshgrid(c, c, indexing="ij")

    def ellipse(cx: float, cy: float, a: float, b: float, theta: float) -> np.ndarray:
        ct, st = math.cos(theta), math.sin(theta)
        u, v = (xx - cx) * ct + (yy - cy) * st, -(xx - cx) * st + (yy - cy) * ct
        return (u / a) ** 2 + (v / b) ** 2 <= 1

    body = ellipse(
        rng.uniform(-0.05, 0.05),
        rng.uniform(-0.05, 0.05),
        rng.uniform(0.7, 0.95),
        rng.uniform(0.55, 0.9),
        rng.uniform(0, math.pi),
    )
    img = body * rng.uniform(0.2, 0.5)
    for _ in range(rng.integers(6, 16)):
        r, phi = rng.uniform(0, 0.6), rng.uniform(0, 2 * math.pi)
        e = ellipse(
            r * math.cos(phi),
            r * math.sin(phi),
            rng.uniform(0.03, 0.35),
            rng.uniform(0.03, 0.25),
            rng.uniform(0, math.pi),
        )
        img = img + e * body * rng.uniform(-0.3, 0.4)
    texture = gaussian_filter(rng.standard_normal((size, size)), sigma=size / rng.uniform(12, 40))
    img = img + body * texture / (np.abs(texture).max() + 1e-8) * rng.uniform(0.02, 0.1)
    img = np.clip(img, 0, 0.85)
    for _ in range(rng.integers(3, 12)):  # dots of 0.5-2.5 px radius
        e = ellipse(*rng.uniform(-0.7, 0.7, 2), *(rng.uniform(0.5, 2.5, 2) * 2 / size), 0.0)
        img = np.where(e, rng.uniform(0.8, 1.0), img)
    for _ in range(rng.integers(0, 4)):  # thin anti-aliased lines
        r0, c0, r1, c1 = (rng.uniform(0.15, 0.85, 4) * (size - 1)).astype(int)
        rr, cc, val = line_aa(r0, c0, r1, c1)
        img[rr, cc] = np.maximum(img[rr, cc], val * rng.uniform(0.7, 1.0))
    return np.clip(img / max(img.max(), 1e-8), 0, 1).astype(np.float32)


@functools.lru_cache(maxsize=32)
def source_image(name: str) -> np.ndarray:
    """A scikit-image bundled image, grayscale float32 in [0, 1]."""
    import skimage.data
    from skimage.color import rgb2gray, rgba2rgb

    img = getattr(skimage.data, name)()
    if img.ndim == 3:
        img = rgb2gray(rgba2rgb(img) if img.shape[-1] == 4 else img)
    return normalize(img.astype(np.float32))


def normalize(img: np.ndarray) -> np.ndarray:
    """Per-image min-max normalization to [0, 1] (the course's convention); a constant image maps to 0."""
    img = img.astype(np.float32)
    lo, hi = float(img.min()), float(img.max())
    return (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)


def natural_crop(image: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A random (size, size) crop, rotated by a random angle and flipped, normalized to [0, 1]."""
    from skimage.transform import rescale, rotate

    side = math.ceil(size * math.sqrt(2)) + 2  # room to rotate without corners falling outside
    if min(image.shape) < side:
        image = rescale(image, side / min(image.shape) + 1e-3, order=1, anti_aliasing=False)
    top, left = rng.integers(0, image.shape[0] - side + 1), rng.integers(0, image.shape[1] - side + 1)
    patch = rotate(image[top : top + side, left : left + side], rng.uniform(0, 360), order=1, mode="reflect")
    o = (side - size) // 2
    patch = patch[o : o + size, o : o + size]
    if rng.random() < 0.5:
        patch = patch[:, ::-1]
    return normalize(np.ascontiguousarray(patch))


# ------------------------------------------------------------------------------------------------ user files
def load_image(path: str | Path, size: int | None = None) -> np.ndarray:
    """One 2-D image as float32 in [0, 1], resized to (size, size) if given, read by the runtime's own reader
    (`recon.runtime.io.imageio.read_image`) so a model trains on files read exactly as recon-run reads them.

    DICOM: the runtime's convention (physical values through RescaleSlope/Intercept, then its window) as is;
    PNG/TIFF/NPY: integers scaled by their dtype's maximum as the runtime does, then min-max normalized per
    image (the course's convention for clean training images of any range).
    """
    from recon.runtime.inputs import as_float_images
    from recon.runtime.io.imageio import read_image

    image = read_image(path)
    if image.data.ndim != 2:
        raise ValueError(f"{path}: expected a 2-D image, got shape {image.data.shape}")
    img = as_float_images(image.data).astype(np.float32)
    if image.format != "dicom":
        img = normalize(img)
    if size is not None and img.shape != (size, size):
        from skimage.transform import resize

        img = normalize(resize(img, (size, size), order=1, anti_aliasing=True))
    return img.astype(np.float32)


def list_images(root: str | Path, split: str | None = None) -> list[Path]:
    """Image files under ``root/split`` (course layout ``DIR/{train,test}/<patient>/*.png``), sorted."""
    base = Path(root) / split if split else Path(root)
    if not base.is_dir():
        raise FileNotFoundError(f"no folder {base} (expected the layout DIR/train/<patient>/*.png)")
    files = sorted(p for p in base.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {base}")
    return files


def folder_images(root: str | Path, split: str, size: int, limit: int | None = None) -> torch.Tensor:
    """All images of one split of a course-layout folder as (n, 1, size, size)."""
    files = list_images(root, split)[:limit]
    return torch.from_numpy(np.stack([load_image(f, size) for f in files]))[:, None]


# ------------------------------------------------------------------------------------------------ clean sets
def _rng(*words: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(w) for w in words]))


def clean_images(
    stream: int, seed: int, n: int, size: int, sources: tuple[str, ...], start: int = 0
) -> torch.Tensor:
    """``n`` clean images (n, 1, size, size): even indices phantoms, odd ones crops of ``sources`` in turn.

    ``sources=()`` gives phantoms only. Image i uses the seed (stream, seed, i) alone, so images
    ``start … start + n - 1`` of a long set can be made a batch at a time.
    """
    out = np.empty((n, 1, size, size), np.float32)
    for k, i in enumerate(range(start, start + n)):
        out[k, 0] = clean_image(stream, seed, i, size, sources)
    return torch.from_numpy(out)


def clean_image(stream: int, seed: int, i: int, size: int, sources: tuple[str, ...]) -> np.ndarray:
    """Image ``i`` of `clean_images` alone (so that workers can build a pool in parallel)."""
    rng = _rng(stream, seed, i)
    if not sources or i % 2 == 0:
        return phantom(size, rng)
    return natural_crop(source_image(sources[(i // 2) % len(sources)]), size, rng)


# ------------------------------------------------------------------------------------------ measurement sets
@dataclass
class EvalSet:
    """Fixed pairs for validation / testing: ``inputs`` are what the network sees (blurred image or FBP),
    ``measurements`` what a scanner gives (blurred image or sinogram), ``targets`` the ground truth."""

    inputs: torch.Tensor
    targets: torch.Tensor
    measurements: torch.Tensor

    def __len__(self) -> int:
        return len(self.targets)


SIMULATION_CHUNK = 16  # images per simulate() call: the noise generator's draws follow these chunks


@torch.no_grad()
def simulate_pairs(
    clean: torch.Tensor,
    task_cfg: TaskConfig,
    seed: int,
    chunk: int = SIMULATION_CHUNK,
    device: str | torch.device = "cpu",
) -> EvalSet:
    """Measurements (forward + relative noise) and network inputs for clean images, deterministically.

    ``device`` runs the physics there (a GPU simulates a training pool in seconds); the noise is still drawn
    from a CPU generator, so the draw is the same on every device; results come back on the CPU.
    """
    from recon.training import tasks

    physics = tasks.build_physics(task_cfg).to(device)
    gen = torch.Generator().manual_seed(seed)
    meas, inputs = [], []
    for i in range(0, len(clean), chunk):
        y = tasks.simulate(clean[i : i + chunk].to(device), task_cfg, gen, physics=physics)
        meas.append(y.cpu())
        inputs.append(tasks.network_input(y, task_cfg, physics).cpu())
    return EvalSet(torch.cat(inputs).float(), clean, torch.cat(meas).float())


@torch.no_grad()
def measurement_batches(
    stream: int, seed: int, n: int, task_cfg: TaskConfig, sources: tuple[str, ...], noise_seed: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``simulate_pairs(clean_images(stream, seed, n, ...), task_cfg, noise_seed).measurements`` (and the
    clean images), 16 at a time and without the network inputs: the same numbers (same chunks, one noise
    generator) in a few MB, where the whole set at 512² is GBs and the FBP of every image minutes."""
    from recon.training import tasks

    physics = tasks.build_physics(task_cfg)
    gen = torch.Generator().manual_seed(noise_seed)
    for lo in range(0, n, SIMULATION_CHUNK):
        clean = clean_images(stream, seed, min(SIMULATION_CHUNK, n - lo), task_cfg.image_size, sources, lo)
        y = tasks.simulate(clean, task_cfg, gen, physics=physics)
        yield y.float().numpy(), clean.numpy()


_HELDOUT_CACHE: dict[str, EvalSet] = {}


def heldout_set(task_cfg: TaskConfig, n: int = 32, size: int = 256) -> EvalSet:
    """The fixed held-out test set: half phantoms from the held-out seed stream, half crops of
    `HELDOUT_IMAGES` (never used in training). Identical on every call and machine (CPU simulation)."""
    key = json.dumps([task_cfg.to_json(), n, size], sort_keys=True)
    if key not in _HELDOUT_CACHE:
        clean = clean_images(_HELDOUT, 0, n, size, HELDOUT_IMAGES)
        _HELDOUT_CACHE[key] = simulate_pairs(clean, task_cfg, seed=20_261_125)
    return _HELDOUT_CACHE[key]


def validation_set(
    task_cfg: TaskConfig, n: int = 8, size: int = 256, seed: int = 0, data: str | None = None
) -> EvalSet:
    """A small validation set for model selection: the training sources, validation seed stream (or, with a
    user folder, its ``test`` split)."""
    if data:
        clean = folder_images(data, "test", size, limit=n)
    else:
        clean = clean_images(_VALID, seed, n, size, TRAIN_IMAGES)
    return simulate_pairs(clean, task_cfg, seed=1000 + seed)


def training_pool(
    task_cfg: TaskConfig,
    n: int,
    size: int,
    seed: int = 0,
    data: str | None = None,
    cache_dir: str | Path | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Clean training images (n, 1, size, size), and for CT their precomputed FBP inputs (else None).

    CT measurements are expensive (sinogram from a finer grid, then FBP), so they are simulated once per pool
    image and cached on disk under ``cache_dir`` keyed by the recipe; deblurring is simulated per sample.
    """
    clean = folder_images(data, "train", size) if data else clean_images(_TRAIN, seed, n, size, TRAIN_IMAGES)
    if not needs_precomputed_inputs(task_cfg):
        return clean, None
    recipe = json.dumps(
        [task_cfg.to_json(), n, size, seed, data and str(Path(data).resolve())], sort_keys=True
    )
    path = (
        Path(cache_dir) / f"pool-{hashlib.sha256(recipe.encode()).hexdigest()[:16]}.pt" if cache_dir else None
    )
    if path is not None and path.exists():
        return clean, torch.load(path, weights_only=True)
    inputs = simulate_pairs(clean, task_cfg, seed=2000 + seed).inputs
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(inputs, path.with_suffix(".tmp"))
        path.with_suffix(".tmp").replace(path)
    return clean, inputs


def needs_precomputed_inputs(task_cfg: TaskConfig) -> bool:
    return task_cfg.task == "ct"


# ----------------------------------------------------------------------------------------- training samples
def _dihedral(t: torch.Tensor, k: int) -> torch.Tensor:
    t = torch.rot90(t, k % 4, dims=(-2, -1))
    return t.flip(-1) if k >= 4 else t


class TrainingPairs(Dataset):
    """Random (crop, crop) training pairs (network input, target); sample (epoch, i) is a pure function of
    (seed, epoch, i). Crops are taken from the pool; deblur pairs get a fresh dihedral transform, blur and
    noise per sample; CT pairs crop the cached FBP and target together (the 8 dihedral maps keep a parallel
    beam's angle set with an even count of views invariant, so the artifacts stay realistic)."""

    def __init__(
        self,
        clean: torch.Tensor,
        task_cfg: TaskConfig,
        crop: int,
        length: int,
        seed: int = 0,
        inputs: torch.Tensor | None = None,
    ):
        if crop > clean.shape[-1]:
            raise ValueError(f"crop {crop} larger than the pool images ({clean.shape[-1]})")
        self.clean, self.inputs, self.task_cfg = clean, inputs, task_cfg
        self.crop, self.length, self.seed, self.epoch = crop, length, seed, 0
        self._physics = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        from recon.training import tasks

        rng = _rng(_TRAIN, self.seed, 1 + self.epoch, i)
        p = int(rng.integers(len(self.clean)))
        h, w = self.clean.shape[-2:]
        top, left = int(rng.integers(h - self.crop + 1)), int(rng.integers(w - self.crop + 1))
        k = int(rng.integers(8))
        box = (slice(None), slice(top, top + self.crop), slice(left, left + self.crop))
        x = _dihedral(self.clean[p][box], k)
        if self.inputs is not None:
            return _dihedral(self.inputs[p][box], k), x
        if self._physics is None:
            self._physics = tasks.build_physics(self.task_cfg)
        gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
        with torch.no_grad():
            y = tasks.simulate(x[None], self.task_cfg, gen, physics=self._physics)
            return tasks.network_input(y, self.task_cfg, self._physics)[0].float(), x
