"""What `recon-info` reports: parameters, receptive field, FLOPs at a size."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .receptive_field import RFLayer, receptive_field


def count_parameters(model: nn.Module) -> int:
    """Number of trainable and frozen parameters (BatchNorm running statistics are buffers, not counted)."""
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, size: tuple[int, int], channels: int | None = None) -> int:
    """FLOPs of one forward pass on a (1, channels, H, W) input, in eval mode.

    torch's FlopCounterMode counts convolutions, transposed convolutions, linear layers and matmuls as
    2 × multiply-accumulates; element-wise ops (activations, norms, adds, padding) are not counted.
    A model built under `torch.device("meta")` is counted without computing anything (what recon-info does).
    """
    if channels is None:
        channels = int(getattr(model, "config", {}).get("channels", 1))
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    x = torch.zeros(1, channels, *size, device=device)
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


def receptive_field_layers(model: nn.Module) -> list[RFLayer] | None:
    """The model's longest path as RF layers; None when the model has attention (global field)."""
    layers_of = getattr(model, "receptive_field_layers", None)
    if layers_of is None:
        raise ValueError(f"{type(model).__name__} does not describe its receptive field")
    return layers_of()


def model_receptive_field(model: nn.Module) -> int | None:
    """Receptive field in input pixels (course formula along the longest path); None = global."""
    return receptive_field(receptive_field_layers(model))


def summarize(model: nn.Module, size: tuple[int, int] = (256, 256)) -> dict[str, Any]:
    """Plain-data summary of a model: config, parameters, float32 size, receptive field, FLOPs at `size`."""
    params = count_parameters(model)
    field = model_receptive_field(model)
    return {
        "config": dict(getattr(model, "config", {})),
        "parameters": params,
        "float32_bytes": 4 * params,
        "receptive_field": field,
        "receptive_field_note": (
            "global (self-attention sees every patch)"
            if field is None
            else "course formula r_l = r_(l-1) + (k_l - 1) * prod(s_i, i < l) along the longest path"
        ),
        "size": list(size),
        "flops": count_flops(model, size),
    }
