"""The two reconstruction tasks: physics, measurement simulation and pipelines, built from a task config.

The configuration itself (`DeblurTask`, `CTTask`: typed, validated, JSON round trip) lives in
`runtime.artifact.task_config` so that the runtime can read it from a manifest without torch. ``deblur``:
motion (or Gaussian) blur + relative Gaussian noise, the measurement has the image's shape. ``ct``:
parallel-beam sinogram ``(B, 1, n_views, n_detectors)`` + relative noise; the network sees the FBP image
and the exported pipeline goes sinogram -> image.
"""

from __future__ import annotations

import torch
from torch import nn

from recon.runtime.artifact.task_config import (
    TASKS,
    CTTask,
    DeblurTask,
    TaskConfig,
    task_config,
    task_config_from_json,
)

from .physics import Blur, LinearOperator, ParallelBeamCT
from .physics.noise import RelativeGaussianNoise

__all__ = [
    "TASKS",
    "CTTask",
    "DeblurTask",
    "ReconstructionPipeline",
    "TaskConfig",
    "build_physics",
    "ct_operator",
    "network_input",
    "simulate",
    "task_config",
    "task_config_from_json",
]


def ct_operator(cfg: CTTask) -> ParallelBeamCT:
    return ParallelBeamCT(
        cfg.image_size,
        cfg.n_views,
        cfg.n_detectors,
        cfg.angle_range,
        detector_spacing=cfg.detector_spacing,
        filter=cfg.filter,
        oversample=cfg.oversample,
        noise_model=RelativeGaussianNoise(cfg.noise_level),
    )


def build_physics(cfg: TaskConfig) -> LinearOperator:
    """The forward operator of a task config, with its noise model: ``Blur`` or ``ParallelBeamCT``.

    The one place that maps a task config to its operator; everything task-specific after this (the
    simulated measurement, what the network sees, the FBP kept in FP32 on export) the operator owns.
    """
    if isinstance(cfg, DeblurTask):
        return Blur(
            kind=cfg.kernel_kind,
            kernel_size=cfg.kernel_size,
            angle=cfg.angle,
            variance=cfg.variance,
            motion_style=cfg.motion_style,
            noise_model=RelativeGaussianNoise(cfg.noise_level),
        )
    if isinstance(cfg, CTTask):
        return ct_operator(cfg)
    raise TypeError(f"expected a DeblurTask or CTTask, got {type(cfg).__name__}")


@torch.no_grad()
def simulate(
    x: torch.Tensor,
    cfg: TaskConfig,
    generator: torch.Generator | None = None,
    physics: LinearOperator | None = None,
) -> torch.Tensor:
    """Clean images ``(B, 1, N, N)`` -> noisy measurements: the operator's ``noise_model(A x)``.

    CT: to avoid the inverse crime, the sinogram is not computed on the grid the network reconstructs
    on. The operator upsamples ``x`` bilinearly by ``oversample`` (same field of view, pixels ``1/k`` as
    wide) and projects it with rays sampled ``1/k`` pixel apart; detector positions and spacing are those
    of the ``N``-pixel geometry, so the sinogram has the usual shape ``(B, 1, n_views, n_detectors)``.
    """
    physics = physics if physics is not None else build_physics(cfg)
    return physics(x, generator)


def network_input(measurement: torch.Tensor, cfg: TaskConfig, physics: LinearOperator) -> torch.Tensor:
    """What the network sees: the blurred image itself (deblur) or the FBP image (ct): the operator's
    ``network_input`` (``cfg`` is kept for callers; the operator built from it decides)."""
    return physics.network_input(measurement)


class ReconstructionPipeline(nn.Module):
    """Measurement -> image as one module (and one ONNX graph): ``network(physics.network_input(m))``,
    i.e. ``network(m)`` (deblur) or ``network(FBP(m))`` (ct).

    The operator's part stays float32 (see :class:`~recon.training.physics.FBP`; the exporter keeps the
    ``physics`` module an FP32 island); the network receives its output cast to the network's own dtype.
    """

    def __init__(self, network: nn.Module, cfg: TaskConfig) -> None:
        super().__init__()
        self.network = network
        self.task_config = cfg
        self.physics = build_physics(cfg)

    def forward(self, measurement: torch.Tensor) -> torch.Tensor:
        image = self.physics.network_input(measurement)
        dtype = next((p.dtype for p in self.network.parameters()), image.dtype)
        return self.network(image.to(dtype))
