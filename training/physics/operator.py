"""The contract every forward operator follows (deepinv's ``Physics``, kept small): ``A``, its exact adjoint
``A_adjoint``, a pseudo-inverse ``A_dagger`` where the network needs one, and the noise model."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from .noise import RelativeGaussianNoise


class LinearOperator(nn.Module):
    """A linear forward operator on batched images ``(B, 1, H, W)`` with its noise model.

    Subclasses implement ``A`` (image -> measurement) and ``A_adjoint`` (measurement -> image), the exact
    transpose of ``A`` for the discretisation used, so that <A x, y> = <x, A_adjoint y> to rounding
    (``adjointness_error`` measures it; one parametrised test checks every operator). Calling the operator
    simulates a measurement, ``noise_model(A x)``, as deepinv's ``physics(x)`` does; ``A`` stays noiseless.

    What a reconstruction network post-processes is the operator's to say (``network_input``): the
    measurement itself where it already is an image (``measurement_is_image``: blur, deepinv's
    ``ArtifactRemoval(mode="direct")``), else ``A_dagger(y)`` (CT: the FBP, ``mode="pinv"``).
    ``to_config`` returns a JSON-serialisable dict (with "type") that ``physics_from_config`` turns back
    into the same operator.
    """

    measurement_is_image: ClassVar[bool] = True
    network_input_name: ClassVar[str] = "measurement"  # names the no-learning baseline in reports

    def __init__(self, noise_model: nn.Module | None = None) -> None:
        super().__init__()
        self.noise_model = noise_model if noise_model is not None else RelativeGaussianNoise(0.0)

    def A(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def A_dagger(self, y: torch.Tensor) -> torch.Tensor:
        """A pseudo-inverse: measurement -> image (an operator whose networks need one implements it)."""
        raise NotImplementedError(f"{type(self).__name__} has no pseudo-inverse")

    def network_input(self, y: torch.Tensor) -> torch.Tensor:
        """What the network sees for measurement ``y``: ``y`` itself, or ``A_dagger(y)``."""
        return y if self.measurement_is_image else self.A_dagger(y)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """A simulated measurement: ``noise_model(A x)``; ``generator`` makes the noise reproducible."""
        return self.noise_model(self.A(x), generator)

    def adjointness_error(self, x: torch.Tensor, generator: torch.Generator | None = None) -> float:
        """|<A x, y> − <x, Aᵀ y>| / (‖A x‖·‖y‖) for a random ``y`` (≈ rounding for an exact adjoint).

        Raises a ValueError when ``A_adjoint`` does not map back to ``x``'s shape.
        """
        ax = self.A(x)
        y = torch.randn(ax.shape, generator=generator, dtype=ax.dtype).to(ax.device)
        aty = self.A_adjoint(y)
        if aty.shape != x.shape:
            raise ValueError(f"A_adjoint gives shape {tuple(aty.shape)} for images of {tuple(x.shape)}")
        lhs, rhs = (ax * y).sum(), (x * aty).sum()
        return float((lhs - rhs).abs() / (ax.norm() * y.norm()))

    def to_config(self) -> dict[str, Any]:
        raise NotImplementedError


def check_image_batch(x: torch.Tensor, name: str = "x") -> None:
    """Raise a ValueError unless ``x`` is a batch of single-channel images (B, 1, H, W)."""
    if x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"{name} must have shape (B, 1, H, W), got {tuple(x.shape)}")
