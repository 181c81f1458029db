"""Tests for the parallel-beam CT operators and the low-dose CT transforms."""

from __future__ import annotations

import math

import pytest
import torch

from medgan.physics import (
    FILTER_NAMES,
    ParallelBeamGeometry,
    filtered_back_projection,
    forward_project,
    hu_to_mu,
    mu_to_hu,
    poisson_log_noise,
)
from medgan.transforms import LowDoseCT, RandomLowDoseCT

MU_DISK_PER_MM = 0.02
DISK_RADIUS_MM = 35.0
SPACINGS_MM = [(1.0, 1.0), (1.0, 0.7)]


def pixel_coordinates_mm(shape: tuple[int, int], spacing_mm: tuple[float, float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (y, x) grids of pixel centres in mm, with the origin at the slice centre."""
    height, width = shape
    row_mm, col_mm = spacing_mm
    y = (torch.arange(height, dtype=torch.float64) - (height - 1) / 2)[:, None] * row_mm
    x = (torch.arange(width, dtype=torch.float64) - (width - 1) / 2)[None, :] * col_mm
    return y.expand(height, width), x.expand(height, width)


def disk_image(shape: tuple[int, int], spacing_mm: tuple[float, float], radius_mm: float, supersampling: int = 4):
    """Return the area fraction of each pixel inside a centred disk, from supersampled pixel centres."""
    height, width = shape
    row_mm, col_mm = spacing_mm
    offsets = (torch.arange(supersampling, dtype=torch.float64) + 0.5) / supersampling - 0.5
    y = ((torch.arange(height, dtype=torch.float64) - (height - 1) / 2)[:, None] + offsets).reshape(-1) * row_mm
    x = ((torch.arange(width, dtype=torch.float64) - (width - 1) / 2)[:, None] + offsets).reshape(-1) * col_mm
    inside = (y[:, None] ** 2 + x[None, :] ** 2 <= radius_mm**2).double()
    return inside.reshape(height, supersampling, width, supersampling).mean(dim=(1, 3)).float()


def water_cylinder_hu(shape, spacing_mm, n_slices):
    """Return ``(hu, central)``: a 0 HU cylinder in -1000 HU air over ``n_slices`` slices, and its central disk.

    The cylinder radius is 40 % of the smaller field-of-view side, and the central disk has half that radius.
    """
    height, width = shape
    row_mm, col_mm = spacing_mm
    radius_mm = 0.4 * min(height * row_mm, width * col_mm)
    y, x = pixel_coordinates_mm(shape, spacing_mm)
    radius_sq = y**2 + x**2
    hu = torch.full(shape, -1000.0)
    hu[radius_sq <= radius_mm**2] = 0.0
    central = radius_sq <= (radius_mm / 2) ** 2
    return hu.expand(n_slices, *shape).clone(), central


# Geometry and intensity conversion


def test_geometry_defaults_cover_diagonal():
    geometry = ParallelBeamGeometry((96, 64), (0.8, 1.2))

    assert geometry.n_views == 720
    assert geometry.detector_spacing_mm == 0.8
    diagonal_mm = math.hypot(96 * 0.8, 64 * 1.2)
    assert (geometry.n_detectors - 1) * geometry.detector_spacing_mm >= diagonal_mm


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"image_shape": (0, 10), "pixel_spacing_mm": (1.0, 1.0)}, "image_shape"),
        ({"image_shape": (10,), "pixel_spacing_mm": (1.0, 1.0)}, "image_shape"),
        ({"image_shape": (10, 10), "pixel_spacing_mm": (1.0, -1.0)}, "pixel_spacing_mm"),
        ({"image_shape": (10, 10), "pixel_spacing_mm": (1.0, float("nan"))}, "pixel_spacing_mm"),
        ({"image_shape": (10, 10), "pixel_spacing_mm": (1.0, 1.0), "n_views": 0}, "n_views"),
        ({"image_shape": (10, 10), "pixel_spacing_mm": (1.0, 1.0), "n_views": 2.5}, "n_views"),
        ({"image_shape": (10, 10), "pixel_spacing_mm": (1.0, 1.0), "n_detectors": -3}, "n_detectors"),
        ({"image_shape": (10, 10), "pixel_spacing_mm": (1.0, 1.0), "detector_spacing_mm": 0.0}, "detector_spacing_mm"),
    ],
)
def test_geometry_rejects_invalid_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        ParallelBeamGeometry(**kwargs)


def test_geometry_rejects_invalid_roi():
    geometry = ParallelBeamGeometry((32, 32), (1.0, 1.0), n_views=8)

    with pytest.raises(ValueError, match="roi"):
        geometry.validate_roi((0, 33, 0, 32))
    with pytest.raises(ValueError, match="roi"):
        geometry.validate_roi((5, 5, 0, 32))
    with pytest.raises(ValueError, match="roi"):
        geometry.validate_roi((0, 10, 0))


def test_hu_mu_round_trip_and_air_clip():
    hu = torch.tensor([-1500.0, -1000.0, 0.0, 1000.0])

    mu = hu_to_mu(hu, mu_water_per_mm=0.02)

    torch.testing.assert_close(mu, torch.tensor([0.0, 0.0, 0.02, 0.04]))
    torch.testing.assert_close(mu_to_hu(mu, mu_water_per_mm=0.02), torch.tensor([-1000.0, -1000.0, 0.0, 1000.0]))
    with pytest.raises(ValueError, match="mu_water_per_mm"):
        hu_to_mu(hu, mu_water_per_mm=0.0)


# Forward projection and reconstruction


@pytest.mark.parametrize("spacing_mm", SPACINGS_MM)
def test_forward_projection_matches_chord_length(spacing_mm):
    shape = (96, 112)
    geometry = ParallelBeamGeometry(shape, spacing_mm, n_views=180)
    mu = disk_image(shape, spacing_mm, DISK_RADIUS_MM) * MU_DISK_PER_MM

    sinogram = forward_project(mu[None], geometry)

    assert sinogram.shape == (1, 180, geometry.n_detectors)
    t = geometry.detector_positions_mm()
    analytic = 2 * MU_DISK_PER_MM * torch.sqrt((DISK_RADIUS_MM**2 - t**2).clamp(min=0))
    inner = t.abs() < 0.9 * DISK_RADIUS_MM
    relative_error = (sinogram[0].double() - analytic).abs()[:, inner] / analytic[inner]
    assert relative_error.max() < 0.03
    outside = t.abs() > DISK_RADIUS_MM + 2 * max(spacing_mm)
    assert sinogram[0][:, outside].abs().max() < 1e-6


@pytest.mark.parametrize("spacing_mm", SPACINGS_MM)
@pytest.mark.parametrize("filter_name", FILTER_NAMES)
def test_fbp_recovers_disk_mu(spacing_mm, filter_name):
    shape = (96, 112)
    geometry = ParallelBeamGeometry(shape, spacing_mm, n_views=180)
    mu = disk_image(shape, spacing_mm, DISK_RADIUS_MM) * MU_DISK_PER_MM
    sinogram = forward_project(mu[None], geometry)

    reconstruction = filtered_back_projection(sinogram, geometry, filter_name=filter_name)[0]

    assert reconstruction.shape == shape
    y, x = pixel_coordinates_mm(shape, spacing_mm)
    inner = (y**2 + x**2) < (0.8 * DISK_RADIUS_MM) ** 2
    outer = (y**2 + x**2) > (1.2 * DISK_RADIUS_MM) ** 2
    assert abs(reconstruction[inner].mean().item() / MU_DISK_PER_MM - 1) < 0.002
    assert (reconstruction[inner] / MU_DISK_PER_MM - 1).abs().max() < 0.01
    # A DC bias of the filter would show up as a non-zero mean outside the disk.
    assert abs(reconstruction[outer].mean().item()) < 0.001 * MU_DISK_PER_MM
    assert reconstruction[outer].abs().mean() < 0.005 * MU_DISK_PER_MM


def test_fbp_roi_equals_full_crop():
    shape = (80, 72)
    spacing_mm = (0.9, 1.1)
    geometry = ParallelBeamGeometry(shape, spacing_mm, n_views=120)
    generator = torch.Generator().manual_seed(3)
    mu = torch.rand(2, *shape, generator=generator) * MU_DISK_PER_MM
    sinogram = forward_project(mu, geometry)
    roi = (10, 47, 30, 72)

    full = filtered_back_projection(sinogram, geometry, filter_name="hann")
    cropped = filtered_back_projection(sinogram, geometry, filter_name="hann", roi=roi)

    assert cropped.shape == (2, 37, 42)
    torch.testing.assert_close(cropped, full[:, 10:47, 30:72], rtol=0, atol=1e-7)


def test_operators_chunking_does_not_change_result():
    shape = (40, 48)
    geometry = ParallelBeamGeometry(shape, (1.0, 1.0), n_views=60)
    mu = torch.rand(3, *shape, generator=torch.Generator().manual_seed(4)) * MU_DISK_PER_MM

    sinogram = forward_project(mu, geometry)
    # A budget of one byte forces chunks of one slice and one view.
    sinogram_chunked = forward_project(mu, geometry, max_chunk_bytes=1)
    reconstruction = filtered_back_projection(sinogram, geometry)
    reconstruction_chunked = filtered_back_projection(sinogram, geometry, max_chunk_bytes=1)

    torch.testing.assert_close(sinogram_chunked, sinogram)
    torch.testing.assert_close(reconstruction_chunked, reconstruction)
    torch.testing.assert_close(forward_project(mu[1:2], geometry), sinogram[1:2])


def test_operators_are_differentiable():
    shape = (24, 24)
    geometry = ParallelBeamGeometry(shape, (1.0, 1.0), n_views=12)
    mu = torch.full((1, *shape), MU_DISK_PER_MM, requires_grad=True)

    reconstruction = filtered_back_projection(forward_project(mu, geometry), geometry, roi=(4, 20, 4, 20))
    reconstruction.sum().backward()

    assert mu.grad is not None
    assert torch.isfinite(mu.grad).all()
    assert mu.grad.abs().sum() > 0


def test_operators_reject_mismatched_shapes():
    geometry = ParallelBeamGeometry((32, 32), (1.0, 1.0), n_views=16)

    with pytest.raises(ValueError, match="mu_per_mm"):
        forward_project(torch.zeros(1, 32, 31), geometry)
    with pytest.raises(ValueError, match="mu_per_mm"):
        forward_project(torch.zeros(32, 32), geometry)
    with pytest.raises(ValueError, match="sinogram"):
        filtered_back_projection(torch.zeros(1, 15, geometry.n_detectors), geometry)
    with pytest.raises(ValueError, match="filter_name"):
        filtered_back_projection(torch.zeros(1, 16, geometry.n_detectors), geometry, filter_name="hamming")


# Noise model


def test_poisson_log_noise_matches_count_statistics():
    line_integral = 2.0
    photons_per_ray = 1e4
    dose_fraction = 0.5
    sinogram = torch.full((200, 1000), line_integral)

    noisy = poisson_log_noise(
        sinogram,
        photons_per_ray=photons_per_ray,
        dose_fraction=dose_fraction,
        electronic_noise_std_photons=5.0,
        generator=torch.Generator().manual_seed(5),
    )

    # The delta method gives var(-log(counts)) = (I + sigma_e^2) / I^2 for expected counts I.
    expected_counts = photons_per_ray * dose_fraction * math.exp(-line_integral)
    expected_variance = (expected_counts + 5.0**2) / expected_counts**2
    assert abs(noisy.var().item() / expected_variance - 1) < 0.02
    assert abs(noisy.mean().item() - line_integral) < 0.005
    assert noisy.dtype == torch.float32


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"dose_fraction": 0.0}, "dose_fraction"),
        ({"dose_fraction": 1.5}, "dose_fraction"),
        ({"photons_per_ray": -1.0}, "photons_per_ray"),
        ({"electronic_noise_std_photons": -0.1}, "electronic_noise_std_photons"),
        ({"min_counts_photons": 0.0}, "min_counts_photons"),
    ],
)
def test_poisson_log_noise_rejects_invalid_parameters(kwargs, name):
    arguments = {"photons_per_ray": 1e5, "dose_fraction": 0.5, "electronic_noise_std_photons": 5.0}
    arguments.update(kwargs)

    with pytest.raises(ValueError, match=name):
        poisson_log_noise(torch.zeros(4, 4), **arguments)


# Low-dose transforms


def noise_statistics_by_dose(spacing_mm, doses, shape=(96, 96), n_slices=12, n_views=240):
    """Return {dose: (std, mean)} of the low-dose HU inside the cylinder's central disk."""
    hu, central = water_cylinder_hu(shape, spacing_mm, n_slices)
    transform = LowDoseCT(1.0, n_views=n_views)
    sinogram, geometry = transform.clean_sinogram(hu, spacing_mm)
    statistics = {}
    for dose_fraction in doses:
        noise_hu = LowDoseCT(dose_fraction, n_views=n_views).noise_hu_from_sinogram(
            sinogram, geometry, torch.Generator().manual_seed(11)
        )
        inside = (hu + noise_hu)[:, central]
        statistics[dose_fraction] = (inside.std().item(), inside.mean().item())
    return statistics


@pytest.mark.parametrize("spacing_mm", SPACINGS_MM)
def test_low_dose_noise_scales_inverse_sqrt_dose(spacing_mm):
    statistics = noise_statistics_by_dose(spacing_mm, (1.0, 0.5, 0.25))
    std_full = statistics[1.0][0]

    assert std_full > 1.0
    assert abs(statistics[0.5][0] / std_full / math.sqrt(2) - 1) < 0.1
    assert abs(statistics[0.25][0] / std_full / 2 - 1) < 0.1
    for dose_fraction, (_, mean_hu) in statistics.items():
        assert abs(mean_hu) < 2.0, f"mean HU {mean_hu:.2f} at dose_fraction {dose_fraction}"


def test_low_dose_call_matches_cached_sinogram():
    spacing_mm = (1.0, 0.8)
    hu, _ = water_cylinder_hu((48, 56), spacing_mm, 3)
    transform = LowDoseCT(0.3, n_views=90)

    low_hu = transform(hu, spacing_mm, generator=torch.Generator().manual_seed(2))
    sinogram, geometry = transform.clean_sinogram(hu, spacing_mm)
    noise_hu = transform.noise_hu_from_sinogram(sinogram, geometry, torch.Generator().manual_seed(2))

    assert sinogram.shape == (3, 90, geometry.n_detectors)
    torch.testing.assert_close(low_hu, hu + noise_hu)


def test_low_dose_keeps_shape_and_float32():
    spacing_mm = (0.7, 0.9)
    volume, _ = water_cylinder_hu((40, 36), spacing_mm, 2)
    transform = LowDoseCT(0.25, n_views=60)
    inputs = [volume, volume.double(), volume.reshape(1, 1, 2, 40, 36).expand(2, 1, 2, 40, 36)]

    for hu in inputs:
        low_hu = transform(hu, spacing_mm, generator=torch.Generator().manual_seed(0))
        assert low_hu.shape == hu.shape
        assert low_hu.dtype == torch.float32
        assert torch.isfinite(low_hu).all()
        assert not torch.equal(low_hu, hu.float())


def test_low_dose_roi_equals_crop_of_full_output():
    spacing_mm = (1.0, 1.0)
    hu, _ = water_cylinder_hu((48, 48), spacing_mm, 2)
    hu = hu.reshape(1, 1, 2, 48, 48)
    transform = LowDoseCT(0.5, n_views=60)
    roi = (8, 24, 20, 44)

    full = transform(hu, spacing_mm, generator=torch.Generator().manual_seed(9))
    cropped = transform(hu, spacing_mm, generator=torch.Generator().manual_seed(9), roi=roi)

    assert cropped.shape == (1, 1, 2, 16, 24)
    torch.testing.assert_close(cropped, full[..., 8:24, 20:44], rtol=0, atol=1e-3)


def test_low_dose_seed_controls_output():
    spacing_mm = (1.0, 1.0)
    hu, _ = water_cylinder_hu((40, 40), spacing_mm, 2)
    transform = LowDoseCT(0.2, n_views=60)

    first = transform(hu, spacing_mm, generator=torch.Generator().manual_seed(1))
    same = transform(hu, spacing_mm, generator=torch.Generator().manual_seed(1))
    other = transform(hu, spacing_mm, generator=torch.Generator().manual_seed(2))

    assert torch.equal(first, same)
    assert not torch.equal(first, other)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"dose_fraction": 0.0}, "dose_fraction"),
        ({"dose_fraction": 1.5}, "dose_fraction"),
        ({"dose_fraction": 0.5, "photons_per_ray": -1e5}, "photons_per_ray"),
        ({"dose_fraction": 0.5, "electronic_noise_std_photons": -1.0}, "electronic_noise_std_photons"),
        ({"dose_fraction": 0.5, "n_views": 0}, "n_views"),
        ({"dose_fraction": 0.5, "filter_name": "hamming"}, "filter_name"),
        ({"dose_fraction": 0.5, "mu_water_per_mm": -0.02}, "mu_water_per_mm"),
    ],
)
def test_low_dose_rejects_invalid_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        LowDoseCT(**kwargs)


