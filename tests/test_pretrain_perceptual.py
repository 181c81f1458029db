import hashlib
import json

import numpy as np
import torch
from click.testing import CliRunner

from medgan.cli.errors import EXIT_INVALID_INPUT, EXIT_OUTPUT_EXISTS
from medgan.cli.main import cli
from medgan.io import Volume, write_volume
from medgan.losses import build_loss
from medgan.losses.perceptual import AUTOENCODER_FORMAT
from medgan.training.pretrain_perceptual import sample_patches
from tests.conftest import oblique_affine


def write_project(tmp_path):
    """A 12 x 10 x 6 synthetic CT volume in HU and a config that lists it."""
    rng = np.random.default_rng(5)
    i, j = np.meshgrid(np.arange(12) - 5.5, np.arange(10) - 4.5, indexing="ij")
    slice_hu = np.where(i**2 / 25 + j**2 / 16 < 1, 40.0, -1000.0)
    array = np.repeat(slice_hu[:, :, None], 6, axis=2) + rng.normal(0, 10, (12, 10, 6))
    (tmp_path / "train").mkdir()
    write_volume(Volume(array.astype(np.float32), oblique_affine((0.8, 0.8, 2.0)), "CT"),
                 tmp_path / "train" / "ct.nii.gz")
    config = tmp_path / "config.yaml"
    config.write_text("task: ldct\ndata:\n  volumes: [train]\n  patch_size: [4, 8, 8]\n")
    return config


def run_cli(*arguments):
    return CliRunner().invoke(cli, ["-q", "pretrain-perceptual", *map(str, arguments)])


def test_pretrain_cli_writes_loadable_weights(tmp_path):
    config = write_project(tmp_path)
    out = tmp_path / "ae.safetensors"
    result = run_cli("--config", config, "-o", out, "--steps", 3, "--batch-size", 2, "--channels", "4,8",
                     "--device", "cpu")
    assert result.exit_code == 0, result.output
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["format"] == AUTOENCODER_FORMAT
    assert card["architecture_kwargs"] == {"in_channels": 1, "channels": [4, 8]}
    assert card["steps"] == 3
    assert np.isfinite(card["final_loss"])
    assert card["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert card["training_volumes"] == [str(tmp_path / "train" / "ct.nii.gz")]

    loss = build_loss("perceptual-ae", weights=str(out), sha256=card["sha256"])
    prediction = torch.randn(1, 1, 4, 8, 8, requires_grad=True)
    target = torch.randn(1, 1, 4, 8, 8)
    value = loss(prediction, target)
    value.backward()
    assert torch.isfinite(value)
    assert loss(target, target).item() == 0.0
    assert prediction.grad.abs().sum() > 0


def test_pretrain_cli_keeps_existing_output(tmp_path):
    config = write_project(tmp_path)
    out = tmp_path / "ae.safetensors"
    out.write_bytes(b"old")
    result = run_cli("--config", config, "--out", out, "--steps", 1)
    assert result.exit_code == EXIT_OUTPUT_EXISTS
    assert out.read_bytes() == b"old"
    assert not out.with_suffix(".json").exists()


def test_pretrain_cli_rejects_bad_suffix_and_channels(tmp_path):
    config = write_project(tmp_path)
    result = run_cli("--config", config, "--out", tmp_path / "ae.pth", "--steps", 1)
    assert result.exit_code == 2
    assert ".safetensors" in result.output
    result = run_cli("--config", config, "--out", tmp_path / "ae.safetensors", "--channels", "4,x")
    assert result.exit_code == 2
    assert "--channels" in result.output


def test_pretrain_cli_missing_volume(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("task: ldct\ndata:\n  volumes: [missing.nii.gz]\n")
    result = run_cli("--config", config, "--out", tmp_path / "ae.safetensors", "--steps", 1)
    assert result.exit_code == EXIT_INVALID_INPUT
    assert "missing.nii.gz" in result.output
    assert not (tmp_path / "ae.safetensors").exists()


def test_sample_patches_crops_to_smallest_volume():
    generator = torch.Generator().manual_seed(0)
    volumes = [torch.zeros(6, 20, 20), torch.ones(2, 20, 20)]
    batch = sample_patches(volumes, [4, 8, 8], 6, True, generator)
    assert batch.shape[0] == 6
    assert batch.shape[1] == 1
    assert tuple(batch.shape[3:]) == (8, 8)
    assert batch.shape[2] in (2, 4)
