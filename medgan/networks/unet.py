"""3D U-Net generator that keeps the input grid for any input size."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from medgan.networks.checks import check_choice, check_odd_kernel, check_positive_int, check_volume_batch
from medgan.networks.receptive_field import Layer, receptive_field
from medgan.networks.registry import register_network


class _ConvBlock(nn.Sequential):
    """Two 'same' convolutions, each followed by optional GroupNorm and LeakyReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, norm_groups: int | None) -> None:
        layers: list[nn.Module] = []
        for index in range(2):
            layers.append(nn.Conv3d(in_channels if index == 0 else out_channels, out_channels, kernel_size,
                                    padding=kernel_size // 2, padding_mode="replicate"))
            if norm_groups is not None:
                layers.append(nn.GroupNorm(norm_groups, out_channels))
            layers.append(nn.LeakyReLU(0.01))
        super().__init__(*layers)


@register_network("unet-3d")
class UNet3D(nn.Module):
    """3D U-Net (Ronneberger et al., MICCAI 2015; Cicek et al., MICCAI 2016) for same-grid restoration.

    Each level has two convolutions. A 2x2x2 convolution with stride 2 goes down one level, and either a 2x2x2
    transposed convolution with stride 2 or trilinear upsampling followed by a 1x1x1 convolution goes up. The
    upsampled features are concatenated with the skip features of the same level. Feature channels double at
    each level down.

    The input is padded with replicated edge values up to the next multiple of ``2 ** levels`` along each
    axis, split evenly between the two sides, and the output is cropped back. So the output has the input's
    shape for any input of at least one voxel per axis. With ``residual=True`` the output is ``x + f(x)`` and
    the last layer starts at zero, which makes an untrained network the identity.

    Args:
        in_channels: channels of the input volume.
        out_channels: channels of the output; must equal ``in_channels`` when ``residual`` is true.
        channels: feature channels of the first level; level ``l`` has ``channels * 2 ** l``.
        levels: number of downsampling steps.
        kernel_size: cubic kernel size of the level convolutions, odd.
        upsampling: ``"transposed"`` or ``"trilinear"``.
        normalization: ``"none"`` or ``"group"`` (GroupNorm with ``norm_groups`` groups; never batch norm).
        norm_groups: groups of each GroupNorm; must divide ``channels``. Ignored without normalization.
        residual: add the input to the output.

    Attributes:
        receptive_field: voxels along each axis that one output voxel reads through the convolutions.
        output_scale: ``(1, 1, 1)``, because the output has the input's grid.

    Note:
        GroupNorm normalises each sample with statistics over the whole input, so with
        ``normalization="group"`` every output voxel depends on the whole window, beyond
        ``receptive_field``, and sliding-window results depend on the window size. The default ``"none"``
        keeps each output voxel local.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        channels: int = 16,
        levels: int = 3,
        kernel_size: int = 3,
        upsampling: str = "transposed",
        normalization: str = "none",
        norm_groups: int = 4,
        residual: bool = True,
    ) -> None:
        super().__init__()
        for name, value in [("in_channels", in_channels), ("out_channels", out_channels), ("channels", channels),
                            ("levels", levels), ("norm_groups", norm_groups)]:
            check_positive_int(name, value)
        check_odd_kernel("kernel_size", kernel_size)
        check_choice("upsampling", upsampling, ("transposed", "trilinear"))
        check_choice("normalization", normalization, ("none", "group"))
        if not isinstance(residual, bool):
            raise ValueError(f"residual must be true or false, got {residual!r}.")
        if residual and out_channels != in_channels:
            raise ValueError(
                f"out_channels must equal in_channels when residual is true, got {out_channels} and {in_channels}."
            )
        if normalization == "group" and channels % norm_groups != 0:
            raise ValueError(
                f"norm_groups must divide channels for GroupNorm, got norm_groups={norm_groups} and "
                f"channels={channels}; choose a divisor of channels or normalization='none'."
            )
        groups = norm_groups if normalization == "group" else None
        self.in_channels = in_channels
        self.levels = levels
        self.upsampling = upsampling
        self.residual = residual

        widths = [channels * 2**level for level in range(levels + 1)]
        self.encoder = nn.ModuleList(
            _ConvBlock(in_channels if level == 0 else widths[level], widths[level], kernel_size, groups)
            for level in range(levels)
        )
        self.down = nn.ModuleList(
            nn.Conv3d(widths[level], widths[level + 1], 2, stride=2) for level in range(levels)
        )
        self.bottom = _ConvBlock(widths[levels], widths[levels], kernel_size, groups)
        if upsampling == "transposed":
            self.up = nn.ModuleList(
                nn.ConvTranspose3d(widths[level + 1], widths[level], 2, stride=2) for level in range(levels)
            )
        else:
            self.up = nn.ModuleList(nn.Conv3d(widths[level + 1], widths[level], 1) for level in range(levels))
        self.decoder = nn.ModuleList(
            _ConvBlock(2 * widths[level], widths[level], kernel_size, groups) for level in range(levels)
        )
        self.head = nn.Conv3d(widths[0], out_channels, 1)
        if residual:
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

        self.output_scale = (1, 1, 1)
        self.receptive_field = receptive_field(self._paths(levels, kernel_size, upsampling))

    @staticmethod
    def _paths(levels: int, kernel_size: int, upsampling: str) -> list[list[Layer]]:
        """Return one path per turning level: down to ``turn`` through the encoder, then back up the decoder."""
        conv_pair = [Layer("same", kernel_size)] * 2
        if upsampling == "transposed":
            up = [Layer("transposed", 2, 2)]
        else:
            up = [Layer("linear", 1, 2)]
        paths = []
        for turn in range(levels + 1):
            path: list[Layer] = []
            for _ in range(turn):
                path += conv_pair + [Layer("valid", 2, 2)]
            # Level `turn`'s encoder block (the bottom block when turn == levels) feeds the decoder.
            path += conv_pair
            for _ in range(turn):
                path += up + conv_pair
            paths.append(path)
        return paths

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_volume_batch(x, self.in_channels)
        multiple = 2**self.levels
        sizes = x.shape[2:]
        padding: list[int] = []
        # F.pad lists (before, after) pairs starting from the last axis.
        for size in reversed(sizes):
            total = -size % multiple
            padding += [total // 2, total - total // 2]
        # Padding always runs, even by zero voxels: a Python branch on the sizes would be fixed by tracing, while
        # sizes read from x.shape stay symbolic in TorchScript and ONNX, so exports keep dynamic spatial axes.
        h = F.pad(x, padding, mode="replicate")

        skips = []
        for block, down in zip(self.encoder, self.down):
            h = block(h)
            skips.append(h)
            h = down(h)
        h = self.bottom(h)
        for level in reversed(range(self.levels)):
            if self.upsampling == "transposed":
                h = self.up[level](h)
            else:
                h = self.up[level](F.interpolate(h, scale_factor=2, mode="trilinear", align_corners=False))
            h = self.decoder[level](torch.cat([h, skips[level]], dim=1))
        h = self.head(h)

        start_w, _, start_h, _, start_d, _ = padding
        size_d, size_h, size_w = sizes
        h = h[:, :, start_d:start_d + size_d, start_h:start_h + size_h, start_w:start_w + size_w]
        return x + h if self.residual else h
