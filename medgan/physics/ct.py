"""2D parallel-beam CT in torch: geometry, forward projection, filtered back-projection and Poisson noise.

Coordinates are physical millimetres with the origin at the slice centre: ``x`` runs along the image
columns (W) and ``y`` along the rows (H), so pixel ``(i, j)`` sits at
``x = (j - (W - 1) / 2) * col_mm`` and ``y = (i - (H - 1) / 2) * row_mm``. View ``k`` has angle
``theta_k = k * pi / n_views`` and its rays are the lines ``x * cos(theta) + y * sin(theta) = t``
for the detector positions ``t``. All operators run on the input's device, are batched over slices and
are differentiable through ``torch.nn.functional.grid_sample`` (except the noise draw).

NOTE: the tests run on CPU only, so the CUDA path (including generators on a CUDA device) is untested.
"""

from __future__ import annotations

import logging
import math
import numbers
from dataclasses import dataclass

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

MU_WATER_PER_MM = 0.0193
"""Linear attenuation coefficient of water in 1/mm near 70 keV.

NIST XCOM gives a mass attenuation coefficient of 0.1929 cm^2/g for water at 70 keV. With a density of
1 g/cm^3 that is 0.1929 /cm = 0.0193 /mm. 70 keV is a common estimate of the effective energy of a
120 kVp clinical spectrum, so this is a monochromatic stand-in for that spectrum.
"""

FILTER_NAMES = ("ram-lak", "shepp-logan", "hann", "cosine")

DEFAULT_MAX_CHUNK_BYTES = 256 * 2**20
"""Default upper estimate, in bytes, of the temporary memory one chunk of views may use."""


def _validate_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return int(value)


def _validate_positive_float(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}.")
    return float(value)


def _validate_pair(name: str, value: object) -> tuple[object, object]:
    if isinstance(value, torch.Tensor):
        value = value.tolist()
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != 2:
        raise ValueError(f"{name} must be a pair of numbers (rows, columns), got {value!r}.")
    return value[0], value[1]


