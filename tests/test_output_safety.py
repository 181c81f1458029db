"""Output safety: unwritable folders fail before the work, --overwrite never deletes user data, clear messages."""

from __future__ import annotations

import json
import os
import pickle
import tempfile
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from medgan.cli.errors import EXIT_INVALID_INPUT, EXIT_OUTPUT_EXISTS, EXIT_USAGE_ERROR
from medgan.cli.main import cli
from medgan.export import export_monai_bundle, export_onnx, export_torchscript
from medgan.io import write_volume
from medgan.io.atomic import OutputNotWritableError, atomic_output, check_folder_writable
from medgan.models.card import ModelCard
from medgan.models.files import load_model_files, save_model, sha256_of
from medgan.networks import build_network
from medgan.tasks import get_task

REAL_MKSTEMP = tempfile.mkstemp
REAL_MKDTEMP = tempfile.mkdtemp
REAL_REPLACE = os.replace


def run(*arguments):
    return CliRunner().invoke(cli, [str(a) for a in arguments], catch_exceptions=False)


def identity_file(folder: Path, name: str) -> Path:
    """Write an ldct identity model called ``name``; models of different names have different cards."""
    card = ModelCard(task="ldct", network={"name": "identity", "kwargs": {}},
                     intensity=get_task("ldct").intensity.to_dict(), patch_size=(2, 8, 8), name=name)
    return save_model(build_network("identity"), card, folder / f"{name}.safetensors")


@pytest.fixture
def scan(tmp_path, ct_volume):
    return write_volume(ct_volume, tmp_path / "scan.nii.gz")


@pytest.fixture
def read_only(tmp_path, monkeypatch):
    """Return a folder in which creating a file or folder raises PermissionError, as in an immutable folder."""
    folder = tmp_path / "ro"
    folder.mkdir()

    def denied(dir=None):
        return dir is not None and Path(dir).resolve() == folder.resolve()

    def mkstemp(*args, **kwargs):
        if denied(kwargs.get("dir")):
            raise PermissionError(13, "Permission denied", str(folder / ".tmp-xxxx"))
        return REAL_MKSTEMP(*args, **kwargs)

    def mkdtemp(*args, **kwargs):
        if denied(kwargs.get("dir")):
            raise PermissionError(13, "Permission denied", str(folder / ".tmp-xxxx"))
        return REAL_MKDTEMP(*args, **kwargs)

    original_mkdir = Path.mkdir

    def mkdir(self, *args, **kwargs):
        if self.parent.resolve() == folder.resolve():
            raise PermissionError(13, "Permission denied", str(self))
        return original_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    monkeypatch.setattr(tempfile, "mkdtemp", mkdtemp)
    monkeypatch.setattr(Path, "mkdir", mkdir)
    return folder


@pytest.fixture
def no_model_loading(monkeypatch):
    """Fail the test if a command loads a model, which would mean the output check came after the work."""
    def fail(*args, **kwargs):
        raise AssertionError("the model was loaded before the output folder was checked")

    monkeypatch.setattr("medgan.inference.restorer.load_model", fail)
    monkeypatch.setattr("medgan.export.checks.load_network", fail)
    monkeypatch.setattr("medgan.export.bundle.load_network", fail)


def assert_not_writable_message(result, folder: Path):
    assert result.exit_code == EXIT_OUTPUT_EXISTS, result.output
    assert f"Cannot write to folder {folder}" in result.output
    assert "Permission denied" in result.output
    assert "Choose another output folder" in result.output


# --- atomic_output and the write check ------------------------------------------------------------------------


def test_check_folder_writable_reports_os_error(read_only):
    with pytest.raises(OutputNotWritableError, match="Permission denied") as caught:
        check_folder_writable(read_only)
    assert str(read_only) in str(caught.value)


def test_check_folder_writable_leaves_nothing(tmp_path):
    check_folder_writable(tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("directory", [False, True], ids=["file", "folder"])
def test_atomic_output_unwritable_folder(read_only, directory):
    with pytest.raises(OutputNotWritableError, match="Cannot write to folder"):
        with atomic_output(read_only / "out.nii.gz", overwrite=False, directory=directory):
            raise AssertionError("the block must not run")
    assert list(read_only.iterdir()) == []


def test_atomic_output_failed_replace_is_clear(tmp_path, monkeypatch):
    target = tmp_path / "out.txt"
    target.write_text("old")

    def replace(source, destination):
        if Path(destination) == target:
            raise PermissionError(1, "Operation not permitted")
        return REAL_REPLACE(source, destination)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OutputNotWritableError, match="Operation not permitted") as caught:
        with atomic_output(target, overwrite=True) as temporary:
            temporary.write_text("new")
    assert f"Cannot replace {target}" in str(caught.value)
    assert target.read_text() == "old"
    assert [path.name for path in tmp_path.iterdir()] == ["out.txt"]


