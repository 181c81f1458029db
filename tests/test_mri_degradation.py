"""Tests for the low-resolution MRI degradations: thick slices, k-space truncation, Rician noise, samplers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medgan.io import Volume
from medgan.physics.mri import (
    add_rician_noise,
    low_resolution_affine,
    thick_slice_sampling,
    thick_slices,
    truncate_kspace,
)
from medgan.transforms import (
    KSpaceTruncationMRI,
    RandomKSpaceTruncationMRI,
    RandomRicianNoiseMRI,
    RandomThickSliceMRI,
    RicianNoiseMRI,
    ThickSliceMRI,
)

from tests.conftest import oblique_affine


def world_positions(affine: np.ndarray, axis: int, indices: np.ndarray) -> np.ndarray:
    """Return the ``(n, 3)`` world positions of voxel indices along ``axis`` (other indices 0)."""
    voxels = np.zeros((len(indices), 4))
    voxels[:, axis] = indices
    voxels[:, 3] = 1
    return (affine @ voxels.T).T[:, :3]


def assert_centres_match_averaged_slices(volume: Volume, output: Volume, transform: ThickSliceMRI) -> None:
    """Check each thick slice's world position against the input slices it averages.

    The thick slice must sit at the centre of the extent it integrates. For a boxcar slice that extent runs
    from the covered part of the first averaged slice to the covered part of the last. When the profile
    covers whole slices, or sits symmetrically on the slice grid, the position must also equal the weighted
    mean world position of the averaged slices.
    """
    axis = transform.slice_axis
    n_input = volume.shape[axis]
    spacing_mm = volume.spacing_mm[axis]
    sampling = transform.sampling(n_input, spacing_mm)
    input_world = world_positions(volume.affine, axis, np.arange(n_input))
    output_world = world_positions(output.affine, axis, np.arange(output.shape[axis]))
    weights = sampling.weights.numpy()

    assert output.shape[axis] == sampling.n_thick
    for index in range(sampling.n_thick):
        averaged = np.flatnonzero(weights[index] > 1e-12)
        weighted_mean = (weights[index][averaged, None] * input_world[averaged]).sum(axis=0)
        if transform.profile == "boxcar":
            covered = weights[index] * transform.slice_thickness_mm / spacing_mm
            first, last = averaged[0], averaged[-1]
            start_index = first + 0.5 - covered[first]
            end_index = last - 0.5 + covered[last]
            extent_centre = world_positions(volume.affine, axis, np.array([(start_index + end_index) / 2]))[0]
            np.testing.assert_allclose(output_world[index], extent_centre, atol=1e-9)
        symmetric = np.allclose(weights[index][averaged], weights[index][averaged][::-1], atol=1e-12)
        if symmetric:
            np.testing.assert_allclose(output_world[index], weighted_mean, atol=1e-9)
        else:
            assert np.linalg.norm(output_world[index] - weighted_mean) < 0.1 * spacing_mm
        if symmetric and transform.profile == "boxcar":
            np.testing.assert_allclose(output_world[index], input_world[averaged].mean(axis=0), atol=1e-9)


def synthetic_volume(shape=(12, 10, 40), spacing_mm=(0.9, 1.1, 1.0)) -> Volume:
    generator = np.random.default_rng(0)
    array = generator.uniform(0, 100, shape).astype(np.float32)
    return Volume(array=array, affine=oblique_affine(spacing_mm=spacing_mm), modality="MR")


# Thick slices on a synthetic volume (no nilearn needed)


def test_thick_slice_grid_and_affine_synthetic():
    volume = synthetic_volume()
    transform = ThickSliceMRI(4.0, slice_axis=2)

    output = transform(volume)

    # 40 slices of 1 mm hold 10 whole slabs of 4 mm; slab 0 averages slices 0-3, centred at index 1.5.
    assert output.shape == (12, 10, 10)
    np.testing.assert_allclose(output.spacing_mm, (0.9, 1.1, 4.0))
    np.testing.assert_allclose(output.affine[:3, 2], 4 * volume.affine[:3, 2])
    np.testing.assert_allclose(output.affine[:3, 3], volume.affine[:3, 3] + 1.5 * volume.affine[:3, 2])
    np.testing.assert_allclose(output.array[..., 0], volume.array[..., 0:4].mean(axis=2), rtol=1e-5)
    assert_centres_match_averaged_slices(volume, output, transform)


@pytest.mark.parametrize(
    ("axis", "thickness_mm", "gap_mm", "profile"),
    [
        (0, 2.5, 0.0, "boxcar"),
        (1, 3.0, 1.0, "boxcar"),
        (2, 3.0, 0.0, "gaussian"),
        (2, 5.0, -1.0, "boxcar"),
    ],
)
def test_thick_slice_centres_are_mean_positions(axis, thickness_mm, gap_mm, profile):
    volume = synthetic_volume(shape=(30, 26, 40))
    transform = ThickSliceMRI(thickness_mm, slice_axis=axis, slice_gap_mm=gap_mm, profile=profile)

    output = transform(volume)

    step_mm = thickness_mm + gap_mm
    assert output.spacing_mm[axis] == pytest.approx(step_mm)
    assert_centres_match_averaged_slices(volume, output, transform)


@pytest.mark.parametrize("profile", ["boxcar", "gaussian"])
def test_thick_slices_of_linear_ramp_sit_at_centres(profile):
    # Averaging a ramp with a symmetric profile returns the ramp at the profile's centre, so a half-voxel
    # shift of the grid would show as an offset of 0.5.
    ramp = torch.arange(40, dtype=torch.float64).view(1, 1, 40).expand(3, 4, 40)
    sampling = thick_slice_sampling(40, 1.0, 3.0, profile=profile)

    thick = thick_slices(ramp, sampling, axis=2)

    torch.testing.assert_close(thick[0, 0], sampling.centre_indices())


def test_gaussian_profile_weights():
    sampling = thick_slice_sampling(60, 0.5, 4.0, profile="gaussian", profile_fwhm_mm=3.0)
    weights = sampling.weights[2]
    positions_mm = torch.arange(60, dtype=torch.float64) * 0.5
    centre_mm = (sampling.first_centre_index + 2 * sampling.step_index) * 0.5

    torch.testing.assert_close(weights.sum(), torch.tensor(1.0, dtype=torch.float64))
    variance_mm2 = (weights * (positions_mm - centre_mm) ** 2).sum()
    # Integrating the Gaussian over 0.5 mm slices adds the slice width's variance, 0.5^2 / 12.
    expected_sigma_mm = math.sqrt((3.0 / (2 * math.sqrt(2 * math.log(2)))) ** 2 + 0.5**2 / 12)
    assert abs(variance_mm2.sqrt().item() / expected_sigma_mm - 1) < 0.01


def test_thick_slice_original_grid_keeps_geometry():
    volume = synthetic_volume()
    ramp = np.broadcast_to(np.arange(40, dtype=np.float32), volume.shape).copy()
    transform = ThickSliceMRI(4.0, output_grid="original")

    output = transform(volume.with_array(ramp))

    assert output.shape == volume.shape
    np.testing.assert_array_equal(output.affine, volume.affine)
    # Linear interpolation between slab centres reproduces a ramp between the first and last centre
    # (indices 1.5 and 37.5) and keeps the end values outside.
    np.testing.assert_allclose(output.array[0, 0, 2:38], ramp[0, 0, 2:38], atol=1e-5)
    assert output.array[0, 0, 0] == pytest.approx(1.5)
    assert output.array[0, 0, 39] == pytest.approx(37.5)


def test_thick_slice_tensor_and_meta_tensor():
    from monai.data import MetaTensor

    volume = synthetic_volume()
    transform = ThickSliceMRI(4.0)
    expected = transform(volume)

    from_tensor = transform(torch.from_numpy(volume.array)[None], spacing_mm=volume.spacing_mm)
    from_meta = transform(MetaTensor(torch.from_numpy(volume.array)[None], affine=torch.as_tensor(volume.affine)))

    np.testing.assert_allclose(from_tensor[0].numpy(), expected.array, rtol=1e-6)
    assert isinstance(from_meta, MetaTensor)
    np.testing.assert_allclose(from_meta.affine.numpy(), expected.affine, atol=1e-9)
    with pytest.raises(ValueError, match="spacing_mm"):
        transform(torch.from_numpy(volume.array))


def test_thick_slice_volume_metadata():
    volume = synthetic_volume()
    volume.metadata = {"format": "nifti", "qform": [[1.0]], "sform_code": 1}

    output = ThickSliceMRI(4.0)(volume)

    assert output.modality == "MR"
    assert output.metadata["simulated"]["slice_thickness_mm"] == 4.0
    assert "qform" not in output.metadata
    assert output.metadata["sform_code"] == 1


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"slice_thickness_mm": 0.0}, "slice_thickness_mm"),
        ({"slice_thickness_mm": 3.0, "slice_gap_mm": -3.0}, "slice_gap_mm"),
        ({"slice_thickness_mm": 3.0, "profile": "sinc"}, "profile"),
        ({"slice_thickness_mm": 3.0, "profile_fwhm_mm": 2.0}, "profile_fwhm_mm"),
        ({"slice_thickness_mm": 3.0, "profile": "gaussian", "profile_fwhm_mm": -1.0}, "profile_fwhm_mm"),
        ({"slice_thickness_mm": 3.0, "slice_axis": 3}, "slice_axis"),
        ({"slice_thickness_mm": 3.0, "output_grid": "high"}, "output_grid"),
    ],
)
def test_thick_slice_rejects_invalid_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        ThickSliceMRI(**kwargs)


def test_thick_slice_rejects_too_thick_slab():
    with pytest.raises(ValueError, match="slice_thickness_mm"):
        ThickSliceMRI(50.0)(synthetic_volume())


def test_low_resolution_affine_rejects_bad_shape():
    sampling = thick_slice_sampling(10, 1.0, 2.0)

    with pytest.raises(ValueError, match="affine"):
        low_resolution_affine(np.eye(3), sampling, 2)


# Thick slices on the MNI152 template


@pytest.fixture(scope="module")
def mni_volume() -> Volume:
    datasets = pytest.importorskip("nilearn.datasets")
    template = datasets.load_mni152_template(resolution=1)
    return Volume(array=np.asarray(template.get_fdata(), dtype=np.float32), affine=template.affine, modality="MR")


def test_mni_thick_slices_shape_and_affine(mni_volume):
    assert mni_volume.shape == (197, 233, 189)
    transform = ThickSliceMRI(4.0, slice_axis=2)

    output = transform(mni_volume)

    # 189 slices of 1 mm hold 47 whole 4 mm slabs; slab 0 is centred on index 1.5.
    assert output.shape == (197, 233, 47)
    expected_affine = mni_volume.affine.copy()
    expected_affine[2, 2] = 4.0
    expected_affine[2, 3] = mni_volume.affine[2, 3] + 1.5
    np.testing.assert_allclose(output.affine, expected_affine)
    assert_centres_match_averaged_slices(mni_volume, output, transform)


@pytest.mark.parametrize(("axis", "profile"), [(1, "gaussian"), (0, "boxcar")])
def test_mni_thick_slice_positions_other_axes(mni_volume, axis, profile):
    transform = ThickSliceMRI(5.0, slice_axis=axis, profile=profile)

    output = transform(mni_volume)

    assert_centres_match_averaged_slices(mni_volume, output, transform)
    # The weights of each thick slice sum to 1, so the slabs keep the template's intensity scale.
    assert abs(output.array.max() / mni_volume.array.max() - 1) < 0.2


# k-space truncation


def test_kspace_full_band_is_identity():
    image = torch.rand(2, 16, 18, 10, dtype=torch.float64) + 1

    torch.testing.assert_close(truncate_kspace(image, 1.0, (0, 1, 2)), image)


@pytest.mark.parametrize(("taper", "kept_power_per_axis"), [("none", 0.5), ("hann", 0.5 * 0.375)])
def test_kspace_truncation_removes_expected_noise_power(taper, kept_power_per_axis):
    # White noise on a large offset: the magnitude equals the real part, and the kept variance is the
    # kept fraction of the band times the mean squared window (3/8 for Hann) on each truncated axis.
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(4, 64, 64, 8, generator=generator, dtype=torch.float64)

    output = truncate_kspace(1000 + noise, 0.5, (0, 1), taper=taper)

    ratio = (output - 1000).var().item() / noise.var().item()
    assert abs(ratio / kept_power_per_axis**2 - 1) < 0.05


def test_kspace_transform_keeps_grid():
    volume = synthetic_volume()
    transform = KSpaceTruncationMRI((0.5, 0.25), axes=(0, 2), taper="tukey")

    output = transform(volume)

    assert output.shape == volume.shape
    np.testing.assert_array_equal(output.affine, volume.affine)
    assert output.metadata["simulated"]["taper"] == "tukey"
    assert KSpaceTruncationMRI.from_params(transform.params()).params() == transform.params()


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"keep_fraction": 0.0}, "keep_fraction"),
        ({"keep_fraction": 1.5}, "keep_fraction"),
        ({"keep_fraction": (0.5,), "axes": (0, 1)}, "keep_fraction"),
        ({"keep_fraction": 0.5, "axes": (0, 0)}, "axes"),
        ({"keep_fraction": 0.5, "axes": (3,)}, "axis"),
        ({"keep_fraction": 0.5, "taper": "kaiser"}, "taper"),
        ({"keep_fraction": 0.5, "taper": "tukey", "tukey_alpha": 2.0}, "tukey_alpha"),
    ],
)
def test_kspace_rejects_invalid_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        KSpaceTruncationMRI(**kwargs)


# Rician noise


def phantom_block() -> torch.Tensor:
    image = torch.zeros(2, 40, 40, 20, dtype=torch.float64)
    image[:, 10:30, 10:30, 5:15] = 100.0
    return image


def test_rician_noise_matches_snr_definition():
    image = phantom_block()
    snr = 20.0

    noisy = add_rician_noise(image, snr, generator=torch.Generator().manual_seed(1))

    sigma = 100.0 / snr
    foreground = noisy[:, 10:30, 10:30, 5:15]
    background = noisy[:, :8]
    # At SNR 20 the Rician foreground is nearly Gaussian with standard deviation sigma. The background is
    # Rayleigh with mean sigma * sqrt(pi / 2).
    assert abs(foreground.std().item() / sigma - 1) < 0.03
    assert abs(background.mean().item() / (sigma * math.sqrt(math.pi / 2)) - 1) < 0.03
    assert (noisy >= 0).all()


def test_rician_noise_with_mask_and_batches():
    image = phantom_block()
    image[1] *= 2
    mask = torch.zeros(40, 40, 20, dtype=torch.bool)
    mask[10:30, 10:30, 5:15] = True

    noisy = add_rician_noise(image, 10.0, generator=torch.Generator().manual_seed(2), foreground_mask=mask)

    # Each volume gets its own sigma: 10 and 20.
    for index, sigma in enumerate((10.0, 20.0)):
        assert abs(noisy[index][mask].std().item() / sigma - 1) < 0.05
    with pytest.raises(ValueError, match="foreground_mask"):
        add_rician_noise(image, 10.0, foreground_mask=torch.zeros(4, 4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="snr"):
        add_rician_noise(image, 0.0)
    with pytest.raises(ValueError, match="foreground"):
        add_rician_noise(torch.zeros(4, 4, 4), 10.0)


# Seeded samplers


def test_random_thick_slice_is_seeded_and_replayable():
    volume = synthetic_volume()
    sampler = RandomThickSliceMRI((2.0, 6.0), slice_gap_mm_range=(0.0, 1.0))

    first, params = sampler(volume, torch.Generator().manual_seed(5))
    again, params_again = sampler(volume, torch.Generator().manual_seed(5))
    draws = [sampler.sample_params(torch.Generator().manual_seed(seed)) for seed in range(20)]

    assert params == params_again
    np.testing.assert_array_equal(first.array, again.array)
    np.testing.assert_array_equal(first.affine, again.affine)
    replay = ThickSliceMRI.from_params(params)(volume)
    np.testing.assert_array_equal(replay.array, first.array)
    assert all(2.0 <= draw["slice_thickness_mm"] <= 6.0 for draw in draws)
    assert all(0.0 <= draw["slice_gap_mm"] <= 1.0 for draw in draws)
    assert {draw["profile"] for draw in draws} == {"boxcar", "gaussian"}
    assert len({draw["slice_thickness_mm"] for draw in draws}) == 20


def test_random_kspace_and_rician_are_seeded():
    image = phantom_block()[0]
    kspace = RandomKSpaceTruncationMRI((0.3, 0.6))
    rician = RandomRicianNoiseMRI((10.0, 20.0))

    truncated, kspace_params = kspace(image, torch.Generator().manual_seed(1))
    noisy, rician_params = rician(image, torch.Generator().manual_seed(1))
    noisy_again, _ = rician(image, torch.Generator().manual_seed(1))
    noisy_other, other_params = rician(image, torch.Generator().manual_seed(2))
    replay = RicianNoiseMRI.from_params(rician_params)(
        image, generator=torch.Generator().manual_seed(rician_params["seed"])
    )

    assert 0.3 <= kspace_params["keep_fraction"] <= 0.6
    torch.testing.assert_close(KSpaceTruncationMRI.from_params(kspace_params)(image), truncated)
    assert 10.0 <= rician_params["snr"] <= 20.0
    assert torch.equal(noisy, noisy_again)
    assert torch.equal(replay, noisy)
    assert other_params != rician_params
    assert not torch.equal(noisy_other, noisy)


@pytest.mark.parametrize(
    ("factory", "name"),
    [
        (lambda: RandomThickSliceMRI((0.0, 2.0)), "slice_thickness_mm_range"),
        (lambda: RandomThickSliceMRI((3.0, 2.0)), "slice_thickness_mm_range"),
        (lambda: RandomThickSliceMRI(slice_gap_mm_range=(-1.0, 0.0)), "slice_gap_mm_range"),
        (lambda: RandomThickSliceMRI(profiles=("sinc",)), "profiles"),
        (lambda: RandomKSpaceTruncationMRI((0.5, 1.5)), "keep_fraction_range"),
        (lambda: RandomRicianNoiseMRI((0.0, 10.0)), "snr_range"),
        (lambda: RicianNoiseMRI(-2.0), "snr"),
    ],
)
def test_samplers_reject_invalid_ranges(factory, name):
    with pytest.raises(ValueError, match=name):
        factory()


def test_samplers_require_generator():
    with pytest.raises(ValueError, match="generator"):
        RandomThickSliceMRI().sample_params(None)
    with pytest.raises(ValueError, match="generator"):
        RandomRicianNoiseMRI().sample_params(0)
