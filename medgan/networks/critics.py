"""3D critics for Wasserstein GAN training: ``(B, C, D, H, W)`` in, one unbounded score per volume out."""

from __future__ import annotations

import torch
from torch import nn

from medgan.networks.registry import register_network


@register_network("patch-critic-3d")
class PatchCritic3D(nn.Module):
    """Convolutional 3D critic without batch normalisation.

    Batch normalisation couples the samples of a batch, which breaks the per-sample gradient penalty of
    WGAN-GP (Gulrajani et al., "Improved Training of Wasserstein GANs", NeurIPS 2017). This critic normalises
    each sample on its own (layer normalisation, as GroupNorm with one group) or not at all.

    Args:
        in_channels: channels of the scored volume. A conditional critic that scores (input, candidate) pairs
            takes ``2 * channels`` of the volume.
        channels: feature channels of the first layer; each strided layer doubles them.
        n_layers: number of strided convolutions (stride 2 along every axis whose size allows it).
        normalization: ``"layer"`` or ``"none"``.

    Note:
        Each strided layer maps an axis of ``n`` voxels to ``ceil(n / 2)``, and the score averages the last
        feature map, so any patch of at least one voxel per axis gets a score. Patches of at least
        ``2 ** n_layers`` voxels along each axis let the deepest layer see structure rather than padding.
    """

    def __init__(self, in_channels: int = 1, channels: int = 16, n_layers: int = 3,
                 normalization: str = "layer") -> None:
        super().__init__()
        for name, value in [("in_channels", in_channels), ("channels", channels), ("n_layers", n_layers)]:
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        if normalization not in ("layer", "none"):
            raise ValueError(f"normalization must be 'layer' or 'none', got {normalization!r}.")
        layers: list[nn.Module] = [nn.Conv3d(in_channels, channels, 3, padding=1), nn.LeakyReLU(0.2)]
        width = channels
        for _ in range(n_layers):
            layers.append(nn.Conv3d(width, width * 2, 3, stride=2, padding=1))
            if normalization == "layer":
                layers.append(nn.GroupNorm(1, width * 2))
            layers.append(nn.LeakyReLU(0.2))
            width *= 2
        layers.append(nn.Conv3d(width, 1, 3, padding=1))
        self.features = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5:
            raise ValueError(f"Expected a (B, C, D, H, W) tensor, got shape {tuple(x.shape)}.")
        return self.features(x).mean(dim=(1, 2, 3, 4))
