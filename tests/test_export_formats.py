"""Exports to TorchScript, ONNX and MONAI bundles: numerical checks, cards, overwrite rule, CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import onnxruntime
import pytest
import torch
from click.testing import CliRunner

from medgan.cli.main import cli
from medgan.export import ExportCheckError, export_monai_bundle, export_onnx, export_torchscript
from medgan.inference.restorer import load_model
from medgan.io.readers import read_volume
from medgan.models.card import ModelCard
from medgan.models.files import card_path_for, resolve_model_path, save_model, shipped_model_names
from medgan.networks import build_network

DEFAULT_MODELS = ("ldct-default", "mri-sr-default")


def shipped_or_skip(name: str) -> str:
    if name not in shipped_model_names():
        pytest.skip(f"{name} is not shipped in medgan/models/shipped (its .safetensors and .json are absent).")
    return name


def tiny_model(folder: Path, network: str, kwargs: dict, task: str = "ldct", output_scale=(1, 1, 1)) -> Path:
    torch.manual_seed(0)
    intensity = {"offset": 0.0, "scale": 1024.0, "unit": "HU"} if task == "ldct" else {
        "offset": 0.0, "scale": 1.0, "unit": "a.u.", "reference_percentile": 99.5}
    card = ModelCard(task=task, network={"name": network, "kwargs": kwargs}, intensity=intensity,
                     patch_size=(8, 16, 16), output_scale=output_scale, name=f"tiny-{network}")
    return save_model(build_network(network, kwargs), card, folder / f"tiny-{network}.safetensors")


@pytest.mark.parametrize("name", DEFAULT_MODELS)
def test_torchscript_default_models(tmp_path, name):
    model = shipped_or_skip(name)
    result = export_torchscript(model, tmp_path / "model.ts")
    assert len(result.max_abs_difference) == 2
    assert max(result.max_abs_difference.values()) <= 1e-4
    reference = load_model(model, device="cpu").network
    module = torch.jit.load(str(tmp_path / "model.ts"))
    patch = torch.rand((1, 1, 5, 9, 6)) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(module(patch), reference(patch), atol=1e-5)
    card = ModelCard.read(tmp_path / "model.json")
    assert card == ModelCard.read(card_path_for(resolve_model_path(model)))


@pytest.mark.parametrize("name", DEFAULT_MODELS)
def test_onnx_default_models(tmp_path, name):
    model = shipped_or_skip(name)
    result = export_onnx(model, tmp_path / "model.onnx")
    shapes = list(result.max_abs_difference)
    assert shapes == ["(1, 1, 8, 16, 16)", "(2, 1, 7, 13, 11)"]
    assert max(result.max_abs_difference.values()) <= 1e-4
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    patch = torch.rand((1, 1, 6, 10, 9)) * 2 - 1
    with torch.no_grad():
        reference = load_model(model, device="cpu").network(patch)
    output = session.run(None, {"input": patch.numpy()})[0]
    assert np.allclose(output, reference.numpy(), atol=1e-4)
    assert (tmp_path / "model.json").is_file()


def test_super_resolution_export(tmp_path):
    path = tiny_model(tmp_path, "mdcsrn-3d", {"scale": [4, 1, 1], "growth_rate": 4, "n_blocks": 1, "n_units": 2, "channels": 8}, task="mri-sr",
                      output_scale=(1, 1, 4))
    export_torchscript(path, tmp_path / "sr_script.ts")
    export_onnx(path, tmp_path / "sr_graph.onnx")
    session = onnxruntime.InferenceSession(str(tmp_path / "sr_graph.onnx"), providers=["CPUExecutionProvider"])
    output = session.run(None, {"input": np.zeros((1, 1, 3, 5, 4), dtype=np.float32)})[0]
    assert output.shape == (1, 1, 12, 5, 4)
    assert ModelCard.read(tmp_path / "sr_graph.json").output_scale == (1, 1, 4)


def test_export_beside_model_keeps_card(tmp_path):
    path = tiny_model(tmp_path, "red-cnn-3d", {"channels": 4, "depth": 2})
    card_text = path.with_suffix(".json").read_text()
    result = export_torchscript(path, path.with_suffix(".ts"))
    assert result.card_path == path.with_suffix(".json")
    assert path.with_suffix(".json").read_text() == card_text
    with pytest.raises(FileExistsError):
        export_torchscript(path, path.with_suffix(".ts"))


def test_formats_share_card(tmp_path):
    export_torchscript("ldct-default", tmp_path / "ldct.ts")
    export_onnx("ldct-default", tmp_path / "ldct.onnx")
    assert ModelCard.read(tmp_path / "ldct.json").name == "ldct-default"


class ShapeBranchNetwork(torch.nn.Module):
    """Doubles even-width inputs: a Python branch on the input's size, which tracing fixes."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2.0 if x.shape[-1] % 2 == 0 else x


