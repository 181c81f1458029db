"""``medgan infer`` on cohorts (folders and list files), sharding by rank, and the JSON sidecar."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from medgan.cli.errors import EXIT_INVALID_INPUT
from medgan.cli.main import cli
from medgan.inference.cohort import CohortEntry, is_cohort_input, list_cohort, shard_for_rank
from medgan.io import read_volume, write_volume
from medgan.models import ModelCard, save_model
from medgan.networks import build_network
from medgan.tasks import get_task


@pytest.fixture
def identity_model(tmp_path):
    card = ModelCard(task="ldct", network={"name": "identity", "kwargs": {}},
                     intensity=get_task("ldct").intensity.to_dict(), patch_size=(2, 8, 8), name="identity")
    folder = tmp_path / "model"
    folder.mkdir()
    return save_model(build_network("identity"), card, folder / "identity.safetensors")


@pytest.fixture
def cohort(tmp_path, ct_volume):
    folder = tmp_path / "scans"
    folder.mkdir()
    write_volume(ct_volume, folder / "a.nii.gz")
    (folder / "b.nii.gz").write_bytes(b"this is not a NIfTI file")
    write_volume(ct_volume.with_array(ct_volume.array + 10), folder / "c.nrrd")
    return folder


def run(*arguments, env=None):
    return CliRunner().invoke(cli, [str(a) for a in arguments], catch_exceptions=False, env=env)


def test_cohort_skips_corrupt_file_and_reports_it(tmp_path, cohort, identity_model, ct_volume):
    output = tmp_path / "restored"
    result = run("infer", cohort, "-o", output, "--model", identity_model, "--no-preview", "--roi", 2, 8, 8)

    assert result.exit_code == EXIT_INVALID_INPUT, result.output
    assert "2 done, 0 skipped, 1 failed" in result.output
    assert "b.nii.gz" in result.output
    assert "Failed to read NIfTI file" in result.output
    assert sorted(p.name for p in output.iterdir()) == ["a_restored.json", "a_restored.nii.gz", "c_restored.json",
                                                        "c_restored.nii.gz"]
    assert np.array_equal(read_volume(output / "a_restored.nii.gz").array, ct_volume.array)
    assert np.array_equal(read_volume(output / "c_restored.nii.gz").array, ct_volume.array + 10)


def test_cohort_never_overwrites_without_flag(tmp_path, cohort, identity_model):
    output = tmp_path / "restored"
    run("infer", cohort, "-o", output, "--model", identity_model, "--no-preview")
    (output / "a_restored.nii.gz").write_bytes(b"precious")

    again = run("infer", cohort, "-o", output, "--model", identity_model, "--no-preview")
    assert "0 done, 2 skipped, 1 failed" in again.output
    assert "--overwrite" in again.output
    assert (output / "a_restored.nii.gz").read_bytes() == b"precious"

    forced = run("infer", cohort, "-o", output, "--model", identity_model, "--no-preview", "--overwrite")
    assert "2 done, 0 skipped, 1 failed" in forced.output
    assert (output / "a_restored.nii.gz").read_bytes() != b"precious"


def test_cohort_list_file_resolves_relative_paths(tmp_path, cohort, identity_model):
    listing = tmp_path / "scans.txt"
    listing.write_text("# the good scans\nscans/a.nii.gz\n\nscans/missing.nii.gz\n" + str(cohort / "c.nrrd") + "\n")
    output = tmp_path / "out"
    result = run("infer", listing, "-o", output, "--model", identity_model, "--no-preview")
    assert result.exit_code == EXIT_INVALID_INPUT
    assert "2 done, 0 skipped, 1 failed" in result.output
    assert "listed path does not exist" in result.output
    assert (output / "a_restored.nii.gz").is_file()


def test_cohort_all_good_exits_zero_with_previews(tmp_path, ct_volume, identity_model):
    folder = tmp_path / "good"
    folder.mkdir()
    write_volume(ct_volume, folder / "x.mha")
    (folder / "notes.md").write_text("not a scan")
    output = tmp_path / "out"
    result = run("infer", folder, "-o", output, "--model", identity_model, "--threads", 1)
    assert result.exit_code == 0, result.output
    assert "1 done, 1 skipped, 0 failed" in result.output
    assert (output / "x_restored_preview.png").is_file()


def test_cohort_requires_output_folder(cohort, identity_model):
    result = run("infer", cohort, "--model", identity_model)
    assert result.exit_code == 2
    assert "output folder" in result.output


def test_dicom_series_folder_is_not_a_cohort(tmp_path):
    import pydicom

    series = tmp_path / "series"
    series.mkdir()
    pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm")).save_as(series / "slice.dcm")
    assert not is_cohort_input(series)
    assert is_cohort_input(tmp_path)  # a folder holding a series folder
    listing = tmp_path / "list.txt"
    listing.write_text(str(series))
    assert is_cohort_input(listing)


@pytest.mark.parametrize("world_size", [1, 2, 3, 5])
def test_shards_are_disjoint_and_cover_all(world_size):
    entries = [CohortEntry(path) for path in sorted(map(str, range(11)))]
    shards = [shard_for_rank(entries, {"RANK": str(rank), "WORLD_SIZE": str(world_size)})[0]
              for rank in range(world_size)]
    seen = [entry.path for shard in shards for entry in shard]
    assert sorted(seen) == sorted(entry.path for entry in entries)
    assert len(seen) == len(set(seen))
    assert shards[0][0] == entries[0]


def test_shard_without_torchrun_takes_everything():
    entries = [CohortEntry("a"), CohortEntry("b")]
    assert shard_for_rank(entries, {}) == (entries, 0, 1)


@pytest.mark.parametrize("environment", [{"RANK": "0"}, {"RANK": "2", "WORLD_SIZE": "2"}, {"RANK": "x", "WORLD_SIZE": "2"}])
def test_shard_rejects_bad_environment(environment):
    with pytest.raises(ValueError, match="RANK"):
        shard_for_rank([CohortEntry("a")], environment)


def test_cohort_rank_processes_its_share(tmp_path, cohort, identity_model):
    output = tmp_path / "restored"
    result = run("infer", cohort, "-o", output, "--model", identity_model, "--no-preview",
                 env={"RANK": "1", "WORLD_SIZE": "2"})
    # Sorted entries a.nii.gz, b.nii.gz, c.nrrd: rank 1 of 2 takes b.nii.gz only.
    assert "rank 1 of 2" in result.output
    assert "0 done, 0 skipped, 1 failed" in result.output
    assert result.exit_code == EXIT_INVALID_INPUT
    assert list_cohort(cohort)[1].path.name == "b.nii.gz"


def test_single_scan_writes_sidecar(tmp_path, ct_volume, identity_model):
    pytest.importorskip("medgan.evaluation.fidelity")
    scan = write_volume(ct_volume, tmp_path / "scan.nii.gz")
    output = tmp_path / "out.nii.gz"
    result = run("infer", scan, "-o", output, "--model", identity_model, "--no-preview", "--roi", 2, 8, 8,
                 "--overlap", 0.5, "--precision", "bf16")
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "out.json").read_text())
    assert record["model"]["name"] == "identity"
    assert record["model"]["weights_sha256"] == json.loads(identity_model.with_suffix(".json").read_text())[
        "weights_sha256"]
    assert record["input"] == str(scan.resolve())
    assert record["precision"] == "bf16"
    assert record["roi_dhw_voxels"] == [2, 8, 8]
    assert record["overlap"] == 0.5
    assert record["output_scale_ijk"] == [1, 1, 1]
    assert record["wall_time_s"] >= 0
    assert isinstance(record["fidelity"]["warnings"], list)

    again = run("infer", scan, "-o", tmp_path / "other.nii.gz", "--model", identity_model, "--no-preview")
    assert again.exit_code == 0
    (tmp_path / "third.json").write_text("{}")
    blocked = run("infer", scan, "-o", tmp_path / "third.nii.gz", "--model", identity_model, "--no-preview")
    assert blocked.exit_code == 4
    assert not (tmp_path / "third.nii.gz").exists()


def test_adapt_records_the_fine_tuning_in_the_sidecar(tmp_path):
    """--adapt fine-tunes a copy on the scan, keeps the input grid, and records the run in the sidecar."""
    import json
    from importlib import resources

    from click.testing import CliRunner

    from medgan.cli.main import cli
    from medgan.io import read_volume

    scan = resources.files("medgan.data") / "ct_small_quarter_dose.nii.gz"
    output = tmp_path / "adapted.nii.gz"
    result = CliRunner().invoke(cli, ["-q", "infer", str(scan), "-o", str(output), "--no-preview", "--adapt",
                                      "--adapt-minutes", "0.05"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "adapted.json").read_text())
    assert record["adaptation"]["steps"] >= 1
    assert record["adaptation"]["budget_minutes"] == 0.05
    restored, original = read_volume(output), read_volume(str(scan))
    assert restored.shape == original.shape
    assert (restored.affine == original.affine).all()
