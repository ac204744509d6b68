"""Real anatomy in the training pool: slices of head MRI volumes mixed with the phantoms and natural crops.

The slices come from `scripts/anatomy_slices.py` (``DIR/train256.npz``, ``DIR/train512.npz``: uint16 stacks,
value / 65535 in [0, 1], split by subject; ``DIR/card.json`` says where each slice comes from). `mixed_pool`
builds the pool `recon-train --anatomy DIR --anatomy-fraction F` trains on: ``round(F · pool)`` anatomy images
(every 256² slice in turn, repeats under another of the 8 dihedral maps) and the rest synthetic
(`data.clean_images`, built in parallel and cached). For CT, ``--anatomy-512 K`` adds K slices of the 512²
stack simulated in the 512² geometry and cut into four 256² tiles each, so the network also sees the finer
streaks of a 512² scan at the same number of views (the real slices it is judged on are 512²), and
``--anatomy-128 K`` adds 4·K slices at half size in the 128² geometry, laid out 2×2 (a 128² scan at 60 views
shows noise more than streaks).
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from recon.training import data as data_mod


def load_stack(folder: str | Path, split: str, size: int) -> torch.Tensor:
    """``folder/{split}{size}.npz`` as float32 (n, 1, size, size) in [0, 1]."""
    path = Path(folder) / f"{split}{size}.npz"
    if not path.exists():
        raise FileNotFoundError(
            f"{path} is missing: build it with `python scripts/anatomy_slices.py --out {folder}`"
        )
    slices = np.load(path)["slices"]
    if slices.dtype != np.uint16 or slices.ndim != 3 or slices.shape[1:] != (size, size):
        raise ValueError(
            f"{path}: expected uint16 slices (n, {size}, {size}), got {slices.dtype} {slices.shape}"
        )
    return torch.from_numpy(slices.astype(np.float32) / 65535)[:, None]


def cycle(stack: torch.Tensor, n: int) -> torch.Tensor:
    """``n`` images from ``stack``: each in turn, the k-th repeat under dihedral map k (8 distinct views)."""
    out = [data_mod._dihedral(stack[i % len(stack)], (i // len(stack)) % 8) for i in range(n)]
    return torch.stack(out) if out else stack[:0]


def tiles(images: torch.Tensor, side: int) -> torch.Tensor:
    """(n, c, k·side, k·side) -> (n·k², c, side, side): non-overlapping tiles, row by row."""
    n, c, h, w = images.shape
    k = h // side
    t = images[:, :, : k * side, : k * side].reshape(n, c, k, side, k, side).permute(0, 2, 4, 1, 3, 5)
    return t.reshape(n * k * k, c, side, side)


def mosaic(images: torch.Tensor, k: int = 2) -> torch.Tensor:
    """(n·k², c, s, s) -> (n, c, k·s, k·s): the inverse of `tiles`."""
    m, c, s, _ = images.shape
    n = m // (k * k)
    grid = images[: n * k * k].reshape(n, k, k, c, s, s).permute(0, 3, 1, 4, 2, 5)
    return grid.reshape(n, c, k * s, k * s)


def _clean_chunk(args: tuple) -> np.ndarray:
    stream, seed, indices, size, sources = args
    torch.set_num_threads(1)
    return np.stack([data_mod.clean_image(stream, seed, i, size, sources) for i in indices])


def synthetic_clean(
    n: int, size: int, seed: int, cache_dir: str | Path | None, workers: int = 0
) -> torch.Tensor:
    """`data.clean_images` for the training stream (identical images), on ``workers`` processes (0: all
    cores), cached under ``cache_dir``: phantoms and rotated crops cost ~50 ms each on one core."""
    if n <= 0:
        return torch.empty(0, 1, size, size)
    key = json.dumps(["clean", data_mod._TRAIN, seed, n, size, data_mod.TRAIN_IMAGES])
    path = (
        Path(cache_dir) / f"clean-{hashlib.sha256(key.encode()).hexdigest()[:16]}.pt" if cache_dir else None
    )
    if path is not None and path.exists():
        return torch.load(path, weights_only=True)
    workers = workers or os.cpu_count() or 1
    chunks = [range(i, min(i + 16, n)) for i in range(0, n, 16)]
    jobs = [(data_mod._TRAIN, seed, list(c), size, data_mod.TRAIN_IMAGES) for c in chunks]
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            parts = list(pool.map(_clean_chunk, jobs))
    else:
        parts = [_clean_chunk(j) for j in jobs]
    clean = torch.from_numpy(np.concatenate(parts))[:, None]
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(clean, path.with_suffix(".tmp"))
        path.with_suffix(".tmp").replace(path)
    return clean


def mixed_pool(
    task_cfg,
    n: int,
    size: int,
    seed: int,
    anatomy: str | Path,
    fraction: float,
    n_512: int = 0,
    n_128: int = 0,
    device: str | torch.device = "cpu",
    cache_dir: str | Path | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, dict]:
    """(clean pool, CT inputs or None, a record for the card). The pool holds ``n`` images (+ 4 tiles per
    512² slice): ``round(fraction·n)`` anatomy slices, the rest synthetic. CT inputs are simulated on
    ``device`` (noise from a CPU generator, see `data.simulate_pairs`)."""
    if not 0 <= fraction <= 1:
        raise ValueError(f"anatomy fraction must be in [0, 1], got {fraction}")
    n_anatomy = round(fraction * n)
    stack = load_stack(anatomy, "train", size)
    parts = [synthetic_clean(n - n_anatomy, size, seed, cache_dir), cycle(stack, n_anatomy)]
    clean = torch.cat(parts)
    record = {
        "folder": str(anatomy),
        "fraction": fraction,
        "synthetic_images": n - n_anatomy,
        "anatomy_images": n_anatomy,
        "anatomy_distinct_slices": min(n_anatomy, len(stack)),
    }
    card_path = Path(anatomy) / "card.json"
    if card_path.exists():
        card = json.loads(card_path.read_text())
        record.update({k: card.get(k) for k in ("split_rule", "reading_rule", "train_subjects", "licences")})
    if not data_mod.needs_precomputed_inputs(task_cfg):
        if n_512 or n_128:
            raise ValueError("--anatomy-512/-128 apply to CT only (deblur sees each image at any size)")
        return clean, None, record
    inputs = data_mod.simulate_pairs(clean, task_cfg, seed=2000 + seed, device=device).inputs
    if n_512:
        big = load_stack(anatomy, "train", 2 * size)[:n_512]
        big_cfg = task_cfg.with_overrides(image_size=2 * size)
        big_inputs = data_mod.simulate_pairs(big, big_cfg, seed=3000 + seed, chunk=4, device=device).inputs
        clean = torch.cat([clean, tiles(big, size)])
        inputs = torch.cat([inputs, tiles(big_inputs, size)])
        record["tiles_from_512"] = {"slices": len(big), "tiles": 4 * len(big), "geometry": big_cfg.to_json()}
    if n_128:
        # 4·K slices shrunk to half size, simulated in the coarser geometry (fewer pixels per view: mostly
        # noise, few streaks, like a 128² scan), laid out 2×2 so that they fit the pool's size
        small = torch.nn.functional.interpolate(cycle(stack, 4 * n_128), scale_factor=0.5, mode="area")
        small_cfg = task_cfg.with_overrides(image_size=size // 2)
        small_inputs = data_mod.simulate_pairs(small, small_cfg, seed=4000 + seed, device=device).inputs
        clean = torch.cat([clean, mosaic(small)])
        inputs = torch.cat([inputs, mosaic(small_inputs)])
        record["mosaics_from_half_size"] = {
            "slices": len(small),
            "mosaics": n_128,
            "geometry": small_cfg.to_json(),
        }
    return clean, inputs, record
