"""Super-resolution input checks: which axis is thick, off-factor ratios, and simulate's output folder."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from click.testing import CliRunner

from medgan.cli.main import cli
from medgan.inference.restorer import load_model
from medgan.io import Volume, write_volume


def brain_like(shape: tuple[int, int, int], spacing_mm: tuple[float, float, float]) -> Volume:
    generator = np.random.default_rng(0)
    array = (100.0 + 20.0 * generator.random(shape)).astype(np.float32)
    return Volume(array, np.diag([*spacing_mm, 1.0]), modality="MR")


@pytest.fixture(scope="module")
def restorer():
    return load_model("mri-sr-default", device="cpu")


def test_thick_axis_i_named(restorer):
    with pytest.raises(ValueError, match="thick axis is i .*Reorder the voxel axes"):
        restorer.restore(brain_like((8, 24, 24), (4.0, 1.0, 1.0)))


def test_thick_axis_j_named(restorer):
    with pytest.raises(ValueError, match="thick axis is j "):
        restorer.restore(brain_like((24, 8, 12), (1.0, 4.0, 2.0)))


def test_off_factor_ratio_warned(restorer, caplog):
    with caplog.at_level(logging.WARNING, logger="medgan.inference.restorer"):
        restored = restorer.restore(brain_like((16, 16, 6), (1.0, 1.0, 3.0)))

    assert restored.shape == (16, 16, 24)
    assert "trained for slices 4x thicker" in caplog.text
    assert "are 3.00x" in caplog.text


def test_sidecar_records_slice_ratio(tmp_path):
    scan = write_volume(brain_like((16, 16, 6), (1.0, 1.0, 5.0)), tmp_path / "thick.nii.gz")
    result = CliRunner().invoke(cli, ["infer", "--task", "mri-sr", str(scan), "-o", str(tmp_path / "fine.nii.gz"),
                                      "--no-preview"])

    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "fine.json").read_text())["slice_to_pixel_ratio"] == 5.0


def test_simulate_missing_folder_fails_first(tmp_path):
    scan = write_volume(brain_like((16, 16, 16), (1.0, 1.0, 1.0)), tmp_path / "t1.nii.gz")
    result = CliRunner().invoke(cli, ["simulate", str(scan), "-o", str(tmp_path / "missing" / "t1_4mm.nii.gz"),
                                      "--task", "mri-sr", "--slice-thickness-mm", "4"])

    assert result.exit_code == 2
    assert "does not exist" in result.output
    assert not (tmp_path / "missing").exists()
