"""Tests for the fan-beam geometry, the projector backends and the new LowDoseCT options."""

from __future__ import annotations

import math

import pytest
import torch

from medgan.physics import (
    FILTER_NAMES,
    FanBeamGeometry,
    ParallelBeamGeometry,
    bowtie_photon_fraction,
    filtered_back_projection,
    forward_project,
    insert_dose_reduction_noise,
    log_measurement_variance,
)
from medgan.physics.projector import SPARSE_MIN_SLICES, resolve_backend
from medgan.transforms import LowDoseCT, RandomLowDoseCT

MU_DISK_PER_MM = 0.02
DISK_RADIUS_MM = 35.0
SPACINGS_MM = [(1.0, 1.0), (1.0, 0.7)]
# A short source distance makes the fan wide (about 40 degrees for these slices), which tests the fan
# weighting far more than the default 595 mm would.
SHORT_SOURCE_MM = 150.0
SHORT_DETECTOR_MM = 260.0


def pixel_radius_mm(shape, spacing_mm):
    height, width = shape
    row_mm, col_mm = spacing_mm
    y = (torch.arange(height, dtype=torch.float64) - (height - 1) / 2)[:, None] * row_mm
    x = (torch.arange(width, dtype=torch.float64) - (width - 1) / 2)[None, :] * col_mm
    return torch.sqrt(y**2 + x**2)


def disk_image(shape, spacing_mm, radius_mm, supersampling=4):
    """Return the area fraction of each pixel inside a centred disk."""
    height, width = shape
    row_mm, col_mm = spacing_mm
    offsets = (torch.arange(supersampling, dtype=torch.float64) + 0.5) / supersampling - 0.5
    y = ((torch.arange(height, dtype=torch.float64) - (height - 1) / 2)[:, None] + offsets).reshape(-1) * row_mm
    x = ((torch.arange(width, dtype=torch.float64) - (width - 1) / 2)[:, None] + offsets).reshape(-1) * col_mm
    inside = (y[:, None] ** 2 + x[None, :] ** 2 <= radius_mm**2).double()
    return inside.reshape(height, supersampling, width, supersampling).mean(dim=(1, 3)).float()


def wide_fan(shape, spacing_mm, n_views=360):
    return FanBeamGeometry(
        shape,
        spacing_mm,
        n_views=n_views,
        source_to_isocenter_mm=SHORT_SOURCE_MM,
        source_to_detector_mm=SHORT_DETECTOR_MM,
    )


# Geometry


def test_fan_geometry_defaults():
    geometry = FanBeamGeometry((96, 64), (0.8, 1.2))

    assert geometry.n_views == 1440
    assert geometry.source_to_isocenter_mm == 595.0
    assert geometry.source_to_detector_mm == 1085.6
    # The default bin spacing, projected to the isocentre, equals the smaller pixel spacing.
    assert geometry.fan_angle_step_rad * geometry.source_to_isocenter_mm == pytest.approx(0.8)
    fan_half_angle = geometry.fan_angles_rad()[-1].item()
    assert geometry.source_to_isocenter_mm * math.sin(fan_half_angle) >= geometry.support_radius_mm


def test_fan_rays_pass_through_source():
    geometry = wide_fan((32, 32), (1.0, 1.0), n_views=8)
    cos, sin, t = geometry.ray_lines()
    beta = geometry.view_angles_rad()
    source_x = SHORT_SOURCE_MM * torch.cos(beta)[:, None]
    source_y = SHORT_SOURCE_MM * torch.sin(beta)[:, None]

    torch.testing.assert_close(source_x * cos + source_y * sin, t)
    # The fan is symmetric about the central ray, which passes through the rotation centre.
    torch.testing.assert_close(t, -t.flip(-1))


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"n_views": 0}, "n_views"),
        ({"source_to_isocenter_mm": -1.0}, "source_to_isocenter_mm"),
        ({"source_to_isocenter_mm": 20.0}, "source_to_isocenter_mm"),
        ({"source_to_detector_mm": 500.0}, "source_to_detector_mm"),
        ({"detector_pixel_mm": 0.0}, "detector_pixel_mm"),
        ({"n_detectors": 0}, "n_detectors"),
        ({"pixel_spacing_mm": (1.0, float("inf"))}, "pixel_spacing_mm"),
    ],
)
def test_fan_geometry_rejects_invalid_arguments(kwargs, name):
    arguments = {"image_shape": (32, 32), "pixel_spacing_mm": (1.0, 1.0)}
    arguments.update(kwargs)

    with pytest.raises(ValueError, match=name):
        FanBeamGeometry(**arguments)


# Operators


