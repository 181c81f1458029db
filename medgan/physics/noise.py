"""Projection-domain CT noise: Poisson photon noise with electronic noise, bowtie fluence and noise insertion.

All functions work on line integrals ``p`` (unitless, ``-log`` of the transmitted fraction). A ray with
``N0`` incident photons at full dose has ``lambda = N0 * exp(-p)`` expected counts at the detector. To first
order (the delta method), the log-transformed measurement at dose fraction ``d`` has the variance

    var_d(p) = (d * lambda + sigma_e^2) / (d * lambda)^2,

where ``sigma_e`` is the standard deviation of the electronic noise in photons. ``poisson_log_noise``
draws the counts themselves. ``insert_dose_reduction_noise`` adds Gaussian noise of variance
``var_d - var_1`` to a sinogram that already carries full-dose noise.
"""

from __future__ import annotations

import math
import numbers

import torch

from medgan.physics.ct import _validate_positive_float


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


def validate_fraction_at_edge(fraction_at_edge: float) -> float:
    """Return ``bowtie_photons_fraction_at_edge`` as a float.

    Raises:
        ValueError: unless it is a finite number in ``(0, 1]``.
    """
    value = _validate_positive_float("bowtie_photons_fraction_at_edge", fraction_at_edge)
    if value > 1:
        raise ValueError(f"bowtie_photons_fraction_at_edge must be in (0, 1], got {fraction_at_edge!r}.")
    return value


def bowtie_photon_fraction(
    ray_distances_mm: torch.Tensor, support_radius_mm: float, fraction_at_edge: float
) -> torch.Tensor:
    """Return the fraction of the central ray's photons that each ray receives behind a bowtie filter.

    The profile is ``fraction_at_edge ** ((r / support_radius_mm) ** 2)`` for a ray at distance ``r`` from
    the rotation centre. That is the transmission of a filter whose attenuating thickness grows with the
    square of the distance from the centre. The central ray keeps all its photons, and a ray grazing the edge
    of the reconstructed field receives ``fraction_at_edge`` of them. The quadratic thickness is a modelling
    assumption. Real bowtie filters are scanner specific and their profiles are
    not public.

    Args:
        ray_distances_mm: distances of the rays from the rotation centre in mm, any shape.
        support_radius_mm: radius of the reconstructed field in mm, ``> 0``.
        fraction_at_edge: photon fraction at ``support_radius_mm``, in ``(0, 1]``. 1 means no bowtie.

    Raises:
        ValueError: if ``fraction_at_edge`` or ``support_radius_mm`` is invalid.
    """
    fraction_at_edge = validate_fraction_at_edge(fraction_at_edge)
    support_radius_mm = _validate_positive_float("support_radius_mm", support_radius_mm)
    relative = ray_distances_mm / support_radius_mm
    return torch.pow(torch.as_tensor(fraction_at_edge, dtype=relative.dtype, device=relative.device), relative**2)


def _validate_sinogram_and_generator(sinogram: object, generator: torch.Generator | None) -> torch.Tensor:
    if not isinstance(sinogram, torch.Tensor) or not sinogram.is_floating_point():
        received = f"{sinogram.dtype} tensor" if isinstance(sinogram, torch.Tensor) else type(sinogram).__name__
        raise ValueError(f"sinogram must be a floating-point torch.Tensor, got {received}.")
    if generator is not None and torch.device(generator.device) != sinogram.device:
        raise ValueError(
            f"generator is on {generator.device} but sinogram is on {sinogram.device}; "
            "create the generator with torch.Generator(device=sinogram.device)."
        )
    return sinogram


def _incident_photons(
    sinogram: torch.Tensor, photons_per_ray: float, detector_photon_fraction: torch.Tensor | None
) -> torch.Tensor | float:
    """Return the full-dose incident photons per ray, a float or a tensor over the detector axis."""
    if detector_photon_fraction is None:
        return photons_per_ray
    if not isinstance(detector_photon_fraction, torch.Tensor) or detector_photon_fraction.shape != (
        sinogram.shape[-1],
    ):
        shape = tuple(getattr(detector_photon_fraction, "shape", ()))
        raise ValueError(
            f"detector_photon_fraction must be a tensor of shape ({sinogram.shape[-1]},), one value per detector "
            f"bin, got {type(detector_photon_fraction).__name__} of shape {shape}."
        )
    if not bool(((detector_photon_fraction > 0) & (detector_photon_fraction <= 1)).all()):
        raise ValueError("detector_photon_fraction must contain values in (0, 1], got values outside that range.")
    return photons_per_ray * detector_photon_fraction.to(device=sinogram.device, dtype=sinogram.dtype)


