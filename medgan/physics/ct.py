"""2D CT in torch: parallel-beam geometry, projection, filtered back-projection and HU conversion.

Coordinates are physical millimetres with the origin at the slice centre: ``x`` runs along the image
columns (W) and ``y`` along the rows (H), so pixel ``(i, j)`` sits at
``x = (j - (W - 1) / 2) * col_mm`` and ``y = (i - (H - 1) / 2) * row_mm``. A ray is the line
``x * cos(theta) + y * sin(theta) = t``. In the parallel-beam geometry view ``k`` has angle
``theta_k = k * pi / n_views`` and its rays have the detector positions ``t``. ``medgan.physics.fanbeam``
adds the fan-beam geometry, and ``forward_project`` and ``filtered_back_projection`` accept both. All
operators run on the input's device, are batched over slices and are differentiable (except the noise draws).

NOTE: the tests run on CPU only, so the CUDA path (including generators on a CUDA device) is untested.
"""

from __future__ import annotations

import logging
import math
import numbers
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from medgan.physics.projector import angles_to_unit_vectors, back_project_pixels, project_rays, resolve_backend

if TYPE_CHECKING:
    from medgan.physics.fanbeam import FanBeamGeometry

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


def validate_slice_grid(
    image_shape: object, pixel_spacing_mm: object
) -> tuple[tuple[int, int], tuple[float, float]]:
    """Return ``(image_shape, pixel_spacing_mm)`` as ``(H, W)`` ints and ``(row_mm, col_mm)`` floats.

    Raises:
        ValueError: unless both are pairs of positive finite numbers (integers for the shape).
    """
    height, width = _validate_pair("image_shape", image_shape)
    validated_shape = (
        _validate_positive_int("image_shape[0]", height),
        _validate_positive_int("image_shape[1]", width),
    )
    row_mm, col_mm = _validate_pair("pixel_spacing_mm", pixel_spacing_mm)
    validated_spacing = (
        _validate_positive_float("pixel_spacing_mm[0]", row_mm),
        _validate_positive_float("pixel_spacing_mm[1]", col_mm),
    )
    return validated_shape, validated_spacing


class SliceGrid:
    """Pixel grid of one slice (support circle, pixel centres, ROI checks), shared by the scan geometries.

    Subclasses define the fields ``image_shape`` and ``pixel_spacing_mm``.
    """

    image_shape: tuple[int, int]
    pixel_spacing_mm: tuple[float, float]

    @property
    def support_radius_mm(self) -> float:
        """Radius of the circle, centred on the slice, outside which the bilinear image is zero."""
        height, width = self.image_shape
        row_mm, col_mm = self.pixel_spacing_mm
        return 0.5 * math.hypot((width + 1) * col_mm, (height + 1) * row_mm)

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


