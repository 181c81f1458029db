"""Tests for `medgan infer` with DICOM output (--format dicom) and --resample-z."""

from __future__ import annotations

import json

import numpy as np
import pydicom
import pytest
from click.testing import CliRunner
from test_io import AXIAL, axial_positions, parsed, rotation, write_ct_series

from medgan.cli.errors import EXIT_INVALID_INPUT, EXIT_OUTPUT_EXISTS, EXIT_USAGE_ERROR
from medgan.cli.main import cli
from medgan.io import read_volume, write_volume


@pytest.fixture
def series(tmp_path):
    matrix = rotation(15, -10, 25)
    orientation = [*matrix[:, 0], *matrix[:, 1]]
    normal = np.cross(parsed(orientation)[:3], parsed(orientation)[3:])
    positions = [np.array([-20.0, 35.5, 80.0]) + 2.0 * s * normal for s in (2, 0, 3, 1)]
    folder = tmp_path / "series"
    write_ct_series(folder, positions=positions, orientation=orientation, rows=9, columns=11)
    return folder


def run(*arguments):
    return CliRunner().invoke(cli, [str(a) for a in arguments], catch_exceptions=False)


def test_dicom_in_folder_out_defaults_to_dicom(tmp_path, series, identity_model):
    output = tmp_path / "restored"
    result = run("infer", series, "-o", output, "--model", identity_model)
    assert result.exit_code == 0, result.output

    expected = read_volume(series)
    restored = read_volume(output)
    assert restored.shape == expected.shape
    np.testing.assert_allclose(restored.affine, expected.affine, atol=1e-4)
    assert np.array_equal(restored.array, np.rint(expected.array))
    assert (tmp_path / "restored_preview.png").is_file()

    first = pydicom.dcmread(output / "IM000001.dcm")
    assert first.StudyInstanceUID == pydicom.dcmread(next(series.iterdir())).StudyInstanceUID
    assert first.SeriesInstanceUID != expected.metadata["series_instance_uid"]
    assert "identity" in first.SeriesDescription


def test_explicit_format_dicom(tmp_path, series, identity_model):
    output = tmp_path / "restored.v2"
    result = run("infer", series, "-o", output, "--format", "dicom", "--model", identity_model, "--no-preview")
    assert result.exit_code == 0, result.output
    assert len(list(output.iterdir())) == 4
    assert not (tmp_path / "restored.v2_preview.png").exists()


def test_dicom_in_nifti_suffix_still_nifti(tmp_path, series, identity_model):
    output = tmp_path / "restored.nii.gz"
    result = run("infer", series, "-o", output, "--model", identity_model, "--no-preview")
    assert result.exit_code == 0, result.output
    assert output.is_file()
    assert read_volume(output).metadata["format"] == "nifti"


def test_existing_output_folder_exit_code(tmp_path, series, identity_model):
    output = tmp_path / "restored"
    output.mkdir()
    (output / "keep.txt").write_text("precious")

    result = run("infer", series, "-o", output, "--model", identity_model, "--no-preview")
    assert result.exit_code == EXIT_OUTPUT_EXISTS
    assert "--overwrite" in result.output
    assert [path.name for path in output.iterdir()] == ["keep.txt"]

    result = run("infer", series, "-o", output, "--model", identity_model, "--no-preview", "--overwrite")
    assert result.exit_code == 0, result.output
    assert sorted(path.name for path in output.iterdir()) == [f"IM00000{k}.dcm" for k in range(1, 5)]


def test_format_dicom_with_file_suffix_is_usage_error(tmp_path, series, identity_model):
    result = run("infer", series, "-o", tmp_path / "out.nii.gz", "--format", "dicom", "--model", identity_model)
    assert result.exit_code == EXIT_USAGE_ERROR
    assert "writes a folder" in result.output


def test_format_dicom_for_nifti_input_is_usage_error(tmp_path, series, identity_model):
    scan = write_volume(read_volume(series), tmp_path / "scan.nii.gz")
    result = run("infer", scan, "-o", tmp_path / "out", "--format", "dicom", "--model", identity_model)
    assert result.exit_code == EXIT_USAGE_ERROR
    assert "not DICOM" in result.output


def test_format_suffix_mismatch_is_usage_error(tmp_path, series, identity_model):
    result = run("infer", series, "-o", tmp_path / "out.nii.gz", "--format", "nrrd", "--model", identity_model)
    assert result.exit_code == EXIT_USAGE_ERROR
    assert "nrrd suffix" in result.output


def test_output_folder_for_file_format_is_usage_error(tmp_path, series, identity_model):
    scan = write_volume(read_volume(series), tmp_path / "scan.nii.gz")
    result = run("infer", scan, "-o", tmp_path / "out", "--model", identity_model)
    assert result.exit_code == EXIT_USAGE_ERROR
    assert "unsupported suffix" in result.output


def test_resample_z_fills_missing_slice(tmp_path, identity_model):
    positions = axial_positions(5)
    del positions[2]
    write_ct_series(tmp_path / "gappy", positions=positions, orientation=AXIAL)

    rejected = run("infer", tmp_path / "gappy", "-o", tmp_path / "a.nii.gz", "--model", identity_model)
    assert rejected.exit_code == EXIT_INVALID_INPUT
    assert "--resample-z" in rejected.output

    output = tmp_path / "restored"
    result = run("infer", tmp_path / "gappy", "-o", output, "--resample-z", "--model", identity_model,
                 "--no-preview")
    assert result.exit_code == 0, result.output
    restored = read_volume(output)
    assert restored.shape == (7, 5, 5)
    assert restored.spacing_mm[2] == pytest.approx(2.5)


def test_dicom_records_strength_and_adaptation(tmp_path, series):
    output = tmp_path / "blended"
    result = run("infer", series, "-o", output, "--format", "dicom", "--strength", "0.6", "--adapt",
                 "--adapt-minutes", "0.05", "--no-preview")
    assert result.exit_code == 0, result.output

    first = pydicom.dcmread(sorted(output.iterdir())[0])
    assert "ldct-default strength 0.6 adapted" in first.SeriesDescription
    assert "ldct-default strength 0.6 adapted" in first.DerivationDescription
    sidecar = json.loads((tmp_path / "blended.json").read_text())
    assert sidecar["derived_series_instance_uid"] == first.SeriesInstanceUID
    adapted_hash = sidecar["adaptation"]["adapted_weights_sha256"]
    assert len(adapted_hash) == 64
    assert adapted_hash != sidecar["model"]["weights_sha256"]
    assert sidecar["source_series_instance_uid"] == pydicom.dcmread(sorted(series.iterdir())[0]).SeriesInstanceUID
