"""Parallel-beam tomography maths: Radon transform, its exact adjoint, ramp filters, FBP backprojection.

Geometry (shared by every function here and by scikit-image's ``radon``/``iradon``):

- pixels have unit width, detector bins ``spacing`` pixels (1 by default, scikit-image's geometry); the
  rotation centre is pixel ``(N // 2, N // 2)`` and detector bin ``D // 2``;
- angle ``a`` takes the values ``θ_a = a · angle_range / n_angles`` (endpoint excluded);
- the pixel at row ``r``, column ``c`` projects onto detector position
  ``s = ((c - N//2)·cos θ - (r - N//2)·sin θ) / spacing + D//2`` (in bins);
- sinograms are ``(B, 1, n_angles, n_detectors)``: one row per angle (scikit-image's is the transpose).
"""

from __future__ import annotations

import functools
import math
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from recon.runtime.artifact.task_config import CT_FILTERS

FilterName = Literal["ram-lak", "shepp-logan", "hann"]
FILTERS: tuple[str, ...] = CT_FILTERS

# grid_sample points per chunk of angles: bounds the memory of radon() at a few tens of MB
_POINTS_PER_CHUNK = 1 << 21


def ray_samples(n_detectors: int, spacing: float = 1.0) -> int:
    """Samples per ray, one per pixel: rays as long as the detector is wide (``D · spacing`` pixels)."""
    return math.ceil(n_detectors * spacing - 1e-9)


def parallel_beam_angles(
    n_angles: int, angle_range: float = math.pi, *, dtype: torch.dtype = torch.float32, device=None
) -> torch.Tensor:
    """``n_angles`` equispaced angles over ``[0, angle_range)``, in radians."""
    return torch.arange(n_angles, dtype=dtype, device=device) * (angle_range / n_angles)


