"""The contract every forward operator follows: ``A`` and its exact adjoint ``A_adjoint``."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class LinearOperator(nn.Module):
    """A linear forward operator on batched images ``(B, 1, H, W)``.

    Subclasses implement ``A`` (image -> measurement) and ``A_adjoint`` (measurement -> image), the exact
    transpose of ``A`` for the discretisation used, so that <A x, y> = <x, A_adjoint y> to rounding.
    ``forward`` is ``A``; ``to_config`` returns a JSON-serialisable dict (with "type") that
    ``physics_from_config`` turns back into the same operator.
    """

    def A(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.A(x)

    def to_config(self) -> dict[str, Any]:
        raise NotImplementedError


def check_image_batch(x: torch.Tensor, name: str = "x") -> None:
    """Raise a ValueError unless ``x`` is a batch of single-channel images (B, 1, H, W)."""
    if x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"{name} must have shape (B, 1, H, W), got {tuple(x.shape)}")