@dataclass(frozen=True)
class ParallelBeamGeometry:
    """Parallel-beam scan of one H x W slice over 180 degrees, in physical millimetres.

    Args:
        image_shape: ``(H, W)`` of the slice in pixels.
        pixel_spacing_mm: ``(row_mm, col_mm)``, the pixel size along H and along W. Anisotropic pixels are
            supported because rays are traced in millimetres.
        n_views: number of equally spaced view angles in ``[0, pi)``. Default 720.
        n_detectors: number of detector bins. ``None`` (default) picks the smallest number that covers the
            slice diagonal, including the half pixel on each side where bilinear interpolation is non-zero.
            After construction this field is always an int.
        detector_spacing_mm: detector bin width in mm. ``None`` (default) uses the smaller pixel spacing.
            After construction this field is always a float.

    Raises:
        ValueError: if an argument is invalid. The message names the argument and the value received.
    """

    image_shape: tuple[int, int]
    pixel_spacing_mm: tuple[float, float]
    n_views: int = 720
    n_detectors: int | None = None
    detector_spacing_mm: float | None = None

    def __post_init__(self) -> None:
        height, width = _validate_pair("image_shape", self.image_shape)
        image_shape = (
            _validate_positive_int("image_shape[0]", height),
            _validate_positive_int("image_shape[1]", width),
        )
        row_mm, col_mm = _validate_pair("pixel_spacing_mm", self.pixel_spacing_mm)
        pixel_spacing_mm = (
            _validate_positive_float("pixel_spacing_mm[0]", row_mm),
            _validate_positive_float("pixel_spacing_mm[1]", col_mm),
        )
        n_views = _validate_positive_int("n_views", self.n_views)

        if self.detector_spacing_mm is None:
            detector_spacing_mm = min(pixel_spacing_mm)
        else:
            detector_spacing_mm = _validate_positive_float("detector_spacing_mm", self.detector_spacing_mm)

        # object.__setattr__ is the documented way to set fields of a frozen dataclass in __post_init__.
        object.__setattr__(self, "image_shape", image_shape)
        object.__setattr__(self, "pixel_spacing_mm", pixel_spacing_mm)
        object.__setattr__(self, "n_views", n_views)
        object.__setattr__(self, "detector_spacing_mm", detector_spacing_mm)

        if self.n_detectors is None:
            n_detectors = math.ceil(2 * self.support_radius_mm / detector_spacing_mm) + 1
        else:
            n_detectors = _validate_positive_int("n_detectors", self.n_detectors)
        object.__setattr__(self, "n_detectors", n_detectors)

    @property
    def support_radius_mm(self) -> float:
        """Radius of the circle, centred on the slice, outside which the bilinear image is zero."""
        height, width = self.image_shape
        row_mm, col_mm = self.pixel_spacing_mm
        return 0.5 * math.hypot((width + 1) * col_mm, (height + 1) * row_mm)

    @property
    def ray_step_mm(self) -> float:
        """Sampling step along each ray, at most half the smaller pixel spacing."""
        return 2 * self.support_radius_mm / (self.n_ray_samples - 1)

    @property
    def n_ray_samples(self) -> int:
        """Number of samples along each ray, which spans the support circle's diameter."""
        max_step_mm = 0.5 * min(self.pixel_spacing_mm)
        return math.ceil(2 * self.support_radius_mm / max_step_mm) + 1

    def view_angles_rad(
        self, device: torch.device | str | None = None, dtype: torch.dtype = torch.float64
    ) -> torch.Tensor:
        """Return the ``(n_views,)`` view angles ``k * pi / n_views`` in radians."""
        angles = torch.arange(self.n_views, dtype=torch.float64) * (math.pi / self.n_views)
        return angles.to(device=device, dtype=dtype)

    def detector_positions_mm(
        self, device: torch.device | str | None = None, dtype: torch.dtype = torch.float64
    ) -> torch.Tensor:
        """Return the ``(n_detectors,)`` bin centres ``t`` in mm, symmetric about the rotation centre."""
        index = torch.arange(self.n_detectors, dtype=torch.float64)
        positions = (index - (self.n_detectors - 1) / 2) * self.detector_spacing_mm
        return positions.to(device=device, dtype=dtype)

    def pixel_centres_mm(
        self,
        roi: tuple[int, int, int, int] | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float64,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(y, x)``, the row and column coordinates in mm of the pixels in ``roi`` (default: all).

        ``y`` has shape ``(h,)`` and ``x`` has shape ``(w,)``.
        """
        h0, h1, w0, w1 = self.validate_roi(roi)
        height, width = self.image_shape
        row_mm, col_mm = self.pixel_spacing_mm
        y = (torch.arange(h0, h1, dtype=torch.float64) - (height - 1) / 2) * row_mm
        x = (torch.arange(w0, w1, dtype=torch.float64) - (width - 1) / 2) * col_mm
        return y.to(device=device, dtype=dtype), x.to(device=device, dtype=dtype)

    def validate_roi(self, roi: tuple[int, int, int, int] | None) -> tuple[int, int, int, int]:
        """Return ``roi`` as ``(h0, h1, w0, w1)`` ints, or the whole slice for ``None``.

        Raises:
            ValueError: unless ``0 <= h0 < h1 <= H`` and ``0 <= w0 < w1 <= W``.
        """
        height, width = self.image_shape
        if roi is None:
            return 0, height, 0, width
        if isinstance(roi, (str, bytes)) or not hasattr(roi, "__len__") or len(roi) != 4:
            raise ValueError(f"roi must be (h0, h1, w0, w1), got {roi!r}.")
        if any(isinstance(v, bool) or not isinstance(v, numbers.Integral) for v in roi):
            raise ValueError(f"roi must contain integers, got {roi!r}.")
        h0, h1, w0, w1 = (int(v) for v in roi)
        if not (0 <= h0 < h1 <= height and 0 <= w0 < w1 <= width):
            raise ValueError(
                f"roi must satisfy 0 <= h0 < h1 <= {height} and 0 <= w0 < w1 <= {width} for a slice of shape "
                f"{self.image_shape}, got {roi!r}."
            )
        return h0, h1, w0, w1


def hu_to_mu(hu: torch.Tensor, mu_water_per_mm: float = MU_WATER_PER_MM) -> torch.Tensor:
    """Convert Hounsfield units to linear attenuation in 1/mm: ``mu = mu_water * (1 + HU / 1000)``.

    Values below -1000 HU would give a negative ``mu`` and are clipped to ``mu = 0`` (air).
    """
    mu_water_per_mm = _validate_positive_float("mu_water_per_mm", mu_water_per_mm)
    return (mu_water_per_mm * (1 + hu / 1000)).clamp(min=0)


def mu_to_hu(mu_per_mm: torch.Tensor, mu_water_per_mm: float = MU_WATER_PER_MM) -> torch.Tensor:
    """Convert linear attenuation in 1/mm to Hounsfield units: ``HU = 1000 * (mu / mu_water - 1)``."""
    mu_water_per_mm = _validate_positive_float("mu_water_per_mm", mu_water_per_mm)
    return 1000 * (mu_per_mm / mu_water_per_mm - 1)


def mu_delta_to_hu_delta(mu_delta_per_mm: torch.Tensor, mu_water_per_mm: float = MU_WATER_PER_MM) -> torch.Tensor:
    """Convert a difference of attenuation in 1/mm to a difference in HU: ``1000 * delta_mu / mu_water``."""
    mu_water_per_mm = _validate_positive_float("mu_water_per_mm", mu_water_per_mm)
    return 1000 * mu_delta_per_mm / mu_water_per_mm


def _validate_stack(tensor: object, name: str, expected_trailing: tuple[int, int], axis_names: str) -> None:
    if not isinstance(tensor, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}.")
    if tensor.ndim != 3 or tuple(tensor.shape[1:]) != expected_trailing:
        raise ValueError(
            f"{name} must have shape (N, {expected_trailing[0]}, {expected_trailing[1]}) ({axis_names}) "
            f"for this geometry, got {tuple(tensor.shape)}."
        )
    if not tensor.is_floating_point():
        raise ValueError(f"{name} must have a floating-point dtype, got {tensor.dtype}.")


def _chunk_sizes(n_slices: int, elements_per_view: int, itemsize: int, max_chunk_bytes: int) -> tuple[int, int]:
    """Return (slices, views) per chunk so that one chunk stays near ``max_chunk_bytes``.

    One view needs 2 grid coordinates per element, shared by all slices, plus one sampled value per element
    and slice. The estimate ``elements * itemsize * (4 + slices)`` per view leaves room for temporaries.
    """
    units = max(1, max_chunk_bytes // (elements_per_view * itemsize))
    slices_per_chunk = max(1, min(n_slices, units - 4))
    views_per_chunk = max(1, units // (4 + slices_per_chunk))
    return slices_per_chunk, views_per_chunk


def forward_project(
    mu_per_mm: torch.Tensor,
    geometry: ParallelBeamGeometry,
    *,
    max_chunk_bytes: int = DEFAULT_MAX_CHUNK_BYTES,
) -> torch.Tensor:
    """Compute the parallel-beam sinogram of line integrals of ``mu`` (unitless) by ray marching.

    Each ray is sampled every ``geometry.ray_step_mm`` (at most half the smaller pixel spacing) across the
    support circle, with bilinear interpolation and zeros outside the slice (``grid_sample``). The samples
    are summed and multiplied by the step. Views are processed in chunks whose temporaries take about
    ``max_chunk_bytes``, so memory does not grow with ``n_views``.

    Args:
        mu_per_mm: ``(N, H, W)`` attenuation in 1/mm, a floating-point tensor on any device.
        geometry: scan geometry, with ``image_shape == (H, W)``.
        max_chunk_bytes: estimated temporary memory per chunk in bytes. Default 256 MiB.

    Returns:
        ``(N, n_views, n_detectors)`` line integrals with the dtype and device of ``mu_per_mm``.

    Raises:
        ValueError: if the shape does not match the geometry or the dtype is not floating point.
    """
    _validate_stack(mu_per_mm, "mu_per_mm", geometry.image_shape, "slices, H, W")
    max_chunk_bytes = _validate_positive_int("max_chunk_bytes", max_chunk_bytes)
    device, dtype = mu_per_mm.device, mu_per_mm.dtype
    n_slices = mu_per_mm.shape[0]
    height, width = geometry.image_shape
    row_mm, col_mm = geometry.pixel_spacing_mm

    # grid_sample with align_corners=False maps -1 and +1 to the outer edges of the first and last pixel,
    # so a coordinate in mm is normalised by half the slice extent.
    half_width_mm = width * col_mm / 2
    half_height_mm = height * row_mm / 2

    n_samples = geometry.n_ray_samples
    step_mm = geometry.ray_step_mm
    sample_index = torch.arange(n_samples, dtype=torch.float64)
    ray_positions_mm = ((sample_index - (n_samples - 1) / 2) * step_mm).to(device, dtype)
    detector_mm = geometry.detector_positions_mm(device, dtype)
    angles = geometry.view_angles_rad(device, torch.float64)

    slices_per_chunk, views_per_chunk = _chunk_sizes(
        n_slices, geometry.n_detectors * n_samples, mu_per_mm.element_size(), max_chunk_bytes
    )
    images = mu_per_mm.unsqueeze(1)
    sinogram = mu_per_mm.new_empty(n_slices, geometry.n_views, geometry.n_detectors)
    # One grid buffer serves every chunk, which keeps the allocator from fragmenting memory over many views.
    grid_buffer = torch.empty(views_per_chunk, geometry.n_detectors, n_samples, 2, device=device, dtype=dtype)
    t = detector_mm.view(1, -1, 1)
    s = ray_positions_mm.view(1, 1, -1)
    for view_start in range(0, geometry.n_views, views_per_chunk):
        block_angles = angles[view_start : view_start + views_per_chunk]
        n_block_views = len(block_angles)
        cos = torch.cos(block_angles).to(dtype).view(-1, 1, 1)
        sin = torch.sin(block_angles).to(dtype).view(-1, 1, 1)
        # The ray at (theta, t) is the set of points t * (cos, sin) + s * (-sin, cos). Writing the two outer
        # sums straight into the grid avoids full-size temporaries.
        grid = grid_buffer[:n_block_views]
        torch.add(t * (cos / half_width_mm), s * (-sin / half_width_mm), out=grid[..., 0])
        torch.add(t * (sin / half_height_mm), s * (cos / half_height_mm), out=grid[..., 1])
        grid = grid.view(1, -1, n_samples, 2)
        for slice_start in range(0, n_slices, slices_per_chunk):
            image_block = images[slice_start : slice_start + slices_per_chunk]
            n_block_slices = image_block.shape[0]
            samples = F.grid_sample(
                image_block,
                grid.expand(n_block_slices, -1, -1, -1),
                mode="bilinear",
                padding_mode="zeros",
                align_corners=False,
            )
            line_integrals = samples.sum(dim=-1) * step_mm
            # Release the samples before the next chunk allocates its own.
            del samples
            sinogram[slice_start : slice_start + n_block_slices, view_start : view_start + n_block_views] = (
                line_integrals.view(n_block_slices, n_block_views, geometry.n_detectors)
            )
    return sinogram


def _padded_length(n_detectors: int) -> int:
    """Return the smallest power of two >= 2 * n_detectors, the FFT length for a linear convolution."""
    return 1 << (2 * n_detectors - 1).bit_length()


def _ramp_filter_response(
    n_detectors: int, detector_spacing_mm: float, filter_name: str, device: torch.device
) -> tuple[torch.Tensor, int]:
    """Return the one-sided frequency response of the windowed ramp filter and the padded length.

    The response is the FFT of the band-limited ramp's impulse response sampled at the detector spacing tau
    (Kak and Slaney, "Principles of Computerized Tomographic Imaging", ch. 3, eq. 61):
    ``h(0) = 1 / (4 tau^2)``, ``h(n tau) = 0`` for even n and ``-1 / (n^2 pi^2 tau^2)`` for odd n.
    Sampling ``|f|`` directly in the frequency domain would set the DC term to zero and shift the whole
    reconstruction by a constant. The spatially sampled filter keeps a small DC term and has no such bias.
    The response includes the factor tau of the discrete convolution.
    """
    padded_length = _padded_length(n_detectors)
    index = torch.arange(padded_length, dtype=torch.float64)
    signed_index = torch.where(index <= padded_length // 2, index, index - padded_length)
    tau = detector_spacing_mm

    impulse_response = torch.zeros(padded_length, dtype=torch.float64)
    impulse_response[0] = 1 / (4 * tau**2)
    odd = signed_index.remainder(2) == 1
    impulse_response[odd] = -1 / (math.pi**2 * signed_index[odd] ** 2 * tau**2)
    response = torch.fft.rfft(impulse_response).real * tau

    # Frequency in cycles per detector bin, from 0 to the Nyquist frequency 0.5.
    frequency = torch.fft.rfftfreq(padded_length, dtype=torch.float64)
    if filter_name == "shepp-logan":
        response = response * torch.sinc(frequency)
    elif filter_name == "cosine":
        response = response * torch.cos(math.pi * frequency)
    elif filter_name == "hann":
        response = response * 0.5 * (1 + torch.cos(2 * math.pi * frequency))
    return response.to(device), padded_length


def _filter_sinogram(sinogram: torch.Tensor, detector_spacing_mm: float, filter_name: str) -> torch.Tensor:
    """Convolve each projection with the windowed ramp filter along the detector axis."""
    n_detectors = sinogram.shape[-1]
    response, padded_length = _ramp_filter_response(n_detectors, detector_spacing_mm, filter_name, sinogram.device)
    # Zero padding to at least 2 * n_detectors turns the FFT's circular convolution into a linear one.
    spectrum = torch.fft.rfft(sinogram, n=padded_length, dim=-1)
    filtered = torch.fft.irfft(spectrum * response.to(spectrum.real.dtype), n=padded_length, dim=-1)
    return filtered[..., :n_detectors]


def _back_project(
    sinogram: torch.Tensor,
    geometry: ParallelBeamGeometry,
    roi: tuple[int, int, int, int] | None,
    max_chunk_bytes: int,
) -> torch.Tensor:
    """Sum each pixel's linearly interpolated projection values over views, times ``pi / n_views``."""
    h0, h1, w0, w1 = geometry.validate_roi(roi)
    device, dtype = sinogram.device, sinogram.dtype
    n_slices = sinogram.shape[0]
    y, x = geometry.pixel_centres_mm((h0, h1, w0, w1), device, dtype)
    y = y.view(1, -1, 1)
    x = x.view(1, 1, -1)
    n_pixels = (h1 - h0) * (w1 - w0)
    half_detector_mm = geometry.n_detectors * geometry.detector_spacing_mm / 2
    angles = geometry.view_angles_rad(device, torch.float64)

    # Each view becomes a batch entry holding a 1 x n_detectors image with one channel per slice. Sampling
    # it at row 0 makes grid_sample interpolate linearly along the detector only.
    projections = sinogram.transpose(0, 1).unsqueeze(2)
    slices_per_chunk, views_per_chunk = _chunk_sizes(n_slices, n_pixels, sinogram.element_size(), max_chunk_bytes)
    image = sinogram.new_zeros(n_slices, n_pixels)
    # The grid's second coordinate stays 0 (row 0), so the buffer is zeroed once and only t is rewritten.
    grid_buffer = torch.zeros(views_per_chunk, h1 - h0, w1 - w0, 2, device=device, dtype=dtype)
    for view_start in range(0, geometry.n_views, views_per_chunk):
        block_angles = angles[view_start : view_start + views_per_chunk]
        n_block_views = len(block_angles)
        cos = torch.cos(block_angles).to(dtype).view(-1, 1, 1)
        sin = torch.sin(block_angles).to(dtype).view(-1, 1, 1)
        grid = grid_buffer[:n_block_views]
        torch.add(x * (cos / half_detector_mm), y * (sin / half_detector_mm), out=grid[..., 0])
        grid = grid.view(n_block_views, 1, n_pixels, 2)
        for slice_start in range(0, n_slices, slices_per_chunk):
            slice_stop = min(slice_start + slices_per_chunk, n_slices)
            block = projections[view_start : view_start + n_block_views, slice_start:slice_stop].contiguous()
            values = F.grid_sample(block, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
            image[slice_start:slice_stop] += values.sum(dim=0).view(slice_stop - slice_start, n_pixels)
            del values
    image = image * (math.pi / geometry.n_views)
    return image.view(n_slices, h1 - h0, w1 - w0)


def filtered_back_projection(
    sinogram: torch.Tensor,
    geometry: ParallelBeamGeometry,
    *,
    filter_name: str = "ram-lak",
    roi: tuple[int, int, int, int] | None = None,
    max_chunk_bytes: int = DEFAULT_MAX_CHUNK_BYTES,
) -> torch.Tensor:
    """Reconstruct attenuation in 1/mm from a parallel-beam sinogram by filtered back-projection.

    Each projection is convolved along the detector axis with the ramp filter's impulse response sampled at
    the detector spacing (Kak and Slaney, "Principles of Computerized Tomographic Imaging", ch. 3, eq. 61),
    through an FFT zero-padded to a power of two of at least ``2 * n_detectors``. The filtered projections
    are back-projected with linear interpolation along the detector and scaled by ``pi / n_views``.

    Args:
        sinogram: ``(N, n_views, n_detectors)`` line integrals, floating point, on any device.
        geometry: scan geometry of the sinogram.
        filter_name: ``"ram-lak"`` (plain ramp, default), ``"shepp-logan"`` (ramp times ``sinc(f)``),
            ``"cosine"`` (ramp times ``cos(pi f)``) or ``"hann"`` (ramp times ``(1 + cos(2 pi f)) / 2``),
            with ``f`` in cycles per detector bin.
        roi: ``(h0, h1, w0, w1)`` to reconstruct only ``[h0:h1, w0:w1]``. Back-projection is pointwise, so
            the result equals that crop of the full reconstruction and costs only its pixels.
        max_chunk_bytes: estimated temporary memory per chunk of views in bytes. Default 256 MiB.

    Returns:
        ``(N, h, w)`` attenuation in 1/mm, where ``(h, w)`` is the ROI size (the full slice by default).

    Raises:
        ValueError: on an unknown ``filter_name``, an invalid ``roi``, or a sinogram shape that does not
            match the geometry.
    """
    if filter_name not in FILTER_NAMES:
        raise ValueError(f"filter_name must be one of {', '.join(FILTER_NAMES)}, got {filter_name!r}.")
    _validate_stack(sinogram, "sinogram", (geometry.n_views, geometry.n_detectors), "slices, views, detectors")
    max_chunk_bytes = _validate_positive_int("max_chunk_bytes", max_chunk_bytes)
    geometry.validate_roi(roi)

    # The padded spectrum and the filtered output take about 4 values per padded sample, so slices are
    # filtered in groups that keep those temporaries near max_chunk_bytes.
    padded_length = _padded_length(geometry.n_detectors)
    bytes_per_slice = 4 * geometry.n_views * padded_length * sinogram.element_size()
    slices_per_chunk = max(1, max_chunk_bytes // bytes_per_slice)
    reconstructions = []
    for block in sinogram.split(slices_per_chunk):
        filtered = _filter_sinogram(block, geometry.detector_spacing_mm, filter_name)
        reconstructions.append(_back_project(filtered, geometry, roi, max_chunk_bytes))
    return torch.cat(reconstructions)


def validate_noise_parameters(
    photons_per_ray: float, dose_fraction: float, electronic_noise_std_photons: float
) -> tuple[float, float, float]:
    """Return the noise parameters as floats.

    Raises:
        ValueError: unless ``photons_per_ray > 0``, ``0 < dose_fraction <= 1`` and
            ``electronic_noise_std_photons >= 0``, all finite. The message names the argument.
    """
    photons_per_ray = _validate_positive_float("photons_per_ray", photons_per_ray)
    dose_fraction = _validate_positive_float("dose_fraction", dose_fraction)
    if dose_fraction > 1:
        raise ValueError(f"dose_fraction must be in (0, 1], got {dose_fraction!r}.")
    std = electronic_noise_std_photons
    if isinstance(std, bool) or not isinstance(std, numbers.Real) or not math.isfinite(std) or std < 0:
        raise ValueError(f"electronic_noise_std_photons must be a finite number >= 0, got {std!r}.")
    return photons_per_ray, dose_fraction, float(std)


def poisson_log_noise(
    sinogram: torch.Tensor,
    *,
    photons_per_ray: float,
    dose_fraction: float,
    electronic_noise_std_photons: float,
    generator: torch.Generator | None = None,
    min_counts_photons: float = 1.0,
) -> torch.Tensor:
    """Simulate a noisy scan of ``sinogram`` at a reduced dose and return its log-transformed line integrals.

    The expected detector counts are ``I = photons_per_ray * dose_fraction * exp(-p)``. The measured counts
    are ``Poisson(I)`` plus zero-mean Gaussian electronic noise, clipped below at ``min_counts_photons``,
    and the result is ``-log(counts / (photons_per_ray * dose_fraction))``.

    Args:
        sinogram: line integrals ``p`` (unitless) of any shape, floating point.
        photons_per_ray: incident photons per detector ray at full dose.
        dose_fraction: dose relative to full dose, in ``(0, 1]``. Incident photons scale with it.
        electronic_noise_std_photons: standard deviation of the additive electronic noise in photon counts,
            ``>= 0``.
        generator: random generator on the sinogram's device. The Poisson draw comes first and the Gaussian
            draw second, both from this generator. ``None`` uses torch's global generator.
        min_counts_photons: floor for the counts before the log. Rays with zero or negative counts (photon
            starvation plus electronic noise) would give an infinite or undefined log, so they are clipped
            to this floor. The default of one count bounds the noisy line integral at
            ``log(photons_per_ray * dose_fraction)``.

    Returns:
        Noisy line integrals with the shape, dtype and device of ``sinogram``.

    Raises:
        ValueError: on an invalid parameter (the message names it), or a generator on another device.
    """
    photons_per_ray, dose_fraction, electronic_noise_std_photons = validate_noise_parameters(
        photons_per_ray, dose_fraction, electronic_noise_std_photons
    )
    min_counts_photons = _validate_positive_float("min_counts_photons", min_counts_photons)
    if not isinstance(sinogram, torch.Tensor) or not sinogram.is_floating_point():
        received = f"{sinogram.dtype} tensor" if isinstance(sinogram, torch.Tensor) else type(sinogram).__name__
        raise ValueError(f"sinogram must be a floating-point torch.Tensor, got {received}.")
    if generator is not None and torch.device(generator.device) != sinogram.device:
        raise ValueError(
            f"generator is on {generator.device} but sinogram is on {sinogram.device}; "
            "create the generator with torch.Generator(device=sinogram.device)."
        )

    incident_photons = photons_per_ray * dose_fraction
    expected_counts = incident_photons * torch.exp(-sinogram)
    counts = torch.poisson(expected_counts, generator=generator)
    if electronic_noise_std_photons > 0:
        electronic_noise = torch.randn(
            counts.shape, generator=generator, device=counts.device, dtype=counts.dtype
        )
        counts = counts + electronic_noise_std_photons * electronic_noise
    counts = counts.clamp(min=min_counts_photons)
    return -torch.log(counts / incident_photons)
