"""Low-resolution MRI degradations in torch: thick slices, k-space truncation and Rician noise.

The functions work on the last three dimensions of a tensor, the spatial axes ``(X, Y, Z)`` of one or more
volumes (``Volume.array`` order ``(i, j, k)``, or MONAI's ``(C, X, Y, Z)``). ``axis`` arguments index those
three spatial axes, 0 to 2. Positions along an axis are in input voxel indices, so the world position of
index ``c`` along ``axis`` is ``affine @ e`` with ``e[axis] = c``.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np
import torch

SLICE_PROFILES = ("boxcar", "gaussian")
TAPERS = ("none", "hann", "tukey")

GAUSSIAN_SUPPORT_FWHM = 1.5
"""Half-width of the truncated Gaussian slice profile, in FWHM. 1.5 FWHM is 3.53 sigma, which keeps 99.96 %
of the profile's area."""

FOREGROUND_FRACTION_OF_P99 = 0.1
"""Foreground voxels for the SNR are those above this fraction of the image's 99th percentile."""

_FWHM_PER_SIGMA = 2 * math.sqrt(2 * math.log(2))


def _positive_float(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}.")
    return float(value)


def _spatial_axis(axis: object) -> int:
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral) or not 0 <= axis <= 2:
        raise ValueError(f"axis must be 0, 1 or 2 (a spatial axis of (X, Y, Z)), got {axis!r}.")
    return int(axis)


def _spatial_tensor(image: object, name: str = "image") -> torch.Tensor:
    if not isinstance(image, torch.Tensor) or image.ndim < 3 or not image.is_floating_point():
        described = f"{image.dtype} tensor of shape {tuple(image.shape)}" if isinstance(image, torch.Tensor) else (
            type(image).__name__
        )
        raise ValueError(f"{name} must be a floating-point torch.Tensor of shape (..., X, Y, Z), got {described}.")
    return image


@dataclass(frozen=True)
class ThickSliceSampling:
    """Placement of thick slices along one axis of an input volume, and the weights that make them.

    Attributes:
        weights: ``(n_thick, n_input)`` float64 weights. Row ``m`` sums to 1 and averages the input slices
            under thick slice ``m``'s profile.
        first_centre_index: position of thick slice 0's centre, in input slice indices.
        step_index: distance between neighbouring thick-slice centres, in input slice indices.
    """

    weights: torch.Tensor
    first_centre_index: float
    step_index: float

    @property
    def n_thick(self) -> int:
        return int(self.weights.shape[0])

    def centre_indices(self) -> torch.Tensor:
        """Return the ``(n_thick,)`` centre positions in input slice indices."""
        index = torch.arange(self.n_thick, dtype=torch.float64)
        return self.first_centre_index + index * self.step_index


def validate_thick_slice_arguments(
    slice_thickness_mm: float, slice_gap_mm: float, profile: str, profile_fwhm_mm: float | None
) -> tuple[float, float, float | None, float]:
    """Return ``(slice_thickness_mm, slice_gap_mm, profile_fwhm_mm, half_support_mm)`` as floats.

    ``profile_fwhm_mm`` defaults to the thickness for the Gaussian profile and stays ``None`` for the boxcar.
    ``half_support_mm`` is how far the profile reaches on each side of a slice centre.

    Raises:
        ValueError: if an argument is invalid. The message names it.
    """
    slice_thickness_mm = _positive_float("slice_thickness_mm", slice_thickness_mm)
    if isinstance(slice_gap_mm, bool) or not isinstance(slice_gap_mm, numbers.Real) or not math.isfinite(slice_gap_mm):
        raise ValueError(f"slice_gap_mm must be a finite number, got {slice_gap_mm!r}.")
    if slice_thickness_mm + slice_gap_mm <= 0:
        raise ValueError(
            f"slice_gap_mm must be greater than -slice_thickness_mm ({-slice_thickness_mm}) so that slices advance, "
            f"got {slice_gap_mm!r}."
        )
    if profile not in SLICE_PROFILES:
        raise ValueError(f"profile must be one of {', '.join(SLICE_PROFILES)}, got {profile!r}.")
    if profile == "boxcar":
        if profile_fwhm_mm is not None:
            raise ValueError(
                f"profile_fwhm_mm applies only to profile='gaussian', got {profile_fwhm_mm!r} with boxcar."
            )
        return slice_thickness_mm, float(slice_gap_mm), None, slice_thickness_mm / 2
    if profile_fwhm_mm is None:
        profile_fwhm_mm = slice_thickness_mm
    profile_fwhm_mm = _positive_float("profile_fwhm_mm", profile_fwhm_mm)
    return slice_thickness_mm, float(slice_gap_mm), profile_fwhm_mm, GAUSSIAN_SUPPORT_FWHM * profile_fwhm_mm


