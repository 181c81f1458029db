"""Tests for ``medgan simulate``: both tasks, the JSON sidecar, byte-identical reruns and output safety."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from medgan import __version__
from medgan.cli.errors import EXIT_OUTPUT_EXISTS, EXIT_USAGE_ERROR
from medgan.cli.main import cli
from medgan.cli.simulate import sidecar_path
from medgan.io import Volume, read_volume, write_volume
from tests.conftest import oblique_affine


def run(*arguments):
    return CliRunner().invoke(cli, [str(a) for a in arguments], catch_exceptions=False)


@pytest.fixture
def scan(tmp_path, ct_volume):
    return write_volume(ct_volume, tmp_path / "scan.nii.gz")


@pytest.fixture
def mr_scan(tmp_path):
    generator = np.random.default_rng(3)
    array = generator.uniform(50, 150, (14, 12, 24)).astype(np.float32)
    volume = Volume(array=array, affine=oblique_affine(spacing_mm=(1.0, 1.0, 1.0)), modality="MR")
    return write_volume(volume, tmp_path / "t1.nii.gz")


def test_sidecar_path_replaces_volume_suffix(tmp_path):
    assert sidecar_path(tmp_path / "low.nii.gz") == tmp_path / "low.json"
    assert sidecar_path(tmp_path / "low.v2.nrrd") == tmp_path / "low.v2.json"


def test_ldct_writes_sidecar_and_is_byte_identical(tmp_path, scan, ct_volume):
    arguments = ("--dose-fraction", 0.25, "--views", 60, "--seed", 7)
    first = tmp_path / "first.nii.gz"
    second = tmp_path / "second.nii.gz"
    other = tmp_path / "other.nii.gz"

    assert run("simulate", scan, "-o", first, *arguments).exit_code == 0
    assert run("simulate", scan, "-o", second, *arguments).exit_code == 0
    assert run("simulate", scan, "-o", other, "--dose-fraction", 0.25, "--views", 60, "--seed", 8).exit_code == 0

    # nibabel writes gzip with a zero timestamp, so the compressed files themselves are identical.
    assert first.read_bytes() == second.read_bytes()
    assert first.read_bytes() != other.read_bytes()
    record = json.loads((tmp_path / "first.json").read_text())
    assert record["medgan_version"] == __version__
    assert record["task"] == "ldct"
    assert record["input"] == str(scan.resolve())
    assert record["seed"] == 7
    assert record["parameters"]["dose_fraction"] == 0.25
    assert record["parameters"]["n_views"] == 60
    assert record["parameters"]["geometry"] == "parallel"
    assert record["parameters"]["assume_noiseless_input"] is True
    assert record["output_shape"] == list(ct_volume.shape)
    second_record = json.loads((tmp_path / "second.json").read_text())
    assert {**record, "output": ""} == {**second_record, "output": ""}
    low = read_volume(first)
    np.testing.assert_allclose(low.affine, ct_volume.affine, atol=1e-6)


def test_ldct_rerun_with_overwrite_is_identical(tmp_path, scan):
    output = tmp_path / "low.nii.gz"
    arguments = ("--dose-fraction", 0.5, "--views", 40, "--geometry", "fan", "--insert-noise",
                 "--bowtie-edge-fraction", 0.3, "--filter", "hann")

    assert run("simulate", scan, "-o", output, *arguments).exit_code == 0
    volume_bytes = output.read_bytes()
    sidecar_bytes = (tmp_path / "low.json").read_bytes()
    assert run("simulate", scan, "-o", output, *arguments, "--overwrite").exit_code == 0

    assert output.read_bytes() == volume_bytes
    assert (tmp_path / "low.json").read_bytes() == sidecar_bytes
    parameters = json.loads(sidecar_bytes)["parameters"]
    assert parameters["geometry"] == "fan"
    assert parameters["assume_noiseless_input"] is False
    assert parameters["bowtie_photons_fraction_at_edge"] == 0.3
    assert parameters["filter_name"] == "hann"


def test_simulate_refuses_to_overwrite(tmp_path, scan):
    output = tmp_path / "low.nii.gz"
    output.write_bytes(b"precious")

    result = run("simulate", scan, "-o", output, "--dose-fraction", 0.5, "--views", 30)

    assert result.exit_code == EXIT_OUTPUT_EXISTS
    assert "--overwrite" in result.output
    assert output.read_bytes() == b"precious"
    assert not (tmp_path / "low.json").exists()


def test_simulate_refuses_existing_sidecar(tmp_path, scan):
    output = tmp_path / "low.nii.gz"
    (tmp_path / "low.json").write_text("{}")

    result = run("simulate", scan, "-o", output, "--dose-fraction", 0.5, "--views", 30)

    assert result.exit_code == EXIT_OUTPUT_EXISTS
    assert "sidecar" in result.output
    assert not output.exists()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ((), "--dose-fraction"),
        (("--dose-fraction", 0.5, "--slice-thickness-mm", 4), "--slice-thickness-mm"),
        (("--task", "mri-sr"), "--slice-thickness-mm"),
        (("--task", "mri-sr", "--slice-thickness-mm", 4, "--dose-fraction", 0.5), "--dose-fraction"),
        (("--task", "mri-sr", "--slice-thickness-mm", 4, "--geometry", "fan"), "--geometry"),
        (("--task", "mri-sr", "--slice-thickness-mm", 4, "--insert-noise"), "--insert-noise"),
    ],
)
def test_simulate_usage_errors(tmp_path, scan, arguments, message):
    result = run("simulate", scan, "-o", tmp_path / "out.nii.gz", *arguments)

    assert result.exit_code == EXIT_USAGE_ERROR
    assert message in result.output
    assert not (tmp_path / "out.nii.gz").exists()


def test_mri_thick_slices_geometry_and_sidecar(tmp_path, mr_scan):
    output = tmp_path / "t1_4mm.nii.gz"

    result = run("simulate", mr_scan, "-o", output, "--task", "mri-sr", "--slice-thickness-mm", 4,
                 "--slice-axis", "k")

    assert result.exit_code == 0, result.output
    source = read_volume(mr_scan)
    low = read_volume(output)
    # 24 slices of 1 mm hold 6 slabs of 4 mm; slab 0 averages slices 0-3 and sits at index 1.5.
    assert low.shape == (14, 12, 6)
    np.testing.assert_allclose(low.affine[:3, 2], 4 * source.affine[:3, 2], atol=1e-5)
    np.testing.assert_allclose(low.affine[:3, 3], source.affine[:3, 3] + 1.5 * source.affine[:3, 2], atol=1e-4)
    np.testing.assert_allclose(low.array[..., 0], source.array[..., :4].mean(axis=2), rtol=1e-5)
    record = json.loads((tmp_path / "t1_4mm.json").read_text())
    assert record["task"] == "mri-sr"
    assert record["parameters"]["steps"][0]["transform"] == "ThickSliceMRI"
    assert record["parameters"]["steps"][0]["slice_axis"] == 2
    assert record["output_shape"] == [14, 12, 6]


def test_mri_with_noise_is_byte_identical(tmp_path, mr_scan):
    arguments = ("--task", "mri-sr", "--slice-thickness-mm", 3, "--slice-axis", "i", "--profile", "gaussian",
                 "--kspace-keep-fraction", 0.5, "--snr", 15, "--seed", 4)
    first = tmp_path / "a.nii"
    second = tmp_path / "b.nii"

    assert run("simulate", mr_scan, "-o", first, *arguments).exit_code == 0
    assert run("simulate", mr_scan, "-o", second, *arguments).exit_code == 0
    assert run("simulate", mr_scan, "-o", tmp_path / "c.nii", *arguments[:-1], 5).exit_code == 0

    assert first.read_bytes() == second.read_bytes()
    assert first.read_bytes() != (tmp_path / "c.nii").read_bytes()
    steps = json.loads((tmp_path / "a.json").read_text())["parameters"]["steps"]
    assert [step["transform"] for step in steps] == ["KSpaceTruncationMRI", "ThickSliceMRI", "RicianNoiseMRI"]
    assert steps[0]["axes"] == [1, 2]


def test_mri_original_grid_keeps_shape(tmp_path, mr_scan):
    output = tmp_path / "t1_orig.nii.gz"

    result = run("simulate", mr_scan, "-o", output, "--task", "mri-sr", "--slice-thickness-mm", 5,
                 "--output-grid", "original")

    assert result.exit_code == 0, result.output
    source = read_volume(mr_scan)
    low = read_volume(output)
    assert low.shape == source.shape
    np.testing.assert_allclose(low.affine, source.affine, atol=1e-5)
