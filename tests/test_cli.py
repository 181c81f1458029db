
import numpy as np
import pydicom
import pytest
from click.testing import CliRunner

from medgan import __version__
from medgan.cli.errors import EXIT_INVALID_INPUT, EXIT_OUTPUT_EXISTS
from medgan.cli.main import cli
from medgan.io import read_volume, write_volume


@pytest.fixture
def scan(tmp_path, ct_volume):
    return write_volume(ct_volume, tmp_path / "scan.nii.gz")


def run(*arguments):
    return CliRunner().invoke(cli, [str(a) for a in arguments], catch_exceptions=False)


def test_version_and_help():
    assert __version__ in run("--version").output
    result = run("infer", "--help")
    assert result.exit_code == 0
    assert "voxels" in result.output
    assert "--overwrite" in result.output


def test_infer_identity_keeps_geometry_and_values(tmp_path, scan, identity_model, ct_volume):
    output = tmp_path / "out.nii.gz"
    result = run("infer", scan, "-o", output, "--model", identity_model, "--device", "cpu", "--roi", 2, 8, 8)
    assert result.exit_code == 0, result.output
    restored = read_volume(output)
    assert np.array_equal(restored.array, ct_volume.array)
    assert np.allclose(restored.affine, ct_volume.affine, atol=1e-6)
    assert (tmp_path / "out_preview.png").is_file()


def test_infer_refuses_overwrite(tmp_path, scan, identity_model):
    output = tmp_path / "out.nii.gz"
    output.write_bytes(b"precious")
    result = run("infer", scan, "-o", output, "--model", identity_model)
    assert result.exit_code == EXIT_OUTPUT_EXISTS
    assert "--overwrite" in result.output
    assert output.read_bytes() == b"precious"
    assert run("infer", scan, "-o", output, "--model", identity_model, "--overwrite").exit_code == 0
    assert output.read_bytes() != b"precious"


def test_infer_bad_input_exit_code_and_no_output(tmp_path, identity_model):
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"not a nifti file")
    output = tmp_path / "out.nii.gz"
    result = run("infer", broken, "-o", output, "--model", identity_model)
    assert result.exit_code == EXIT_INVALID_INPUT
    assert "broken.nii.gz" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.nii.gz", "identity.json", "identity.safetensors"]


def test_infer_unknown_model_is_usage_error(tmp_path, scan):
    result = run("infer", scan, "-o", tmp_path / "o.nii.gz", "--model", "no-such-model")
    assert result.exit_code == 2
    assert "no-such-model" in result.output


def test_infer_rejects_unsupported_suffix(tmp_path, scan, identity_model):
    result = run("infer", scan, "-o", tmp_path / "out.png", "--model", identity_model)
    assert result.exit_code == 2
    assert ".nii.gz" in result.output


def test_infer_dicom_folder(tmp_path, identity_model):
    source = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm"))
    folder = tmp_path / "series"
    folder.mkdir()
    source.save_as(folder / "slice.dcm")
    expected = read_volume(folder)
    output = tmp_path / "out.nii.gz"
    result = run("infer", folder, "-o", output, "--model", identity_model, "--no-preview")
    assert result.exit_code == 0, result.output
    restored = read_volume(output)
    assert np.array_equal(restored.array, expected.array)
    assert np.allclose(restored.affine, expected.affine, atol=1e-5)
    assert not (tmp_path / "out_preview.png").exists()


def test_simulate_writes_noisier_volume(tmp_path, scan, ct_volume):
    output = tmp_path / "low.nii.gz"
    result = run("simulate", scan, "-o", output, "--dose-fraction", 0.25, "--views", 60)
    assert result.exit_code == 0, result.output
    low = read_volume(output)
    assert low.shape == ct_volume.shape
    assert np.allclose(low.affine, ct_volume.affine, atol=1e-6)
    assert not np.array_equal(low.array, ct_volume.array)


def test_train_rejects_bad_config(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("task: ldct\ndata:\n  volumes: [x]\ntrain:\n  stepz: 3\n")
    result = run("train", "--config", config, "--run-dir", tmp_path / "run")
    assert result.exit_code == EXIT_INVALID_INPUT
    assert "stepz" in result.output


def test_infer_rejects_other_modality(tmp_path, identity_model):
    mr = tmp_path / "mr"
    mr.mkdir()
    pydicom.dcmread(pydicom.data.get_testdata_file("MR_small.dcm")).save_as(mr / "slice.dcm")
    output = tmp_path / "out.nii.gz"
    result = run("infer", mr, "-o", output, "--model", identity_model, "--no-preview")
    assert result.exit_code == EXIT_INVALID_INPUT
    assert "--ignore-modality" in result.output
    assert not output.exists()
    forced = run("infer", mr, "-o", output, "--model", identity_model, "--no-preview", "--ignore-modality")
    assert forced.exit_code == 0, forced.output


@pytest.mark.parametrize(
    "preview, word",
    [
        ("p.jpg", ".png"),  # not a PNG name
        ("missing/p.png", "does not exist"),  # folder missing
        ("scan.nii.gz", ".png"),  # would replace the input
    ],
)
def test_infer_checks_preview_before_work(tmp_path, scan, identity_model, preview, word):
    before = scan.read_bytes()
    output = tmp_path / "out.nii.gz"
    result = run("infer", scan, "-o", output, "--model", identity_model, "--preview", tmp_path / preview,
                 "--overwrite")
    assert result.exit_code == 2
    assert word in result.output
    assert not output.exists()
    assert scan.read_bytes() == before


def test_infer_unavailable_device_is_usage_error(tmp_path, scan, identity_model):
    result = run("infer", scan, "-o", tmp_path / "o.nii.gz", "--model", identity_model, "--device", "mps")
    assert result.exit_code == 2
    assert "--device" in result.output


def test_failed_resume_leaves_run_untouched(tmp_path):
    from tests.test_training import tiny_config

    import yaml

    config = tiny_config(tmp_path, steps=2, warmup=2)
    config_file = tmp_path / "c.yaml"
    config_file.write_text(yaml.safe_dump(config.to_dict()))
    run_dir = tmp_path / "run"
    assert run("-q", "train", "--config", config_file, "--run-dir", run_dir).exit_code == 0
    saved = (run_dir / "config.yaml").read_text()
    result = run("-q", "train", "--config", config_file, "--run-dir", run_dir, "--resume",
                 "--set", "generator.kwargs={channels: 16, depth: 2}", "--set", "train.steps=4")
    assert result.exit_code == EXIT_INVALID_INPUT
    assert "does not fit" in result.output
    assert (run_dir / "config.yaml").read_text() == saved
    resumed = run("-q", "train", "--run-dir", run_dir, "--resume", "--set", "train.steps=3")
    assert resumed.exit_code == 0, resumed.output
    assert yaml.safe_load(saved)["run_dir"] == str(run_dir.resolve())
    from_config = run("-q", "train", "--config", run_dir / "config.yaml", "--resume", "--set", "train.steps=4")
    assert from_config.exit_code == 0, from_config.output
