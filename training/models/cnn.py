"""The course's plain CNNs: SimpleCNN and ResCNN (same layers, tanh + input skip)."""

from __future__ import annotations

import torch
from torch import nn

from .layers import check_positive, make_activation, make_final_activation, zero_last_conv
from .receptive_field import RFLayer
from .registry import register_model


@register_model("cnn")
class SimpleCNN(nn.Module):
    """SimpleCNN: "same" convolutions with an activation between them (course: three 3×3).

    in `channels` → n_filters → … → n_filters → `channels`. With the defaults (three 3×3 layers, 64 filters)
    it has 640 + 36928 + 577 = 38145 parameters and a receptive field of 7 pixels.

    Args:
        channels: image channels (input = output).
        n_filters: channels of the hidden layers.
        kernel_size: odd kernel size of every convolution ("same" zero padding).
        n_layers: number of convolutions (≥ 2).
        act: activation between convolutions, by name.
        final_activation: applied to the output: none, relu, sigmoid or tanh.
    """

    # ResCNN flips this: output = tanh(last conv) + input.
    residual = False

    def __init__(
        self,
        *,
        channels: int = 1,
        n_filters: int = 64,
        kernel_size: int = 3,
        n_layers: int = 3,
        act: str = "relu",
        final_activation: str = "none",
    ) -> None:
        super().__init__()
        check_positive(channels=channels, n_filters=n_filters, kernel_size=kernel_size, n_layers=n_layers)
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd for 'same' convolutions, got {kernel_size}")
        if n_layers < 2:
            raise ValueError(f"n_layers must be at least 2, got {n_layers}")
        self.kernel_size = kernel_size
        padding = kernel_size // 2

        layers: list[nn.Module] = [nn.Conv2d(channels, n_filters, kernel_size, padding=padding)]
        for _ in range(n_layers - 2):
            layers += [make_activation(act), nn.Conv2d(n_filters, n_filters, kernel_size, padding=padding)]
        layers.append(make_activation(act))
        self.features = nn.Sequential(*layers)
        self.head = nn.Conv2d(n_filters, channels, kernel_size, padding=padding)
        self.residual_activation = nn.Tanh() if self.residual else nn.Identity()
        self.final_activation = make_final_activation(final_activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x)  # (n, c, H, W) -> (n, n_filters, H, W)
        y = self.residual_activation(self.head(h))  # -> (n, c, H, W)
        if self.residual:
            y = y + x  # the network learns the artifact, not the image
        return self.final_activation(y)

    @torch.no_grad()
    def init_identity(self) -> bool:
        """Start as the identity. ResCNN: zero the head (tanh(0) + input). SimpleCNN: an identity path through
        channel 0 of every conv (images are >= 0, so the activations between pass it)."""
        if self.residual:
            return zero_last_conv(self.head)
        for conv in (m for m in self.modules() if isinstance(m, nn.Conv2d)):
            kh, kw = conv.weight.shape[-2] // 2, conv.weight.shape[-1] // 2
            conv.weight[0].zero_()
            conv.weight[0, 0, kh, kw] = 1.0
            if conv.bias is not None:
                conv.bias[0] = 0.0
        return True

    def receptive_field_layers(self) -> list[RFLayer]:
        convs = [m for m in self.modules() if isinstance(m, nn.Conv2d)]
        return [RFLayer(f"conv{i + 1}", self.kernel_size) for i in range(len(convs))]


@register_model("rescnn")
class ResCNN(SimpleCNN):
    """ResCNN: SimpleCNN with output tanh(last conv) + input (residual learning).

    Same hyperparameters as SimpleCNN.
    """

    residual = True