def test_low_dose_rejects_invalid_inputs():
    transform = LowDoseCT(0.5, n_views=30)

    with pytest.raises(ValueError, match="hu"):
        transform(torch.zeros(32, 32), (1.0, 1.0))
    with pytest.raises(ValueError, match="spacing_mm"):
        transform(torch.zeros(1, 32, 32), (1.0, 0.0))
    with pytest.raises(ValueError, match="spacing_mm"):
        transform(torch.zeros(1, 32, 32), 1.0)
    with pytest.raises(ValueError, match="roi"):
        transform(torch.zeros(1, 32, 32), (1.0, 1.0), roi=(0, 40, 0, 32))


def test_random_low_dose_replays_from_params():
    spacing_mm = (1.0, 1.0)
    hu, _ = water_cylinder_hu((40, 40), spacing_mm, 2)
    transform = RandomLowDoseCT((0.2, 0.4), n_views=60, photons_per_ray=5e4)

    low_hu, params = transform(hu, spacing_mm, torch.Generator().manual_seed(7))
    again, params_again = transform(hu, spacing_mm, torch.Generator().manual_seed(7))
    other, params_other = transform(hu, spacing_mm, torch.Generator().manual_seed(8))
    replay = LowDoseCT(
        dose_fraction=params["dose_fraction"],
        photons_per_ray=params["photons_per_ray"],
        n_views=params["n_views"],
    )(hu, spacing_mm, generator=torch.Generator().manual_seed(params["seed"]))

    assert 0.2 <= params["dose_fraction"] <= 0.4
    assert params["photons_per_ray"] == 5e4
    assert params["n_views"] == 60
    assert isinstance(params["seed"], int)
    assert params == params_again
    assert torch.equal(low_hu, again)
    assert params_other["dose_fraction"] != params["dose_fraction"]
    assert not torch.equal(low_hu, other)
    assert torch.equal(replay, low_hu)
    from_params = LowDoseCT.from_params(params)(hu, spacing_mm, torch.Generator().manual_seed(params["seed"]))
    assert torch.equal(from_params, low_hu)