@pytest.mark.parametrize("spacing_mm", SPACINGS_MM)
def test_fan_projection_matches_chord_length(spacing_mm):
    shape = (96, 112)
    geometry = wide_fan(shape, spacing_mm)
    mu = disk_image(shape, spacing_mm, DISK_RADIUS_MM) * MU_DISK_PER_MM

    sinogram = forward_project(mu[None], geometry)

    distances = geometry.ray_distances_mm()
    analytic = 2 * MU_DISK_PER_MM * torch.sqrt((DISK_RADIUS_MM**2 - distances**2).clamp(min=0))
    inner = distances < 0.9 * DISK_RADIUS_MM
    relative_error = (sinogram[0].double() - analytic).abs()[:, inner] / analytic[inner]
    assert relative_error.max() < 0.03
    outside = distances > DISK_RADIUS_MM + 2 * max(spacing_mm)
    assert sinogram[0][:, outside].abs().max() < 1e-6


@pytest.mark.parametrize("spacing_mm", SPACINGS_MM)
@pytest.mark.parametrize("filter_name", FILTER_NAMES)
def test_fan_fbp_recovers_disk_mu(spacing_mm, filter_name):
    shape = (96, 112)
    geometry = wide_fan(shape, spacing_mm)
    mu = disk_image(shape, spacing_mm, DISK_RADIUS_MM) * MU_DISK_PER_MM
    sinogram = forward_project(mu[None], geometry)

    reconstruction = filtered_back_projection(sinogram, geometry, filter_name=filter_name)[0]

    radius = pixel_radius_mm(shape, spacing_mm)
    inner = radius < 0.8 * DISK_RADIUS_MM
    outer = radius > 1.2 * DISK_RADIUS_MM
    assert abs(reconstruction[inner].mean().item() / MU_DISK_PER_MM - 1) < 0.002
    assert (reconstruction[inner] / MU_DISK_PER_MM - 1).abs().max() < 0.01
    assert abs(reconstruction[outer].mean().item()) < 0.001 * MU_DISK_PER_MM
    assert reconstruction[outer].abs().mean() < 0.005 * MU_DISK_PER_MM


def test_fan_fbp_recovers_off_centre_disk():
    shape = (80, 80)
    geometry = wide_fan(shape, (1.0, 1.0))
    height, width = shape
    y = (torch.arange(height) - (height - 1) / 2)[:, None].double()
    x = (torch.arange(width) - (width - 1) / 2)[None, :].double()
    # A disk away from the centre checks the fan-angle and distance weights for rays far from the central ray.
    distance = torch.sqrt((x - 15) ** 2 + (y + 10) ** 2)
    mu = (distance <= 12).float() * MU_DISK_PER_MM

    reconstruction = filtered_back_projection(forward_project(mu[None], geometry), geometry, filter_name="hann")[0]

    assert abs(reconstruction[distance <= 8].mean().item() / MU_DISK_PER_MM - 1) < 0.005
    assert reconstruction[distance > 16].abs().mean() < 0.01 * MU_DISK_PER_MM


@pytest.mark.parametrize("geometry_type", ["parallel", "fan"])
def test_backends_agree(geometry_type):
    shape = (40, 52)
    spacing_mm = (1.0, 0.7)
    if geometry_type == "parallel":
        geometry = ParallelBeamGeometry(shape, spacing_mm, n_views=37)
    else:
        geometry = wide_fan(shape, spacing_mm, n_views=45)
    mu = torch.rand(3, *shape, generator=torch.Generator().manual_seed(5)) * MU_DISK_PER_MM

    grid = forward_project(mu, geometry, backend="grid")
    sparse = forward_project(mu, geometry, backend="sparse")
    # 50 kB holds only a few rays, so the projection runs in many chunks.
    sparse_chunked = forward_project(mu, geometry, backend="sparse", max_chunk_bytes=50_000)
    reconstruction_grid = filtered_back_projection(grid, geometry, backend="grid")
    reconstruction_sparse = filtered_back_projection(grid, geometry, backend="sparse")
    roi_sparse = filtered_back_projection(grid, geometry, backend="sparse", roi=(3, 30, 10, 52))

    torch.testing.assert_close(sparse, grid, rtol=0, atol=2e-6)
    torch.testing.assert_close(sparse_chunked, sparse, rtol=0, atol=1e-6)
    torch.testing.assert_close(reconstruction_sparse, reconstruction_grid, rtol=0, atol=1e-6)
    torch.testing.assert_close(roi_sparse, reconstruction_sparse[:, 3:30, 10:52], rtol=0, atol=1e-7)


