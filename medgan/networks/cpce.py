"""CPCE-3D: a conveying-path convolutional encoder-decoder for low-dose CT denoising on the input grid."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from medgan.networks.checks import check_odd_kernel, check_positive_int, check_volume_batch
from medgan.networks.receptive_field import Layer, receptive_field
from medgan.networks.registry import register_network


@register_network("cpce-3d")
class ConveyingPathEncoderDecoder3D(nn.Module):
    """Conveying-path convolutional encoder-decoder (CPCE) for 3D denoising, with a residual output.

    Structure, after H. Shan et al., "3-D Convolutional Encoder-Decoder Network for Low-Dose CT via Transfer
    Learning From a 2-D Trained Network", IEEE TMI 37(6), 2018:

    - The encoder has ``depth`` unpadded convolutions and no pooling, so each one shrinks every axis by
      ``kernel_size - 1``.
    - The decoder has ``depth`` unpadded transposed convolutions, each growing every axis back by the same
      amount.
    - Conveying paths: the output of each decoder layer except the last is concatenated with the encoder
      feature map of the same size, and a 1x1x1 convolution reduces the ``2 * channels`` result back to
      ``channels``.
    - ReLU follows every layer except the last.

    Unlike the paper's CPCE-3D, which maps a stack of slices to its middle slice, this network keeps the
    grid. The input is padded with replicated edge values by ``depth * (kernel_size - 1)`` voxels per side,
    the receptive field's radius, and the decoder output is cropped back to the input's size. With that
    margin, no kept voxel reads the implicit zeros beyond the edges of a transposed convolution's input.
    So the output equals that of the same layers on the input extended indefinitely with its edge values,
    and any input of at least one voxel per axis works. The network predicts a correction, so the output is
    ``x + f(x)``. The last layer starts at zero, which makes an untrained network the identity.

    Args:
        in_channels: channels of the input volume.
        out_channels: channels of the output; must equal ``in_channels`` because the output adds a residual.
        channels: feature channels of every hidden layer (32 in the paper).
        depth: number of encoder layers (and of decoder layers); 4 in the paper.
        kernel_size: cubic kernel size, odd.

    Attributes:
        receptive_field: ``2 * depth * (kernel_size - 1) + 1`` voxels along each axis.
        output_scale: ``(1, 1, 1)``, because the output has the input's grid.
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
                            ("depth", depth)]:
            check_positive_int(name, value)
        check_odd_kernel("kernel_size", kernel_size)
        if out_channels != in_channels:
            raise ValueError(
                f"out_channels must equal in_channels for a residual network, got {out_channels} and {in_channels}."
            )
        self.in_channels = in_channels
        self.padding = depth * (kernel_size - 1)

        self.encoder = nn.ModuleList(
            nn.Conv3d(in_channels if level == 0 else channels, channels, kernel_size) for level in range(depth)
        )
        self.decoder = nn.ModuleList(
            nn.ConvTranspose3d(channels, out_channels if level == depth - 1 else channels, kernel_size)
            for level in range(depth)
        )
        # One 1x1x1 reduction per conveying path: after every decoder layer except the last.
        self.reducers = nn.ModuleList(nn.Conv3d(2 * channels, channels, 1) for _ in range(depth - 1))
        nn.init.zeros_(self.decoder[-1].weight)
        nn.init.zeros_(self.decoder[-1].bias)

        self.output_scale = (1, 1, 1)
        self.receptive_field = receptive_field(self._paths(depth, kernel_size))

    @staticmethod
    def _paths(depth: int, kernel_size: int) -> list[list[Layer]]:
        """Return one path per turning level: ``level`` encoder layers, then ``level`` decoder layers."""
        paths = []
        for level in range(1, depth + 1):
            down = [Layer("valid", kernel_size)] * level
            up = [Layer("transposed", kernel_size)] * level
            paths.append(down + up)
        return paths

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_volume_batch(x, self.in_channels)
        pad = self.padding
        h = F.pad(x, (pad,) * 6, mode="replicate") if pad else x

        encoded = []
        for layer in self.encoder:
            h = F.relu(layer(h))
            encoded.append(h)

        depth = len(self.decoder)
        for index, layer in enumerate(self.decoder):
            h = layer(h)
            if index == depth - 1:
                break
            # Decoder layer `index` restores the size of encoder layer `depth - 2 - index`.
            h = F.relu(h)
            h = torch.cat([h, encoded[depth - 2 - index]], dim=1)
            h = F.relu(self.reducers[index](h))

        if pad:
            h = h[:, :, pad:-pad, pad:-pad, pad:-pad]
        return x + h