def test_random_low_dose_cached_sinogram_matches_call():
    spacing_mm = (1.0, 1.0)
    hu, _ = water_cylinder_hu((32, 32), spacing_mm, 2)
    transform = RandomLowDoseCT(n_views=45)
    sinogram, geometry = LowDoseCT(1.0, n_views=45).clean_sinogram(hu, spacing_mm)

    low_hu, params = transform(hu, spacing_mm, torch.Generator().manual_seed(4), roi=(4, 20, 4, 20))
    noise_hu, cached_params = transform.noise_hu_from_sinogram(
        sinogram, geometry, torch.Generator().manual_seed(4), roi=(4, 20, 4, 20)
    )

    assert cached_params == params
    torch.testing.assert_close(low_hu, hu[:, 4:20, 4:20] + noise_hu)


def test_random_low_dose_rejects_invalid_arguments():
    with pytest.raises(ValueError, match="dose_fraction_range"):
        RandomLowDoseCT((0.0, 0.5))
    with pytest.raises(ValueError, match="dose_fraction_range"):
        RandomLowDoseCT((0.6, 0.5))
    with pytest.raises(ValueError, match="dose_fraction_range"):
        RandomLowDoseCT((0.1, 1.2))
    with pytest.raises(ValueError, match="photons_per_ray"):
        RandomLowDoseCT(photons_per_ray=0)
    with pytest.raises(ValueError, match="generator"):
        RandomLowDoseCT().sample_params(None)
