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


def _as_float64(values: np.ndarray | torch.Tensor) -> np.ndarray:
    if torch.is_tensor(values):
        return values.detach().cpu().numpy().astype(np.float64)
    return np.asarray(values, dtype=np.float64)


def _masked_difference(reference, candidate, mask) -> np.ndarray:
    """Return ``candidate - reference`` as float64, restricted to ``mask`` when given."""
    reference = _as_float64(reference)
    candidate = _as_float64(candidate)
    if reference.shape != candidate.shape:
        raise ValueError(f"Shapes differ: {reference.shape} and {candidate.shape}.")
    difference = candidate - reference
    if mask is None:
        return difference.ravel()
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != reference.shape:
        raise ValueError(f"mask shape {mask.shape} does not match the image shape {reference.shape}.")
    if not mask.any():
        raise ValueError("mask selects no voxel, so the metric is undefined.")
    return difference[mask]


def rmse(reference, candidate, mask=None) -> float:
    """Root-mean-square error, in the units of the inputs, over ``mask`` (all voxels when ``None``)."""
    difference = _masked_difference(reference, candidate, mask)
    return float(np.sqrt(np.mean(difference**2)))


def mae(reference, candidate, mask=None) -> float:
    """Mean absolute error, in the units of the inputs, over ``mask`` (all voxels when ``None``)."""
    difference = _masked_difference(reference, candidate, mask)
    return float(np.mean(np.abs(difference)))


def psnr_db(reference, candidate, data_range: float, mask=None) -> float:
    """Peak signal-to-noise ratio in dB over ``mask``: ``10 log10(data_range^2 / MSE)``, infinite when equal.

    Accepts numpy arrays or tensors of any shape; ``mask`` is a boolean array of that shape or ``None``.
    """
    if not data_range > 0:
        raise ValueError(f"data_range must be positive, got {data_range!r}.")
    difference = _masked_difference(reference, candidate, mask)
    mse = float(np.mean(difference**2))
    if mse == 0:
        return float("inf")
    return float(10.0 * np.log10(data_range**2 / mse))


SSIM_SIGMA_VOXELS = 1.5
SSIM_WINDOW_VOXELS = 11
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def _gaussian_profile(size: int, sigma: float) -> torch.Tensor:
    positions = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    profile = torch.exp(-0.5 * (positions / sigma) ** 2)
    return profile / profile.sum()


def ssim_window_sizes(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """Return the 3D SSIM window size per axis: 11 voxels, or the largest odd size that fits a shorter axis."""
    sizes = []
    for length in shape:
        size = min(SSIM_WINDOW_VOXELS, int(length))
        if size % 2 == 0:
            size -= 1
        sizes.append(max(size, 1))
    return tuple(sizes)  # type: ignore[return-value]


def _separable_filter(volume: torch.Tensor, profiles: list[torch.Tensor]) -> torch.Tensor:
    """Filter a ``(1, 1, A, B, C)`` tensor with one 1D profile per axis, without padding ("valid" output)."""
    for axis, profile in enumerate(profiles):
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = profile.numel()
        volume = F.conv3d(volume, profile.view(shape))
    return volume


def ssim_3d(reference, candidate, data_range: float, mask=None) -> float:
    """Mean 3D SSIM (Wang et al. 2004, extended to 3D) between two 3D arrays of one shape.

    The local statistics use an isotropic Gaussian window of sigma 1.5 voxels, 11 voxels wide, and the constants
    ``C1 = (0.01 L)^2`` and ``C2 = (0.03 L)^2`` with ``L = data_range``. Along an axis shorter than 11 voxels the
    window is truncated to the largest odd size that fits (sigma stays 1.5) and renormalised. The SSIM map covers
    the voxels whose window lies inside the volume, and its mean is taken over ``mask`` (a boolean array of the
    input shape) where the mask overlaps that region.

    Raises:
        ValueError: on shapes that differ or are not 3D, a non-positive ``data_range``, or a mask that selects no
            voxel of the SSIM map.
    """
    if not data_range > 0:
        raise ValueError(f"data_range must be positive, got {data_range!r}.")
    x = _as_float64(reference)
    y = _as_float64(candidate)
    if x.shape != y.shape or x.ndim != 3:
        raise ValueError(f"Expected two 3D arrays of one shape, got {x.shape} and {y.shape}.")
    sizes = ssim_window_sizes(x.shape)
    profiles = [_gaussian_profile(size, SSIM_SIGMA_VOXELS) for size in sizes]
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    tx = torch.from_numpy(x)[None, None]
    ty = torch.from_numpy(y)[None, None]
    mean_x = _separable_filter(tx, profiles)
    mean_y = _separable_filter(ty, profiles)
    var_x = _separable_filter(tx * tx, profiles) - mean_x**2
    var_y = _separable_filter(ty * ty, profiles) - mean_y**2
    covariance = _separable_filter(tx * ty, profiles) - mean_x * mean_y
    numerator = (2 * mean_x * mean_y + c1) * (2 * covariance + c2)
    denominator = (mean_x**2 + mean_y**2 + c1) * (var_x + var_y + c2)
    ssim_map = (numerator / denominator)[0, 0].numpy()
    if mask is None:
        return float(ssim_map.mean())
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != x.shape:
        raise ValueError(f"mask shape {mask.shape} does not match the image shape {x.shape}.")
    margins = [size // 2 for size in sizes]
    cropped = mask[tuple(slice(m, n - m) for m, n in zip(margins, x.shape))]
    if not cropped.any():
        raise ValueError(f"mask selects no voxel whose SSIM window {sizes} lies inside the volume {x.shape}.")
    return float(ssim_map[cropped].mean())
