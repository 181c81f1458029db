"""2D fan-beam CT with an equiangular (curved) detector over a full 360-degree scan, in torch.

The source turns on a circle of radius ``D = source_to_isocenter_mm`` around the slice centre. At view ``k``
it sits at ``beta_k = 2 pi k / n_views`` in the slice coordinates of ``medgan.physics.ct``:
``S = D * (cos(beta), sin(beta))``. The detector is an arc centred on the source, at
``source_to_detector_mm`` from it, with bins of ``detector_pixel_mm`` of arc length, so bin ``n`` measures
the ray at fan angle ``gamma_n = (n - (n_detectors - 1) / 2) * delta_gamma`` from the central ray, with
``delta_gamma = detector_pixel_mm / source_to_detector_mm``. Third-generation clinical scanners commonly use
such a curved detector, and it makes the fan-beam filter a function of the angle difference only.

The ray at ``(beta, gamma)`` is the line ``x cos(theta) + y sin(theta) = t`` with
``theta = beta + gamma + pi / 2`` and ``t = -D sin(gamma)``, so ``forward_project`` traces fan-beam rays with
the same projector as parallel-beam ones.

Reconstruction is the standard equiangular fan-beam filtered back-projection, obtained from the
parallel-beam formula by the change of variables ``(theta, t) -> (beta, gamma)`` (docs/simulation.md gives
the derivation):

1. Weight each projection by ``D cos(gamma)``.
2. Convolve along the detector with ``g(n a) = 1 / (8 a^2)`` for ``n = 0``, ``0`` for even ``n`` and
   ``-1 / (2 pi^2 sin^2(n a))`` for odd ``n``, where ``a = delta_gamma`` (times ``a`` for the discrete
   convolution), optionally multiplied by one of the windows of ``FILTER_NAMES`` in the frequency domain.
3. Back-project with weight ``1 / L^2``, ``L`` being the distance from the source to the pixel, reading the
   filtered projection at the pixel's fan angle ``gamma'``, and multiply by ``2 pi / n_views``.

A full scan measures every line twice, and the factor 1/2 of ``g`` averages the two, so no short-scan
(Parker) weights are needed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from medgan.physics.ct import (
    DEFAULT_MAX_CHUNK_BYTES,
    FILTER_NAMES,
    SliceGrid,
    _apply_window,
    _padded_length,
    _signed_index,
    _validate_positive_float,
    _validate_positive_int,
    _validate_stack,
    filter_in_slice_chunks,
    validate_slice_grid,
)
from medgan.physics.projector import angles_to_unit_vectors, back_project_pixels, resolve_backend

DEFAULT_SOURCE_TO_ISOCENTER_MM = 595.0
"""Source-to-isocentre distance in mm. A modelling assumption of the size of clinical whole-body scanners."""

DEFAULT_SOURCE_TO_DETECTOR_MM = 1085.6
"""Source-to-detector distance in mm. A modelling assumption of the size of clinical whole-body scanners."""

DEFAULT_FAN_VIEWS = 1440
"""Views over 360 degrees: 0.25 degree steps, the angular step of the parallel-beam default (720 over 180)."""


@dataclass(frozen=True)
class FanBeamGeometry(SliceGrid):
    """Fan-beam scan of one H x W slice over 360 degrees with an equiangular detector, in millimetres.

    Args:
        image_shape: ``(H, W)`` of the slice in pixels.
        pixel_spacing_mm: ``(row_mm, col_mm)``, the pixel size along H and along W.
        n_views: number of equally spaced source angles in ``[0, 2 pi)``. Default 1440.
        source_to_isocenter_mm: distance from the source to the rotation centre. Default 595 mm, a modelling
            assumption. It must exceed the slice's support radius (half its diagonal plus half a pixel), so
            that the source stays outside the imaged field.
        source_to_detector_mm: distance from the source to the detector arc. Default 1085.6 mm, a modelling
            assumption. Must exceed ``source_to_isocenter_mm``.
        detector_pixel_mm: arc length of one detector bin at the detector. ``None`` (default) makes the bin
            spacing at the isocentre, ``detector_pixel_mm * source_to_isocenter_mm / source_to_detector_mm``,
            equal the smaller pixel spacing. After construction this field is always a float.
        n_detectors: number of detector bins. ``None`` (default) picks the smallest number whose fan covers the
            slice's support circle. After construction this field is always an int.

    Raises:
        ValueError: if an argument is invalid. The message names the argument and the value received.
    """

    image_shape: tuple[int, int]
    pixel_spacing_mm: tuple[float, float]
    n_views: int = DEFAULT_FAN_VIEWS
    source_to_isocenter_mm: float = DEFAULT_SOURCE_TO_ISOCENTER_MM
    source_to_detector_mm: float = DEFAULT_SOURCE_TO_DETECTOR_MM
    detector_pixel_mm: float | None = None
    n_detectors: int | None = None

    def __post_init__(self) -> None:
        image_shape, pixel_spacing_mm = validate_slice_grid(self.image_shape, self.pixel_spacing_mm)
        n_views = _validate_positive_int("n_views", self.n_views)
        source_to_isocenter_mm = _validate_positive_float("source_to_isocenter_mm", self.source_to_isocenter_mm)
        source_to_detector_mm = _validate_positive_float("source_to_detector_mm", self.source_to_detector_mm)
        if source_to_detector_mm <= source_to_isocenter_mm:
            raise ValueError(
                f"source_to_detector_mm must exceed source_to_isocenter_mm ({source_to_isocenter_mm!r}), "
                f"got {self.source_to_detector_mm!r}."
            )
        # object.__setattr__ is the documented way to set fields of a frozen dataclass in __post_init__.
        object.__setattr__(self, "image_shape", image_shape)
        object.__setattr__(self, "pixel_spacing_mm", pixel_spacing_mm)
        object.__setattr__(self, "n_views", n_views)
        object.__setattr__(self, "source_to_isocenter_mm", source_to_isocenter_mm)
        object.__setattr__(self, "source_to_detector_mm", source_to_detector_mm)

        if source_to_isocenter_mm <= self.support_radius_mm:
            raise ValueError(
                f"source_to_isocenter_mm must exceed the slice's support radius {self.support_radius_mm:.1f} mm "
                f"(half the diagonal of a {image_shape} slice of {pixel_spacing_mm} mm pixels), "
                f"got {self.source_to_isocenter_mm!r}."
            )
        if self.detector_pixel_mm is None:
            detector_pixel_mm = min(pixel_spacing_mm) * source_to_detector_mm / source_to_isocenter_mm
        else:
            detector_pixel_mm = _validate_positive_float("detector_pixel_mm", self.detector_pixel_mm)
        object.__setattr__(self, "detector_pixel_mm", detector_pixel_mm)

        if self.n_detectors is None:
            max_fan_angle = math.asin(self.support_radius_mm / source_to_isocenter_mm)
            n_detectors = math.ceil(2 * max_fan_angle / self.fan_angle_step_rad) + 1
        else:
            n_detectors = _validate_positive_int("n_detectors", self.n_detectors)
        object.__setattr__(self, "n_detectors", n_detectors)

    @property
    def fan_angle_step_rad(self) -> float:
        """Angle in radians between neighbouring detector bins, seen from the source."""
        return self.detector_pixel_mm / self.source_to_detector_mm

    def view_angles_rad(
        self, device: torch.device | str | None = None, dtype: torch.dtype = torch.float64
    ) -> torch.Tensor:
        """Return the ``(n_views,)`` source angles ``2 pi k / n_views`` in radians."""
        angles = torch.arange(self.n_views, dtype=torch.float64) * (2 * math.pi / self.n_views)
        return angles.to(device=device, dtype=dtype)

    def fan_angles_rad(
        self, device: torch.device | str | None = None, dtype: torch.dtype = torch.float64
    ) -> torch.Tensor:
        """Return the ``(n_detectors,)`` fan angles of the bin centres, symmetric about the central ray."""
        index = torch.arange(self.n_detectors, dtype=torch.float64)
        angles = (index - (self.n_detectors - 1) / 2) * self.fan_angle_step_rad
        return angles.to(device=device, dtype=dtype)

    def ray_lines(
        self, device: torch.device | str | None = None, dtype: torch.dtype = torch.float64
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return ``(cos_theta, sin_theta, t_mm)`` of every ray, each of shape ``(n_views, n_detectors)``."""
        beta = self.view_angles_rad(device, torch.float64)
        gamma = self.fan_angles_rad(device, torch.float64)
        theta = beta[:, None] + gamma[None, :] + math.pi / 2
        cos, sin = angles_to_unit_vectors(theta, dtype)
        t_mm = (-self.source_to_isocenter_mm * torch.sin(gamma)).to(dtype)
        return cos, sin, t_mm[None, :].expand(self.n_views, self.n_detectors)

    def ray_distances_mm(
        self, device: torch.device | str | None = None, dtype: torch.dtype = torch.float64
    ) -> torch.Tensor:
        """Return the ``(n_detectors,)`` distances in mm from the rotation centre to each detector bin's rays."""
        gamma = self.fan_angles_rad(device, torch.float64)
        return (self.source_to_isocenter_mm * torch.sin(gamma).abs()).to(dtype)