def test_fixed_shape_network_rejected(tmp_path, monkeypatch):
    path = tiny_model(tmp_path, "identity", {})
    card = ModelCard.read(card_path_for(path))
    monkeypatch.setattr("medgan.export.checks.load_network", lambda model: (ShapeBranchNetwork(), card))
    with pytest.raises(ExportCheckError, match=r"\(2, 1, 7, 13, 11\)"):
        export_torchscript(path, tmp_path / "branch.ts")
    assert not (tmp_path / "branch.ts").exists()
    assert not (tmp_path / "branch.json").exists()


@pytest.mark.parametrize("export", [export_torchscript, export_onnx], ids=["torchscript", "onnx"])
def test_unet_exports_with_dynamic_padding(tmp_path, export):
    path = tiny_model(tmp_path, "unet-3d", {"channels": 4, "levels": 2})
    suffix = ".ts" if export is export_torchscript else ".onnx"
    result = export(path, tmp_path / f"unet{suffix}")
    # (7, 13, 11) needs padding to (8, 16, 12) and (8, 16, 16) none: the traced padding follows the input.
    assert set(result.max_abs_difference) == {str(shape) for shape in [(1, 1, 8, 16, 16), (2, 1, 7, 13, 11)]}
    assert max(result.max_abs_difference.values()) <= 1e-5


def test_tolerance_exceeded_writes_nothing(tmp_path):
    with pytest.raises(ExportCheckError, match="above the tolerance"):
        export_onnx("ldct-default", tmp_path / "model.onnx", tolerance=1e-12)
    assert list(tmp_path.iterdir()) == []


def test_overwrite_rule(tmp_path):
    target = tmp_path / "model.ts"
    target.write_bytes(b"old")
    (tmp_path / "model.json").write_text("{}")
    with pytest.raises(FileExistsError, match="overwrite"):
        export_torchscript("ldct-default", target)
    assert target.read_bytes() == b"old"
    assert (tmp_path / "model.json").read_text() == "{}"
    export_torchscript("ldct-default", target, overwrite=True)
    assert ModelCard.read(tmp_path / "model.json").name == "ldct-default"
    assert target.read_bytes() != b"old"
    assert torch.jit.load(str(target)) is not None


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match=r"\.ts or \.pt"):
        export_torchscript("ldct-default", tmp_path / "model.onnx")
    with pytest.raises(ValueError, match="tolerance"):
        export_onnx("ldct-default", tmp_path / "model.onnx", tolerance=0)
    with pytest.raises(FileNotFoundError, match="not found"):
        export_onnx("no-such-model", tmp_path / "model.onnx")


def test_bundle_rejects_super_resolution(tmp_path):
    path = tiny_model(tmp_path, "mdcsrn-3d", {"scale": [4, 1, 1], "growth_rate": 4, "n_blocks": 1, "n_units": 2, "channels": 8}, task="mri-sr",
                      output_scale=(1, 1, 4))
    with pytest.raises(ValueError, match="percentile"):
        export_monai_bundle(path, tmp_path / "bundle", engine="monai")
    assert not (tmp_path / "bundle").exists()


def test_bundle_runs_offline_like_medgan(tmp_path):
    bundle = tmp_path / "bundle"
    result = export_monai_bundle("ldct-default", bundle, engine="monai")
    for relative in ("configs/metadata.json", "configs/inference.json", "models/model.ts"):
        assert (bundle / relative).is_file()
    config = json.loads((bundle / "configs" / "inference.json").read_text())
    targets = {step["_target_"] for step in config["preprocessing"]["transforms"] + config["postprocessing"]["transforms"]}
    assert targets == {"LoadImaged", "EnsureChannelFirstd", "EnsureTyped", "ScaleIntensityRanged", "SaveImaged"}
    assert json.loads((bundle / "configs" / "metadata.json").read_text())["medgan_card"]["name"] == "ldct-default"
    assert max(result.max_abs_difference.values()) <= 1e-4

    # 20 x 18 x 6 voxels: shorter than the 64-voxel window on every axis, so both run one window.
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(3)
    values = (rng.normal(0.0, 40.0, (20, 18, 6)) + np.linspace(-900.0, 300.0, 20)[:, None, None]).astype(np.float32)
    affine = np.array([[-0.7, 0.0, 0.0, 10.0], [0.0, 0.8, 0.0, -5.0], [0.0, 0.0, 2.5, 30.0], [0.0, 0.0, 0.0, 1.0]])
    nib.save(nib.Nifti1Image(values, affine), data / "tiny.nii.gz")
    environment = dict(os.environ, PYTHONWARNINGS="ignore")
    completed = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(bundle / "configs" / "inference.json"),
         "--bundle_root", str(bundle), "--dataset_dir", str(data), "--output_dir", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120, env=environment, cwd=tmp_path,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]

    written = nib.load(tmp_path / "out" / "tiny_restored.nii.gz")
    expected = load_model("ldct-default", device="cpu").restore(read_volume(data / "tiny.nii.gz"))
    assert np.allclose(written.affine, expected.affine, atol=1e-6)
    # One window: the two differ by float32 rounding only; 1e-3 HU is far below that scale's noise.
    assert np.abs(written.get_fdata() - expected.array).max() <= 1e-3


