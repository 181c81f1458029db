import csv

import numpy as np
import pytest
import torch

from medgan.config import load_config
from medgan.io import Volume, write_volume
from medgan.training import build_trainer
from medgan.training.checkpoints import load_checkpoint
from medgan.training.export import export_run
from medgan.models import load_model_files
from tests.conftest import oblique_affine


def phantom_volume() -> Volume:
    """A 29 x 27 x 6 water body with bone and fat inserts in air, in HU."""
    i, j = np.meshgrid(np.arange(29) - 14.0, np.arange(27) - 13.0, indexing="ij")
    slice_hu = np.where(i**2 / 144 + j**2 / 100 < 1, 40.0, -1000.0)
    slice_hu[(i - 4) ** 2 + j**2 < 6] = 700.0
    slice_hu[(i + 5) ** 2 + (j - 2) ** 2 < 5] = -100.0
    return Volume(np.repeat(slice_hu[:, :, None], 6, axis=2), oblique_affine((1.5, 1.5, 2.0)), "CT")


def tiny_config(tmp_path, steps, warmup, extra=()):
    write_volume(phantom_volume(), tmp_path / "train" / "phantom.nii.gz") if (tmp_path / "train").mkdir() is None else None
    return load_config(None, [
        f"data.volumes=[{tmp_path / 'train'}]",
        "data.patch_size=[4, 16, 16]",
        "data.n_views=48",
        "data.photons_per_ray=2.0e4",
        "data.simulation=noise-bank",
        "data.noise_bank_size=2",
        "generator.name=red-cnn-3d",
        "generator.kwargs={channels: 8, depth: 2}",
        "critic.kwargs={in_channels: 2, channels: 4, n_layers: 2}",
        f"train.steps={steps}",
        f"train.warmup_steps={warmup}",
        "train.batch_size=2",
        "train.lr_generator=2.0e-3",
        "train.validate_every=1000",
        "train.checkpoint_every=5",
        *extra,
    ])


def read_log(run_dir):
    with open(run_dir / "log.csv", newline="") as stream:
        return list(csv.DictReader(stream))


def test_few_steps_lower_training_loss(tmp_path):
    config = tiny_config(tmp_path, steps=60, warmup=60,
                         extra=["data.dose_fraction_range=[0.25, 0.25]", "data.thin_patch_probability=0.0"])
    trainer = build_trainer(config, tmp_path / "run")
    low, high = trainer.sample_batch(8, torch.Generator().manual_seed(99))
    with torch.no_grad():
        before = torch.nn.functional.l1_loss(trainer.generator(low), high).item()
    trainer.fit()
    with torch.no_grad():
        after = torch.nn.functional.l1_loss(trainer.generator.eval()(low), high).item()
    assert len(read_log(tmp_path / "run")) == 60
    assert after < 0.85 * before


def test_adversarial_steps_log_every_term(tmp_path):
    config = tiny_config(tmp_path, steps=3, warmup=1, extra=["train.n_critic=2"])
    trainer = build_trainer(config, tmp_path / "run")
    trainer.fit()
    rows = read_log(tmp_path / "run")
    assert rows[0]["phase"] == "warmup"
    assert rows[-1]["phase"] == "adversarial"
    for key in ("critic_loss", "gradient_penalty", "generator_adversarial_loss", "content_loss", "generator_loss"):
        assert np.isfinite(float(rows[-1][key])), key


def test_critic_is_unfrozen_after_generator_step(tmp_path):
    config = tiny_config(tmp_path, steps=2, warmup=0)
    trainer = build_trainer(config, tmp_path / "run")
    trainer.fit()
    assert all(p.requires_grad for p in trainer.critic.parameters())


def test_resume_continues_identically(tmp_path):
    config = tiny_config(tmp_path, steps=10, warmup=5)
    straight = build_trainer(config, tmp_path / "straight")
    straight.fit()

    config_half = tiny_config_from(config, steps=5)
    first = build_trainer(config_half, tmp_path / "resumed")
    first.fit()
    second = build_trainer(config, tmp_path / "resumed")
    second.resume(tmp_path / "resumed")
    assert second.step == 5
    second.fit()
    for key, value in straight.generator.state_dict().items():
        assert torch.allclose(value, second.generator.state_dict()[key], atol=1e-6), key


def tiny_config_from(config, steps):
    import copy

    clone = copy.deepcopy(config)
    clone.train.steps = steps
    return clone


def test_checkpoint_loads_with_weights_only(tmp_path):
    config = tiny_config(tmp_path, steps=5, warmup=5)
    build_trainer(config, tmp_path / "run").fit()
    state = load_checkpoint(tmp_path / "run")
    assert state["step"] == 5
    assert set(state) >= {"generator", "critic", "optimizer_generator", "optimizer_critic", "rng"}