def _ray_grid(
    angles: torch.Tensor,
    n_detectors: int,
    image_size: int,
    factor: int,
    dtype: torch.dtype,
    spacing: float = 1.0,
) -> torch.Tensor:
    """grid_sample coordinates ``(1, n_angles · K, D, 2)`` of the ray samples, ``K = factor · L`` per ray
    (``L = ray_samples(D, spacing)``).

    Samples are ``1 / factor`` pixel apart along each ray, on an image ``factor`` times finer than the
    ``image_size`` grid that defines the geometry. The point at detector offset ``s`` and ray offset
    ``t`` sits at column ``c0 + s·cos θ + t·sin θ``, row ``c0 - s·sin θ + t·cos θ`` (``c0 = N // 2``):
    an affine map of ``(s, t)``, so the whole grid is one batched matrix product.
    """
    device = angles.device
    base = _ray_base(n_detectors, factor, dtype, str(device), spacing)
    # coarse pixel -> index on the fine grid (pixel centres) -> [-1, 1] with align_corners=True
    scale = 2 * factor / (factor * image_size - 1)
    shift = (factor * (image_size // 2) + (factor - 1) / 2) * 2 / (factor * image_size - 1) - 1
    cos, sin = torch.cos(angles.to(torch.float64)), torch.sin(angles.to(torch.float64))
    affine = torch.stack(
        (
            torch.stack((scale * cos, -scale * sin), -1),  # coefficient of s for (x, y)
            torch.stack((scale * sin, scale * cos), -1),  # of t
            torch.full((len(angles), 2), shift, dtype=torch.float64, device=device),
        ),
        dim=1,
    ).to(dtype)  # (A, 3, 2)
    return torch.matmul(base.reshape(1, -1, 3), affine).reshape(1, -1, n_detectors, 2)


@functools.lru_cache(maxsize=4)
def _ray_base(n_detectors: int, factor: int, dtype: torch.dtype, device: str, spacing: float) -> torch.Tensor:
    """The ``(s, t, 1)`` triples of every ray sample, ``(K, D, 3)``: the same for every angle, so built once
    (stacking them cost more than the grid_sample per angle at 512², 180 views) and kept for the next call.
    Read-only: callers only multiply it."""
    n_samples = factor * ray_samples(n_detectors, spacing)
    s = torch.arange(n_detectors, dtype=dtype, device=device) - n_detectors // 2
    if spacing != 1.0:
        s = s * spacing
    t = (torch.arange(n_samples, dtype=dtype, device=device) - n_samples // 2) / factor
    return torch.stack(torch.broadcast_tensors(s[None, :], t[:, None], s.new_ones(())), -1)


def _angle_chunks(n_angles: int, n_detectors: int, factor: int, n_ray: int):
    per_angle = factor * n_ray * n_detectors
    step = max(1, _POINTS_PER_CHUNK // per_angle)
    return [(i, min(i + step, n_angles)) for i in range(0, n_angles, step)]


def radon(
    x: torch.Tensor, angles: torch.Tensor, n_detectors: int, image_size: int, spacing: float = 1.0
) -> torch.Tensor:
    """Line integrals of ``x`` ``(B, 1, M, M)`` -> sinogram ``(B, 1, n_angles, n_detectors)``.

    Ray-driven: bilinear samples one pixel apart along each ray, summed (scikit-image's rotate-and-sum).
    ``M`` may be ``k · image_size``: ``x`` is then the same field of view sampled ``k`` times finer
    (samples ``1/k`` apart, weighted ``1/k``), and the sinogram keeps the ``image_size`` geometry.
    """
    batch, _, m, m2 = x.shape
    if m != m2 or m % image_size:
        raise ValueError(f"radon needs square images of side k·{image_size}, got {tuple(x.shape)}")
    factor = m // image_size
    n_ray = ray_samples(n_detectors, spacing)
    planes = x.transpose(0, 1)  # (1, B, M, M): the batch rides in channels and shares one grid
    out = []
    for lo, hi in _angle_chunks(len(angles), n_detectors, factor, n_ray):
        grid = _ray_grid(angles[lo:hi], n_detectors, image_size, factor, x.dtype, spacing)
        samples = F.grid_sample(planes, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        out.append(samples.reshape(batch, hi - lo, factor * n_ray, n_detectors).sum(2) / factor)
    return torch.cat(out, dim=1).unsqueeze(1)


def radon_adjoint(
    y: torch.Tensor, angles: torch.Tensor, image_size: int, spacing: float = 1.0
) -> torch.Tensor:
    """The exact transpose of :func:`radon` (at ``k = 1``): sinogram ``(B, 1, A, D)`` -> ``(B, 1, N, N)``."""
    batch, _, n_angles, n_detectors = y.shape
    n_ray = ray_samples(n_detectors, spacing)
    planes = y.new_zeros(1, batch, image_size, image_size)
    image = torch.zeros_like(planes)
    for lo, hi in _angle_chunks(n_angles, n_detectors, 1, n_ray):
        grid = _ray_grid(angles[lo:hi], n_detectors, image_size, 1, y.dtype, spacing)
        # every sample along a ray received that ray's value: spread it back along the ray
        grad = y[:, 0, lo:hi, None, :].expand(batch, hi - lo, n_ray, n_detectors)
        grad = grad.reshape(1, batch, -1, n_detectors)
        image += torch.ops.aten.grid_sampler_2d_backward(grad, planes, grid, 0, 0, True, [True, False])[0]
    return image.transpose(0, 1)


def ramp_filter_taps(n_detectors: int, filter: FilterName = "ram-lak") -> np.ndarray:
    """The ``2D - 1`` spatial taps ``h[-(D-1)] … h[D-1]`` of scikit-image's ``iradon`` filter, as a real
    convolution.

    ``iradon`` multiplies the FFT of the zero-padded projection (length ``P ≥ 2D``) by ``2|f|`` (times a
    window). Because of the padding that circular convolution equals a linear one with the filter's
    taps at lags ``|m| < D``, so these taps reproduce ``iradon``'s filtering exactly, without an FFT.
    Ram-Lak is ``2·h`` with the textbook ``h[0] = 1/4``, ``h[odd n] = -1/(πn)²`` (NOTES.md: the 2 matters).
    """
    if filter not in FILTERS:
        raise ValueError(f"unknown filter {filter!r}; expected one of {FILTERS}")
    size = max(64, int(2 ** np.ceil(np.log2(2 * n_detectors))))
    n = np.concatenate((np.arange(1, size / 2 + 1, 2, dtype=int), np.arange(size / 2 - 1, 0, -2, dtype=int)))
    f = np.zeros(size)
    f[0] = 0.25
    f[1::2] = -1 / (np.pi * n) ** 2
    response = 2 * np.real(np.fft.fft(f))
    if filter == "shepp-logan":
        omega = np.pi * np.fft.fftfreq(size)[1:]
        response[1:] *= np.sin(omega) / omega
    elif filter == "hann":
        response *= np.fft.fftshift(np.hanning(size))
    kernel = np.real(np.fft.ifft(response))
    lags = np.arange(-(n_detectors - 1), n_detectors)
    return kernel[lags % size]


def ramp_filter_matrix(n_detectors: int, filter: FilterName = "ram-lak") -> torch.Tensor:
    """The filter as a ``(D, D)`` Toeplitz matrix ``T[j, i] = h[i - j]``: filtered = sinogram @ T.

    A matrix product is the cheapest way to run a 2D-1 tap convolution in ONNX Runtime and TensorRT
    (a 1-channel Conv with ~700 taps goes through a large im2col buffer).
    """
    taps = torch.from_numpy(ramp_filter_taps(n_detectors, filter))
    i = torch.arange(n_detectors)
    return taps[i[None, :] - i[:, None] + n_detectors - 1].float()


def backprojection_plan(
    n_angles: int,
    n_detectors: int,
    image_size: int,
    angle_range: float = math.pi,
    *,
    dtype: torch.dtype = torch.float32,
    device=None,
    spacing: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each pixel reads the sinogram: bin indices (int64) and linear weights, both ``(N², A)``.

    Built from ``arange`` and the angles' cos/sin only, so in an exported graph it is a dozen nodes that
    depend on shapes alone (ONNX Runtime and TensorRT fold them at load time; nothing is stored in the
    file). Pixel-major, so the sum over angles runs along the contiguous last axis. Index ``i`` points
    into the sinogram padded with two zero bins on each side and flattened to ``A · (D + 3)`` pairs
    (row ``a`` holds bins ``-2 … D``): positions off the detector read zeros.
    """
    n = image_size
    theta = torch.arange(n_angles, dtype=dtype, device=device) * (angle_range / n_angles)
    coord = torch.arange(n, dtype=dtype, device=device) - n // 2
    # (N, N, A): detector position of pixel (r, c) at angle a, in bins
    pos = (
        coord[None, :, None] * torch.cos(theta)[None, None, :]
        - coord[:, None, None] * torch.sin(theta)[None, None, :]
    )
    if spacing != 1.0:
        pos = pos / spacing
    pos = pos + n_detectors // 2
    left = torch.floor(pos)
    weight = (pos - left).reshape(n * n, n_angles)
    offsets = torch.arange(n_angles, dtype=torch.int64, device=device) * (n_detectors + 3)
    index = (left.clamp(-2, n_detectors).to(torch.int64) + 2 + offsets).reshape(n * n, n_angles)
    return index, weight


def backproject(
    y: torch.Tensor,
    image_size: int,
    angle_range: float = math.pi,
    plan: tuple[torch.Tensor, torch.Tensor] | None = None,
    pixels_per_chunk: int | None = None,
    spacing: float = 1.0,
) -> torch.Tensor:
    """Pixel-driven backprojection with linear interpolation (``iradon``'s): ``(B, 1, A, D) -> (B, 1, N, N)``.

    Each pixel reads the two detector bins around its projection and blends them linearly, written as
    ``bin[i] + w · (bin[i+1] - bin[i])`` so that it takes two element gathers (ONNX GatherElements, ~3×
    faster than Gather in ONNX Runtime) over all (pixel, angle) pairs at once: the exported graph stays
    a dozen nodes for any number of angles. ``plan`` is :func:`backprojection_plan`'s result, computed
    here when not given. ``pixels_per_chunk`` splits the pixels into blocks (eager use): temporaries of
    a few MB stay in the allocator's cache, where one 50 MB buffer per call would be mapped and
    page-faulted afresh each time (10× slower at 180 views). Unscaled: FBP multiplies by ``π / (2A)``.
    """
    batch, n_angles, n_detectors = y.shape[0], y.shape[-2], y.shape[-1]
    if plan is None:
        plan = backprojection_plan(
            n_angles, n_detectors, image_size, angle_range, dtype=y.dtype, device=y.device, spacing=spacing
        )
    index, weight = plan  # (N², A)
    padded = F.pad(y.reshape(batch, n_angles, n_detectors), (2, 2))  # (B, A, D+4)
    value = padded[..., :-1].reshape(batch, 1, -1)  # (B, 1, A·(D+3)): bin j
    slope = (padded[..., 1:] - padded[..., :-1]).reshape(batch, 1, -1)  # bin j+1 - bin j
    n_pixels = image_size * image_size
    step = n_pixels if pixels_per_chunk is None else max(1, pixels_per_chunk)
    blocks = []
    for lo in range(0, n_pixels, step):
        idx = index[lo : lo + step].reshape(1, 1, -1).expand(batch, 1, -1)
        samples = torch.addcmul(
            torch.gather(value, 2, idx), torch.gather(slope, 2, idx), weight[lo : lo + step].reshape(1, 1, -1)
        )
        blocks.append(samples.reshape(batch, 1, -1, n_angles).sum(-1))
    image = blocks[0] if len(blocks) == 1 else torch.cat(blocks, dim=2)
    return image.reshape(batch, 1, image_size, image_size)
