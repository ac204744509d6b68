"""The two reconstruction tasks: their default configs, physics, measurement simulation and pipelines.

A task config is a flat JSON dict. ``deblur``: motion (or Gaussian) blur + relative Gaussian noise, the
measurement has the image's shape. ``ct``: parallel-beam sinogram ``(B, 1, n_angles, n_detectors)`` +
relative noise; the network sees the FBP image and the exported pipeline goes sinogram -> image.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .physics import (
    FBP,
    Blur,
    LinearOperator,
    ParallelBeamCT,
    add_relative_noise,
    default_n_detectors,
)

TASK_DEFAULTS: dict[str, dict[str, Any]] = {
    "deblur": {
        "task": "deblur",
        "image_size": 256,
        "kind": "motion",  # or "gaussian"
        "kernel_size": 7,
        "angle": 45.0,
        "variance": 1.0,  # Gaussian σ², unused by motion blur
        "motion_style": "centred",  # "course" reproduces IPPy's off-centre line
        "noise_level": 0.01,
    },
    "ct": {
        "task": "ct",
        "image_size": 256,
        "n_angles": 60,
        "n_detectors": None,  # resolved by task_config to ceil(√2·image_size)
        "angle_range": math.pi,
        "filter": "ram-lak",
        "noise_level": 0.01,
        "oversample": 2,  # sinograms are simulated on a grid this many times finer (no inverse crime)
    },
}


def task_config(task: str, **overrides: Any) -> dict[str, Any]:
    """``TASK_DEFAULTS[task]`` updated with the overrides that are not None; unknown keys are an error."""
    if task not in TASK_DEFAULTS:
        raise ValueError(f"unknown task {task!r}; expected one of {sorted(TASK_DEFAULTS)}")
    cfg = copy.deepcopy(TASK_DEFAULTS[task])
    given = {k: v for k, v in overrides.items() if v is not None}
    unknown = sorted(set(given) - set(cfg))
    if unknown:
        raise ValueError(f"unknown {task} option(s) {unknown}; known: {sorted(cfg)}")
    cfg.update(given)
    if task == "ct" and cfg["n_detectors"] is None:
        cfg["n_detectors"] = default_n_detectors(cfg["image_size"])
    return cfg


def build_physics(cfg: dict[str, Any]) -> LinearOperator:
    """The forward operator of a task config: ``Blur`` or ``ParallelBeamCT``."""
    task = cfg["task"]
    if task == "deblur":
        return Blur(
            kind=cfg["kind"],
            kernel_size=cfg["kernel_size"],
            angle=cfg["angle"],
            variance=cfg["variance"],
            motion_style=cfg["motion_style"],
        )
    if task == "ct":
        return ParallelBeamCT(cfg["image_size"], cfg["n_angles"], cfg["n_detectors"], cfg["angle_range"])
    raise ValueError(f"unknown task {task!r}")


@torch.no_grad()
def simulate(
    x: torch.Tensor,
    cfg: dict[str, Any],
    generator: torch.Generator | None = None,
    physics: LinearOperator | None = None,
) -> torch.Tensor:
    """Clean images ``(B, 1, N, N)`` -> noisy measurements: ``A x`` plus relative noise ``noise_level``.

    CT: to avoid the inverse crime, the sinogram is not computed on the grid the network reconstructs
    on. ``x`` is upsampled bilinearly by ``oversample`` (same field of view, pixels ``1/k`` as wide) and
    projected with rays sampled ``1/k`` pixel apart; detector positions and spacing are those of the
    ``N``-pixel geometry, so the sinogram has the usual shape ``(B, 1, n_angles, n_detectors)`` and scale.
    """
    physics = physics if physics is not None else build_physics(cfg)
    if cfg["task"] == "ct" and cfg.get("oversample", 1) > 1:
        x = F.interpolate(x, scale_factor=cfg["oversample"], mode="bilinear", align_corners=False)
    y = physics.A(x)
    return add_relative_noise(y, cfg["noise_level"], generator)


def network_input(measurement: torch.Tensor, cfg: dict[str, Any], physics: LinearOperator) -> torch.Tensor:
    """What the network sees: the blurred image itself (deblur) or the FBP image (ct)."""
    if cfg["task"] == "ct":
        return physics.fbp(measurement, filter=cfg["filter"])
    return measurement


class ReconstructionPipeline(nn.Module):
    """Measurement -> image as one module (and one ONNX graph): ``network(m)`` or ``network(FBP(m))`` (ct).

    The FBP stays float32 (see :class:`~recon.training.physics.FBP`); the network receives its output
    cast to the network's own dtype.
    """

    def __init__(self, network: nn.Module, cfg: dict[str, Any]) -> None:
        super().__init__()
        self.network = network
        self.task_config = dict(cfg)
        self.fbp: FBP | None = None
        if cfg["task"] == "ct":
            ct = ParallelBeamCT(cfg["image_size"], cfg["n_angles"], cfg["n_detectors"], cfg["angle_range"])
            self.fbp = FBP(ct, cfg["filter"])

    def forward(self, measurement: torch.Tensor) -> torch.Tensor:
        if self.fbp is None:
            return self.network(measurement)
        image = self.fbp(measurement)
        dtype = next((p.dtype for p in self.network.parameters()), image.dtype)
        return self.network(image.to(dtype))