def _equiangular_filter_response(
    n_detectors: int, fan_angle_step_rad: float, filter_name: str, device: torch.device
) -> tuple[torch.Tensor, int]:
    """Return the one-sided frequency response of the windowed equiangular fan-beam filter and the padded length.

    The impulse response is ``g(n a)`` of the module docstring, which already contains the factor 1/2 of a
    full scan, and the response includes the factor ``a`` of the discrete convolution.
    """
    padded_length = _padded_length(n_detectors)
    signed_index = _signed_index(padded_length)
    step = fan_angle_step_rad

    impulse_response = torch.zeros(padded_length, dtype=torch.float64)
    impulse_response[0] = 1 / (8 * step**2)
    odd = signed_index.remainder(2) == 1
    impulse_response[odd] = -1 / (2 * math.pi**2 * torch.sin(signed_index[odd] * step) ** 2)
    response = torch.fft.rfft(impulse_response).real * step
    return _apply_window(response, padded_length, filter_name).to(device), padded_length


def fan_filtered_back_projection(
    sinogram: torch.Tensor,
    geometry: FanBeamGeometry,
    *,
    filter_name: str = "ram-lak",
    roi: tuple[int, int, int, int] | None = None,
    max_chunk_bytes: int = DEFAULT_MAX_CHUNK_BYTES,
    backend: str = "auto",
) -> torch.Tensor:
    """Reconstruct attenuation in 1/mm from a full-scan equiangular fan-beam sinogram.

    The steps are in the module docstring. The arguments, the result and the errors are those of
    ``medgan.physics.ct.filtered_back_projection``, which calls this function for a ``FanBeamGeometry``.
    """
    if not isinstance(geometry, FanBeamGeometry):
        raise ValueError(f"geometry must be a FanBeamGeometry, got {type(geometry).__name__}.")
    if filter_name not in FILTER_NAMES:
        raise ValueError(f"filter_name must be one of {', '.join(FILTER_NAMES)}, got {filter_name!r}.")
    _validate_stack(sinogram, "sinogram", (geometry.n_views, geometry.n_detectors), "slices, views, detectors")
    max_chunk_bytes = _validate_positive_int("max_chunk_bytes", max_chunk_bytes)
    h0, h1, w0, w1 = geometry.validate_roi(roi)
    backend = resolve_backend(backend, sinogram.shape[0], sinogram.device)
    device, dtype = sinogram.device, sinogram.dtype
    distance_mm = geometry.source_to_isocenter_mm

    gamma = geometry.fan_angles_rad(device, dtype)
    weighted = sinogram * (distance_mm * torch.cos(gamma))
    response, padded_length = _equiangular_filter_response(
        geometry.n_detectors, geometry.fan_angle_step_rad, filter_name, device
    )
    filtered = filter_in_slice_chunks(weighted, response, padded_length, max_chunk_bytes)

    y, x = geometry.pixel_centres_mm((h0, h1, w0, w1), device, dtype)
    cos_all, sin_all = angles_to_unit_vectors(geometry.view_angles_rad(device, torch.float64), dtype)
    centre_bin = (geometry.n_detectors - 1) / 2
    step = geometry.fan_angle_step_rad

    def detector_coordinates(
        view_start: int,
        view_stop: int,
        views_first: bool,
        scale: float = 1.0,
        offset: float = 0.0,
        out: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        n_block_views = view_stop - view_start
        if views_first:
            cos = cos_all[view_start:view_stop].view(-1, 1, 1)
            sin = sin_all[view_start:view_stop].view(-1, 1, 1)
            pixel_y, pixel_x = y.view(1, -1, 1), x.view(1, 1, -1)
        else:
            cos = cos_all[view_start:view_stop]
            sin = sin_all[view_start:view_stop]
            pixel_y, pixel_x = y.view(-1, 1, 1), x.view(1, -1, 1)
        # depth is the pixel's distance from the source along the central ray and across its offset from that
        # ray, so the pixel lies at fan angle atan2(across, depth) and at distance sqrt(depth^2 + across^2).
        depth = distance_mm - (pixel_x * cos + pixel_y * sin)
        across = pixel_x * sin - pixel_y * cos
        u = torch.atan2(across, depth).mul_(scale / step).add_(centre_bin * scale + offset)
        weight = 1 / (depth**2 + across**2)
        shape = (n_block_views, -1) if views_first else (-1, n_block_views)
        if out is not None:
            out.copy_(u.reshape(shape))
            return out, weight.reshape(shape)
        return u.reshape(shape), weight.reshape(shape)

    n_pixels = (h1 - h0) * (w1 - w0)
    image = back_project_pixels(
        filtered, n_pixels, detector_coordinates, backend=backend, max_chunk_bytes=max_chunk_bytes
    )
    image = image * (2 * math.pi / geometry.n_views)
    return image.view(sinogram.shape[0], h1 - h0, w1 - w0)
