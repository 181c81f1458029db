"""Training data sources: manifests, paired-folders discovery, the patient split and its reuse on resume."""

import json

import numpy as np
import pytest

from medgan.config import load_config
from medgan.io import Volume, write_volume
from medgan.training.manifests import discover_paired_folders, read_pairs_manifest
from medgan.training.setup import build_trainer
from medgan.training.split import PatientSplit, draw_split, resolve_split
from tests.conftest import oblique_affine
from tests.test_io import write_ct_series

ORIENTATION = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
FULL = ["*full*", "*FD*"]
LOW = ["*low*", "*QD*"]


def write_series(folder, description, series_uid=None, slices=3, seed=0):
    positions = [np.array([0.0, 0.0, 2.5 * index]) for index in range(slices)]
    return write_ct_series(folder, positions=positions, orientation=ORIENTATION, description=description,
                           series_uid=series_uid, seed=seed)


def ct_volume(seed: int) -> Volume:
    rng = np.random.default_rng(seed)
    array = np.full((12, 12, 4), -1000.0, dtype=np.float32)
    array[2:10, 2:10] = rng.normal(40.0, 10.0, (8, 8, 4))
    return Volume(array, oblique_affine((1.5, 1.5, 2.0)), "CT")


def test_paired_folders_subfolder_layout(tmp_path):
    write_series(tmp_path / "L001" / "full_1mm", "FULL DOSE", seed=1)
    write_series(tmp_path / "L001" / "quarter_1mm", "QD", seed=2)
    write_series(tmp_path / "L002" / "a", "Abdomen FD 1.0 B30f", seed=3)
    write_series(tmp_path / "L002" / "b", "Abdomen QD 1.0 B30f", seed=4)
    entries = discover_paired_folders(tmp_path, FULL, ["*low*", "*QD*", "*quarter*"])
    assert [e.patient for e in entries] == ["L001", "L002"]
    assert entries[0].high.path.name == "full_1mm"
    assert entries[0].low.path.name == "quarter_1mm"
    assert entries[1].high.path.name == "a"  # matched by SeriesDescription
    high, low = entries[1].high.read(), entries[1].low.read()
    assert high.shape == low.shape == (7, 5, 3)


def test_paired_folders_mixed_series_in_one_folder(tmp_path):
    full = write_series(tmp_path / "P1", "full dose", seed=1)
    low = write_series(tmp_path / "P1", "low dose", seed=2)
    (entry,) = discover_paired_folders(tmp_path, FULL, LOW)
    assert entry.high.series_uid == full["series_uid"]
    assert entry.low.series_uid == low["series_uid"]
    volume = entry.low.read()
    expected = np.stack(low["hu"], axis=-1).transpose(1, 0, 2)  # (rows, columns) slices -> (i, j, k)
    assert np.allclose(volume.array, expected)


def test_paired_folders_rejects_two_low_dose_series(tmp_path):
    write_series(tmp_path / "P1" / "full", "FD", seed=1)
    write_series(tmp_path / "P1" / "low_a", "QD", seed=2)
    write_series(tmp_path / "P1" / "low_b", "QD", seed=3)
    with pytest.raises(ValueError, match="Patient P1 must have exactly one") as error:
        discover_paired_folders(tmp_path, FULL, LOW)
    assert "2 matching data.low_dose_patterns" in str(error.value)
    assert "low_a" in str(error.value)
    assert "low_b" in str(error.value)


def test_paired_folders_rejects_missing_full_dose(tmp_path):
    write_series(tmp_path / "P1" / "low", "something", seed=2)
    with pytest.raises(ValueError, match="found 0 matching data.full_dose_patterns"):
        discover_paired_folders(tmp_path, FULL, LOW)


def test_paired_folders_rejects_different_grids(tmp_path):
    write_series(tmp_path / "P1" / "full", "FD", slices=3, seed=1)
    write_series(tmp_path / "P1" / "low", "QD", slices=4, seed=2)
    config = load_config(None, ["data.mode=paired-folders", f"data.root={tmp_path}", "data.patch_size=[2, 4, 4]",
                                "generator.kwargs={channels: 4, depth: 1}"])
    with pytest.raises(ValueError, match="must share one grid"):
        build_trainer(config, tmp_path / "run")


