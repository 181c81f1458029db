"""``medgan models``: the shipped-model list and one model's card."""

from __future__ import annotations

import json
from importlib import resources

import torch
from click.testing import CliRunner

from medgan.cli.main import cli
from medgan.models.card import ModelCard
from medgan.models.files import save_model, shipped_model_names
from medgan.networks import build_network


def test_lists_shipped_models():
    result = CliRunner().invoke(cli, ["models"])
    assert result.exit_code == 0, result.output
    for name in shipped_model_names():
        assert f"{name}\n" in result.output
    assert "task: ldct" in result.output
    assert "network: red-cnn-3d" in result.output
    assert "output scale (i x j x k): 1 x 1 x 1" in result.output
    assert "MB" in result.output
    card = json.loads((resources.files("medgan.models.shipped") / "ldct-default.json").read_text())
    held_out = card["metrics"]["held_out_ct_small"]["quarter_dose_output"]
    assert f"psnr_db {held_out['psnr_db']:g}" in result.output
    assert f"ssim {held_out['ssim']:g}" in result.output


def test_prints_whole_card():
    result = CliRunner().invoke(cli, ["models", "ldct-default"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output)
    assert printed["name"] == "ldct-default"
    assert printed["intensity"] == {"offset": 0.0, "scale": 1024.0, "unit": "HU"}
    assert "held_out_ct_small" in printed["metrics"]


def test_card_of_model_file(tmp_path):
    card = ModelCard(task="ldct", network={"name": "red-cnn-3d", "kwargs": {"channels": 4, "depth": 2}},
                     intensity={"offset": 0.0, "scale": 1024.0, "unit": "HU"}, patch_size=(8, 16, 16), name="tiny")
    torch.manual_seed(0)
    path = save_model(build_network("red-cnn-3d", {"channels": 4, "depth": 2}), card, tmp_path / "tiny.safetensors")
    result = CliRunner().invoke(cli, ["models", str(path)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["name"] == "tiny"


def test_unknown_model():
    result = CliRunner().invoke(cli, ["models", "no-such-model"])
    assert result.exit_code == 3
    assert "not found" in result.output
    assert "ldct-default" in result.output
