"""The shipped model on the shipped real CT sample, a slice it never saw in training or validation."""

from importlib import resources

import numpy as np
import pytest

from medgan import load_model, read_volume
from medgan.evaluation.regions import find_uniform_region


@pytest.fixture(scope="module")
def sample():
    data = resources.files("medgan.data")
    reference = read_volume(str(data / "ct_small.nii.gz"))
    low = read_volume(str(data / "ct_small_quarter_dose.nii.gz"))
    restored = load_model("ldct-default", device="cpu").restore(low)
    return reference, low, restored


def test_shipped_sample_geometry_matches_dicom_source():
    from pydicom.data import get_testdata_file

    source = read_volume(get_testdata_file("CT_small.dcm"))
    shipped = read_volume(str(resources.files("medgan.data") / "ct_small.nii.gz"))
    assert np.array_equal(shipped.array, source.array)
    assert np.allclose(shipped.affine, source.affine, atol=1e-4)


def test_shipped_model_keeps_grid(sample):
    _, low, restored = sample
    assert restored.shape == low.shape
    assert np.array_equal(restored.affine, low.affine)


def test_shipped_model_lowers_noise(sample):
    reference, low, restored = sample
    region = find_uniform_region(reference.array)
    noise_in = region.take(low.array).std()
    noise_out = region.take(restored.array).std()
    assert noise_out <= 0.6 * noise_in  # at least 40 % lower


def test_shipped_model_keeps_mean_hu(sample):
    reference, low, restored = sample
    region = find_uniform_region(reference.array)
    shift = region.take(restored.array).mean() - region.take(low.array).mean()
    assert abs(shift) <= 5.0


def test_shipped_mri_model_on_shipped_sample():
    """mri-sr-default makes 4x thinner slices over the same extent, consistent with the measured thick slices."""
    from medgan.inference.grid import scaled_affine

    thick = read_volume(str(resources.files("medgan.data") / "mri_thick_slices.nii.gz"))
    fine = load_model("mri-sr-default", device="cpu").restore(thick)
    assert fine.shape == (thick.shape[0], thick.shape[1], 4 * thick.shape[2])
    assert np.allclose(fine.affine, scaled_affine(thick.affine, (1, 1, 4)))
    assert np.allclose(fine.spacing_mm, (thick.spacing_mm[0], thick.spacing_mm[1], thick.spacing_mm[2] / 4))
    means = fine.array.reshape(*thick.shape, 4).mean(axis=-1)
    assert np.abs(means - thick.array).max() < 1e-3 * np.abs(thick.array).max()
    assert np.all(np.isfinite(fine.array))
