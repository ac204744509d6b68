"""The two reconstruction tasks: physics, measurement simulation and pipelines, built from a task config.

The configuration itself (`DeblurTask`, `CTTask`: typed, validated, JSON round trip) lives in
`runtime.artifact.task_config` so that the runtime can read it from a manifest without torch. ``deblur``:
motion (or Gaussian) blur + relative Gaussian noise, the measurement has the image's shape. ``ct``:
parallel-beam sinogram ``(B, 1, n_views, n_detectors)`` + relative noise; the network sees the FBP image
and the exported pipeline goes sinogram -> image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from recon.runtime.artifact.task_config import (
    TASKS,
    CTTask,
    DeblurTask,
    TaskConfig,
    task_config,
    task_config_from_json,
)

from .physics import FBP, Blur, LinearOperator, ParallelBeamCT, add_relative_noise

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
        cfg.image_size, cfg.n_views, cfg.n_detectors, cfg.angle_range, detector_spacing=cfg.detector_spacing
    )


def build_physics(cfg: TaskConfig) -> LinearOperator:
    """The forward operator of a task config: ``Blur`` or ``ParallelBeamCT``."""
    if isinstance(cfg, DeblurTask):
        return Blur(
            kind=cfg.kernel_kind,
            kernel_size=cfg.kernel_size,
            angle=cfg.angle,
            variance=cfg.variance,
            motion_style=cfg.motion_style,
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
    """Clean images ``(B, 1, N, N)`` -> noisy measurements: ``A x`` plus relative noise ``noise_level``.

    CT: to avoid the inverse crime, the sinogram is not computed on the grid the network reconstructs
    on. ``x`` is upsampled bilinearly by ``oversample`` (same field of view, pixels ``1/k`` as wide) and
    projected with rays sampled ``1/k`` pixel apart; detector positions and spacing are those of the
    ``N``-pixel geometry, so the sinogram has the usual shape ``(B, 1, n_views, n_detectors)`` and scale.
    """
    physics = physics if physics is not None else build_physics(cfg)
    if isinstance(cfg, CTTask) and cfg.oversample > 1:
        x = F.interpolate(x, scale_factor=cfg.oversample, mode="bilinear", align_corners=False)
    y = physics.A(x)
    return add_relative_noise(y, cfg.noise_level, generator)


def network_input(measurement: torch.Tensor, cfg: TaskConfig, physics: LinearOperator) -> torch.Tensor:
    """What the network sees: the blurred image itself (deblur) or the FBP image (ct)."""
    if isinstance(cfg, CTTask):
        return physics.fbp(measurement, filter=cfg.filter)
    return measurement


class ReconstructionPipeline(nn.Module):
    """Measurement -> image as one module (and one ONNX graph): ``network(m)`` or ``network(FBP(m))`` (ct).

    The FBP stays float32 (see :class:`~recon.training.physics.FBP`); the network receives its output
    cast to the network's own dtype.
    """

    def __init__(self, network: nn.Module, cfg: TaskConfig) -> None:
        super().__init__()
        self.network = network
        self.task_config = cfg
        self.fbp: FBP | None = FBP(ct_operator(cfg), cfg.filter) if isinstance(cfg, CTTask) else None

    def forward(self, measurement: torch.Tensor) -> torch.Tensor:
        if self.fbp is None:
            return self.network(measurement)
        image = self.fbp(measurement)
        dtype = next((p.dtype for p in self.network.parameters()), image.dtype)
        return self.network(image.to(dtype))