@pytest.mark.parametrize("backend", ["grid", "sparse"])
def test_backends_are_differentiable_over_chunks(backend):
    shape = (20, 24)
    geometry = wide_fan(shape, (1.0, 1.0), n_views=16)
    mu = torch.full((2, *shape), MU_DISK_PER_MM, requires_grad=True)
    # 20 kB splits the rays and the views into several chunks.
    chunk_bytes = 20_000

    sinogram = forward_project(mu, geometry, backend=backend, max_chunk_bytes=chunk_bytes)
    reconstruction = filtered_back_projection(sinogram, geometry, backend=backend, max_chunk_bytes=chunk_bytes)
    reconstruction.sum().backward()

    assert mu.grad is not None
    assert torch.isfinite(mu.grad).all()
    assert mu.grad.abs().sum() > 0


def test_auto_backend_choice():
    cpu = torch.device("cpu")

    assert resolve_backend("auto", SPARSE_MIN_SLICES, cpu) == "sparse"
    assert resolve_backend("auto", SPARSE_MIN_SLICES - 1, cpu) == "grid"
    assert resolve_backend("grid", 100, cpu) == "grid"
    with pytest.raises(ValueError, match="backend"):
        resolve_backend("dense", 1, cpu)


def test_fan_fbp_rejects_mismatched_shapes():
    geometry = wide_fan((32, 32), (1.0, 1.0), n_views=16)

    with pytest.raises(ValueError, match="sinogram"):
        filtered_back_projection(torch.zeros(1, 15, geometry.n_detectors), geometry)
    with pytest.raises(ValueError, match="filter_name"):
        filtered_back_projection(torch.zeros(1, 16, geometry.n_detectors), geometry, filter_name="hamming")
    with pytest.raises(ValueError, match="roi"):
        filtered_back_projection(torch.zeros(1, 16, geometry.n_detectors), geometry, roi=(0, 40, 0, 32))


# Noise models


def test_bowtie_profile_values():
    distances = torch.tensor([0.0, 50.0, 100.0])

    fraction = bowtie_photon_fraction(distances, 100.0, 0.2)

    torch.testing.assert_close(fraction, torch.tensor([1.0, 0.2**0.25, 0.2]))
    torch.testing.assert_close(bowtie_photon_fraction(distances, 100.0, 1.0), torch.ones(3))
    with pytest.raises(ValueError, match="bowtie_photons_fraction_at_edge"):
        bowtie_photon_fraction(distances, 100.0, 0.0)
    with pytest.raises(ValueError, match="bowtie_photons_fraction_at_edge"):
        bowtie_photon_fraction(distances, 100.0, 1.5)


@pytest.mark.parametrize("dose_fraction", [0.5, 0.1])
def test_inserted_noise_variance_matches_formula(dose_fraction):
    line_integral = 3.0
    photons_per_ray = 2e4
    electronic_std = 10.0
    sinogram = torch.full((200, 1000), line_integral, dtype=torch.float64)

    noisy = insert_dose_reduction_noise(
        sinogram,
        photons_per_ray=photons_per_ray,
        dose_fraction=dose_fraction,
        electronic_noise_std_photons=electronic_std,
        generator=torch.Generator().manual_seed(1),
    )

    counts = torch.tensor(photons_per_ray * math.exp(-line_integral), dtype=torch.float64)
    expected = log_measurement_variance(dose_fraction * counts, electronic_std) - log_measurement_variance(
        counts, electronic_std
    )
    assert abs(noisy.var().item() / expected.item() - 1) < 0.02
    assert abs(noisy.mean().item() - line_integral) < 0.002


def test_insertion_at_full_dose_returns_input():
    sinogram = torch.rand(3, 10, 12, dtype=torch.float64)

    same = insert_dose_reduction_noise(
        sinogram, photons_per_ray=1e5, dose_fraction=1.0, electronic_noise_std_photons=5.0
    )

    torch.testing.assert_close(same, sinogram, rtol=0, atol=0)


def test_noise_rejects_bad_bowtie_profile():
    with pytest.raises(ValueError, match="detector_photon_fraction"):
        insert_dose_reduction_noise(
            torch.zeros(2, 5),
            photons_per_ray=1e5,
            dose_fraction=0.5,
            electronic_noise_std_photons=5.0,
            detector_photon_fraction=torch.ones(4),
        )
    with pytest.raises(ValueError, match="detector_photon_fraction"):
        insert_dose_reduction_noise(
            torch.zeros(2, 5),
            photons_per_ray=1e5,
            dose_fraction=0.5,
            electronic_noise_std_photons=5.0,
            detector_photon_fraction=torch.zeros(5),
        )


# LowDoseCT options


def cylinder_hu(shape, n_slices, radius_mm):
    hu = torch.full(shape, -1000.0)
    hu[pixel_radius_mm(shape, (1.0, 1.0)) <= radius_mm] = 0.0
    return hu.expand(n_slices, *shape).clone()


