"""Run logging (CSV, TensorBoard, progress lines), config checks before training, and the config key table."""

import logging
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from medgan.config import ConfigError, describe_config, load_config
from medgan.training import build_trainer
from tests.test_training import read_log, tiny_config


def test_tensorboard_events_written(tmp_path):
    pytest.importorskip("tensorboard")
    config = tiny_config(tmp_path, steps=2, warmup=1, extra=["train.n_critic=1"])
    build_trainer(config, tmp_path / "run").fit()
    events = list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(events[0]))
    accumulator.Reload()
    scalars = set(accumulator.Tags()["scalars"])
    assert {"generator_loss", "content_loss", "critic_loss", "patches_per_second"} <= scalars
    assert len(read_log(tmp_path / "run")) == 2


def test_tensorboard_off_writes_nothing(tmp_path):
    config = tiny_config(tmp_path, steps=1, warmup=1, extra=["train.tensorboard=false"])
    build_trainer(config, tmp_path / "run").fit()
    assert not (tmp_path / "run" / "tensorboard").exists()


def test_missing_tensorboard_logs_once(tmp_path, monkeypatch, caplog):
    import builtins

    real_import = builtins.__import__

    def without_tensorboard(name, *args, **kwargs):
        if name.startswith("torch.utils.tensorboard"):
            raise ImportError("No module named 'tensorboard'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_tensorboard)
    config = tiny_config(tmp_path, steps=1, warmup=1)
    with caplog.at_level(logging.INFO, logger="medgan.training.run_log"):
        build_trainer(config, tmp_path / "run").fit()
    messages = [r.getMessage() for r in caplog.records if "TensorBoard logging is off" in r.getMessage()]
    assert len(messages) == 1
    assert "pip install tensorboard" in messages[0]
    assert len(read_log(tmp_path / "run")) == 1


def test_progress_lines_every_n_steps(tmp_path, caplog):
    config = tiny_config(tmp_path, steps=4, warmup=4, extra=["train.log_every=2", "train.tensorboard=false"])
    with caplog.at_level(logging.INFO, logger="medgan.training.run_log"):
        build_trainer(config, tmp_path / "run").fit()
    lines = [r.getMessage() for r in caplog.records if r.name == "medgan.training.run_log"]
    assert len(lines) == 2
    assert lines[0].startswith("step 2/4 (warmup): generator_loss ")
    assert re.search(r"; [0-9.]+ patches/s$", lines[1])
    assert not any("\r" in line for line in lines)


@pytest.mark.parametrize("override, named", [
    ("train.stepz=3", "train: stepz"),
    ("data.validation_fraction=1.0", "data.validation_fraction"),
    ("train.log_every=0", "train.log_every"),
    ("data.rician_snr_range=[5.0]", "data.rician_snr_range"),
    ("data.mode=paired-folders", "data.root"),
])
def test_config_errors_name_the_key(tmp_path, override, named):
    (tmp_path / "v.nii.gz").touch()
    with pytest.raises(ConfigError) as error:
        load_config(None, [f"data.volumes=[{tmp_path / 'v.nii.gz'}]", override])
    assert named.split(": ")[-1] in str(error.value)


def test_sr_patch_depth_must_fit_factor(tmp_path):
    with pytest.raises(ConfigError, match=r"data.patch_size\[0\] must be a multiple of 4"):
        load_config(None, ["task=mri-sr", "data.volumes=[x]", "data.patch_size=[6, 16, 16]"])


def test_validation_fraction_and_set_conflict():
    with pytest.raises(ConfigError, match="keep only one of them"):
        load_config(None, ["data.volumes=[x]", "data.validation_volumes=[y]", "data.validation_fraction=0.2"])


def test_network_kwargs_without_name_override_task_default():
    config = load_config(None, ["data.volumes=[x]", "critic.kwargs={channels: 2}"])
    assert config.critic.name == "patch-critic-3d"
    assert config.critic.kwargs["channels"] == 2
    assert config.critic.kwargs["in_channels"] == 2


def test_config_table_in_docs_matches_dataclasses():
    doc = (Path(__file__).resolve().parents[1] / "docs" / "training.md").read_text(encoding="utf-8")
    assert describe_config() in doc


def test_bf16_zero_critic_stays_finite_for_50_steps(tmp_path):
    config = tiny_config(tmp_path, steps=50, warmup=0, extra=[
        "train.precision=bf16", "train.n_critic=1", "train.batch_size=1", "train.checkpoint_every=50",
        "train.tensorboard=false", "data.patch_size=[2, 8, 8]", "generator.kwargs={channels: 4, depth: 1}",
        "critic.kwargs={in_channels: 2, channels: 2, n_layers: 1}"])
    trainer = build_trainer(config, tmp_path / "run")
    for parameter in trainer.critic.parameters():
        torch.nn.init.zeros_(parameter)
    # A zero learning rate keeps the critic at zero, so every step gets an exactly zero input gradient.
    trainer.optimizer_critic.param_groups[0]["lr"] = 0.0
    trainer.config.train.lr_critic = 0.0
    trainer.fit()
    rows = read_log(tmp_path / "run")
    assert len(rows) == 50
    for row in rows:
        assert float(row["gradient_penalty"]) == pytest.approx(1.0)
        for key in ("critic_loss", "generator_loss", "content_loss", "generator_adversarial_loss"):
            assert np.isfinite(float(row[key])), (row["step"], key)
    for value in [*trainer.generator.state_dict().values(), *trainer.critic.state_dict().values()]:
        assert torch.isfinite(value).all()
