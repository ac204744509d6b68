"""Forward operators of the two inverse problems (blur, parallel-beam CT), each with its noise model and
pseudo-inverse (deepinv's Physics), and their configs."""

from __future__ import annotations

from typing import Any

import torch

from recon.runtime.artifact.task_config import default_n_detectors

from .blur import Blur, gaussian_kernel, motion_kernel
from .noise import RelativeGaussianNoise, add_relative_noise
from .operator import LinearOperator
from .radon import FILTERS, parallel_beam_angles, ramp_filter_taps
from .tomography import FBP, ParallelBeamCT

__all__ = [
    "FBP",
    "FILTERS",
    "Blur",
    "LinearOperator",
    "ParallelBeamCT",
    "RelativeGaussianNoise",
    "add_relative_noise",
    "default_n_detectors",
    "gaussian_kernel",
    "motion_kernel",
    "parallel_beam_angles",
    "physics_from_config",
    "ramp_filter_taps",
]

_OPERATORS = {"blur": Blur, "parallel_beam_ct": ParallelBeamCT}


def physics_from_config(cfg: dict[str, Any]) -> LinearOperator:
    """Rebuild an operator from its ``to_config()`` dict (``{"type": "blur" | "parallel_beam_ct", ...}``)."""
    cfg = dict(cfg)
    kind = cfg.pop("type", None)
    if kind not in _OPERATORS:
        raise ValueError(f"unknown physics type {kind!r}; expected one of {sorted(_OPERATORS)}")
    if kind == "blur" and "kernel" in cfg:
        return Blur(torch.tensor(cfg["kernel"], dtype=torch.float32))
    return _OPERATORS[kind](**cfg)
