"""Parallel-beam CT: the operator (Radon / its adjoint) and the exportable FBP module.

Sinogram layout, everywhere in recon: ``(B, 1, n_angles, n_detectors)``, one row per projection angle,
angles ``θ_a = a · angle_range / n_angles`` (endpoint excluded), detector bin ``D // 2`` on the rotation
axis. See ``radon.py`` for the full geometry (it is scikit-image's, with the sinogram transposed).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from recon.runtime.artifact.task_config import default_n_detectors

from .operator import LinearOperator, check_image_batch
from .radon import (
    FILTERS,
    FilterName,
    backproject,
    backprojection_plan,
    parallel_beam_angles,
    radon,
    radon_adjoint,
    ramp_filter_matrix,
)


def check_sinogram(y: torch.Tensor, n_angles: int, n_detectors: int) -> None:
    """Raise a ValueError unless ``y`` is a batch of sinograms ``(B, 1, n_angles, n_detectors)``."""
    if y.ndim != 4 or tuple(y.shape[1:]) != (1, n_angles, n_detectors):
        raise ValueError(f"sinogram must have shape (B, 1, {n_angles}, {n_detectors}), got {tuple(y.shape)}")


class ParallelBeamCT(LinearOperator):
    """Parallel-beam CT on an ``image_size²`` grid: ``A`` = Radon transform, ``A_adjoint`` = its transpose.

    Args:
        image_size: side ``N`` of the square image.
        n_angles: number of projections, equispaced over ``[0, angle_range)``.
        n_detectors: detector bins; default ``ceil(√2·N / spacing)`` so that every ray through the
            square image hits the detector (363 for N = 256).
        angle_range: angular span in radians (π for a full parallel-beam scan).
        detector_spacing: width of a detector bin in image pixels (1: scikit-image's geometry).
        filter: the FBP's ramp filter (``A_dagger``), one of ``FILTERS``.
        oversample: simulated measurements (calling the operator) project the image upsampled ``k``
            times (bilinear, same field of view) against the inverse crime; ``A`` itself does not.
        noise_model: what calling the operator adds to the sinogram (default: none).

    ``A`` is ray-driven (bilinear samples along each ray, like ``skimage.transform.radon``) and also
    accepts an image ``k`` times finer than ``N`` over the same field of view. ``A_adjoint`` is its exact
    transpose. ``A_dagger`` is the pixel-driven filtered backprojection of ``iradon`` (the exportable
    ``FBP`` module ``self.fbp``; its backprojection is a different discretisation of the same continuous
    operator as ``A_adjoint``), and what the network post-processes (``network_input``).
    """

    measurement_is_image = False
    network_input_name = "FBP"

    def __init__(
        self,
        image_size: int,
        n_angles: int,
        n_detectors: int | None = None,
        angle_range: float = math.pi,
        detector_spacing: float = 1.0,
        filter: FilterName = "ram-lak",
        oversample: int = 1,
        noise_model: nn.Module | None = None,
    ) -> None:
        super().__init__(noise_model)
        if image_size < 2 or n_angles < 1 or not detector_spacing > 0 or oversample < 1:
            raise ValueError(
                "need image_size >= 2, n_angles >= 1, detector_spacing > 0 and oversample >= 1, got "
                f"{image_size}, {n_angles}, {detector_spacing}, {oversample}"
            )
        self.image_size = int(image_size)
        self.n_angles = int(n_angles)
        self.detector_spacing = float(detector_spacing)
        self.n_detectors = (
            int(n_detectors)
            if n_detectors is not None
            else default_n_detectors(image_size, self.detector_spacing)
        )
        self.angle_range = float(angle_range)
        self.oversample = int(oversample)
        self.fbp = FBP(self, filter)

    @property
    def sinogram_shape(self) -> tuple[int, int]:
        return (self.n_angles, self.n_detectors)

    def angles(self, dtype: torch.dtype = torch.float64, device=None) -> torch.Tensor:
        return parallel_beam_angles(self.n_angles, self.angle_range, dtype=dtype, device=device)

    def A(self, x: torch.Tensor) -> torch.Tensor:
        check_image_batch(x)
        return radon(
            x, self.angles(device=x.device), self.n_detectors, self.image_size, self.detector_spacing
        )

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        check_sinogram(y, self.n_angles, self.n_detectors)
        return radon_adjoint(y, self.angles(device=y.device), self.image_size, self.detector_spacing)

    def A_dagger(self, y: torch.Tensor) -> torch.Tensor:
        """Filtered backprojection of a sinogram ``(B, 1, A, D)`` -> image ``(B, 1, N, N)``."""
        return self.fbp(y)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.oversample > 1:  # the sinogram is not computed on the grid the network reconstructs on
            x = F.interpolate(x, scale_factor=self.oversample, mode="bilinear", align_corners=False)
        return super().forward(x, generator)

    def to_config(self) -> dict[str, Any]:
        return {
            "type": "parallel_beam_ct",
            "image_size": self.image_size,
            "n_angles": self.n_angles,
            "n_detectors": self.n_detectors,
            "angle_range": self.angle_range,
            "detector_spacing": self.detector_spacing,
            "filter": self.fbp.filter,
            "oversample": self.oversample,
        }


class FBP(nn.Module):
    """Filtered backprojection as an exportable module: sinogram ``(B, 1, A, D)`` -> image ``(B, 1, N, N)``.

    Filtering is a real convolution with ``iradon``'s filter taps (a Toeplitz matrix product, no FFT, so
    it runs in TensorRT and ORT-CUDA); backprojection gathers the two neighbouring bins per pixel and
    angle with linear interpolation, coordinates computed in the graph from the angles' cos/sin; the
    result is scaled by ``π / (2A)``. It reproduces ``skimage.transform.iradon`` (``circle=False``) to
    float32 rounding. Computes in float32 (float64 for float64 input) even after ``.half()``: FP16
    sampling coordinates cost ~1% error.
    """

    def __init__(self, ct: ParallelBeamCT, filter: FilterName = "ram-lak") -> None:
        super().__init__()
        if filter not in FILTERS:
            raise ValueError(f"unknown filter {filter!r}; expected one of {FILTERS}")
        self.image_size, self.n_angles, self.n_detectors = ct.image_size, ct.n_angles, ct.n_detectors
        self.angle_range, self.detector_spacing = ct.angle_range, ct.detector_spacing
        self.filter = filter
        self.register_buffer("filter_matrix", ramp_filter_matrix(ct.n_detectors, filter))
        self._plans: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def _apply(self, fn, recurse=True):
        # keep the filter FP32 when a surrounding model is cast with .half() / .bfloat16()
        super()._apply(fn, recurse)
        if self.filter_matrix.dtype in (torch.float16, torch.bfloat16):
            self.filter_matrix = self.filter_matrix.float()
        return self

    def __getstate__(self) -> dict[str, Any]:
        # the sampling plans (tens of MB) are rebuilt on demand, never pickled or deep-copied
        return {**self.__dict__, "_plans": {}}

    def forward(self, sinogram: torch.Tensor) -> torch.Tensor:
        check_sinogram(sinogram, self.n_angles, self.n_detectors)
        dtype = torch.float64 if sinogram.dtype == torch.float64 else torch.float32
        y = sinogram.to(dtype)
        filtered = torch.matmul(y, self.filter_matrix.to(dtype))
        plan = self._plan(dtype, y.device)
        n_pairs = self.image_size**2 * self.n_angles  # (pixel, angle) pairs per image
        if plan is None:
            # traced: at most 16 blocks of pixels (~7 ONNX nodes each) keep ONNX Runtime's temporaries
            # near cache size (25% faster at 180 views than one block) without bloating the graph
            blocks = min(16, math.ceil(n_pairs / (1 << 18)))
        else:
            blocks = math.ceil(n_pairs * y.shape[0] / (1 << 20))  # eager: ~2^20 pairs per block
        chunk = math.ceil(self.image_size**2 / max(1, blocks))
        image = backproject(filtered, self.image_size, self.angle_range, plan, chunk, self.detector_spacing)
        # bins `spacing` pixels wide: the ramp filter's taps scale as 1/spacing², its sum by spacing
        scale = math.pi / (2 * self.n_angles)
        return image * (scale / self.detector_spacing if self.detector_spacing != 1.0 else scale)

    def _plan(self, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor] | None:
        # Eager runs reuse the sampling plan (A·N² indices and weights, ~47 MB at 60 views, 256²). A traced
        # graph must compute it in-graph instead, or export would store it in the file.
        if torch.compiler.is_compiling() or torch.compiler.is_exporting():
            return None
        key = (dtype, device)
        if key not in self._plans:
            self._plans[key] = backprojection_plan(
                self.n_angles,
                self.n_detectors,
                self.image_size,
                self.angle_range,
                dtype=dtype,
                device=device,
                spacing=self.detector_spacing,
            )
        return self._plans[key]