def test_low_dose_fan_geometry_and_params_round_trip():
    hu = cylinder_hu((40, 40), 2, 15.0)
    transform = LowDoseCT(0.3, geometry="fan", n_views=90, bowtie_photons_fraction_at_edge=0.5)

    low_hu = transform(hu, (1.0, 1.0), generator=torch.Generator().manual_seed(4))
    replay = LowDoseCT.from_params(transform.params())(hu, (1.0, 1.0), generator=torch.Generator().manual_seed(4))

    assert transform.params()["geometry"] == "fan"
    assert isinstance(transform.geometry((40, 40), (1.0, 1.0)), FanBeamGeometry)
    assert low_hu.shape == hu.shape
    assert torch.equal(replay, low_hu)
    assert LowDoseCT(0.3, geometry="fan").n_views == 1440
    assert LowDoseCT(0.3).n_views == 720


def test_low_dose_from_old_params_record():
    old_record = {
        "dose_fraction": 0.25,
        "photons_per_ray": 1e5,
        "electronic_noise_std_photons": 5.0,
        "n_views": 720,
        "filter_name": "ram-lak",
        "mu_water_per_mm": 0.0193,
        "seed": 3,
    }

    transform = LowDoseCT.from_params(old_record)

    assert transform.geometry_type == "parallel"
    assert transform.assume_noiseless_input is True
    assert transform.bowtie_photons_fraction_at_edge == 1.0


def test_low_dose_bowtie_adds_noise_at_periphery():
    shape = (64, 64)
    hu = cylinder_hu(shape, 8, 28.0)
    radius = pixel_radius_mm(shape, (1.0, 1.0))
    centre = radius < 4
    periphery = (radius > 20) & (radius < 26)
    plain = LowDoseCT(0.25, n_views=120)
    sinogram, geometry = plain.clean_sinogram(hu, (1.0, 1.0))

    without = plain.noise_hu_from_sinogram(sinogram, geometry, torch.Generator().manual_seed(2))
    with_bowtie = LowDoseCT(0.25, n_views=120, bowtie_photons_fraction_at_edge=0.1).noise_hu_from_sinogram(
        sinogram, geometry, torch.Generator().manual_seed(2)
    )

    centre_ratio = with_bowtie[:, centre].std() / without[:, centre].std()
    periphery_ratio = with_bowtie[:, periphery].std() / without[:, periphery].std()
    # Rays through the centre keep all their photons. Rays through the periphery pass up to half the support
    # radius from the centre and keep down to 0.1 ** 0.25 = 56 % of them.
    assert 0.9 < centre_ratio < 1.1
    assert periphery_ratio > centre_ratio + 0.1


def test_low_dose_insertion_at_full_dose_keeps_input():
    hu = cylinder_hu((32, 32), 2, 12.0) + torch.randn(2, 32, 32, generator=torch.Generator().manual_seed(0))

    same = LowDoseCT(1.0, n_views=40, assume_noiseless_input=False)(hu, (1.0, 1.0))

    torch.testing.assert_close(same, hu, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"geometry": "cone"}, "geometry"),
        ({"geometry": "fan", "source_to_isocenter_mm": 0.0}, "source_to_isocenter_mm"),
        ({"geometry": "fan", "source_to_detector_mm": 100.0}, "source_to_detector_mm"),
        ({"geometry": "fan", "detector_pixel_mm": -1.0}, "detector_pixel_mm"),
        ({"bowtie_photons_fraction_at_edge": 0.0}, "bowtie_photons_fraction_at_edge"),
        ({"assume_noiseless_input": "no"}, "assume_noiseless_input"),
    ],
)
def test_low_dose_rejects_invalid_new_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        LowDoseCT(0.5, **kwargs)


def test_low_dose_fan_rejects_source_inside_field():
    transform = LowDoseCT(0.5, geometry="fan", source_to_isocenter_mm=30.0, source_to_detector_mm=60.0)

    with pytest.raises(ValueError, match="source_to_isocenter_mm"):
        transform(torch.zeros(1, 64, 64), (1.0, 1.0))


def test_random_low_dose_passes_new_options():
    hu = cylinder_hu((32, 32), 2, 12.0)
    transform = RandomLowDoseCT((0.2, 0.3), geometry="fan", n_views=60, assume_noiseless_input=False)

    low_hu, params = transform(hu, (1.0, 1.0), torch.Generator().manual_seed(5))
    replay = LowDoseCT.from_params(params)(hu, (1.0, 1.0), torch.Generator().manual_seed(params["seed"]))

    assert params["geometry"] == "fan"
    assert params["assume_noiseless_input"] is False
    assert torch.equal(replay, low_hu)
