"""Guards of medgan infer found by trying it as a new user: nothing half-written, nothing replaced by mistake."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from click.testing import CliRunner
from test_io import AXIAL, write_ct_series

from medgan.cli.errors import EXIT_INVALID_INPUT, EXIT_USAGE_ERROR
from medgan.cli.main import cli
from medgan.evaluation.figures import save_preview_png
from medgan.io import Volume, write_volume


def run(*arguments):
    return CliRunner().invoke(cli, [str(a) for a in arguments], catch_exceptions=False)


@pytest.fixture
def ct_scan(tmp_path):
    rng = np.random.default_rng(0)
    array = rng.normal(40.0, 20.0, (12, 10, 3)).astype(np.float32)
    array[:2] = -1000.0
    path = tmp_path / "scan.nii.gz"
    write_volume(Volume(array, np.diag([0.7, 0.7, 2.0, 1.0]), "CT"), path)
    return path


def test_output_may_not_replace_input(ct_scan, identity_model):
    before = ct_scan.read_bytes()
    result = run("infer", ct_scan, "-o", ct_scan, "--model", identity_model, "--overwrite")
    assert result.exit_code == EXIT_USAGE_ERROR
    assert "is the input scan" in result.output
    assert ct_scan.read_bytes() == before


def test_task_differing_from_model_is_rejected(tmp_path, ct_scan, identity_model):
    result = run("infer", ct_scan, "-o", tmp_path / "out.nii.gz", "--model", identity_model, "--task", "mri-sr")
    assert result.exit_code == EXIT_USAGE_ERROR
    assert "restores task 'ldct'" in result.output
    assert not (tmp_path / "out.nii.gz").exists()


def test_adapt_minutes_needs_adapt(tmp_path, ct_scan, identity_model):
    result = run("infer", ct_scan, "-o", tmp_path / "out.nii.gz", "--model", identity_model, "--adapt-minutes", "1")
    assert result.exit_code == EXIT_USAGE_ERROR
    assert "--adapt" in result.output


@pytest.mark.parametrize(("option", "value"), [("--adapt-minutes", "nan"), ("--strength", "nan")])
def test_non_finite_numbers_rejected(tmp_path, ct_scan, identity_model, option, value):
    # NaN passes click's range checks, since every comparison with it is false.
    result = run("infer", ct_scan, "-o", tmp_path / "out.nii.gz", "--model", identity_model, "--adapt", option,
                 value)
    assert result.exit_code == EXIT_USAGE_ERROR
    assert f"'{value}' is not a finite number" in result.output
    assert not (tmp_path / "out.nii.gz").exists()


def test_failed_sidecar_removes_new_outputs(tmp_path, ct_scan, identity_model, monkeypatch):
    import medgan.cli.infer as infer_module

    def fail(*arguments, **keywords):
        raise ValueError("disk full")

    monkeypatch.setattr(infer_module, "_write_sidecar", fail)
    output = tmp_path / "out.nii.gz"
    result = run("infer", ct_scan, "-o", output, "--model", identity_model)
    assert result.exit_code == EXIT_INVALID_INPUT
    assert not output.exists()
    assert not (tmp_path / "out_preview.png").exists()


def test_preview_of_finer_output_grid(tmp_path):
    before = Volume(np.arange(8 * 6 * 2, dtype=np.float32).reshape(8, 6, 2), np.diag([1.0, 1.0, 4.0, 1.0]), "MR")
    after = Volume(np.repeat(before.array, 4, axis=2), np.diag([1.0, 1.0, 1.0, 1.0]), "MR")
    path = save_preview_png(before, after, tmp_path / "preview.png")
    assert path.stat().st_size > 0
    with pytest.raises(ValueError, match="whole multiple"):
        save_preview_png(before, Volume(np.zeros((8, 6, 3), np.float32), np.eye(4)), tmp_path / "other.png")


def test_image_slice_without_pixels_is_rejected(tmp_path, identity_model):
    folder = tmp_path / "series"
    positions = [np.array([0.0, 0.0, 2.0 * s]) for s in range(4)]
    write_ct_series(folder, positions=positions, orientation=AXIAL)
    damaged = sorted(folder.iterdir())[-1]
    dataset = pydicom.dcmread(damaged)
    del dataset.PixelData
    dataset.save_as(damaged)
    result = run("infer", folder, "-o", tmp_path / "out.nii.gz", "--model", identity_model)
    assert result.exit_code == EXIT_INVALID_INPUT
    assert "without pixel data" in result.output