@dataclass(frozen=True)
class ParallelBeamGeometry(SliceGrid):
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
        image_shape, pixel_spacing_mm = validate_slice_grid(self.image_shape, self.pixel_spacing_mm)
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

    def ray_lines(
        self, device: torch.device | str | None = None, dtype: torch.dtype = torch.float64
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return ``(cos_theta, sin_theta, t_mm)`` of every ray, each of shape ``(n_views, n_detectors)``."""
        cos, sin = angles_to_unit_vectors(self.view_angles_rad(device, torch.float64), dtype)
        t_mm = self.detector_positions_mm(device, dtype)
        shape = (self.n_views, self.n_detectors)
        return cos[:, None].expand(shape), sin[:, None].expand(shape), t_mm[None, :].expand(shape)

    def ray_distances_mm(
        self, device: torch.device | str | None = None, dtype: torch.dtype = torch.float64
    ) -> torch.Tensor:
        """Return the ``(n_detectors,)`` distances in mm from the rotation centre to each detector bin's rays."""
        return self.detector_positions_mm(device, dtype).abs()

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


def forward_project(
    mu_per_mm: torch.Tensor,
    geometry: ParallelBeamGeometry | FanBeamGeometry,
    *,
    max_chunk_bytes: int = DEFAULT_MAX_CHUNK_BYTES,
    backend: str = "auto",
) -> torch.Tensor:
    """Compute the sinogram of line integrals of ``mu`` (unitless) with Joseph's method.

    Each ray is sampled once per row it crosses (or once per column, for a ray that crosses more columns
    than rows), with linear interpolation between the two nearest pixels and zeros outside the slice. The
    samples are summed and multiplied by the ray length between two rows (or columns). See
    ``medgan.physics.projector`` for the backends. Rays are processed in chunks whose temporaries take about
    ``max_chunk_bytes``, so memory does not grow with ``n_views``.

    Args:
        mu_per_mm: ``(N, H, W)`` attenuation in 1/mm, a floating-point tensor on any device.
        geometry: scan geometry, parallel or fan beam, with ``image_shape == (H, W)``.
        max_chunk_bytes: estimated temporary memory per chunk in bytes. Default 256 MiB.
        backend: ``"auto"`` (default), ``"grid"`` or ``"sparse"``; all give the same result up to rounding.

    Returns:
        ``(N, n_views, n_detectors)`` line integrals with the dtype and device of ``mu_per_mm``.

    Raises:
        ValueError: if the shape does not match the geometry, the dtype is not floating point, or
            ``backend`` is unknown.
    """
    _validate_stack(mu_per_mm, "mu_per_mm", geometry.image_shape, "slices, H, W")
    max_chunk_bytes = _validate_positive_int("max_chunk_bytes", max_chunk_bytes)
    backend = resolve_backend(backend, mu_per_mm.shape[0], mu_per_mm.device)
    cos_theta, sin_theta, t_mm = geometry.ray_lines(mu_per_mm.device, mu_per_mm.dtype)
    line_integrals = project_rays(
        mu_per_mm,
        geometry.pixel_spacing_mm,
        cos_theta.reshape(-1),
        sin_theta.reshape(-1),
        t_mm.reshape(-1),
        backend=backend,
        max_chunk_bytes=max_chunk_bytes,
    )
    return line_integrals.view(mu_per_mm.shape[0], geometry.n_views, geometry.n_detectors)


def _padded_length(n_detectors: int) -> int:
    """Return the smallest power of two >= 2 * n_detectors, the FFT length for a linear convolution."""
    return 1 << (2 * n_detectors - 1).bit_length()


def _signed_index(padded_length: int) -> torch.Tensor:
    """Return the FFT-ordered sample offsets ``0, 1, ..., L/2, -L/2 + 1, ..., -1`` as float64."""
    index = torch.arange(padded_length, dtype=torch.float64)
    return torch.where(index <= padded_length // 2, index, index - padded_length)


def _apply_window(response: torch.Tensor, padded_length: int, filter_name: str) -> torch.Tensor:
    """Multiply a one-sided ramp response by the window of ``filter_name``.

    The window's frequency is in cycles per detector bin, from 0 to the Nyquist frequency 0.5.
    """
    frequency = torch.fft.rfftfreq(padded_length, dtype=torch.float64)
    if filter_name == "shepp-logan":
        return response * torch.sinc(frequency)
    if filter_name == "cosine":
        return response * torch.cos(math.pi * frequency)
    if filter_name == "hann":
        return response * 0.5 * (1 + torch.cos(2 * math.pi * frequency))
    return response


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
    signed_index = _signed_index(padded_length)
    tau = detector_spacing_mm

    impulse_response = torch.zeros(padded_length, dtype=torch.float64)
    impulse_response[0] = 1 / (4 * tau**2)
    odd = signed_index.remainder(2) == 1
    impulse_response[odd] = -1 / (math.pi**2 * signed_index[odd] ** 2 * tau**2)
    response = torch.fft.rfft(impulse_response).real * tau
    return _apply_window(response, padded_length, filter_name).to(device), padded_length


def filter_projections(sinogram: torch.Tensor, response: torch.Tensor, padded_length: int) -> torch.Tensor:
    """Convolve each projection (last axis) with a filter given by its one-sided frequency ``response``."""
    n_detectors = sinogram.shape[-1]
    # Zero padding to at least 2 * n_detectors turns the FFT's circular convolution into a linear one.
    spectrum = torch.fft.rfft(sinogram, n=padded_length, dim=-1)
    filtered = torch.fft.irfft(spectrum * response.to(spectrum.real.dtype), n=padded_length, dim=-1)
    return filtered[..., :n_detectors]


def filter_in_slice_chunks(
    sinogram: torch.Tensor, response: torch.Tensor, padded_length: int, max_chunk_bytes: int
) -> torch.Tensor:
    """Apply ``filter_projections`` to groups of slices whose FFT temporaries stay near ``max_chunk_bytes``."""
    # The padded spectrum and the filtered output take about 4 values per padded sample.
    bytes_per_slice = 4 * sinogram.shape[1] * padded_length * sinogram.element_size()
    slices_per_chunk = max(1, max_chunk_bytes // bytes_per_slice)
    return torch.cat([filter_projections(block, response, padded_length) for block in sinogram.split(slices_per_chunk)])


def _back_project(
    sinogram: torch.Tensor,
    geometry: ParallelBeamGeometry,
    roi: tuple[int, int, int, int] | None,
    max_chunk_bytes: int,
    backend: str,
) -> torch.Tensor:
    """Sum each pixel's linearly interpolated projection values over views, times ``pi / n_views``."""
    h0, h1, w0, w1 = geometry.validate_roi(roi)
    device, dtype = sinogram.device, sinogram.dtype
    y, x = geometry.pixel_centres_mm((h0, h1, w0, w1), device, dtype)
    cos_all, sin_all = angles_to_unit_vectors(geometry.view_angles_rad(device, torch.float64), dtype)
    centre_bin = (geometry.n_detectors - 1) / 2
    spacing_mm = geometry.detector_spacing_mm

    def detector_coordinates(
        view_start: int,
        view_stop: int,
        views_first: bool,
        scale: float = 1.0,
        offset: float = 0.0,
        out: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, None]:
        n_block_views = view_stop - view_start
        cos = cos_all[view_start:view_stop] * (scale / spacing_mm)
        sin = sin_all[view_start:view_stop] * (scale / spacing_mm)
        shift = centre_bin * scale + offset
        if views_first:
            shape = (n_block_views, -1)
            cos, sin, pixel_y, pixel_x = cos.view(-1, 1, 1), sin.view(-1, 1, 1), y.view(1, -1, 1), x.view(1, 1, -1)
        else:
            shape = (-1, n_block_views)
            pixel_y, pixel_x = y.view(-1, 1, 1), x.view(1, -1, 1)
        # Both broadcast terms are small, so the only full-size pass writes u (into out when given).
        column_term = pixel_x * cos + shift
        if out is None:
            return torch.addcmul(column_term, pixel_y, sin).reshape(shape), None
        full_shape = torch.broadcast_shapes(column_term.shape, pixel_y.shape, sin.shape)
        torch.addcmul(column_term, pixel_y, sin, out=out.view(full_shape))
        return out, None

    n_pixels = (h1 - h0) * (w1 - w0)
    image = back_project_pixels(
        sinogram, n_pixels, detector_coordinates, backend=backend, max_chunk_bytes=max_chunk_bytes
    )
    image = image * (math.pi / geometry.n_views)
    return image.view(sinogram.shape[0], h1 - h0, w1 - w0)


def filtered_back_projection(
    sinogram: torch.Tensor,
    geometry: ParallelBeamGeometry | FanBeamGeometry,
    *,
    filter_name: str = "ram-lak",
    roi: tuple[int, int, int, int] | None = None,
    max_chunk_bytes: int = DEFAULT_MAX_CHUNK_BYTES,
    backend: str = "auto",
) -> torch.Tensor:
    """Reconstruct attenuation in 1/mm from a sinogram by filtered back-projection.

    Parallel beam: each projection is convolved along the detector axis with the ramp filter's impulse
    response sampled at the detector spacing (Kak and Slaney, "Principles of Computerized Tomographic
    Imaging", ch. 3, eq. 61), through an FFT zero-padded to a power of two of at least ``2 * n_detectors``.
    The filtered projections are back-projected with linear interpolation along the detector and scaled by
    ``pi / n_views``. A ``FanBeamGeometry`` is reconstructed with the fan-beam algorithm of
    ``medgan.physics.fanbeam.fan_filtered_back_projection``, with the same arguments.

    Args:
        sinogram: ``(N, n_views, n_detectors)`` line integrals, floating point, on any device.
        geometry: scan geometry of the sinogram.
        filter_name: ``"ram-lak"`` (plain ramp, default), ``"shepp-logan"`` (ramp times ``sinc(f)``),
            ``"cosine"`` (ramp times ``cos(pi f)``) or ``"hann"`` (ramp times ``(1 + cos(2 pi f)) / 2``),
            with ``f`` in cycles per detector bin.
        roi: ``(h0, h1, w0, w1)`` to reconstruct only ``[h0:h1, w0:w1]``. Back-projection is pointwise, so
            the result equals that crop of the full reconstruction and costs only its pixels.
        max_chunk_bytes: estimated temporary memory per chunk of views in bytes. Default 256 MiB.
        backend: ``"auto"`` (default), ``"grid"`` or ``"sparse"`` for the back-projection (see
            ``medgan.physics.projector``).

    Returns:
        ``(N, h, w)`` attenuation in 1/mm, where ``(h, w)`` is the ROI size (the full slice by default).

    Raises:
        ValueError: on an unknown ``filter_name`` or ``backend``, an invalid ``roi``, or a sinogram shape that
            does not match the geometry.
    """
    if not isinstance(geometry, ParallelBeamGeometry):
        from medgan.physics.fanbeam import fan_filtered_back_projection

        return fan_filtered_back_projection(
            sinogram, geometry, filter_name=filter_name, roi=roi, max_chunk_bytes=max_chunk_bytes, backend=backend
        )
    if filter_name not in FILTER_NAMES:
        raise ValueError(f"filter_name must be one of {', '.join(FILTER_NAMES)}, got {filter_name!r}.")
    _validate_stack(sinogram, "sinogram", (geometry.n_views, geometry.n_detectors), "slices, views, detectors")
    max_chunk_bytes = _validate_positive_int("max_chunk_bytes", max_chunk_bytes)
    geometry.validate_roi(roi)
    backend = resolve_backend(backend, sinogram.shape[0], sinogram.device)

    response, padded_length = _ramp_filter_response(
        geometry.n_detectors, geometry.detector_spacing_mm, filter_name, sinogram.device
    )
    filtered = filter_in_slice_chunks(sinogram, response, padded_length, max_chunk_bytes)
    return _back_project(filtered, geometry, roi, max_chunk_bytes, backend)