def thick_slice_sampling(
    n_input: int,
    spacing_mm: float,
    slice_thickness_mm: float,
    *,
    slice_gap_mm: float = 0.0,
    profile: str = "boxcar",
    profile_fwhm_mm: float | None = None,
) -> ThickSliceSampling:
    """Place thick slices along an axis of ``n_input`` slices of ``spacing_mm`` and return their weights.

    Thick slices are ``slice_thickness_mm + slice_gap_mm`` apart, centre to centre. Slice 0 starts where the
    first input slice starts, and the last one is the last whose profile fits inside the input, so every
    profile is whole. A thick slice's centre is the centre of the extent it integrates, with no half-voxel
    shift. When the profile's edges fall on slice boundaries or slice centres symmetrically (for example a
    whole number of input slices per boxcar slice), the centre is also exactly the weighted mean position of
    the input slices it averages.

    Note:
        Otherwise the weighted mean of the input slice centres differs from the thick-slice centre by a
        small fraction of an input slice, because an input slice cut by the profile's edge counts with its
        whole-voxel centre. Averaging 1 mm slices into 2.5 mm boxcar slices, it differs by up to 0.05 mm.

    Profiles:
        ``"boxcar"``: uniform over the slice thickness. Each input slice's weight is its overlap with
            ``[centre - thickness / 2, centre + thickness / 2]``, so input slices cut by the edge count in
            part. This integrates the input exactly when each voxel is uniform over its extent.
        ``"gaussian"``: a Gaussian of ``profile_fwhm_mm`` FWHM (default: the slice thickness), integrated
            over each input slice and truncated at ``GAUSSIAN_SUPPORT_FWHM`` FWHM on each side of the centre.

    Raises:
        ValueError: on an invalid argument, or a profile wider than the input.
    """
    if isinstance(n_input, bool) or not isinstance(n_input, numbers.Integral) or n_input < 1:
        raise ValueError(f"n_input must be a positive integer, got {n_input!r}.")
    spacing_mm = _positive_float("spacing_mm", spacing_mm)
    slice_thickness_mm, slice_gap_mm, profile_fwhm_mm, half_support_mm = validate_thick_slice_arguments(
        slice_thickness_mm, slice_gap_mm, profile, profile_fwhm_mm
    )

    extent_mm = n_input * spacing_mm
    if 2 * half_support_mm > extent_mm + 1e-9 * extent_mm:
        raise ValueError(
            f"slice_thickness_mm {slice_thickness_mm} with profile {profile!r} needs {2 * half_support_mm:g} mm, more "
            f"than the input's {n_input} slices of {spacing_mm:g} mm ({extent_mm:g} mm)."
        )
    step_mm = slice_thickness_mm + slice_gap_mm
    n_thick = int(math.floor((extent_mm - 2 * half_support_mm) / step_mm + 1e-9)) + 1

    # Positions in mm from the start of the first input slice.
    centres_mm = half_support_mm + torch.arange(n_thick, dtype=torch.float64) * step_mm
    lower_mm = torch.arange(n_input, dtype=torch.float64) * spacing_mm
    upper_mm = lower_mm + spacing_mm
    support_lower = (centres_mm - half_support_mm)[:, None]
    support_upper = (centres_mm + half_support_mm)[:, None]
    clipped_lower = torch.maximum(lower_mm[None, :], support_lower)
    clipped_upper = torch.minimum(upper_mm[None, :], support_upper)
    if profile == "boxcar":
        weights = (clipped_upper - clipped_lower).clamp(min=0)
    else:
        sigma_mm = profile_fwhm_mm / _FWHM_PER_SIGMA
        scale = 1 / (sigma_mm * math.sqrt(2))
        upper_cdf = torch.erf((clipped_upper - centres_mm[:, None]) * scale)
        lower_cdf = torch.erf((clipped_lower - centres_mm[:, None]) * scale)
        weights = ((upper_cdf - lower_cdf) / 2).clamp(min=0)
    weights = weights / weights.sum(dim=1, keepdim=True)
    return ThickSliceSampling(
        weights=weights,
        first_centre_index=half_support_mm / spacing_mm - 0.5,
        step_index=step_mm / spacing_mm,
    )


