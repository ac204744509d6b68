"""Factories as a user writes them: a few lines that build a library's network from JSON-friendly arguments.

dynamic_network_architectures (nnU-Net's networks) takes layer classes (`conv_op=nn.Conv2d`), which no
command line can carry, so a user wraps them, exactly as docs/your-own-network.md shows. The tests import
this module by name (`user_networks:plain_conv_unet`), as recon-export --network would.
"""

from __future__ import annotations

from torch import nn


def _common(features: list[int], norm: str) -> dict:
    norms = {"batch": nn.BatchNorm2d, "instance": nn.InstanceNorm2d}
    return {
        "input_channels": 1,
        "n_stages": len(features),
        "features_per_stage": list(features),
        "conv_op": nn.Conv2d,
        "kernel_sizes": 3,
        "strides": [1] + [2] * (len(features) - 1),
        "num_classes": 1,
        "n_conv_per_stage_decoder": 1,
        "conv_bias": True,
        "norm_op": norms[norm],
        "norm_op_kwargs": {"eps": 1e-5, "affine": True},
        "nonlin": nn.LeakyReLU,
        "nonlin_kwargs": {"inplace": True},
    }


def plain_conv_unet(features: list[int] = (4, 8, 16), norm: str = "batch") -> nn.Module:
    """nnU-Net's PlainConvUNet, 2-D, one channel in and out."""
    from dynamic_network_architectures.architectures.unet import PlainConvUNet

    return PlainConvUNet(n_conv_per_stage=2, **_common(list(features), norm))


def residual_encoder_unet(features: list[int] = (4, 8, 16), norm: str = "batch") -> nn.Module:
    """nnU-Net's ResidualEncoderUNet (residual blocks in the encoder), 2-D, one channel in and out."""
    from dynamic_network_architectures.architectures.unet import ResidualEncoderUNet

    return ResidualEncoderUNet(n_blocks_per_stage=1, **_common(list(features), norm))


def unet_with_a_tiny_weight() -> nn.Module:
    """A MONAI UNet, then 1×1 convolutions that scale by 10⁴, 10⁴ and 10⁻⁸: exact in FP32, but 10⁻⁸ is below
    FP16's smallest subnormal (6 × 10⁻⁸), so the FP16 file's last layer multiplies by zero (as a network
    trained on raw detector counts or Hounsfield units can have weights FP16 cannot hold)."""
    from monai.networks.nets import UNet

    layers = [nn.Conv2d(1, 1, 1) for _ in range(3)]
    for layer, weight in zip(layers, (1e4, 1e4, 1e-8), strict=True):
        nn.init.constant_(layer.weight, weight)
        nn.init.zeros_(layer.bias)
    unet = UNet(2, 1, 1, channels=[4, 8], strides=[2], norm="batch")
    return nn.Sequential(unet, nn.ReLU(), *layers)
