"""MRI super-resolution: a multi-level densely connected 3D generator and a 3D pixel shuffle."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medgan.networks.checks import check_choice, check_odd_kernel, check_positive_int, check_volume_batch
from medgan.networks.receptive_field import Layer, receptive_field
from medgan.networks.registry import register_network

MAX_SCALE_FACTOR = 5


def check_scale(name: str, value: Any) -> tuple[int, int, int]:
    """Return ``value`` as a ``(sd, sh, sw)`` tuple of integer factors from 1 to 5, or raise ValueError."""
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        raise ValueError(
            f"{name} must list three integer factors [sd, sh, sw] for the D, H and W axes, such as [4, 1, 1] for "
            f"4x along D, got {value!r}."
        )
    for factor in value:
        if not isinstance(factor, int) or isinstance(factor, bool) or not 1 <= factor <= MAX_SCALE_FACTOR:
            raise ValueError(
                f"{name} factors must be integers from 1 to {MAX_SCALE_FACTOR}, got {list(value)!r}."
            )
    return (value[0], value[1], value[2])


def pixel_shuffle_3d(x: torch.Tensor, scale: tuple[int, int, int] | list[int]) -> torch.Tensor:
    """Rearrange ``(B, C * sd * sh * sw, D, H, W)`` into ``(B, C, D * sd, H * sh, W * sw)``.

    This is the sub-pixel convolution's shuffle (Shi et al., "Real-Time Single Image and Video Super-Resolution
    Using an Efficient Sub-Pixel Convolutional Neural Network", CVPR 2016) in 3D. Input channel
    ``c * sd * sh * sw + (i * sh + j) * sw + k`` becomes voxel ``(d * sd + i, h * sh + j, w * sw + k)`` of
    output channel ``c``. An axis with factor 1 is left as it is, and for ``scale = (1, r, r)`` the result
    equals ``torch.nn.functional.pixel_shuffle`` applied to each slice.

    Raises:
        ValueError: if ``x`` is not 5D, ``scale`` is not three positive integers, or the channels are not a
            multiple of ``sd * sh * sw``.
    """
    if x.ndim != 5:
        raise ValueError(f"Expected a (B, C, D, H, W) tensor, got shape {tuple(x.shape)}.")
    if len(scale) != 3:
        raise ValueError(f"scale must list three factors [sd, sh, sw], got {list(scale)!r}.")
    for factor in scale:
        check_positive_int("scale factor", factor)
    sd, sh, sw = scale
    batch, channels, depth, height, width = x.shape
    block = sd * sh * sw
    if channels % block != 0:
        raise ValueError(
            f"The channel count {channels} is not a multiple of sd * sh * sw = {block} for scale {list(scale)}."
        )
    out_channels = channels // block
    x = x.reshape(batch, out_channels, sd, sh, sw, depth, height, width)
    x = x.permute(0, 1, 5, 2, 6, 3, 7, 4)
    return x.reshape(batch, out_channels, depth * sd, height * sh, width * sw)


class _DenseBlock(nn.Module):
    """Dense block (Huang et al., CVPR 2017) of ``n_units`` pre-activation units: ELU, then a 'same' convolution.

    Each unit reads the concatenation of the block input and every earlier unit's output and adds
    ``growth_rate`` channels. The block returns that concatenation, ``in_channels + n_units * growth_rate``
    channels.
    """

    def __init__(self, in_channels: int, growth_rate: int, n_units: int, kernel_size: int) -> None:
        super().__init__()
        self.units = nn.ModuleList(
            nn.Conv3d(in_channels + unit * growth_rate, growth_rate, kernel_size,
                      padding=kernel_size // 2, padding_mode="replicate")
            for unit in range(n_units)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = x
        for unit in self.units:
            features = torch.cat([features, unit(F.elu(features))], dim=1)
        return features


@register_network("mdcsrn-3d")
class MDCSRN3D(nn.Module):
    """Multi-level densely connected 3D super-resolution network, in the spirit of mDCSRN.

    Source: Y. Chen et al., "Efficient and Accurate MRI Super-Resolution Using a Generative Adversarial
    Network and 3D Multi-level Densely Connected Network", MICCAI 2018.

    Layout:

    - A stem convolution makes ``channels`` feature maps.
    - ``n_blocks`` dense blocks of ``n_units`` units with growth rate ``growth_rate`` follow. Each block after
      the first reads the concatenation of the stem and of all earlier block outputs, compressed back to
      ``channels`` by a 1x1x1 convolution.
    - A 1x1x1 reconstruction convolution compresses the stem and all block outputs together to ``channels``.
    - In ``"upsample"`` mode, learned upsampling follows. ``upsampling="pixel-shuffle"`` uses a convolution to
      ``channels * sd * sh * sw`` maps and `pixel_shuffle_3d`, initialised as in ICNR (Aitken et al.,
      "Checkerboard artifact free sub-pixel convolution", arXiv 2017) so that it starts free of checkerboard
      patterns. ``upsampling="transposed"`` uses a transposed convolution with kernel and stride ``scale``.
    - A last convolution maps to ``out_channels``.

    The network adds its output to a fixed base image. In ``"upsample"`` mode the base is the input
    interpolated onto the fine grid (``interpolation``), and in ``"refine"`` mode it is the input itself,
    which is then already on the fine grid. The last convolution starts at zero, so an untrained network
    returns the base image. Convolutions pad with replicated edge values, so any input of at least one voxel
    per axis works, and no layer uses batch normalisation.

    Grid convention for ``"upsample"`` mode: along an axis with factor ``s``, output voxel ``j`` is sub-voxel
    ``j % s`` of input voxel ``j // s``. Its centre is at input voxel coordinate ``(j + 0.5) / s - 0.5``, the
    same convention as trilinear interpolation with ``align_corners=False``. So the output spacing is the input
    spacing divided by ``s``, and the first output voxel's centre lies ``(s - 1) / (2 * s)`` input voxels
    before the first input voxel's centre.

    Args:
        in_channels: channels of the input volume.
        out_channels: channels of the output; must equal ``in_channels`` because the output adds the base image.
        scale: integer upsampling factors ``[sd, sh, sw]`` along the tensor axes D, H and W, each from 1 to 5.
            ``[4, 1, 1]`` makes D, the slice axis, 4 times finer. Must be ``[1, 1, 1]`` in ``"refine"`` mode.
        mode: ``"upsample"`` (input on the coarse grid) or ``"refine"`` (input already interpolated onto the
            fine grid, output on the same grid).
        growth_rate: channels that each dense unit adds.
        n_blocks: number of dense blocks.
        n_units: units per dense block.
        channels: width of the stem, of each compression and of the reconstruction.
        kernel_size: cubic kernel size of the 'same' convolutions, odd.
        upsampling: ``"pixel-shuffle"`` or ``"transposed"``; only used in ``"upsample"`` mode.
        interpolation: base image of ``"upsample"`` mode, ``"trilinear"`` (``align_corners=False``) or
            ``"nearest"`` (each voxel repeated ``s`` times).

    Attributes:
        output_scale: ``(sd, sh, sw)``, output voxels per input voxel along D, H and W; ``(1, 1, 1)`` in
            ``"refine"`` mode. A model card's ``output_scale`` lists the same factors along (i, j, k), the
            reverse order, because the restorer maps volume axes (i, j, k) to tensor axes (W, H, D).
        receptive_field: input voxels that one output voxel reads, along the axis where this is largest.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        scale: list[int] | tuple[int, int, int] = (1, 1, 1),
        mode: str = "upsample",
        growth_rate: int = 16,
        n_blocks: int = 4,
        n_units: int = 4,
        channels: int = 32,
        kernel_size: int = 3,
        upsampling: str = "pixel-shuffle",
        interpolation: str = "trilinear",
    ) -> None:
        super().__init__()
        for name, value in [("in_channels", in_channels), ("out_channels", out_channels),
                            ("growth_rate", growth_rate), ("n_blocks", n_blocks), ("n_units", n_units),
                            ("channels", channels)]:
            check_positive_int(name, value)
        check_odd_kernel("kernel_size", kernel_size)
        factors = check_scale("scale", scale)
        check_choice("mode", mode, ("upsample", "refine"))
        check_choice("upsampling", upsampling, ("pixel-shuffle", "transposed"))
        check_choice("interpolation", interpolation, ("trilinear", "nearest"))
        if out_channels != in_channels:
            raise ValueError(
                f"out_channels must equal in_channels because the output adds the interpolated input, got "
                f"{out_channels} and {in_channels}."
            )
        if mode == "refine" and factors != (1, 1, 1):
            raise ValueError(
                f"scale must be [1, 1, 1] in refine mode because the input is already on the fine grid, got "
                f"{list(factors)}; use mode='upsample' to upsample inside the network."
            )
        self.in_channels = in_channels
        self.mode = mode
        self.interpolation = interpolation
        self.output_scale: tuple[int, int, int] = factors

        same = {"padding": kernel_size // 2, "padding_mode": "replicate"}
        self.stem = nn.Conv3d(in_channels, channels, kernel_size, **same)
        block_width = channels + n_units * growth_rate
        self.blocks = nn.ModuleList(_DenseBlock(channels, growth_rate, n_units, kernel_size) for _ in range(n_blocks))
        # Block b >= 1 reads the stem and blocks 0 .. b - 1.
        self.compressions = nn.ModuleList(
            nn.Conv3d(channels + block * block_width, channels, 1) for block in range(1, n_blocks)
        )
        self.reconstruction = nn.Conv3d(channels + n_blocks * block_width, channels, 1)

        self.upsampler: nn.Module | None = None
        self.upsampling = upsampling
        if mode == "upsample":
            if upsampling == "pixel-shuffle":
                self.upsampler = nn.Conv3d(channels, channels * math.prod(factors), kernel_size, **same)
                self._init_icnr(self.upsampler, math.prod(factors))
            else:
                self.upsampler = nn.ConvTranspose3d(channels, channels, factors, stride=factors)
        self.head = nn.Conv3d(channels, out_channels, kernel_size, **same)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

        self.receptive_field = max(
            receptive_field(self._paths(n_blocks * n_units, kernel_size, factor)) for factor in factors
        )

    @staticmethod
    def _init_icnr(conv: nn.Conv3d, block: int) -> None:
        """Give the ``block`` sub-voxel outputs of each shuffled channel the same kernel and bias."""
        out_channels = conv.out_channels // block
        base = nn.Conv3d(conv.in_channels, out_channels, conv.kernel_size)
        with torch.no_grad():
            conv.weight.copy_(base.weight.repeat_interleave(block, dim=0))
            conv.bias.copy_(base.bias.repeat_interleave(block, dim=0))

    def _paths(self, n_convs: int, kernel_size: int, factor: int) -> list[list[Layer]]:
        """Return the longest convolution path and the base-image path along an axis with ``factor``."""
        trunk = [Layer("same", kernel_size)] * (1 + n_convs)
        if self.mode == "refine":
            return [trunk + [Layer("same", kernel_size)]]
        if self.upsampling == "pixel-shuffle":
            up = [Layer("same", kernel_size), Layer("repeat", 1, factor)]
        else:
            up = [Layer("transposed", factor, factor)]
        base = Layer("linear", 1, factor) if self.interpolation == "trilinear" else Layer("repeat", 1, factor)
        return [trunk + up + [Layer("same", kernel_size)], [base]]

    def _base_image(self, x: torch.Tensor) -> torch.Tensor:
        """Return the input on the output grid: itself in refine mode, else interpolated with fixed weights."""
        if self.mode == "refine" or self.output_scale == (1, 1, 1):
            return x
        if self.interpolation == "nearest":
            for axis, factor in zip((2, 3, 4), self.output_scale):
                if factor > 1:
                    x = x.repeat_interleave(factor, dim=axis)
            return x
        size = [length * factor for length, factor in zip(x.shape[2:], self.output_scale)]
        return F.interpolate(x, size=size, mode="trilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_volume_batch(x, self.in_channels)
        stem = self.stem(x)
        levels = [stem]
        for index, block in enumerate(self.blocks):
            block_input = stem if index == 0 else self.compressions[index - 1](torch.cat(levels, dim=1))
            levels.append(block(block_input))
        h = F.elu(self.reconstruction(torch.cat(levels, dim=1)))

        if self.upsampler is not None:
            h = self.upsampler(h)
            if self.upsampling == "pixel-shuffle":
                h = pixel_shuffle_3d(h, self.output_scale)
            h = F.elu(h)
        return self._base_image(x) + self.head(h)
