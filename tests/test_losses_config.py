import math
from pathlib import Path

import pytest

from medgan.config import ConfigError, LossTerm, load_config
from medgan.training import build_trainer
from tests.test_losses_perceptual import write_autoencoder
from tests.test_training import read_log, tiny_config

BASE = ["data.volumes=[scan.nii.gz]"]
CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def test_legacy_content_keys_define_one_term():
    config = load_config(None, [*BASE, "loss.content=mse", "loss.content_weight=2.5"])
    assert config.loss.resolved_terms() == [LossTerm(name="mse", weight=2.5)]


def test_default_loss_is_l1():
    assert load_config(None, BASE).loss.resolved_terms() == [LossTerm(name="l1", weight=1.0)]


def test_shipped_ldct_config_loads_unchanged():
    config = load_config(CONFIGS / "ldct.yaml")
    assert config.loss.resolved_terms() == [LossTerm(name="l1", weight=1.0)]


@pytest.mark.parametrize(
    "override, words",
    [
        ("loss.terms=[{name: l1}, {name: ssim}]", ["loss.terms[1].name", "'ssim'", "ssim3d"]),
        ("loss.terms=[{name: l1, weight: -0.5}]", ["loss.terms[0].weight", "-0.5"]),
        ("loss.terms=[{name: l1, weight: .nan}]", ["loss.terms[0].weight", "nan"]),
        ("loss.terms=[{name: ssim3d, kwargs: {data_rnage: 2}}]", ["loss.terms[0].kwargs", "data_rnage", "data_range"]),
        ("loss.terms=[{name: perceptual-ae}]", ["loss.terms[0].kwargs.weights", "perceptual-ae"]),
        ("loss.terms=[{nme: l1}]", ["loss.terms[0]", "nme"]),
        ("loss.content=perceptual-ae", ["loss.content", "perceptual-ae", "loss.terms"]),
    ],
)
def test_invalid_loss_terms_name_key(override, words):
    with pytest.raises(ConfigError) as error:
        load_config(None, [*BASE, override])
    for word in words:
        assert word in str(error.value)


def test_terms_and_content_conflict():
    with pytest.raises(ConfigError, match="loss.terms and loss.content"):
        load_config(None, [*BASE, "loss.content=l1", "loss.terms=[{name: mse}]"])


def test_missing_weights_file_named(tmp_path):
    missing = tmp_path / "ae.safetensors"
    with pytest.raises(ConfigError) as error:
        load_config(None, [*BASE, f"loss.terms=[{{name: perceptual-ae, kwargs: {{weights: {missing}}}}}]"])
    assert "loss.terms[0].kwargs.weights" in str(error.value)
    assert str(missing) in str(error.value)


def test_weights_path_relative_to_config_file(tmp_path):
    write_autoencoder(tmp_path / "ae.safetensors")
    path = tmp_path / "config.yaml"
    path.write_text("data:\n  volumes: [train]\nloss:\n  terms:\n    - {name: l1}\n"
                    "    - {name: perceptual-ae, weight: 0.1, kwargs: {weights: ae.safetensors}}\n")
    config = load_config(path)
    assert config.loss.terms[1].kwargs["weights"] == str(tmp_path / "ae.safetensors")


def test_training_with_ssim_and_perceptual_terms(tmp_path):
    weights = write_autoencoder(tmp_path / "ae.safetensors")
    terms = ("loss.terms=[{name: l1, weight: 1.0}, {name: ssim3d, weight: 0.5}, "
             f"{{name: perceptual-ae, weight: 0.2, kwargs: {{weights: {weights}}}}}]")
    config = tiny_config(tmp_path, steps=3, warmup=1, extra=[terms, "train.n_critic=1"])
    trainer = build_trainer(config, tmp_path / "run")
    record = trainer.fit()
    rows = read_log(tmp_path / "run")
    assert len(rows) == 3
    for row in rows:
        assert math.isfinite(float(row["content_loss"]))
        assert math.isfinite(float(row["generator_loss"]))
    assert rows[-1]["phase"] == "adversarial"
    for key in ("loss_l1", "loss_ssim3d", "loss_perceptual-ae"):
        assert math.isfinite(record[key]), key
    weighted = record["loss_l1"] + 0.5 * record["loss_ssim3d"] + 0.2 * record["loss_perceptual-ae"]
    assert record["content_loss"] == pytest.approx(weighted, rel=1e-4)