# --- medgan infer ---------------------------------------------------------------------------------------------


def test_infer_unwritable_folder_fails_first(tmp_path, scan, read_only, no_model_loading):
    result = run("infer", scan, "-o", read_only / "out.nii.gz")
    assert_not_writable_message(result, read_only)
    assert list(read_only.iterdir()) == []


def test_infer_unwritable_preview_folder(tmp_path, scan, read_only, no_model_loading):
    result = run("infer", scan, "-o", tmp_path / "out.nii.gz", "--preview", read_only / "p.png")
    assert_not_writable_message(result, read_only)
    assert "--preview" in result.output


def test_infer_failed_replace_at_end(tmp_path, scan, identity_model, monkeypatch):
    output = tmp_path / "out.nii.gz"
    output.write_bytes(b"old")

    def replace(source, destination):
        if Path(destination) == output:
            raise PermissionError(1, "Operation not permitted")
        return REAL_REPLACE(source, destination)

    monkeypatch.setattr(os, "replace", replace)
    result = run("infer", scan, "--model", identity_model, "-o", output, "--no-preview", "--overwrite")
    assert result.exit_code == EXIT_OUTPUT_EXISTS, result.output
    assert f"Cannot replace {output}" in result.output
    assert "Operation not permitted" in result.output
    assert output.read_bytes() == b"old"
    assert not [path for path in tmp_path.iterdir() if path.name.startswith(".tmp-")]


@pytest.mark.parametrize("exists", [False, True], ids=["new-folder", "existing-folder"])
def test_infer_cohort_unwritable(tmp_path, scan, read_only, no_model_loading, exists):
    cohort = tmp_path / "scans"
    cohort.mkdir()
    scan.rename(cohort / "a.nii.gz")
    if exists:
        # The cohort folder itself is the one that cannot be written.
        target = read_only
    else:
        target = read_only / "cohort"
    result = run("infer", cohort, "-o", target)
    assert_not_writable_message(result, read_only)
    assert not (read_only / "cohort").exists()


# --- medgan export --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("output_format, name", [("torchscript", "m.ts"), ("onnx", "m.onnx"),
                                                 ("monai-bundle", "bundle")])
def test_export_unwritable_folder(tmp_path, read_only, no_model_loading, output_format, name):
    result = run("export", "ldct-default", "--format", output_format, "-o", read_only / name)
    assert_not_writable_message(result, read_only)


def test_export_run_unwritable_folder(tmp_path, read_only):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("{}\n")
    result = run("export", run_dir, "-o", read_only / "t.safetensors")
    assert_not_writable_message(result, read_only)


@pytest.mark.parametrize("export", [export_torchscript, export_monai_bundle], ids=["torchscript", "bundle"])
def test_library_export_checks_folder(tmp_path, read_only, no_model_loading, export):
    name = "m.ts" if export is export_torchscript else "bundle"
    with pytest.raises(OutputNotWritableError, match="Permission denied"):
        export("ldct-default", read_only / name)


def test_bundle_overwrite_keeps_user_folder(tmp_path):
    model = identity_file(tmp_path, "identity")
    folder = tmp_path / "existing_dir"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a MONAI bundle exported by medgan"):
        export_monai_bundle(model, folder, overwrite=True)
    assert (folder / "notes.txt").read_text() == "mine"

    result = run("export", model, "--format", "monai-bundle", "-o", folder, "--overwrite")
    assert result.exit_code == EXIT_OUTPUT_EXISTS, result.output
    assert str(folder) in result.output
    assert "Choose a new folder name" in result.output
    assert (folder / "notes.txt").read_text() == "mine"


def test_bundle_overwrite_replaces_medgan_bundle(tmp_path):
    model = identity_file(tmp_path, "identity")
    folder = tmp_path / "bundle"
    export_monai_bundle(model, folder)
    (folder / "stale.txt").write_text("from the old bundle")
    export_monai_bundle(model, folder, overwrite=True)
    assert (folder / "configs" / "metadata.json").is_file()
    assert not (folder / "stale.txt").exists()


def test_bundle_with_foreign_metadata_is_kept(tmp_path):
    model = identity_file(tmp_path, "identity")
    folder = tmp_path / "other_bundle"
    (folder / "configs").mkdir(parents=True)
    (folder / "configs" / "metadata.json").write_text(json.dumps({"authors": "someone else"}))
    with pytest.raises(FileExistsError, match="not a MONAI bundle exported by medgan"):
        export_monai_bundle(model, folder, overwrite=True)
    assert (folder / "configs" / "metadata.json").is_file()


