"""PSNR and SSIM between a reference and a candidate volume.

Every number depends on the intensity window and data range, so callers name them: the default window
``HU_WINDOW_WIDE`` clips CT to [-1000, 1000] HU and maps it to [0, 1] before PSNR and SSIM.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

HU_WINDOW_WIDE = (-1000.0, 1000.0)


def windowed(values: np.ndarray | torch.Tensor, window: tuple[float, float]) -> torch.Tensor:
    """Clip ``values`` to ``window = (low, high)`` and map it linearly to [0, 1], as float64."""
    low, high = window
    if not high > low:
        raise ValueError(f"window must satisfy low < high, got {window}.")
    tensor = torch.as_tensor(np.asarray(values) if not torch.is_tensor(values) else values).to(torch.float64)
    return ((tensor.clamp(low, high) - low) / (high - low))


def psnr(reference: torch.Tensor, candidate: torch.Tensor, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB, ``10 log10(data_range^2 / MSE)``; infinite for identical inputs."""
    if reference.shape != candidate.shape:
        raise ValueError(f"Shapes differ: {tuple(reference.shape)} and {tuple(candidate.shape)}.")
    mse = torch.mean((reference.double() - candidate.double()) ** 2).item()
    if mse == 0:
        return float("inf")
    return float(10.0 * np.log10(data_range**2 / mse))


def _gaussian_kernel_2d(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    positions = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    profile = torch.exp(-0.5 * (positions / sigma) ** 2)
    profile = profile / profile.sum()
    return (profile[:, None] * profile[None, :])[None, None]


def ssim_slices(reference: torch.Tensor, candidate: torch.Tensor, data_range: float = 1.0) -> float:
    """Mean SSIM over 2D slices of two ``(D, H, W)`` tensors (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5).

    Slices are taken along D, the axial axis of CT volumes in medgan's layout. Slices smaller than the window
    are compared with a window shrunk to their size.
    """
    if reference.shape != candidate.shape or reference.ndim != 3:
        raise ValueError(f"Expected two (D, H, W) tensors of one shape, got {tuple(reference.shape)} and "
                         f"{tuple(candidate.shape)}.")
    size = min(11, reference.shape[1], reference.shape[2])
    kernel = _gaussian_kernel_2d(size, 1.5 * size / 11)
    x = reference.double()[:, None]
    y = candidate.double()[:, None]
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    mean_x = F.conv2d(x, kernel)
    mean_y = F.conv2d(y, kernel)
    var_x = F.conv2d(x * x, kernel) - mean_x**2
    var_y = F.conv2d(y * y, kernel) - mean_y**2
    cov = F.conv2d(x * y, kernel) - mean_x * mean_y
    ssim_map = ((2 * mean_x * mean_y + c1) * (2 * cov + c2)) / ((mean_x**2 + mean_y**2 + c1) * (var_x + var_y + c2))
    return float(ssim_map.mean())