def test_export_writes_loadable_model(tmp_path):
    import yaml

    config = tiny_config(tmp_path, steps=5, warmup=5)
    run_dir = tmp_path / "run"
    trainer = build_trainer(config, run_dir)
    trainer.fit()
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config.to_dict()))
    path = export_run(run_dir, tmp_path / "model.safetensors", name="tiny")
    network, card = load_model_files(path)
    assert card.name == "tiny"
    assert card.task == "ldct"
    x = torch.randn(1, 1, 4, 16, 16)
    with torch.no_grad():
        assert torch.equal(network(x), trainer.ema.average(x))


def test_resume_is_bit_exact(tmp_path):
    config = tiny_config(tmp_path, steps=8, warmup=3, extra=["train.lr_schedule=cosine"])
    straight = build_trainer(config, tmp_path / "straight")
    straight.fit()
    first = build_trainer(config, tmp_path / "resumed")
    first.fit(until_step=4)
    second = build_trainer(config, tmp_path / "resumed")
    second.resume(tmp_path / "resumed")
    second.fit()
    for name in ("generator", "critic"):
        expected = getattr(straight, name).state_dict()
        for key, value in getattr(second, name).state_dict().items():
            assert torch.equal(value, expected[key]), f"{name}.{key}"
    for key, value in second.ema.state_dict().items():
        assert torch.equal(value, straight.ema.state_dict()[key]), f"ema.{key}"


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_stays_finite(tmp_path, precision):
    # CPU autocast is slow in bf16, so this run uses the smallest networks and patches that still train.
    config = tiny_config(tmp_path, steps=50, warmup=10, extra=[
        f"train.precision={precision}", "train.checkpoint_every=50", "train.batch_size=1",
        "data.patch_size=[2, 12, 12]", "generator.kwargs={channels: 4, depth: 1}",
        "critic.kwargs={in_channels: 2, channels: 2, n_layers: 1}"])
    trainer = build_trainer(config, tmp_path / "run")
    trainer.fit()
    rows = read_log(tmp_path / "run")
    for row in rows:
        for key in ("content_loss", "generator_loss", "critic_loss", "gradient_penalty"):
            if row[key]:
                assert np.isfinite(float(row[key])), (row["step"], key)
    for value in trainer.generator.state_dict().values():
        assert torch.isfinite(value).all()


def test_zero_gradient_critic_stays_finite(tmp_path):
    config = tiny_config(tmp_path, steps=4, warmup=0, extra=["train.precision=bf16"])
    trainer = build_trainer(config, tmp_path / "run")
    for parameter in trainer.critic.parameters():
        torch.nn.init.zeros_(parameter)  # every score is 0, so the critic's input gradient is exactly zero
    record = trainer.train_step()
    assert record["gradient_penalty"] == pytest.approx(1.0)  # (||0|| - 1)^2
    for key in ("critic_loss", "generator_loss"):
        assert np.isfinite(record[key]), key


def test_ema_follows_generator(tmp_path):
    config = tiny_config(tmp_path, steps=3, warmup=3, extra=["train.ema_decay=0.5"])
    trainer = build_trainer(config, tmp_path / "run")
    before = [p.clone() for p in trainer.ema.average.parameters()]
    trainer.fit()
    moved = [not torch.equal(a, b) for a, b in zip(before, trainer.ema.average.parameters())]
    assert any(moved)
    for average, current in zip(trainer.ema.average.parameters(), trainer.generator.parameters()):
        assert not average.requires_grad
        assert average.shape == current.shape


def test_ema_forgets_initial_weights_quickly():
    from medgan.training.ema import ModelEMA

    network = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(network.weight)
    ema = ModelEMA(network, decay=0.999)
    with torch.no_grad():
        network.weight.fill_(1.0)
    for n_updates in range(100):
        ema.update(network, n_updates)
    # A fixed 0.999 decay would still hold 0.999 ** 100 = 90 % of the initial zero weight.
    assert ema.average.weight.item() > 0.9


def test_exact_patch_noise_is_crop_of_slice_noise():
    from medgan.config import DataConfig
    from medgan.training.simulation import SliceNoiseSimulator

    hu = torch.full((3, 40, 36), -1000.0)
    hu[:, 8:32, 6:30] = 0.0
    simulator = SliceNoiseSimulator(hu, (1.0, 1.2), DataConfig(volumes=["unused"], n_views=60))
    patch = simulator.noise_hu(range(1, 3), (10, 20, 5, 25), 0.25, torch.Generator().manual_seed(3))
    whole = simulator.noise_hu(range(1, 3), (0, 40, 0, 36), 0.25, torch.Generator().manual_seed(3))
    assert patch.shape == (2, 10, 20)
    assert patch.dtype == torch.float32
    assert torch.allclose(patch, whole[:, 10:20, 5:25], atol=1e-3)
    assert patch.std() > 1.0  # noise was drawn
