"""Structural similarity (SSIM) of 3D volumes with a Gaussian window, and the loss ``1 - SSIM``."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# Constants of Wang et al., "Image quality assessment: from error visibility to structural similarity",
# IEEE TIP 2004: C1 = (K1 * L)^2 and C2 = (K2 * L)^2 for the data range L.
_K1 = 0.01
_K2 = 0.03


def _check_pair(prediction: torch.Tensor, target: torch.Tensor) -> None:
    if prediction.shape != target.shape:
        raise ValueError(
            f"prediction and target must have the same shape, got {tuple(prediction.shape)} and {tuple(target.shape)}."
        )
    if prediction.ndim != 5:
        raise ValueError(f"Expected (B, C, D, H, W) tensors, got shape {tuple(prediction.shape)}.")


def gaussian_window_1d(size: int, sigma: float, device: torch.device | None = None) -> torch.Tensor:
    """Return ``size`` samples of a Gaussian with standard deviation ``sigma`` (voxels), centred and summing to 1."""
    positions = torch.arange(size, dtype=torch.float32, device=device) - (size - 1) / 2.0
    weights = torch.exp(-(positions**2) / (2.0 * sigma**2))
    return weights / weights.sum()


def ssim3d(prediction: torch.Tensor, target: torch.Tensor, data_range: float = 1.0, sigma: float = 1.5,
           window_size: int = 11) -> torch.Tensor:
    """Compute the mean SSIM of two ``(B, C, D, H, W)`` tensors in float32, over all samples and channels.

    Local means, variances and the covariance are weighted by a separable 3D Gaussian window (``sigma`` in
    voxels) of ``window_size`` samples per axis, clipped to the input's size along each axis. The window is
    applied without padding, so only voxels whose whole window lies inside the volume enter the mean. With
    ``window_size=11`` and ``sigma=1.5`` on volumes of at least 11 voxels per axis this matches
    ``skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5, use_sample_covariance=False)``.

    Args:
        prediction, target: tensors of the same shape, in the same units.
        data_range: ``L`` in the stabilizing constants ``C1 = (0.01 L)^2`` and ``C2 = (0.03 L)^2``, in the
            inputs' units. For ldct network units (HU / 1024), 1.0 is a range of 1024 HU.
        sigma: standard deviation of the Gaussian window, in voxels.
        window_size: window length per axis before clipping, in voxels.

    Raises:
        ValueError: if the shapes differ or are not 5D, or an argument is not positive.
    """
    _check_pair(prediction, target)
    _check_ssim_arguments(data_range, sigma, window_size)
    batch, channels = prediction.shape[:2]
    spatial = prediction.shape[2:]
    with torch.autocast(device_type=prediction.device.type, enabled=False):
        x = prediction.float().reshape(batch * channels, 1, *spatial)
        y = target.float().reshape(batch * channels, 1, *spatial)
        # Second moments are taken about the target's mean, a shift that leaves variances unchanged but keeps
        # E[x^2] - E[x]^2 from cancelling in float32 when values sit far from zero (air at -1000 HU).
        shift = y.mean(dim=(2, 3, 4), keepdim=True).detach()
        x_shifted = x - shift
        y_shifted = y - shift
        # One filtering pass over the five maps the local statistics need.
        stacked = torch.cat([x, y, x_shifted**2, y_shifted**2, x_shifted * y_shifted], dim=0)
        for axis, size in enumerate(spatial):
            window = gaussian_window_1d(min(window_size, size), sigma, device=prediction.device)
            kernel_shape = [1, 1, 1, 1, 1]
            kernel_shape[2 + axis] = window.numel()
            stacked = F.conv3d(stacked, window.reshape(kernel_shape))
        mean_x, mean_y, mean_xx, mean_yy, mean_xy = stacked.chunk(5, dim=0)
        variance_x = mean_xx - (mean_x - shift) ** 2
        variance_y = mean_yy - (mean_y - shift) ** 2
        covariance = mean_xy - (mean_x - shift) * (mean_y - shift)
        c1 = (_K1 * data_range) ** 2
        c2 = (_K2 * data_range) ** 2
        numerator = (2 * mean_x * mean_y + c1) * (2 * covariance + c2)
        denominator = (mean_x**2 + mean_y**2 + c1) * (variance_x + variance_y + c2)
        return (numerator / denominator).mean()


def _check_ssim_arguments(data_range: float, sigma: float, window_size: int) -> None:
    for name, value in (("data_range", data_range), ("sigma", sigma)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ValueError(f"ssim3d: {name} must be a positive number, got {value!r}.")
    if isinstance(window_size, bool) or not isinstance(window_size, int) or window_size < 1:
        raise ValueError(f"ssim3d: window_size must be a positive integer (voxels), got {window_size!r}.")


class SSIM3DLoss(torch.nn.Module):
    """``1 - ssim3d(prediction, target)``: zero for identical inputs, at most 2.

    Args:
        data_range: ``L`` of the SSIM constants, in network units (default 1.0; for ldct network units are
            HU / 1024, so 1.0 is a range of 1024 HU).
        sigma: standard deviation of the Gaussian window, in voxels.
        window_size: window length per axis, clipped to the patch size along each axis.

    Raises:
        ValueError: if an argument is not positive.
    """

    def __init__(self, data_range: float = 1.0, sigma: float = 1.5, window_size: int = 11) -> None:
        super().__init__()
        _check_ssim_arguments(data_range, sigma, window_size)
        self.data_range = float(data_range)
        self.sigma = float(sigma)
        self.window_size = window_size

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return 1.0 - ssim3d(prediction, target, self.data_range, self.sigma, self.window_size)
