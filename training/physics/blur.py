"""Blur: zero-padded "same" cross-correlation with a 2-D kernel, and the kernels the course uses."""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from .operator import LinearOperator, check_image_batch

MotionStyle = Literal["centred", "course"]


def motion_kernel(size: int, angle_deg: float, style: MotionStyle = "centred") -> torch.Tensor:
    """A normalised line of ``size`` taps at ``angle_deg`` degrees in a ``size × size`` kernel.

    ``style`` picks one of two rasterisations (rows grow downwards, as in the course):

    - ``"centred"`` (default): a digital line through the centre pixel ``c = size // 2`` that spans the
      kernel, one tap per column (or per row when the line is steeper than 45°), rounded half away from
      zero so it is symmetric about the centre: 7×7 at 45° has 7 taps on (0,0)…(6,6) and the blur does
      not shift the image.
    - ``"course"``: IPPy's ``K[int(c + (i-c)·sin a), int(c + (i-c)·cos a)] = 1`` for ``i < size``; ``int``
      truncates toward zero, so 7×7 at 45° has 6 taps on (0,0)…(5,5), off-centre. Use it to reproduce
      the course's numbers exactly.
    """
    if size < 1:
        raise ValueError(f"kernel size must be >= 1, got {size}")
    if style not in ("centred", "course"):
        raise ValueError(f"motion_style must be 'centred' or 'course', got {style!r}")
    a = math.radians(angle_deg)
    c = size // 2
    kernel = torch.zeros(size, size, dtype=torch.float64)
    cos_a, sin_a = math.cos(a), math.sin(a)
    for i in range(size):
        if style == "course":
            col, row = int(c + (i - c) * cos_a), int(c + (i - c) * sin_a)
        elif abs(cos_a) >= abs(sin_a):
            col, row = i, c + _round_half_away((i - c) * sin_a / cos_a)
        else:
            col, row = c + _round_half_away((i - c) * cos_a / sin_a), i
        if 0 <= row < size and 0 <= col < size:
            kernel[row, col] = 1.0
    return (kernel / kernel.sum()).float()


def _round_half_away(v: float) -> int:
    # Python's round() rounds half to even, which would make the line asymmetric.
    return int(math.copysign(math.floor(abs(v) + 0.5), v))


def gaussian_kernel(size: int, variance: float) -> torch.Tensor:
    """A normalised ``size × size`` Gaussian ``exp(-(x² + y²) / (2·variance))``; ``variance`` is σ²."""
    if size < 1:
        raise ValueError(f"kernel size must be >= 1, got {size}")
    if variance <= 0:
        raise ValueError(f"variance must be > 0, got {variance}")
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * variance))
    return (g / g.sum()).float()


class Blur(LinearOperator):
    """``A x``: zero-padded "same" cross-correlation with a 2-D kernel; ``A_adjoint``: its transpose.

    Args:
        kernel: a user kernel (k_h, k_w); when given, ``kind`` and its parameters are ignored.
        kind: ``"motion"`` (see :func:`motion_kernel`) or ``"gaussian"`` (see :func:`gaussian_kernel`).
        kernel_size: side of the square kernel.
        angle: motion direction in degrees.
        variance: Gaussian σ².
        motion_style: ``"centred"`` (default, symmetric line) or ``"course"`` (IPPy's truncating line).
        noise_model: what calling the operator adds to ``A x`` (default: none).

    The blurred image is itself an image: networks post-process it directly (``network_input`` is the
    measurement). Even kernel sides pad one pixel more after than before, so the output keeps the input's
    shape.
    """

    network_input_name = "blurred input"

    def __init__(
        self,
        kernel: torch.Tensor | None = None,
        *,
        kind: Literal["motion", "gaussian"] = "motion",
        kernel_size: int = 7,
        angle: float = 45.0,
        variance: float = 1.0,
        motion_style: MotionStyle = "centred",
        noise_model: nn.Module | None = None,
    ) -> None:
        super().__init__(noise_model)
        self.user_kernel = kernel is not None
        if kernel is None:
            if kind == "motion":
                kernel = motion_kernel(kernel_size, angle, motion_style)
            elif kind == "gaussian":
                kernel = gaussian_kernel(kernel_size, variance)
            else:
                raise ValueError(f"unknown blur kind {kind!r}; expected 'motion' or 'gaussian'")
        kernel = torch.as_tensor(kernel, dtype=torch.float32)
        if kernel.ndim != 2:
            raise ValueError(f"kernel must be 2-D, got shape {tuple(kernel.shape)}")
        self.kind, self.kernel_size, self.angle = kind, kernel_size, angle
        self.variance, self.motion_style = variance, motion_style
        self.register_buffer("kernel", kernel[None, None].clone())
        kh, kw = kernel.shape
        # (left, right, top, bottom) so that the output has the input's shape
        self._pad = ((kw - 1) // 2, kw // 2, (kh - 1) // 2, kh // 2)

    def A(self, x: torch.Tensor) -> torch.Tensor:
        check_image_batch(x)
        return F.conv2d(F.pad(x, self._pad), self.kernel.to(x.dtype))

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        check_image_batch(y, "y")
        # the transpose of "pad then valid correlation" is "full convolution then crop the padding"
        full = F.conv_transpose2d(y, self.kernel.to(y.dtype))
        left, _, top, _ = self._pad
        return full[..., top : top + y.shape[-2], left : left + y.shape[-1]]

    def to_config(self) -> dict[str, Any]:
        if self.user_kernel:
            return {"type": "blur", "kernel": self.kernel[0, 0].tolist()}
        return {
            "type": "blur",
            "kind": self.kind,
            "kernel_size": self.kernel_size,
            "angle": self.angle,
            "variance": self.variance,
            "motion_style": self.motion_style,
        }