def test_manifest_json_and_csv_agree(tmp_path):
    (tmp_path / "pairs.csv").write_text("patient,low,high\nA,a_low.nii.gz,a_high.nii.gz\nA,b_low.nii.gz,b_high.nii.gz\n")
    (tmp_path / "pairs.json").write_text(json.dumps([
        {"patient": "A", "low": "a_low.nii.gz", "high": "a_high.nii.gz"},
        {"patient": "A", "low": "b_low.nii.gz", "high": "b_high.nii.gz"}]))
    from_csv = read_pairs_manifest(tmp_path / "pairs.csv")
    from_json = read_pairs_manifest(tmp_path / "pairs.json")
    assert from_csv == from_json
    assert [e.patient for e in from_csv] == ["A", "A"]
    assert from_csv[0].low.path == tmp_path / "a_low.nii.gz"


def test_manifest_rejects_empty_path(tmp_path):
    (tmp_path / "pairs.json").write_text(json.dumps([{"low": "", "high": "x.nii.gz"}]))
    with pytest.raises(ValueError, match="entry 1: 'low' must be a non-empty path"):
        read_pairs_manifest(tmp_path / "pairs.json")


def test_split_is_disjoint_and_seeded():
    patients = [f"P{index:02d}" for index in range(10)]
    split = draw_split(patients, 0.3, seed=5)
    assert len(split.validation) == 3
    assert not set(split.train) & set(split.validation)
    assert sorted(split.train + split.validation) == patients
    assert draw_split(list(reversed(patients)), 0.3, seed=5) == split


def test_split_rejects_fraction_leaving_no_training():
    with pytest.raises(ValueError, match="leaves no patient to train on"):
        draw_split(["A"], 0.5, seed=0)


def paired_manifest(tmp_path, n_patients=4, rows_per_patient=2):
    (tmp_path / "data").mkdir()
    lines = ["patient,low,high"]
    for patient in range(n_patients):
        for row in range(rows_per_patient):
            high = ct_volume(10 * patient + row)
            low = high.with_array(high.array + 30.0)
            name = f"p{patient}_{row}"
            write_volume(high, tmp_path / "data" / f"{name}_high.nii.gz")
            write_volume(low, tmp_path / "data" / f"{name}_low.nii.gz")
            lines.append(f"patient{patient},{name}_low.nii.gz,{name}_high.nii.gz")
    (tmp_path / "data" / "pairs.csv").write_text("\n".join(lines) + "\n")
    return tmp_path / "data" / "pairs.csv"


def paired_config(manifest, extra=()):
    return load_config(None, [
        "data.mode=paired", f"data.manifest={manifest}", "data.validation_fraction=0.25",
        "data.patch_size=[2, 8, 8]", "generator.kwargs={channels: 4, depth: 1}",
        "critic.kwargs={in_channels: 2, channels: 2, n_layers: 1}", "train.steps=1", "train.warmup_steps=1",
        "train.batch_size=1", "train.validate_every=1", "train.tensorboard=false", *extra])


def test_split_recorded_by_patient(tmp_path):
    manifest = paired_manifest(tmp_path)
    trainer = build_trainer(paired_config(manifest), tmp_path / "run")
    assert len(trainer.validation) == 2  # both rows of the one held-out patient
    assert len(trainer.sample_batch.high) == 6
    trainer.fit()
    recorded = PatientSplit.read(tmp_path / "run" / "split.json")
    assert len(recorded.validation) == 1
    assert len(recorded.train) == 3
    assert {case.name for case in trainer.validation} == set(recorded.validation)


def test_resume_reuses_recorded_split(tmp_path):
    manifest = paired_manifest(tmp_path)
    first = build_trainer(paired_config(manifest), tmp_path / "run")
    first.fit()
    recorded = PatientSplit.read(tmp_path / "run" / "split.json")
    # Another seed would draw another split; a resumed run keeps the recorded one.
    changed = paired_config(manifest, ["seed=7", "train.steps=2"])
    assert draw_split([f"patient{i}" for i in range(4)], 0.25, 7).validation != recorded.validation
    resumed = build_trainer(changed, tmp_path / "run", resume=True)
    assert resumed.split.validation == recorded.validation
    fresh = build_trainer(changed, tmp_path / "other")
    assert fresh.split.validation != recorded.validation


def test_resume_rejects_split_with_vanished_patient(tmp_path):
    PatientSplit(["A", "B"], ["C"], 0, 0.3).write(tmp_path)
    with pytest.raises(ValueError, match="patient\\(s\\) C that the data no longer contains"):
        resolve_split(["A", "B"], 0.3, 0, tmp_path, resume=True)


def test_resume_puts_new_patient_in_training(tmp_path):
    PatientSplit(["A", "B"], ["C"], 0, 0.3).write(tmp_path)
    split = resolve_split(["A", "B", "C", "D"], 0.3, 0, tmp_path, resume=True)
    assert split.train == ["A", "B", "D"]
    assert split.validation == ["C"]
