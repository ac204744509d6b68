"""The course text's Residual UNet: strided-conv downsampling, residual blocks, additive skips.

    stem conv3×3 (c → c0)
    encoder level 0 … G: n residual blocks at c0·2^l channels; between levels a stride-2 conv3×3 (c → 2c)
    decoder level G-1 … 0: ConvTranspose2d(2c → c, k=2, s=2), + encoder skip (optionally attention-gated),
                           n residual blocks
    head conv1×1 (c0 → c), tanh, + input (global residual), final activation

Residual block: y = x + act(BN(conv3×3(x))). With G=4, n=3, c0=64 ("paper") this is ≈ 56 M parameters as
the course states. Every op is Conv / BatchNorm / ConvTranspose / Add / Mul / Sigmoid / Pad / Slice: nothing
ONNX or TensorRT dislike, and BatchNorm folds into the convolutions at export (eval mode).
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import (
    check_positive,
    conv_bn_act,
    crop,
    make_activation,
    make_final_activation,
    pad_to_multiple,
    zero_last_conv,
)
from .receptive_field import RFLayer, transposed_conv_layer
from .registry import register_model


class ResidualBlock(nn.Module):
    """y = x + act(BN(conv3×3(x))): one conv-BN-act with an additive skip."""

    def __init__(self, channels: int, act: str) -> None:
        super().__init__()
        self.body = conv_bn_act(channels, channels, act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class AttentionGate(nn.Module):
    """Additive attention gate (Oktay et al. 2018) on a skip connection.

    The gating signal is the upsampled decoder feature, already at the skip's resolution, so the gate needs no
    resampling of its own: alpha = sigmoid(psi(act(W_x s + W_g g))), output s · alpha.
    """

    def __init__(self, channels: int, inner_channels: int, act: str) -> None:
        super().__init__()
        self.skip_proj = nn.Conv2d(channels, inner_channels, 1, bias=False)
        self.gate_proj = nn.Conv2d(channels, inner_channels, 1)
        self.act = make_activation(act)
        self.psi = nn.Conv2d(inner_channels, 1, 1)

    def forward(self, skip: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        q = self.act(self.skip_proj(skip) + self.gate_proj(gate))  # (n, c, h, w) -> (n, inner, h, w)
        alpha = torch.sigmoid(self.psi(q))  # -> (n, 1, h, w), one weight per pixel
        return skip * alpha


@register_model(
    "resunet",
    presets={"small": {"c0": 16}, "paper": {"c0": 64}},
    default_preset="small",
)
class ResUNet(nn.Module):
    """Residual UNet: G strided downsamplings, n residual blocks per level, additive skips.

    Inputs of any size are reflect-padded to a multiple of 2^G and cropped back.

    Args:
        channels: image channels (input = output).
        c0: channels at the first level; level l has c0·2^l.
        depth: G, the number of stride-2 downsamplings.
        blocks_per_level: n, residual blocks per level (encoder and decoder).
        attention: gate the skip of the second-to-last level (G-1, the deepest skip) with an attention gate
            driven by the upsampled bottleneck features.
        act: activation by name.
        final_activation: applied after the global residual: none, relu, sigmoid or tanh.
    """

    def __init__(
        self,
        *,
        channels: int = 1,
        c0: int = 16,
        depth: int = 4,
        blocks_per_level: int = 3,
        attention: bool = False,
        act: str = "relu",
        final_activation: str = "none",
    ) -> None:
        super().__init__()
        check_positive(channels=channels, c0=c0, depth=depth, blocks_per_level=blocks_per_level)
        if not isinstance(attention, bool):
            raise ValueError(f"attention must be true or false, got {attention!r}")
        self.depth = depth
        self.blocks_per_level = blocks_per_level
        widths = [c0 * 2**level for level in range(depth + 1)]

        def blocks(width: int) -> nn.Sequential:
            return nn.Sequential(*(ResidualBlock(width, act) for _ in range(blocks_per_level)))

        self.stem = conv_bn_act(channels, c0, act)
        self.encoder = nn.ModuleList(blocks(width) for width in widths)
        self.down = nn.ModuleList(conv_bn_act(widths[l], widths[l + 1], act, stride=2) for l in range(depth))
        # ConvTranspose k = s = 2: exact 2× upsampling, native in ONNX and TensorRT (no Resize op).
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(widths[l + 1], widths[l], 2, stride=2) for l in range(depth)
        )
        self.decoder = nn.ModuleList(blocks(widths[l]) for l in range(depth))
        gated = widths[depth - 1]
        self.gate = AttentionGate(gated, max(gated // 2, 1), act) if attention else None
        self.head = nn.Conv2d(c0, channels, 1)
        self.final_activation = make_final_activation(final_activation)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(n, c, H, W) with H, W multiples of 2^G -> (n, c0, H, W)."""
        h = self.stem(x)
        skips = []
        for level in range(self.depth):
            h = self.encoder[level](h)  # (n, c0·2^l, H/2^l, W/2^l)
            skips.append(h)
            h = self.down[level](h)  # -> (n, c0·2^(l+1), H/2^(l+1), W/2^(l+1))
        h = self.encoder[self.depth](h)  # bottleneck: (n, c0·2^G, H/2^G, W/2^G)
        for level in reversed(range(self.depth)):
            h = self.up[level](h)  # -> (n, c0·2^l, H/2^l, W/2^l)
            skip = skips[level]
            if self.gate is not None and level == self.depth - 1:
                skip = self.gate(skip, h)
            h = self.decoder[level](h + skip)
        return h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padded, size = pad_to_multiple(x, 2**self.depth)
        residual = torch.tanh(self.head(self.features(padded)))  # (n, c0, H', W') -> (n, c, H', W')
        return self.final_activation(crop(residual + padded, size))

    def init_identity(self) -> bool:
        """Zero the head: tanh(0) + input, so the untrained network returns its input."""
        return zero_last_conv(self.head)

    def receptive_field_layers(self) -> list[RFLayer]:
        """Stem, encoder down to the bottleneck, decoder back up, head (skips only add shorter paths)."""
        layers = [RFLayer("stem", 3)]
        for level in range(self.depth + 1):
            layers += [RFLayer(f"enc{level}.block{b}", 3) for b in range(self.blocks_per_level)]
            if level < self.depth:
                layers.append(RFLayer(f"down{level}", 3, 2))
        for level in reversed(range(self.depth)):
            layers.append(transposed_conv_layer(f"up{level}", 2, 2))
            layers += [RFLayer(f"dec{level}.block{b}", 3) for b in range(self.blocks_per_level)]
        layers.append(RFLayer("head", 1))
        return layers
