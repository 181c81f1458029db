"""3D generators that restore a volume: input and output are ``(B, C, D, H, W)`` tensors."""

from __future__ import annotations

import torch
from torch import nn

from medgan.networks.checks import check_positive_int
from medgan.networks.registry import register_network


@register_network("red-cnn-3d")
class ResidualEncoderDecoder3D(nn.Module):
    """Residual encoder-decoder for 3D denoising, in the spirit of RED-CNN and CPCE-3D.

    ``depth`` convolutions encode the input, ``depth`` transposed convolutions decode it, and every second
    decoder output receives the matching encoder activation through a shortcut. The network predicts the
    residual, so the output is ``x + f(x)``: an untrained network with a zeroed last layer is the identity.

    RED-CNN: H. Chen et al., "Low-Dose CT With a Residual Encoder-Decoder Convolutional Neural Network",
    IEEE TMI 36(12), 2017. CPCE-3D: H. Shan et al., "3-D Convolutional Encoder-Decoder Network for Low-Dose CT
    via Transfer Learning From a 2-D Trained Network", IEEE TMI 37(6), 2018.

    Args:
        in_channels: channels of the input volume.
        out_channels: channels of the output; must equal ``in_channels`` because the output adds a residual.
        channels: feature channels of every hidden layer.
        depth: number of encoder layers (and of decoder layers).
        kernel_size: cubic kernel size, odd.

    Note:
        Convolutions are padded with replicated edge values, so any input size works, including a depth of one
        slice, and the output has the input's shape. The receptive field is ``2 * depth * (kernel_size - 1) + 1``
        voxels along each axis.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        channels: int = 32,
        depth: int = 4,
        kernel_size: int = 3,
    ) -> None:
        super().__init__()
        for name, value in [("in_channels", in_channels), ("out_channels", out_channels), ("channels", channels),
                            ("depth", depth), ("kernel_size", kernel_size)]:
            check_positive_int(name, value)
        if out_channels != in_channels:
            raise ValueError(
                f"out_channels must equal in_channels for a residual network, got {out_channels} and {in_channels}."
            )
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd so the output keeps the input's shape, got {kernel_size}.")
        padding = kernel_size // 2
        self.encoder = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for level in range(depth):
            self.encoder.append(
                nn.Conv3d(in_channels if level == 0 else channels, channels, kernel_size,
                          padding=padding, padding_mode="replicate")
            )
        for level in range(depth):
            last = level == depth - 1
            self.decoder.append(
                nn.Conv3d(channels, out_channels if last else channels, kernel_size,
                          padding=padding, padding_mode="replicate")
            )
        self.activation = nn.LeakyReLU(0.01)
        # Start as the identity map: the residual branch begins at zero and training only adds corrections.
        nn.init.zeros_(self.decoder[-1].weight)
        nn.init.zeros_(self.decoder[-1].bias)
        self.receptive_field = 2 * depth * (kernel_size - 1) + 1
        self.output_scale = (1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5:
            raise ValueError(f"Expected a (B, C, D, H, W) tensor, got shape {tuple(x.shape)}.")
        encoded = []
        h = x
        for layer in self.encoder:
            h = self.activation(layer(h))
            encoded.append(h)
        depth = len(self.decoder)
        for index, layer in enumerate(self.decoder):
            h = layer(h)
            if index == depth - 1:
                break
            # Every second decoder layer receives the encoder activation of the same resolution level.
            if index % 2 == 1:
                h = h + encoded[depth - 2 - index]
            h = self.activation(h)
        return x + h


@register_network("identity")
class Identity3D(nn.Module):
    """Network that returns its input unchanged: the reference for geometry and intensity round-trip tests."""

    def __init__(self, in_channels: int = 1) -> None:
        super().__init__()
        check_positive_int("in_channels", in_channels)
        self.in_channels = in_channels
        self.receptive_field = 1
        self.output_scale = (1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x