def thick_slices(image: torch.Tensor, sampling: ThickSliceSampling, axis: int) -> torch.Tensor:
    """Average the input slices along spatial ``axis`` into thick slices, on the low-resolution grid.

    ``image`` is ``(..., X, Y, Z)``. The result has ``sampling.n_thick`` slices along ``axis`` and the dtype
    of ``image``.
    """
    image = _spatial_tensor(image)
    axis = _spatial_axis(axis)
    dim = image.ndim - 3 + axis
    if image.shape[dim] != sampling.weights.shape[1]:
        raise ValueError(
            f"image has {image.shape[dim]} slices along axis {axis}, but the sampling was made for "
            f"{sampling.weights.shape[1]}."
        )
    weights = sampling.weights.to(device=image.device, dtype=image.dtype)
    moved = image.movedim(dim, -1)
    return torch.matmul(moved, weights.transpose(0, 1)).movedim(-1, dim)


def resample_to_input_grid(
    thick: torch.Tensor, sampling: ThickSliceSampling, axis: int, n_input: int
) -> torch.Tensor:
    """Interpolate thick slices linearly back to the ``n_input`` input slice positions along ``axis``.

    Input slices before the first thick-slice centre or after the last take the nearest thick slice's value.
    """
    thick = _spatial_tensor(thick, "thick")
    axis = _spatial_axis(axis)
    dim = thick.ndim - 3 + axis
    position = (torch.arange(n_input, dtype=torch.float64) - sampling.first_centre_index) / sampling.step_index
    position = position.clamp(0, sampling.n_thick - 1)
    lower = position.floor().long().clamp(max=sampling.n_thick - 1)
    upper = (lower + 1).clamp(max=sampling.n_thick - 1)
    fraction = (position - lower.double()).to(device=thick.device, dtype=thick.dtype)
    lower = lower.to(thick.device)
    upper = upper.to(thick.device)
    shape = [1] * thick.ndim
    shape[dim] = n_input
    fraction = fraction.view(shape)
    return thick.index_select(dim, lower) * (1 - fraction) + thick.index_select(dim, upper) * fraction


def low_resolution_affine(affine: np.ndarray, sampling: ThickSliceSampling, axis: int) -> np.ndarray:
    """Return the voxel-to-world affine of the thick-slice grid made from a volume with ``affine``.

    Thick slice ``m`` sits at input index ``first_centre_index + m * step_index`` along ``axis``, so the
    axis's column is scaled by ``step_index`` and the origin moves to thick slice 0's centre.
    """
    axis = _spatial_axis(axis)
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4):
        raise ValueError(f"affine must be a 4x4 matrix, got shape {affine.shape}.")
    result = affine.copy()
    result[:3, axis] = affine[:3, axis] * sampling.step_index
    result[:3, 3] = affine[:3, 3] + affine[:3, axis] * sampling.first_centre_index
    return result


