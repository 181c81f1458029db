"""The strength of a same-grid restoration: output = input + strength * (restored - input)."""

from __future__ import annotations

import json
from importlib.resources import files

import numpy as np
import pytest
from click.testing import CliRunner

from medgan.cli.main import cli
from medgan.inference.restorer import check_strength, load_model
from medgan.io import read_volume

SAMPLES = files("medgan") / "data"


@pytest.fixture(scope="module")
def ct_pair():
    restorer = load_model("ldct-default", device="cpu")
    volume = read_volume(SAMPLES / "ct_small_quarter_dose.nii.gz")
    return restorer, volume, restorer.restore(volume)


def test_strength_zero_returns_input(ct_pair):
    restorer, volume, _ = ct_pair
    unchanged = restorer.restore(volume, strength=0.0)

    np.testing.assert_array_equal(unchanged.array, volume.array.astype(unchanged.array.dtype))
    np.testing.assert_array_equal(unchanged.affine, volume.affine)


def test_strength_blends_linearly(ct_pair):
    restorer, volume, full = ct_pair
    blended = restorer.restore(volume, strength=0.25)
    change_hu = full.array.astype(np.float64) - volume.array

    np.testing.assert_allclose(blended.array, volume.array + 0.25 * change_hu, atol=1e-3)
    # A quarter of the change, so a quarter of the largest correction, in HU.
    assert np.abs(blended.array - volume.array).max() == pytest.approx(0.25 * np.abs(change_hu).max(), rel=1e-4)
    np.testing.assert_array_equal(blended.affine, volume.affine)


@pytest.mark.parametrize("value", [-0.1, 1.5, float("nan"), "0.5", True])
def test_strength_outside_unit_interval_rejected(value):
    with pytest.raises(ValueError, match="strength must be a number in \\[0, 1\\]"):
        check_strength(value, (1, 1, 1))


def test_strength_refused_for_super_resolution():
    restorer = load_model("mri-sr-default", device="cpu")
    volume = read_volume(SAMPLES / "mri_thick_slices.nii.gz")
    with pytest.raises(ValueError, match=r"output scale is \(1, 1, 4\)"):
        restorer.restore(volume, strength=0.5)
    assert restorer.restore(volume, strength=1.0).shape == (33, 41, 24)


def test_cli_records_strength(tmp_path):
    output = tmp_path / "half.nii.gz"
    result = CliRunner().invoke(cli, ["infer", str(SAMPLES / "ct_small_quarter_dose.nii.gz"), "-o", str(output),
                                      "--strength", "0.5", "--no-preview"])

    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "half.json").read_text())["strength"] == 0.5


def test_cli_refuses_strength_for_super_resolution(tmp_path):
    output = tmp_path / "fine.nii.gz"
    result = CliRunner().invoke(cli, ["infer", "--task", "mri-sr", str(SAMPLES / "mri_thick_slices.nii.gz"), "-o",
                                      str(output), "--strength", "0.5"])

    assert result.exit_code == 2
    assert "--strength" in result.output
    assert "(1, 1, 4)" in result.output
    assert list(tmp_path.iterdir()) == []
