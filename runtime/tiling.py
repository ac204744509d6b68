"""Sliding-window (tiled) inference on numpy, as MONAI's `sliding_window_inference` does it.

For what a graph cannot take whole: a ViT's fixed patch grid, images above the manifest's maximum side, or a
memory cap. Overlapping tiles of every image in the batch are cut, run through the predictor in batches, and
blended back with an importance map (Gaussian: high weight in a tile's centre, where the network saw the
most context, near zero at its borders, where it saw padding), then divided by the summed weights. Images
smaller than a tile are reflect-padded up to it and cropped back.

One step beyond MONAI, `trim`: a band of `trim` px along each tile edge that lies inside the image gets
weight zero. A convolutional network's output there saw the tile's padding instead of the neighbouring
pixels; even a 3e-4 Gaussian weight on such a pixel costs a few dB of agreement with whole-image inference.
With overlap >= receptive field and trim = overlap / 2, every pixel comes only from tiles in which it sees
its whole receptive field, so tiled and whole-image outputs agree to float rounding. Every pixel stays
covered while trim <= overlap / 2. Edges on the image border are never trimmed (the whole-image graph pads
there too).

Checked against MONAI (monai/inferers/utils.py `sliding_window_inference`, `_get_scan_interval`;
monai/data/utils.py `compute_importance_map`): scan interval = tile - overlap, the last window is pulled back
to end at the image border, Gaussian sigma = 0.125 · tile, map normalized to max 1 and its zeros raised to the
smallest positive weight so that every pixel has a defined weight. Here the overlap is in pixels.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Predictor = Callable[[np.ndarray], np.ndarray]
SIGMA_SCALE = 0.125  # MONAI's default Gaussian sigma, as a fraction of the tile side


@dataclass(frozen=True)
class TilePlan:
    """Where the windows of one (H, W) image lie: top-left corners and the tile's (height, width)."""

    height: int
    width: int
    tile: tuple[int, int]
    overlap: int

    @property
    def padded(self) -> tuple[int, int]:
        return max(self.height, self.tile[0]), max(self.width, self.tile[1])

    def starts(self) -> list[tuple[int, int]]:
        rows = window_starts(self.padded[0], self.tile[0], self.overlap)
        cols = window_starts(self.padded[1], self.tile[1], self.overlap)
        return [(r, c) for r in rows for c in cols]