def test_cli_exports_model(tmp_path):
    result = CliRunner().invoke(cli, ["export", "ldct-default", "--format", "onnx", "-o", str(tmp_path / "m.onnx")])
    assert result.exit_code == 0, result.output
    assert "max abs difference from PyTorch" in result.output
    assert (tmp_path / "m.onnx").is_file()
    again = CliRunner().invoke(cli, ["export", "ldct-default", "--format", "onnx", "-o", str(tmp_path / "m.onnx")])
    assert again.exit_code == 4


def test_cli_argument_errors(tmp_path):
    runner = CliRunner()
    missing_format = runner.invoke(cli, ["export", "ldct-default", "-o", str(tmp_path / "m.ts")])
    assert missing_format.exit_code == 2
    assert "--format is required" in missing_format.output
    wrong_suffix = runner.invoke(cli, ["export", "ldct-default", "--format", "onnx", "-o", str(tmp_path / "m.ts")])
    assert wrong_suffix.exit_code == 2
    run_option = runner.invoke(cli, ["export", "ldct-default", "--format", "onnx", "--weights", "generator",
                                     "-o", str(tmp_path / "m.onnx")])
    assert run_option.exit_code == 2
    assert "--weights" in run_option.output
    unknown = runner.invoke(cli, ["export", "no-such-model", "--format", "onnx", "-o", str(tmp_path / "m.onnx")])
    assert unknown.exit_code == 3


def test_cli_run_dir_form(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("{}\n")
    runner = CliRunner()
    with_format = runner.invoke(cli, ["export", str(run_dir), "--format", "onnx", "-o", str(tmp_path / "m.onnx")])
    assert with_format.exit_code == 2
    assert "training run" in with_format.output
    wrong_suffix = runner.invoke(cli, ["export", str(run_dir), "-o", str(tmp_path / "m.onnx")])
    assert wrong_suffix.exit_code == 2
    assert ".safetensors" in wrong_suffix.output
    # The run has no checkpoint, so export_run fails with invalid input: the run form was chosen.
    no_checkpoint = runner.invoke(cli, ["export", str(run_dir), "-o", str(tmp_path / "m.safetensors")])
    assert no_checkpoint.exit_code == 3, no_checkpoint.output


@pytest.mark.parametrize("model, sample", [("ldct-default", "ct_small_quarter_dose.nii.gz"),
                                           ("mri-sr-default", "mri_thick_slices.nii.gz")])
def test_medgan_engine_bundle_equals_infer(tmp_path, model, sample):
    """The medgan-engine bundle restores the shipped samples exactly as medgan does, across window seams too."""
    from importlib import resources

    bundle = tmp_path / "bundle"
    export_monai_bundle(model, bundle)
    assert (bundle / "models" / "model.safetensors").is_file()
    data = tmp_path / "data"
    data.mkdir()
    source = resources.files("medgan.data") / sample
    (data / sample).write_bytes(source.read_bytes())
    environment = dict(os.environ, PYTHONWARNINGS="ignore")
    completed = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(bundle / "configs" / "inference.json"),
         "--bundle_root", str(bundle), "--dataset_dir", str(data), "--output_dir", str(tmp_path / "out"),
         "--device", "cpu"],
        capture_output=True, text=True, timeout=120, env=environment, cwd=tmp_path,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    stem = sample[: -len(".nii.gz")]
    written = nib.load(tmp_path / "out" / f"{stem}_restored.nii.gz")
    expected = load_model(model, device="cpu").restore(read_volume(data / sample))
    # SaveImaged drops trailing axes of length 1, so a single-slice volume comes back as a 2D image.
    values = np.asarray(written.get_fdata(), dtype=np.float32)
    assert values.shape == tuple(n for i, n in enumerate(expected.shape) if n > 1 or i < 2)
    assert np.allclose(written.affine, expected.affine, atol=1e-5)
    # The subprocess may run its convolutions with another thread count, which changes float32 rounding only.
    scale = float(np.abs(expected.array).max())
    assert np.abs(values.reshape(expected.shape) - expected.array).max() <= 1e-5 * scale
