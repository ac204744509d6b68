"""The course's Vision Transformer for reconstruction: patch tokens, pre-LN blocks, a conv decoder.

    patch embedding  Conv2d(c → d, k = s = p)                    (n, c, H, W) -> (n, d, H/p, W/p)
    + learned positions (a d × H0/p × W0/p grid for the training size H0 × W0)
    depth × pre-LN block: x + MHSA(LN(x)), x + MLP(LN(x))          (n, L, d), L = H·W/p²
    decoder ConvTranspose2d(d → 64, k = s = p) → conv3×3 64→64 → conv3×3 64→32 → conv1×1 32→c
    + input (global residual), final activation

The course configuration (p 8, d 128, depth 4, heads 4, MLP 256, 256² positions) has 1,249,089 parameters.

Other sizes: the input is reflect-padded to a multiple of p and cropped back, and the position grid is
resized bilinearly to the padded token grid. The target size comes from static shapes, so an export at a
fixed H × W has one Resize node on the (constant) position grid and a dynamic batch axis; an export at the
training size has no Resize at all. Bilinear rather than timm's bicubic: every ONNX consumer runs a "linear"
Resize (TensorRT's parser has long known it; "cubic" came later), and the resize touches a 128 × 32 × 32
parameter grid, not the image.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .layers import (
    check_positive,
    crop,
    make_activation,
    make_final_activation,
    pad_to_multiple,
    zero_last_conv,
)
from .registry import register_model


class SelfAttention(nn.Module):
    """Multi-head self-attention written out (Linear, MatMul, Softmax): exports the same everywhere."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.scale = 1.0 / math.sqrt(self.head_dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, length, dim = x.shape
        qkv = self.qkv(x).reshape(n, length, 3, self.heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # 3 × (n, heads, L, head_dim)
        weights = torch.softmax((q * self.scale) @ k.transpose(-2, -1), dim=-1)  # (n, heads, L, L)
        out = (weights @ v).transpose(1, 2).reshape(n, length, dim)  # -> (n, L, d)
        return self.proj(out)


class TransformerBlock(nn.Module):
    """Pre-LN block: x + attention(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, dim: int, heads: int, mlp_dim: int, act: str) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), make_activation(act), nn.Linear(mlp_dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


@register_model("vit", presets={"course": {}}, default_preset="course")
class ViT(nn.Module):
    """Vision Transformer with a convolutional decoder and a global residual.

    Args:
        channels: image channels (input = output).
        patch_size: p, the patch side (the embedding conv has kernel = stride = p).
        embed_dim: d, token width.
        depth: number of transformer blocks.
        heads: attention heads (must divide embed_dim).
        mlp_dim: hidden width of each block's MLP.
        image_size: training image side; the learned position grid is image_size/p per side.
        decoder_channels: channels after the ConvTranspose upsampling (the next convs keep, then halve them).
        act: activation of the MLP and the decoder, by name.
        final_activation: none, relu, sigmoid or tanh.
    """

    def __init__(
        self,
        *,
        channels: int = 1,
        patch_size: int = 8,
        embed_dim: int = 128,
        depth: int = 4,
        heads: int = 4,
        mlp_dim: int = 256,
        image_size: int = 256,
        decoder_channels: int = 64,
        act: str = "gelu",
        final_activation: str = "none",
    ) -> None:
        super().__init__()
        check_positive(
            channels=channels,
            patch_size=patch_size,
            embed_dim=embed_dim,
            depth=depth,
            heads=heads,
            mlp_dim=mlp_dim,
            image_size=image_size,
            decoder_channels=decoder_channels,
        )
        if embed_dim % heads:
            raise ValueError(f"heads ({heads}) must divide embed_dim ({embed_dim})")
        if image_size % patch_size:
            raise ValueError(f"image_size ({image_size}) must be a multiple of patch_size ({patch_size})")
        if decoder_channels < 2:
            raise ValueError(f"decoder_channels must be at least 2, got {decoder_channels}")
        self.patch_size = patch_size
        grid = image_size // patch_size

        self.patch_embed = nn.Conv2d(channels, embed_dim, patch_size, stride=patch_size)
        self.positions = nn.Parameter(torch.zeros(1, embed_dim, grid, grid))
        nn.init.trunc_normal_(self.positions, std=0.02)
        self.blocks = nn.Sequential(*(TransformerBlock(embed_dim, heads, mlp_dim, act) for _ in range(depth)))
        half = decoder_channels // 2
        self.head = nn.Sequential(
            nn.ConvTranspose2d(embed_dim, decoder_channels, patch_size, stride=patch_size),
            make_activation(act),
            nn.Conv2d(decoder_channels, decoder_channels, 3, padding=1),
            make_activation(act),
            nn.Conv2d(decoder_channels, half, 3, padding=1),
            make_activation(act),
            nn.Conv2d(half, channels, 1),
        )
        self.final_activation = make_final_activation(final_activation)

    def position_grid(self, grid_h: int, grid_w: int) -> torch.Tensor:
        """Learned positions for a grid_h × grid_w token grid: (1, d, grid_h, grid_w)."""
        if (grid_h, grid_w) == tuple(self.positions.shape[-2:]):
            return self.positions
        return F.interpolate(self.positions, size=(grid_h, grid_w), mode="bilinear", align_corners=False)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(n, c, H, W) with H, W multiples of p -> tokens as a grid (n, d, H/p, W/p)."""
        tokens = self.patch_embed(x)  # (n, c, H, W) -> (n, d, H/p, W/p)
        grid_h, grid_w = int(tokens.shape[-2]), int(tokens.shape[-1])
        tokens = tokens + self.position_grid(grid_h, grid_w)
        tokens = self.blocks(tokens.flatten(2).transpose(1, 2))  # (n, L, d)
        return tokens.transpose(1, 2).unflatten(2, (grid_h, grid_w))  # -> (n, d, H/p, W/p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padded, size = pad_to_multiple(x, self.patch_size)
        residual = self.head(self.features(padded))  # (n, d, H/p, W/p) -> (n, c, H, W)
        return self.final_activation(crop(residual + padded, size))

    def init_identity(self) -> bool:
        """Zero the decoder's last conv: residual 0 + input, so the untrained network returns its input."""
        return zero_last_conv(self.head)

    @staticmethod
    def training_overrides(crop_size: int) -> dict[str, int]:
        """Hyperparameters a training run on ``crop_size`` crops sets: learned positions for the crop."""
        return {"image_size": crop_size}

    def receptive_field_layers(self) -> None:
        """Self-attention mixes every token: the receptive field is the whole (padded) image."""
        return None
