"""A user's network behind recon's in-graph pad to a multiple and crop back.

The same pad as recon's own UNets (`training/models/layers.py`: reflection at the bottom/right, sizes kept
symbolic in a dynamic-H/W export), so a network that needs H, W multiples of 16 takes any size in the graph.
"""

from __future__ import annotations

import torch
from torch import nn

from recon.training.models.layers import crop, pad_to_multiple


class PaddedNetwork(nn.Module):
    """Pads (B, 1, H, W) to multiples of `multiple`, runs `network`, crops back to (H, W)."""

    def __init__(self, network: nn.Module, multiple: int) -> None:
        super().__init__()
        self.network = network
        self.multiple = multiple

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padded, size = pad_to_multiple(x, self.multiple)
        return crop(self.network(padded), size)
