"""Receptive field along a network's longest path, with the course's recursive formula.

    r_l = r_{l-1} + (k_l - 1) * prod_{i<l} s_i,   r_0 = 1

Each model lists the layers on its longest input→output path (`receptive_field_layers()`), in order. For a
UNet that is the encoder path down through the bottleneck and back up through the decoder: skip connections
only add shorter paths, so they never enlarge the field. Upsampling by a factor s is a layer with stride 1/s;
a ConvTranspose2d(k, stride=s) output pixel sees ceil(k / s) input pixels per axis, so it enters with that
kernel (k = s = 2 → kernel 1: it does not grow the field). Self-attention sees every token: models with
attention return None ("global").
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class RFLayer:
    """One layer on the path: kernel size and stride (stride < 1 for upsampling)."""

    name: str
    kernel: int
    stride: float = 1.0


def transposed_conv_layer(name: str, kernel: int, stride: int) -> RFLayer:
    """A ConvTranspose2d(kernel, stride) seen as a layer on the input grid (see the module docstring)."""
    return RFLayer(name, math.ceil(kernel / stride), 1.0 / stride)


def receptive_field_table(layers: list[RFLayer]) -> list[tuple[RFLayer, int]]:
    """(layer, receptive field after it) for each layer: the course's formula, step by step."""
    field, jump = 1.0, 1.0  # jump = product of the strides so far, in input pixels
    table = []
    for layer in layers:
        field += (layer.kernel - 1) * jump
        jump *= layer.stride
        table.append((layer, round(field)))
    return table


def receptive_field(layers: list[RFLayer] | None) -> int | None:
    """Receptive field in input pixels along `layers`; None means global (attention)."""
    if layers is None:
        return None
    table = receptive_field_table(layers)
    return table[-1][1] if table else 1
