"""Relative Gaussian noise: the noise norm is a fixed fraction of each sample's signal norm."""

from __future__ import annotations

import torch
from torch import nn


def add_relative_noise(
    y: torch.Tensor, level: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Return ``y + e`` with Gaussian ``e`` scaled so that ``‖e_b‖ = level · ‖y_b‖`` for every sample ``b``.

    The course (IPPy) normalises over the whole batch; per sample is what a single measurement would see,
    so one image's noise does not depend on its batch mates. ``generator`` makes the draw reproducible;
    it may live on another device than ``y`` (the noise is drawn there, then moved).
    """
    if level < 0:
        raise ValueError(f"noise level must be >= 0, got {level}")
    if level == 0:
        return y.clone()
    device = generator.device if generator is not None else y.device
    e = torch.randn(y.shape, generator=generator, device=device, dtype=y.dtype).to(y.device)
    dims = tuple(range(1, y.ndim))
    y_norm = torch.linalg.vector_norm(y, dim=dims, keepdim=True)
    e_norm = torch.linalg.vector_norm(e, dim=dims, keepdim=True)
    return y + e * (level * y_norm / e_norm)


class RelativeGaussianNoise(nn.Module):
    """The noise model an operator carries (deepinv's ``physics.noise_model``): ``add_relative_noise``
    at ``level``. Level 0 returns a copy of the clean measurement."""

    def __init__(self, level: float = 0.0) -> None:
        super().__init__()
        if level < 0:
            raise ValueError(f"noise level must be >= 0, got {level}")
        self.level = float(level)

    def forward(self, y: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return add_relative_noise(y, self.level, generator)

    def extra_repr(self) -> str:
        return f"level={self.level}"