def window_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets along one axis: every tile - overlap pixels, the last one flush with the border."""
    if tile >= size:
        return [0]
    step = max(tile - overlap, 1)
    count = -(-(size - tile) // step) + 1  # ceil
    return sorted({min(i * step, size - tile) for i in range(count)})


def _window_line(size: int, blend: str) -> np.ndarray:
    centre = (size - 1) / 2.0
    axis = np.arange(size, dtype=np.float64) - centre
    if blend == "gaussian":
        sigma = SIGMA_SCALE * size
        return np.exp(-(axis**2) / (2.0 * sigma**2))
    if blend == "cosine":  # a raised cosine (Hann) window, 1 in the centre, small but positive at the edge
        return 0.5 * (1.0 + np.cos(np.pi * axis / (centre + 1.0)))
    if blend == "constant":
        return np.ones(size)
    raise ValueError(f"unknown blend {blend!r}; choose gaussian, cosine or constant")


def importance_map(tile: int | tuple[int, int], blend: str = "gaussian") -> np.ndarray:
    """(tile_h, tile_w) float32 weights, max 1, strictly positive; built once per shape (read-only)."""
    tile_h, tile_w = (tile, tile) if isinstance(tile, int) else tile
    return _importance_map(int(tile_h), int(tile_w), blend)


@functools.lru_cache(maxsize=16)
def _importance_map(tile_h: int, tile_w: int, blend: str) -> np.ndarray:
    weights = np.outer(_window_line(tile_h, blend), _window_line(tile_w, blend))
    weights /= weights.max()
    positive = weights[weights > 0]
    weights = np.maximum(weights, positive.min()).astype(np.float32)
    weights.flags.writeable = False  # shared between calls and threads
    return weights


def reflect_pad(images: np.ndarray, height: int, width: int) -> np.ndarray:
    """(B, 1, h, w) padded at the bottom/right up to (height, width) by reflection (repeated if needed)."""
    pad_h, pad_w = height - images.shape[-2], width - images.shape[-1]
    if pad_h <= 0 and pad_w <= 0:
        return images
    mode = "reflect" if min(images.shape[-2:]) > 1 else "edge"  # a single row/column cannot reflect
    widths = ((0, 0), (0, 0), (0, max(pad_h, 0)), (0, max(pad_w, 0)))
    return np.ascontiguousarray(np.pad(images, widths, mode=mode))


def sliding_window(
    images: np.ndarray,
    predictor: Predictor,
    tile: int | tuple[int, int],
    overlap: int,
    batch_size: int = 8,
    blend: str = "gaussian",
    trim: int = 0,
) -> np.ndarray:
    """Run `predictor` on overlapping windows of (B, 1, H, W) `images`; blend; (B, 1, H, W) out.

    `tile` is a side or (tile_h, tile_w); `overlap` and `trim` are in px (see the module docstring).
    `predictor` takes and returns (n, 1, tile_h, tile_w) float32 with n <= batch_size; windows of every
    image are batched together.
    """
    if images.ndim != 4:
        raise ValueError(f"sliding_window takes (B, 1, H, W), got shape {images.shape}")
    tile_h, tile_w = (tile, tile) if isinstance(tile, int) else tile
    if not 0 <= overlap < min(tile_h, tile_w):
        raise ValueError(
            f"overlap must lie in 0..{min(tile_h, tile_w) - 1} px for tiles of {tile}, got {overlap}"
        )
    if not 0 <= trim <= overlap // 2:
        raise ValueError(f"trim must lie in 0..overlap/2 ({overlap // 2}) px so that every pixel is covered")
    count, _, height, width = images.shape
    plan = TilePlan(height, width, (tile_h, tile_w), overlap)
    padded = reflect_pad(images, *plan.padded)
    full_h, full_w = plan.padded
    starts = plan.starts()
    # a window's weights depend only on which of its edges lie inside the image: at most 16 maps, cached,
    # not one copy per window (issue 23: an 8192² image held a full tile map for each of its windows)
    tile_hw = (tile_h, tile_w)
    weights = {s: _trimmed(tile_hw, blend, trim, _inner_edges(s, tile_hw, plan.padded)) for s in starts}
    output = np.zeros(padded.shape, np.float32)
    total = np.zeros((full_h, full_w), np.float32)
    for (row, col), weight in weights.items():  # the weight sum is the same for every image
        total[row : row + tile_h, col : col + tile_w] += weight
    windows = [(index, row, col) for index in range(count) for row, col in starts]
    for first in range(0, len(windows), batch_size):
        chunk = windows[first : first + batch_size]
        batch = np.stack([padded[i, :, r : r + tile_h, c : c + tile_w] for i, r, c in chunk])
        result = predictor(batch)
        if result.shape != batch.shape:
            raise ValueError(f"the predictor returned shape {result.shape} for tiles of shape {batch.shape}")
        for (i, r, c), window in zip(chunk, result, strict=True):
            output[i, :, r : r + tile_h, c : c + tile_w] += window * weights[(r, c)]
    output /= total
    return np.ascontiguousarray(output[..., :height, :width])


def _inner_edges(
    start: tuple[int, int], tile: tuple[int, int], full: tuple[int, int]
) -> tuple[bool, bool, bool, bool]:
    """Which of a window's edges (top, bottom, left, right) lie inside the image, not on its border."""
    (row, col), (tile_h, tile_w) = start, tile
    return row > 0, row + tile_h < full[0], col > 0, col + tile_w < full[1]


@functools.lru_cache(maxsize=64)
def _trimmed(
    tile: tuple[int, int], blend: str, trim: int, inner: tuple[bool, bool, bool, bool]
) -> np.ndarray:
    """The importance map with `trim` px zeroed along the window edges that lie inside the image."""
    weights = importance_map(tile, blend)
    if trim == 0 or not any(inner):
        return weights
    tile_h, tile_w = tile
    top, bottom, left, right = inner
    weights = weights.copy()
    if top:
        weights[:trim] = 0
    if bottom:
        weights[tile_h - trim :] = 0
    if left:
        weights[:, :trim] = 0
    if right:
        weights[:, tile_w - trim :] = 0
    weights.flags.writeable = False
    return weights