def poisson_log_noise(
    sinogram: torch.Tensor,
    *,
    photons_per_ray: float,
    dose_fraction: float,
    electronic_noise_std_photons: float,
    generator: torch.Generator | None = None,
    min_counts_photons: float = 1.0,
    detector_photon_fraction: torch.Tensor | None = None,
) -> torch.Tensor:
    """Simulate a noisy scan of ``sinogram`` at a reduced dose and return its log-transformed line integrals.

    The expected detector counts are ``I = N0 * dose_fraction * exp(-p)`` with
    ``N0 = photons_per_ray * detector_photon_fraction``. The measured counts are ``Poisson(I)`` plus zero-mean
    Gaussian electronic noise, clipped below at ``min_counts_photons``, and the result is
    ``-log(counts / (N0 * dose_fraction))``.

    Args:
        sinogram: line integrals ``p`` (unitless) of any shape, floating point.
        photons_per_ray: incident photons per detector ray at full dose (on the central ray when
            ``detector_photon_fraction`` is given).
        dose_fraction: dose relative to full dose, in ``(0, 1]``. Incident photons scale with it.
        electronic_noise_std_photons: standard deviation of the additive electronic noise in photon counts,
            ``>= 0``.
        generator: random generator on the sinogram's device. The Poisson draw comes first and the Gaussian
            draw second, both from this generator. ``None`` uses torch's global generator.
        min_counts_photons: floor for the counts before the log. Rays with zero or negative counts (photon
            starvation plus electronic noise) would give an infinite or undefined log, so they are clipped
            to this floor. The default of one count bounds the noisy line integral at
            ``log(N0 * dose_fraction)``.
        detector_photon_fraction: optional ``(n_detectors,)`` fraction of ``photons_per_ray`` that reaches
            each detector bin (a bowtie profile, see ``bowtie_photon_fraction``), values in ``(0, 1]``.
            ``None`` (default) gives every ray ``photons_per_ray``.

    Returns:
        Noisy line integrals with the shape, dtype and device of ``sinogram``.

    Raises:
        ValueError: on an invalid parameter (the message names it), or a generator on another device.
    """
    photons_per_ray, dose_fraction, electronic_noise_std_photons = validate_noise_parameters(
        photons_per_ray, dose_fraction, electronic_noise_std_photons
    )
    min_counts_photons = _validate_positive_float("min_counts_photons", min_counts_photons)
    sinogram = _validate_sinogram_and_generator(sinogram, generator)

    incident_photons = _incident_photons(sinogram, photons_per_ray, detector_photon_fraction) * dose_fraction
    expected_counts = incident_photons * torch.exp(-sinogram)
    counts = torch.poisson(expected_counts, generator=generator)
    if electronic_noise_std_photons > 0:
        electronic_noise = torch.randn(
            counts.shape, generator=generator, device=counts.device, dtype=counts.dtype
        )
        counts = counts + electronic_noise_std_photons * electronic_noise
    counts = counts.clamp(min=min_counts_photons)
    return -torch.log(counts / incident_photons)


def log_measurement_variance(expected_counts: torch.Tensor, electronic_noise_std_photons: float) -> torch.Tensor:
    """Return the first-order variance ``(lambda + sigma_e^2) / lambda^2`` of ``-log`` of the measured counts.

    ``expected_counts`` is ``lambda``, the expected photons at the detector, and ``sigma_e`` the standard
    deviation of the electronic noise in photons.
    """
    return (expected_counts + electronic_noise_std_photons**2) / expected_counts**2


def insert_dose_reduction_noise(
    sinogram: torch.Tensor,
    *,
    photons_per_ray: float,
    dose_fraction: float,
    electronic_noise_std_photons: float,
    generator: torch.Generator | None = None,
    min_counts_photons: float = 1.0,
    detector_photon_fraction: torch.Tensor | None = None,
) -> torch.Tensor:
    """Add the extra noise that turns a full-dose measurement into a ``dose_fraction`` one.

    ``sinogram`` contains the line integrals of a real, already noisy full-dose scan (or its forward projection).
    With ``lambda = N0 * exp(-p)`` the expected full-dose counts of a ray, the added noise is Gaussian with
    variance ``var_d - var_1``, where ``var_d = (d lambda + sigma_e^2) / (d lambda)^2`` is the first-order
    variance of the log measurement at dose fraction ``d``:

        var_d - var_1 = (1 / d - 1) / lambda + sigma_e^2 (1 / d^2 - 1) / lambda^2.

    Independent noise variances add, so the result has the variance of a direct ``dose_fraction`` scan.
    ``dose_fraction=1`` returns the input unchanged. The arguments are those of ``poisson_log_noise``.

    Note:
        The Gaussian replaces the Poisson difference, and ``lambda`` is estimated from the noisy input.
        Both approximations hold while a ray keeps more than about 20 photons at the reduced dose. ``lambda``
        is clipped below at ``min_counts_photons`` so that photon-starved rays get a finite variance.

    Returns:
        Noisy line integrals with the shape, dtype and device of ``sinogram``.

    Raises:
        ValueError: on an invalid parameter (the message names it), or a generator on another device.
    """
    photons_per_ray, dose_fraction, electronic_noise_std_photons = validate_noise_parameters(
        photons_per_ray, dose_fraction, electronic_noise_std_photons
    )
    min_counts_photons = _validate_positive_float("min_counts_photons", min_counts_photons)
    sinogram = _validate_sinogram_and_generator(sinogram, generator)

    incident_photons = _incident_photons(sinogram, photons_per_ray, detector_photon_fraction)
    full_dose_counts = (incident_photons * torch.exp(-sinogram)).clamp(min=min_counts_photons)
    extra_variance = log_measurement_variance(
        dose_fraction * full_dose_counts, electronic_noise_std_photons
    ) - log_measurement_variance(full_dose_counts, electronic_noise_std_photons)
    noise = torch.randn(sinogram.shape, generator=generator, device=sinogram.device, dtype=sinogram.dtype)
    return sinogram + extra_variance.clamp(min=0).sqrt() * noise
