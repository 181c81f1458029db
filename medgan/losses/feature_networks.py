"""Frozen feature extractors of the perceptual losses: a 3D autoencoder, VGG16/VGG19 and MedicalNet ResNets.

The VGG and ResNet modules reproduce the parameter names of the published weights, so a state dict from
torchvision (``features.N.weight``) or from the MedicalNet release (``module.layer1.0.conv1.weight``) loads
without renaming beyond the ``module.`` prefix.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

# ---------------------------------------------------------------------------------------------------------
# Self-supervised 3D autoencoder


class PerceptualAutoencoder3D(nn.Module):
    """A small 3D convolutional autoencoder whose encoder levels serve as perceptual features.

    Level 0 keeps the input's size, and each further level halves it (stride-2 convolution, sizes rounded up).
    The decoder has no skip connections, so the deepest level has to carry the whole volume.

    Args:
        in_channels: channels of the input volumes.
        channels: feature channels of each encoder level.
    """

    def __init__(self, in_channels: int = 1, channels: list[int] | tuple[int, ...] = (16, 32, 64)) -> None:
        super().__init__()
        channels = list(channels)
        if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
            raise ValueError(f"in_channels must be a positive integer, got {in_channels!r}.")
        if not channels or any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in channels):
            raise ValueError(f"channels must be a non-empty list of positive integers, got {channels!r}.")
        self.in_channels = in_channels
        self.channels = channels
        self.encoder = nn.ModuleList()
        previous = in_channels
        for level, width in enumerate(channels):
            self.encoder.append(nn.Sequential(
                nn.Conv3d(previous, width, 3, stride=1 if level == 0 else 2, padding=1, padding_mode="replicate"),
                nn.LeakyReLU(0.2),
                nn.Conv3d(width, width, 3, padding=1, padding_mode="replicate"),
                nn.LeakyReLU(0.2),
            ))
            previous = width
        # decoder[i] maps level i + 1 back to the width of level i.
        self.decoder = nn.ModuleList(
            nn.Sequential(nn.Conv3d(channels[i + 1], channels[i], 3, padding=1, padding_mode="replicate"),
                          nn.LeakyReLU(0.2))
            for i in range(len(channels) - 1)
        )
        self.output = nn.Conv3d(channels[0], in_channels, 3, padding=1, padding_mode="replicate")

    def architecture_kwargs(self) -> dict[str, Any]:
        """Constructor arguments that rebuild this network."""
        return {"in_channels": self.in_channels, "channels": list(self.channels)}

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Return the features of every encoder level, shallowest first."""
        features = []
        for block in self.encoder:
            x = block(x)
            features.append(x)
        return features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruct ``x`` (``(B, C, D, H, W)``, any size) from its deepest level."""
        features = self.encode(x)
        y = features[-1]
        for level in range(len(self.channels) - 2, -1, -1):
            y = F.interpolate(y, size=features[level].shape[2:], mode="trilinear", align_corners=False)
            y = self.decoder[level](y)
        return self.output(y)


# ---------------------------------------------------------------------------------------------------------
# VGG (2D), torchvision layout

# Layer lists of torchvision.models.vgg16 / vgg19 (configurations "D" and "E" of Simonyan and Zisserman,
# "Very Deep Convolutional Networks for Large-Scale Image Recognition", ICLR 2015). "M" is a 2x2 max pooling.
VGG_LAYOUTS: dict[str, list[int | str]] = {
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"],
}


def vgg_layer_names(architecture: str) -> dict[str, tuple[int, int]]:
    """Map layer names (``conv3_3``, ``relu3_3``, ``pool3``) to ``(index in features, poolings before it)``."""
    names: dict[str, tuple[int, int]] = {}
    index, block, conv = 0, 1, 1
    for entry in VGG_LAYOUTS[architecture]:
        if entry == "M":
            names[f"pool{block}"] = (index, block)
            index += 1
            block += 1
            conv = 1
        else:
            names[f"conv{block}_{conv}"] = (index, block - 1)
            names[f"relu{block}_{conv}"] = (index + 1, block - 1)
            index += 2
            conv += 1
    return names


class VGGFeatures(nn.Module):
    """The ``features`` stack of a torchvision VGG16 or VGG19, without batch normalization.

    Parameter names are ``features.N.weight`` and ``features.N.bias`` with torchvision's indices. The ReLUs are
    not in-place, so a convolution's output can be returned as a feature.
    """

    def __init__(self, architecture: str = "vgg16") -> None:
        super().__init__()
        if architecture not in VGG_LAYOUTS:
            raise ValueError(f"Unknown VGG architecture {architecture!r}; choose one of {', '.join(VGG_LAYOUTS)}.")
        self.architecture = architecture
        layers: list[nn.Module] = []
        previous = 3
        for entry in VGG_LAYOUTS[architecture]:
            if entry == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers.append(nn.Conv2d(previous, int(entry), kernel_size=3, padding=1))
                layers.append(nn.ReLU(inplace=False))
                previous = int(entry)
        self.features = nn.Sequential(*layers)

    def extract(self, x: torch.Tensor, indices: list[int]) -> list[torch.Tensor]:
        """Run ``(N, 3, H, W)`` images up to the deepest index and return the outputs at ``indices``."""
        requested = set(indices)
        outputs: dict[int, torch.Tensor] = {}
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in requested:
                outputs[index] = x
            if len(outputs) == len(requested):
                break
        return [outputs[index] for index in indices]


# ---------------------------------------------------------------------------------------------------------
# MedicalNet 3D ResNet

# Blocks per stage of the BasicBlock ResNets of MedicalNet (Chen et al., "Med3D: Transfer Learning for 3D
# Medical Image Analysis", 2019, and the Tencent/MedicalNet repository's models/resnet.py).
MEDICALNET_DEPTHS: dict[int, list[int]] = {10: [1, 1, 1, 1], 18: [2, 2, 2, 2]}
MEDICALNET_LAYERS = ("conv1", "layer1", "layer2", "layer3", "layer4")


def _conv3x3x3(in_planes: int, out_planes: int, stride: int = 1, dilation: int = 1) -> nn.Conv3d:
    return nn.Conv3d(in_planes, out_planes, kernel_size=3, stride=stride, padding=dilation, dilation=dilation,
                     bias=False)


class _ZeroPadShortcut(nn.Module):
    """MedicalNet's parameter-free shortcut "A": subsample by ``stride`` and pad the new channels with zeros."""

    def __init__(self, planes: int, stride: int) -> None:
        super().__init__()
        self.planes = planes
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, ::self.stride, ::self.stride, ::self.stride]
        padding = x.new_zeros((x.shape[0], self.planes - x.shape[1], *x.shape[2:]))
        return torch.cat([x, padding], dim=1)


