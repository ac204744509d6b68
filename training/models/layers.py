"""Small building blocks shared by the model families: activations by name, conv-BN-act, pad-to-multiple and
crop, and the zero-initialisation that starts a residual family at the identity."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Layers are chosen by name (MONAI habit) so that a model's config stays plain JSON.
_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "none": nn.Identity,
    "identity": nn.Identity,
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
}

# The output activations the course discusses: none (unbounded), relu (non-negative images),
# sigmoid (images in [0, 1]), tanh.
FINAL_ACTIVATIONS = ("none", "relu", "sigmoid", "tanh")


def make_activation(name: str) -> nn.Module:
    """Return a fresh activation module for `name` (e.g. "relu"); ValueError for unknown names."""
    try:
        return _ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(_ACTIVATIONS)}") from None


def make_final_activation(name: str) -> nn.Module:
    """The activation applied to the model output; only the ones in FINAL_ACTIVATIONS make sense there."""
    if name not in FINAL_ACTIVATIONS:
        raise ValueError(f"unknown final_activation {name!r}; choose one of {list(FINAL_ACTIVATIONS)}")
    return make_activation(name)


def check_positive(**values: int) -> None:
    """Raise ValueError naming the first hyperparameter that is not a positive integer."""
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{key} must be a positive integer, got {value!r}")


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad (B, C, H, W) at the bottom/right up to multiples of `multiple`; return it and the original (H, W).

    Reflection keeps image statistics at the seam (zeros would look like a dark frame to a network trained on
    full images). Reflection needs pad < size, so tiny inputs fall back to replicate.

    Sizes may be symbolic (torch.export with dynamic H, W): then nothing may be decided on their value
    (`int()` or a comparison would fix the graph to the example's size), so the graph reflects a constant
    `multiple - 1` rows/columns (valid since the exporter keeps H, W >= `multiple`) and slices to the next
    multiple, written as multiple·ceil(size / multiple) so that torch.export knows the padded size is a
    multiple and the skip connections' Adds need no size guard. Same pixels as reflecting `pad` rows.
    """
    height, width = x.shape[-2], x.shape[-1]
    if not (isinstance(height, int) and isinstance(width, int)):  # symbolic (dynamic-shape export)
        target_h = multiple * ((height + multiple - 1) // multiple)
        target_w = multiple * ((width + multiple - 1) // multiple)
        padded = F.pad(x, (0, multiple - 1, 0, multiple - 1), mode="reflect")
        return padded[..., :target_h, :target_w], (height, width)
    pad_h, pad_w = -height % multiple, -width % multiple
    if pad_h == 0 and pad_w == 0:
        return x, (height, width)
    mode = "reflect" if pad_h < height and pad_w < width else "replicate"
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode), (height, width)


def crop(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Undo pad_to_multiple: keep the top-left (H, W)."""
    height, width = size
    if isinstance(height, int) and isinstance(width, int) and tuple(x.shape[-2:]) == (height, width):
        return x
    return x[..., :height, :width]


def conv_bn_act(in_channels: int, out_channels: int, act: str, stride: int = 1) -> nn.Sequential:
    """conv3×3 (no bias: BatchNorm has one) → BatchNorm → activation."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        make_activation(act),
    )


@torch.no_grad()
def zero_last_conv(module: nn.Module) -> bool:
    """Zero the last (transposed) convolution of ``module``: a residual branch ending there then adds 0, so an
    untrained network returns its input (timm's ``zero_init_last``). Returns whether there was one."""
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)]
    if not convs:
        return False
    convs[-1].weight.zero_()
    if convs[-1].bias is not None:
        convs[-1].bias.zero_()
    return True
