"""3D critics for Wasserstein GAN training: ``(B, C, D, H, W)`` in, one unbounded score per volume out."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as apply_spectral_norm

from medgan.networks.registry import register_network


def critic_input(low: torch.Tensor, candidate: torch.Tensor) -> torch.Tensor:
    """Build a conditional critic's input: ``low`` and ``candidate`` concatenated along channels, ``low`` first.

    When the spatial shapes differ, as in super-resolution, ``low`` is first resampled onto the candidate's
    grid by `interpolate_to_grid`. The result has ``low``'s channels plus the candidate's.

    Raises:
        ValueError: if either tensor is not ``(B, C, D, H, W)`` or the batch sizes differ.
    """
    return torch.cat([interpolate_to_grid(low, candidate), candidate], dim=1)


def interpolate_to_grid(low: torch.Tensor, candidate: torch.Tensor) -> torch.Tensor:
    """Return ``low`` resampled onto ``candidate``'s spatial shape by trilinear interpolation.

    ``low`` comes back unchanged when the shapes already match. Otherwise ``align_corners=False`` places
    voxel ``j`` of an axis that grows by a factor ``s`` at input coordinate ``(j + 0.5) / s - 0.5``, which is
    the grid convention of the super-resolution generators.

    Raises:
        ValueError: if either tensor is not ``(B, C, D, H, W)`` or the batch sizes differ.
    """
    for name, tensor in (("low", low), ("candidate", candidate)):
        if tensor.ndim != 5:
            raise ValueError(f"{name} must be a (B, C, D, H, W) tensor, got shape {tuple(tensor.shape)}.")
    if low.shape[0] != candidate.shape[0]:
        raise ValueError(
            f"low and candidate must have the same batch size, got shapes {tuple(low.shape)} and "
            f"{tuple(candidate.shape)}."
        )
    if low.shape[2:] == candidate.shape[2:]:
        return low
    return F.interpolate(low, size=tuple(candidate.shape[2:]), mode="trilinear", align_corners=False)


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
        spectral_norm: divide each convolution's weight by its largest singular value (Miyato et al.,
            "Spectral Normalization for Generative Adversarial Networks", ICLR 2018), estimated by one power
            iteration per training forward pass. ``torch.nn.utils.parametrizations.spectral_norm`` computes
            that value for the weight reshaped to an ``(out_channels, in_channels * 27)`` matrix, not for the
            convolution as a linear operator on volumes.
            The weights are then stored as ``parametrizations.weight.original`` in the state dict.

    Note:
        Input size: each strided layer maps an axis of ``n`` voxels to ``ceil(n / 2)``, and the score averages
        the last feature map, so any patch of at least one voxel per axis gets a score. Patches of at least
        ``2 ** n_layers`` voxels along each axis let the deepest layer see structure rather than the zero
        padding. A conditional critic needs the input and the candidate on one grid, which `critic_input`
        provides for super-resolution.
    """

    def __init__(self, in_channels: int = 1, channels: int = 16, n_layers: int = 3,
                 normalization: str = "layer", spectral_norm: bool = False) -> None:
        super().__init__()
        for name, value in [("in_channels", in_channels), ("channels", channels), ("n_layers", n_layers)]:
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        if normalization not in ("layer", "none"):
            raise ValueError(f"normalization must be 'layer' or 'none', got {normalization!r}.")
        if not isinstance(spectral_norm, bool):
            raise ValueError(f"spectral_norm must be true or false, got {spectral_norm!r}.")

        def conv(in_width: int, out_width: int, stride: int = 1) -> nn.Module:
            layer = nn.Conv3d(in_width, out_width, 3, stride=stride, padding=1)
            return apply_spectral_norm(layer) if spectral_norm else layer

        layers: list[nn.Module] = [conv(in_channels, channels), nn.LeakyReLU(0.2)]
        width = channels
        for _ in range(n_layers):
            layers.append(conv(width, width * 2, stride=2))
            if normalization == "layer":
                layers.append(nn.GroupNorm(1, width * 2))
            layers.append(nn.LeakyReLU(0.2))
            width *= 2
        layers.append(conv(width, 1))
        self.features = nn.Sequential(*layers)
        self.in_channels = in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5:
            raise ValueError(f"Expected a (B, C, D, H, W) tensor, got shape {tuple(x.shape)}.")
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"Expected {self.in_channels} input channel(s) (the critic's in_channels), got shape "
                f"{tuple(x.shape)}; a conditional critic takes input and candidate channels together."
            )
        return self.features(x).mean(dim=(1, 2, 3, 4))
