"""The course's UNet (IPPy): max-pool downsampling and concatenated skips.

    encoder scale l = 0 … S-1: `convs_per_level` × conv3×3-BN-act at c0·2^l, keep as skip, max-pool 2×2
    bottleneck: `convs_per_level` × conv3×3-BN-act at c0·2^S
    decoder scale l = S-1 … 0: ConvTranspose2d(2c → c, k=2, s=2), concatenate the skip (→ 2c),
                               `convs_per_level` × conv3×3-BN-act at c
    head conv1×1 (c0 → c), tanh, + input (global residual), final activation

IPPy upsamples with a "same" ConvTranspose followed by nearest upsampling; a stride-2 ConvTranspose does both
in one op (and TensorRT runs it natively).
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import (
    check_positive,
    conv_bn_act,
    crop,
    make_final_activation,
    pad_to_multiple,
    zero_last_conv,
)
from .receptive_field import RFLayer, transposed_conv_layer
from .registry import register_model


@register_model(
    "unet",
    presets={"small": {"c0": 16}, "large": {"c0": 64}},
    default_preset="small",
)
class UNet(nn.Module):
    """UNet: max-pool downsampling and concatenated skips (the course's IPPy UNet).

    Pads to a multiple of 2^S internally.

    Args:
        channels: image channels (input = output).
        c0: channels at the first scale; scale l has c0·2^l.
        depth: S, the number of max-pool downsamplings.
        convs_per_level: conv-BN-act layers per scale (and in the bottleneck).
        global_residual: output = tanh(head) + input (course default) instead of head alone.
        act: activation by name.
        final_activation: none, relu, sigmoid or tanh.
    """

    def __init__(
        self,
        *,
        channels: int = 1,
        c0: int = 16,
        depth: int = 4,
        convs_per_level: int = 2,
        global_residual: bool = True,
        act: str = "relu",
        final_activation: str = "none",
    ) -> None:
        super().__init__()
        check_positive(channels=channels, c0=c0, depth=depth, convs_per_level=convs_per_level)
        if not isinstance(global_residual, bool):
            raise ValueError(f"global_residual must be true or false, got {global_residual!r}")
        self.depth = depth
        self.convs_per_level = convs_per_level
        self.global_residual = global_residual
        widths = [c0 * 2**level for level in range(depth + 1)]

        def convs(in_channels: int, width: int) -> nn.Sequential:
            layers = [conv_bn_act(in_channels, width, act)]
            layers += [conv_bn_act(width, width, act) for _ in range(convs_per_level - 1)]
            return nn.Sequential(*layers)

        self.encoder = nn.ModuleList(
            convs(channels if level == 0 else widths[level - 1], widths[level]) for level in range(depth + 1)
        )
        self.pool = nn.MaxPool2d(2)
        # ConvTranspose k = s = 2: exact 2× upsampling, native in ONNX and TensorRT (no Resize op).
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(widths[l + 1], widths[l], 2, stride=2) for l in range(depth)
        )
        self.decoder = nn.ModuleList(convs(2 * widths[l], widths[l]) for l in range(depth))
        self.head = nn.Conv2d(c0, channels, 1)
        self.final_activation = make_final_activation(final_activation)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(n, c, H, W) with H, W multiples of 2^S -> (n, c0, H, W)."""
        h = x
        skips = []
        for level in range(self.depth):
            h = self.encoder[level](h)  # (n, c0·2^l, H/2^l, W/2^l)
            skips.append(h)
            h = self.pool(h)  # -> (n, c0·2^l, H/2^(l+1), W/2^(l+1))
        h = self.encoder[self.depth](h)  # bottleneck: (n, c0·2^S, H/2^S, W/2^S)
        for level in reversed(range(self.depth)):
            h = self.up[level](h)  # -> (n, c0·2^l, H/2^l, W/2^l)
            h = self.decoder[level](torch.cat([h, skips[level]], dim=1))  # (n, 2·c0·2^l, …) -> (n, c0·2^l, …)
        return h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padded, size = pad_to_multiple(x, 2**self.depth)
        y = self.head(self.features(padded))
        if self.global_residual:
            y = torch.tanh(y) + padded
        return self.final_activation(crop(y, size))

    def init_identity(self) -> bool:
        """With the global residual: zero the head, so the untrained network returns its input."""
        return self.global_residual and zero_last_conv(self.head)

    def receptive_field_layers(self) -> list[RFLayer]:
        """Encoder down through the bottleneck, decoder back up, head."""
        layers = []
        for level in range(self.depth + 1):
            layers += [RFLayer(f"enc{level}.conv{i}", 3) for i in range(self.convs_per_level)]
            if level < self.depth:
                layers.append(RFLayer(f"pool{level}", 2, 2))
        for level in reversed(range(self.depth)):
            layers.append(transposed_conv_layer(f"up{level}", 2, 2))
            layers += [RFLayer(f"dec{level}.conv{i}", 3) for i in range(self.convs_per_level)]
        layers.append(RFLayer("head", 1))
        return layers