def test_shared_card_not_rewritten(tmp_path):
    first = identity_file(tmp_path, "first")
    second = identity_file(tmp_path, "second")
    export_torchscript(first, tmp_path / "m.ts")
    card_text = (tmp_path / "m.json").read_text()

    with pytest.raises(FileExistsError, match="m.ts") as caught:
        export_onnx(second, tmp_path / "m.onnx", overwrite=True)
    assert "Choose another output name" in str(caught.value)
    assert (tmp_path / "m.json").read_text() == card_text
    assert not (tmp_path / "m.onnx").exists()

    result = run("export", second, "--format", "onnx", "-o", tmp_path / "m.onnx", "--overwrite")
    assert result.exit_code == EXIT_OUTPUT_EXISTS, result.output
    assert str(tmp_path / "m.ts") in result.output
    assert (tmp_path / "m.json").read_text() == card_text


def test_shared_card_same_model_allowed(tmp_path):
    first = identity_file(tmp_path, "first")
    export_torchscript(first, tmp_path / "m.ts")
    export_onnx(first, tmp_path / "m.onnx")
    assert ModelCard.read(tmp_path / "m.json").name == "first"


def test_card_of_only_export_replaced(tmp_path):
    first = identity_file(tmp_path, "first")
    second = identity_file(tmp_path, "second")
    export_torchscript(first, tmp_path / "m.ts")
    export_torchscript(second, tmp_path / "m.ts", overwrite=True)
    assert ModelCard.read(tmp_path / "m.json").name == "second"


def test_save_model_keeps_shared_card(tmp_path):
    first = identity_file(tmp_path, "first")
    export_torchscript(first, tmp_path / "m.ts")
    card_text = (tmp_path / "m.json").read_text()
    other = ModelCard(task="ldct", network={"name": "identity", "kwargs": {}},
                      intensity=get_task("ldct").intensity.to_dict(), patch_size=(2, 8, 8), name="other")
    with pytest.raises(FileExistsError, match="m.ts"):
        save_model(build_network("identity"), other, tmp_path / "m.safetensors", overwrite=True)
    assert (tmp_path / "m.json").read_text() == card_text
    assert not (tmp_path / "m.safetensors").exists()


# --- messages -------------------------------------------------------------------------------------------------


def test_output_under_a_file(tmp_path, scan):
    afile = tmp_path / "afile"
    afile.write_text("")
    result = run("infer", scan, "-o", afile / "out.nii.gz")
    assert result.exit_code == EXIT_USAGE_ERROR
    assert "is a file, not a folder" in result.output
    assert "does not exist" not in result.output


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]], ids=["plain", "overwrite"])
def test_export_onto_folder(tmp_path, overwrite):
    folder = tmp_path / "dir.ts"
    folder.mkdir()
    result = run("export", "ldct-default", "--format", "torchscript", "-o", folder, *overwrite)
    assert result.exit_code == EXIT_USAGE_ERROR, result.output
    assert "is a folder" in result.output
    assert "Pass --overwrite" not in result.output


@pytest.mark.parametrize("suffix", [".pt", ".pth"])
def test_checkpoint_as_model(tmp_path, scan, suffix):
    checkpoint = tmp_path / "runs" / "x" / "checkpoints" / f"latest{suffix}"
    checkpoint.parent.mkdir(parents=True)
    torch.save({"step": 1}, checkpoint)
    result = run("infer", scan, "--model", checkpoint, "-o", tmp_path / "out.nii.gz")
    assert result.exit_code == EXIT_INVALID_INPUT, result.output
    assert "training checkpoint" in result.output
    assert "medgan export RUN_DIR -o model.safetensors" in result.output
    assert "latest.json not found" not in result.output


def test_pickle_file_hint(tmp_path):
    path = identity_file(tmp_path, "identity")
    path.write_bytes(pickle.dumps({"weights": [1.0]}))
    card = ModelCard.read(path.with_suffix(".json"))
    card.weights_sha256 = sha256_of(path)
    path.with_suffix(".json").write_text(card.to_json())
    with pytest.raises(ValueError, match="not a valid safetensors file") as caught:
        load_model_files(path)
    assert "PyTorch pickle or checkpoint" in str(caught.value)
    assert "never loads" in str(caught.value)


def test_hash_mismatch_says_what_to_do(tmp_path):
    path = identity_file(tmp_path, "identity")
    card = ModelCard.read(path.with_suffix(".json"))
    card.weights_sha256 = "0" * 64
    path.with_suffix(".json").write_text(card.to_json())
    with pytest.raises(ValueError, match="do not belong together") as caught:
        load_model_files(path)
    assert "Export the model again" in str(caught.value)
    assert "card that was written with these weights" in str(caught.value)