def _frequency_window(length: int, keep_fraction: float, taper: str, tukey_alpha: float) -> torch.Tensor:
    """Return the ``(length,)`` k-space window in FFT order: 1 in the kept band, tapered, 0 outside.

    Without a taper, frequencies exactly at the cutoff get weight 1/2, so the window stays symmetric and its
    sum is ``keep_fraction * length`` whenever that band edge falls on a sample.
    """
    if keep_fraction >= 1 and taper == "none":
        # The whole band: the Nyquist sample of an even length stands for both +0.5 and -0.5, so it stays whole.
        return torch.ones(length, dtype=torch.float64)
    frequency = torch.fft.fftfreq(length, dtype=torch.float64).abs()
    cutoff = 0.5 * keep_fraction
    tolerance = 1e-9 / length
    inside = frequency < cutoff - tolerance
    on_edge = (frequency - cutoff).abs() <= tolerance
    if taper == "none":
        return inside.double() + 0.5 * on_edge.double()
    relative = frequency / cutoff
    if taper == "hann":
        window = 0.5 * (1 + torch.cos(math.pi * relative))
    else:
        # Tukey: flat up to (1 - alpha) of the cutoff, then a half cosine down to zero at the cutoff.
        flat_end = 1 - tukey_alpha
        ramp = (relative - flat_end) / tukey_alpha
        window = torch.where(relative <= flat_end, torch.ones_like(relative), 0.5 * (1 + torch.cos(math.pi * ramp)))
    return torch.where(inside, window, torch.zeros_like(window))


def truncate_kspace(
    image: torch.Tensor,
    keep_fraction: float | tuple[float, ...],
    axes: tuple[int, ...] = (0, 1),
    *,
    taper: str = "none",
    tukey_alpha: float = 0.5,
) -> torch.Tensor:
    """Keep the central part of k-space along ``axes`` and return the magnitude image on the same grid.

    The image's discrete Fourier transform along ``axes`` is multiplied by a window that keeps the
    frequencies ``|f| < keep_fraction / 2`` cycles per voxel (half weight at the cutoff) and zeroes the rest.
    The resolution along an axis becomes ``spacing / keep_fraction``. This is the zero-filled reconstruction
    of a lower-resolution acquisition with the same field of view. The result is the magnitude of the inverse
    transform, as in a magnitude MR image, so Gibbs ringing below zero folds back to positive values.

    Args:
        image: ``(..., X, Y, Z)`` floating-point tensor.
        keep_fraction: fraction of the k-space extent kept, in ``(0, 1]``, one value for all ``axes`` or one
            per axis.
        axes: spatial axes (0 to 2) to truncate. Default ``(0, 1)``.
        taper: ``"none"`` (default, a sharp cut), ``"hann"`` (a Hann window over the kept band) or
            ``"tukey"`` (flat centre, cosine edges). Tapers lower the ringing and blur more.
        tukey_alpha: fraction of the kept band that the Tukey taper rolls off over, in ``(0, 1]``.

    Raises:
        ValueError: if an argument is invalid. The message names it.
    """
    image = _spatial_tensor(image)
    if isinstance(axes, numbers.Integral):
        axes = (axes,)
    axes = tuple(_spatial_axis(axis) for axis in axes)
    if not axes or len(set(axes)) != len(axes):
        raise ValueError(f"axes must list distinct spatial axes, got {axes!r}.")
    if isinstance(keep_fraction, numbers.Real):
        fractions = (keep_fraction,) * len(axes)
    else:
        fractions = tuple(keep_fraction)
        if len(fractions) != len(axes):
            raise ValueError(f"keep_fraction must have one value per axis in {axes}, got {keep_fraction!r}.")
    for fraction in fractions:
        if _positive_float("keep_fraction", fraction) > 1:
            raise ValueError(f"keep_fraction must be in (0, 1], got {keep_fraction!r}.")
    if taper not in TAPERS:
        raise ValueError(f"taper must be one of {', '.join(TAPERS)}, got {taper!r}.")
    tukey_alpha = _positive_float("tukey_alpha", tukey_alpha)
    if tukey_alpha > 1:
        raise ValueError(f"tukey_alpha must be in (0, 1], got {tukey_alpha!r}.")

    dims = tuple(image.ndim - 3 + axis for axis in axes)
    spectrum = torch.fft.fftn(image, dim=dims)
    for dim, fraction in zip(dims, fractions):
        window = _frequency_window(image.shape[dim], float(fraction), taper, tukey_alpha)
        shape = [1] * image.ndim
        shape[dim] = image.shape[dim]
        spectrum = spectrum * window.to(device=image.device, dtype=image.dtype).view(shape)
    return torch.fft.ifftn(spectrum, dim=dims).abs().to(image.dtype)