class _BasicBlock3D(nn.Module):
    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = _conv3x3x3(inplanes, planes, stride=stride, dilation=dilation)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = _conv3x3x3(planes, planes, dilation=dilation)
        self.bn2 = nn.BatchNorm3d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + residual)


class MedicalNetResNet3D(nn.Module):
    """The encoder of MedicalNet's ResNet-10/18 (single-channel input), without the segmentation head.

    Stages as in MedicalNet: a 7x7x7 stride-2 stem and a stride-2 max pooling, ``layer1``, ``layer2`` (stride
    2), ``layer3`` (dilation 2) and ``layer4`` (dilation 4).

    Args:
        depth: 10 or 18.
        shortcut: ``"B"`` (1x1x1 convolution and batch norm, the ``downsample.0``/``downsample.1`` keys) or
            ``"A"`` (zero padding, no parameters). MedicalNet's resnet_10 release uses B and resnet_18 uses A.
    """

    def __init__(self, depth: int = 10, shortcut: str = "B") -> None:
        super().__init__()
        if depth not in MEDICALNET_DEPTHS:
            raise ValueError(f"MedicalNet depth must be one of {', '.join(map(str, MEDICALNET_DEPTHS))}, got {depth!r}.")
        if shortcut not in ("A", "B"):
            raise ValueError(f"MedicalNet shortcut must be 'A' or 'B', got {shortcut!r}.")
        self.depth = depth
        self.shortcut = shortcut
        self.conv1 = nn.Conv3d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm3d(64)
        self.maxpool = nn.MaxPool3d(kernel_size=3, stride=2, padding=1)
        self._inplanes = 64
        blocks = MEDICALNET_DEPTHS[depth]
        self.layer1 = self._make_layer(64, blocks[0])
        self.layer2 = self._make_layer(128, blocks[1], stride=2)
        self.layer3 = self._make_layer(256, blocks[2], dilation=2)
        self.layer4 = self._make_layer(512, blocks[3], dilation=4)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
        downsample: nn.Module | None = None
        if stride != 1 or self._inplanes != planes:
            if self.shortcut == "A":
                downsample = _ZeroPadShortcut(planes, stride)
            else:
                downsample = nn.Sequential(nn.Conv3d(self._inplanes, planes, kernel_size=1, stride=stride, bias=False),
                                           nn.BatchNorm3d(planes))
        layers = [_BasicBlock3D(self._inplanes, planes, stride=stride, dilation=dilation, downsample=downsample)]
        self._inplanes = planes
        layers.extend(_BasicBlock3D(planes, planes, dilation=dilation) for _ in range(1, blocks))
        return nn.Sequential(*layers)

    def extract(self, x: torch.Tensor, layers: list[str]) -> list[torch.Tensor]:
        """Run ``(B, 1, D, H, W)`` up to the deepest of ``layers`` (names in `MEDICALNET_LAYERS`) and return them."""
        deepest = max(MEDICALNET_LAYERS.index(name) for name in layers)
        outputs = {"conv1": F.relu(self.bn1(self.conv1(x)))}
        x = self.maxpool(outputs["conv1"])
        for name in MEDICALNET_LAYERS[1:deepest + 1]:
            x = getattr(self, name)(x)
            outputs[name] = x
        return [outputs[name] for name in layers]
