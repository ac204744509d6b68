"""Parallel-beam tomography maths: Radon transform, its exact adjoint, ramp filters, FBP backprojection.

Geometry (shared by every function here and by scikit-image's ``radon``/``iradon``):

- pixels and detector bins have unit spacing; the rotation centre is pixel ``(N // 2, N // 2)`` and
  detector bin ``D // 2``;
- angle ``a`` takes the values ``θ_a = a · angle_range / n_angles`` (endpoint excluded);
- the pixel at row ``r``, column ``c`` projects onto detector position
  ``s = (c - N//2)·cos θ - (r - N//2)·sin θ + D//2`` (in bins);
- sinograms are ``(B, 1, n_angles, n_detectors)``: one row per angle (scikit-image's is the transpose).
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

FilterName = Literal["ram-lak", "shepp-logan", "hann"]
FILTERS: tuple[str, ...] = ("ram-lak", "shepp-logan", "hann")

# grid_sample points per chunk of angles: bounds the memory of radon() at a few tens of MB
_POINTS_PER_CHUNK = 1 << 21


def default_n_detectors(image_size: int) -> int:
    """``ceil(√2 · N)``: the detector covers the image's diagonal (scikit-image's ``circle=False`` width)."""
    return math.ceil(math.sqrt(2) * image_size)


def parallel_beam_angles(
    n_angles: int, angle_range: float = math.pi, *, dtype: torch.dtype = torch.float32, device=None
) -> torch.Tensor:
    """``n_angles`` equispaced angles over ``[0, angle_range)``, in radians."""
    return torch.arange(n_angles, dtype=dtype, device=device) * (angle_range / n_angles)


def _ray_grid(
    angles: torch.Tensor, n_detectors: int, image_size: int, factor: int, dtype: torch.dtype
) -> torch.Tensor:
    """grid_sample coordinates ``(1, n_angles · K, D, 2)`` of the ray samples, ``K = factor · D`` per ray.

    Samples are ``1 / factor`` pixel apart along each ray, on an image ``factor`` times finer than the
    ``image_size`` grid that defines the geometry.
    """
    a = angles.to(torch.float64)[:, None, None]
    n_samples = factor * n_detectors
    s = (torch.arange(n_detectors, dtype=torch.float64, device=a.device) - n_detectors // 2)[None, None, :]
    t = ((torch.arange(n_samples, dtype=torch.float64, device=a.device) - n_samples // 2) / factor)[
        None, :, None
    ]
    # point at detector offset s and ray offset t, relative to the rotation centre, in coarse pixels
    col = torch.cos(a) * s + torch.sin(a) * t + image_size // 2
    row = -torch.sin(a) * s + torch.cos(a) * t + image_size // 2
    # coarse pixel index -> index on the fine grid (pixel centres) -> [-1, 1] with align_corners=True
    fine = factor * image_size
    gx = (factor * col + (factor - 1) / 2) * (2 / (fine - 1)) - 1
    gy = (factor * row + (factor - 1) / 2) * (2 / (fine - 1)) - 1
    return torch.stack((gx, gy), dim=-1).reshape(1, -1, n_detectors, 2).to(dtype)


def _angle_chunks(n_angles: int, n_detectors: int, factor: int):
    per_angle = factor * n_detectors * n_detectors
    step = max(1, _POINTS_PER_CHUNK // per_angle)
    return [(i, min(i + step, n_angles)) for i in range(0, n_angles, step)]


def radon(x: torch.Tensor, angles: torch.Tensor, n_detectors: int, image_size: int) -> torch.Tensor:
    """Line integrals of ``x`` ``(B, 1, M, M)`` -> sinogram ``(B, 1, n_angles, n_detectors)``.

    Ray-driven: bilinear samples one pixel apart along each ray, summed (scikit-image's rotate-and-sum).
    ``M`` may be ``k · image_size``: ``x`` is then the same field of view sampled ``k`` times finer
    (samples ``1/k`` apart, weighted ``1/k``), and the sinogram keeps the ``image_size`` geometry.
    """
    batch, _, m, m2 = x.shape
    if m != m2 or m % image_size:
        raise ValueError(f"radon needs square images of side k·{image_size}, got {tuple(x.shape)}")
    factor = m // image_size
    planes = x.transpose(0, 1)  # (1, B, M, M): the batch rides in channels and shares one grid
    out = []
    for lo, hi in _angle_chunks(len(angles), n_detectors, factor):
        grid = _ray_grid(angles[lo:hi], n_detectors, image_size, factor, x.dtype)
        samples = F.grid_sample(planes, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        out.append(samples.reshape(batch, hi - lo, factor * n_detectors, n_detectors).sum(2) / factor)
    return torch.cat(out, dim=1).unsqueeze(1)


def radon_adjoint(y: torch.Tensor, angles: torch.Tensor, image_size: int) -> torch.Tensor:
    """The exact transpose of :func:`radon` (at ``k = 1``): sinogram ``(B, 1, A, D)`` -> ``(B, 1, N, N)``."""
    batch, _, n_angles, n_detectors = y.shape
    planes = y.new_zeros(1, batch, image_size, image_size)
    image = torch.zeros_like(planes)
    for lo, hi in _angle_chunks(n_angles, n_detectors, 1):
        grid = _ray_grid(angles[lo:hi], n_detectors, image_size, 1, y.dtype)
        # every sample along a ray received that ray's value: spread it back along the ray
        grad = y[:, 0, lo:hi, None, :].expand(batch, hi - lo, n_detectors, n_detectors)
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


def backproject(y: torch.Tensor, image_size: int, angle_range: float = math.pi) -> torch.Tensor:
    """Pixel-driven backprojection with linear interpolation (``iradon``'s): ``(B, 1, A, D) -> (B, 1, N, N)``.

    Each pixel gathers the two detector bins around its projection and blends them linearly. The bin
    indices and weights are computed in the graph from ``arange`` and the angles' cos/sin (no stored
    grid); they depend on shapes only, so ONNX Runtime / TensorRT may fold them at load time. One
    gather over all (pixel, angle) pairs keeps the exported graph a dozen nodes long for any ``A``.
    Unscaled: FBP multiplies by ``π / (2A)``.
    """
    batch = y.shape[0]
    n_angles, n_detectors = y.shape[-2], y.shape[-1]
    n = image_size
    dtype = y.dtype
    theta = torch.arange(n_angles, dtype=dtype, device=y.device) * (angle_range / n_angles)
    coord = torch.arange(n, dtype=dtype, device=y.device) - n // 2
    # (N, N, A): detector position of pixel (r, c) at angle a, pixel-major so the sum over angles is
    # over the contiguous last axis
    pos = (
        coord[None, :, None] * torch.cos(theta)[None, None, :]
        - coord[:, None, None] * torch.sin(theta)[None, None, :]
        + n_detectors // 2
    )
    left = torch.floor(pos)
    weight = pos - left
    # two zero bins on each side: positions off the detector read zeros on both neighbours
    bin_index = left.clamp(-2, n_detectors).to(torch.int64) + 2
    offsets = torch.arange(n_angles, device=y.device) * (n_detectors + 3)
    index = (bin_index + offsets).reshape(-1)
    weights = torch.stack((1 - weight, weight), dim=-1).reshape(n * n, 2 * n_angles)

    padded = F.pad(y.reshape(batch, n_angles, n_detectors), (2, 2))
    pairs = torch.stack((padded[..., :-1], padded[..., 1:]), dim=-1)  # (B, A, D+3, 2): bins j, j+1
    gathered = torch.index_select(pairs.reshape(batch, n_angles * (n_detectors + 3), 2), 1, index)
    image = (gathered.reshape(batch, n * n, 2 * n_angles) * weights).sum(-1)
    return image.reshape(batch, 1, n, n)