def foreground_mean(image: torch.Tensor) -> torch.Tensor:
    """Return the mean of the foreground voxels of each volume in ``image`` ``(..., X, Y, Z)``.

    Foreground voxels are those above ``FOREGROUND_FRACTION_OF_P99`` times the volume's 99th percentile.
    The result has shape ``image.shape[:-3]``.
    """
    image = _spatial_tensor(image)
    flat = image.reshape(-1, image.shape[-3] * image.shape[-2] * image.shape[-1])
    means = []
    for volume in flat:
        # torch.quantile accepts at most 2**24 values, so large volumes are subsampled evenly.
        stride = max(1, volume.numel() // 2**22)
        percentile = torch.quantile(volume[::stride].double(), 0.99)
        threshold = FOREGROUND_FRACTION_OF_P99 * percentile
        foreground = volume[volume > threshold]
        if foreground.numel() == 0:
            raise ValueError(
                "image has no foreground: no voxel is above 10 % of the 99th percentile, so its SNR is undefined."
            )
        means.append(foreground.double().mean())
    return torch.stack(means).view(image.shape[:-3]).to(image.dtype)


def add_rician_noise(
    image: torch.Tensor,
    snr: float,
    *,
    generator: torch.Generator | None = None,
    foreground_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Return the magnitude of ``image`` plus complex Gaussian noise, so the noise is Rician.

    ``SNR = mean foreground signal / sigma``, where sigma is the standard deviation of the Gaussian noise in
    each of the real and imaginary channels. The foreground is ``foreground_mask`` when given, otherwise the
    voxels above ``FOREGROUND_FRACTION_OF_P99`` times the volume's 99th percentile. The output is
    ``sqrt((image + sigma n1)^2 + (sigma n2)^2)`` with standard normal ``n1`` then ``n2`` drawn from
    ``generator`` (torch's global generator when ``None``). Each volume of a batch gets its own sigma.

    Raises:
        ValueError: on an invalid ``snr``, a mask of the wrong shape, an empty foreground, or a generator on
            another device.
    """
    image = _spatial_tensor(image)
    snr = _positive_float("snr", snr)
    if generator is not None and torch.device(generator.device) != image.device:
        raise ValueError(
            f"generator is on {generator.device} but image is on {image.device}; "
            "create the generator with torch.Generator(device=image.device)."
        )
    if foreground_mask is None:
        signal = foreground_mean(image)
    else:
        if not isinstance(foreground_mask, torch.Tensor) or foreground_mask.shape != image.shape[-3:]:
            raise ValueError(
                f"foreground_mask must be a boolean tensor of shape {tuple(image.shape[-3:])}, got "
                f"{tuple(getattr(foreground_mask, 'shape', ()))}."
            )
        mask = foreground_mask.to(device=image.device, dtype=torch.bool)
        if not bool(mask.any()):
            raise ValueError("foreground_mask selects no voxel, so the SNR is undefined.")
        signal = image[..., mask].double().mean(dim=-1).to(image.dtype)
    sigma = (signal / snr).view(*image.shape[:-3], 1, 1, 1)
    real_noise = torch.randn(image.shape, generator=generator, device=image.device, dtype=image.dtype)
    imaginary_noise = torch.randn(image.shape, generator=generator, device=image.device, dtype=image.dtype)
    return torch.sqrt((image + sigma * real_noise) ** 2 + (sigma * imaginary_noise) ** 2)
