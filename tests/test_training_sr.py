"""The mri-sr task end to end: thick-slice patches, validation on the fine grid, export and restoration."""

import numpy as np
import pytest
import torch
import yaml

from medgan.config import load_config
from medgan.inference.restorer import Restorer
from medgan.io import Volume, write_volume
from medgan.models import load_model_files
from medgan.tasks import get_task
from medgan.training import build_trainer
from medgan.training.export import export_run
from medgan.training.sr_data import ThickSliceDegradation, ThickSlicePatchSampler
from tests.conftest import oblique_affine


def brain_like(shape=(18, 20, 24), seed=0) -> Volume:
    """A smooth positive MR-like volume in arbitrary units: an ellipsoid with a bright core, plus texture."""
    rng = np.random.default_rng(seed)
    i, j, k = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij")
    radius = i**2 + j**2 / 0.8 + k**2 / 0.9
    array = np.where(radius < 0.8, 300.0, 5.0) + np.where(radius < 0.2, 200.0, 0.0)
    array = array + rng.normal(0, 5, shape) + 50.0 * np.sin(3 * k)
    return Volume(np.abs(array).astype(np.float32), oblique_affine((1.0, 1.0, 1.0)), "MR")


def sr_config(tmp_path, extra=()):
    write_volume(brain_like(seed=0), tmp_path / "train" / "subject1.nii.gz") if (tmp_path / "train").mkdir() is None \
        else None
    (tmp_path / "validation").mkdir()
    write_volume(brain_like(shape=(16, 16, 20), seed=1), tmp_path / "validation" / "subject2.nii.gz")
    return load_config(None, [
        "task=mri-sr",
        f"data.volumes=[{tmp_path / 'train'}]",
        f"data.validation_volumes=[{tmp_path / 'validation'}]",
        "data.patch_size=[8, 16, 16]",
        "data.rician_snr_range=[20.0, 40.0]",
        "data.validation_rician_snr=30.0",
        "generator.kwargs={scale: [4, 1, 1], channels: 4, growth_rate: 2, n_blocks: 1, n_units: 1}",
        "critic.kwargs={in_channels: 2, channels: 2, n_layers: 1}",
        "train.steps=3", "train.warmup_steps=1", "train.n_critic=1", "train.batch_size=2",
        "train.validate_every=3", "train.checkpoint_every=3", "train.tensorboard=false",
        *extra,
    ])


def test_thick_slice_patches_have_coarse_depth(tmp_path):
    config = sr_config(tmp_path)
    task = get_task("mri-sr")
    sampler = ThickSlicePatchSampler(config.data, task, [brain_like()])
    low, high = sampler(3, torch.Generator().manual_seed(0))
    assert high.shape == (3, 1, 8, 16, 16)
    assert low.shape == (3, 1, 2, 16, 16)
    assert torch.isfinite(low).all()


def test_boxcar_thick_slice_is_group_mean():
    volume = torch.arange(8 * 2 * 3, dtype=torch.float32).reshape(8, 2, 3)
    low = ThickSliceDegradation(4, 1.0, "boxcar")(volume)
    assert low.shape == (2, 2, 3)
    assert torch.allclose(low, volume.reshape(2, 4, 2, 3).mean(dim=1))


def test_gaussian_profile_aligns_with_boxcar_grid():
    degradation = ThickSliceDegradation(4, 1.0, "gaussian")
    assert degradation.margin == 4
    ramp = torch.arange(16, dtype=torch.float64)[:, None, None].expand(16, 1, 1).contiguous()
    low = degradation(ramp)
    # On a linear ramp a symmetric profile returns its centre, so the centres are the boxcar's: 5.5 and 9.5.
    assert low.shape[0] == 2
    assert torch.allclose(low[:, 0, 0], torch.tensor([5.5, 9.5], dtype=torch.float64))


def test_sampler_uses_per_volume_intensity(tmp_path):
    config = sr_config(tmp_path, ["data.rician_snr_range=[]", "data.flips=false"])
    bright = brain_like()
    brighter = bright.with_array(bright.array * 7.0)
    task = get_task("mri-sr")
    first = ThickSlicePatchSampler(config.data, task, [bright])(1, torch.Generator().manual_seed(3))
    second = ThickSlicePatchSampler(config.data, task, [brighter])(1, torch.Generator().manual_seed(3))
    assert torch.allclose(first[1], second[1], atol=1e-5)
    assert torch.allclose(first[0], second[0], atol=1e-5)


def test_sr_run_validates_and_exports(tmp_path):
    config = sr_config(tmp_path)
    run_dir = tmp_path / "run"
    trainer = build_trainer(config, run_dir)
    record = trainer.fit()
    assert record["step"] == 3
    assert np.isfinite(record["val_psnr_db"])
    assert 0 < record["val_ssim"] <= 1
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config.to_dict()))
    path = export_run(run_dir, tmp_path / "sr.safetensors", name="tiny-sr")
    network, card = load_model_files(path)
    assert tuple(card.output_scale) == (1, 1, 4)
    assert card.intensity["reference_percentile"] == pytest.approx(99.5)
    sample = brain_like(shape=(16, 16, 5), seed=2)
    thick = Volume(sample.array, oblique_affine((1.0, 1.0, 4.0)), "MR")
    restored = Restorer(network, card, device="cpu").restore(thick)
    assert restored.shape == (16, 16, 20)
    assert np.isfinite(restored.array).all()


def test_sr_rejects_generator_without_upsampling(tmp_path):
    config = sr_config(tmp_path, ["generator.kwargs={scale: [2, 1, 1], channels: 4, growth_rate: 2, n_blocks: 1, "
                                  "n_units: 1}"])
    with pytest.raises(ValueError, match=r"output_scale \(D, H, W\) is \(2, 1, 1\)"):
        build_trainer(config, tmp_path / "run")


def test_init_generator_starts_from_a_model_file(tmp_path):
    """train.init_generator copies a model file's weights into the generator; a different network is refused."""
    config = sr_config(tmp_path)
    run_dir = tmp_path / "run"
    build_trainer(config, run_dir).fit()
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config.to_dict()))
    model_path = export_run(run_dir, tmp_path / "start.safetensors", name="start")
    saved, _ = load_model_files(model_path)

    config.train.init_generator = str(model_path)
    fresh = build_trainer(config, tmp_path / "run2")
    for name, tensor in saved.state_dict().items():
        assert torch.equal(fresh.generator.state_dict()[name], tensor), name
        assert torch.equal(fresh.ema.average.state_dict()[name], tensor), name

    other = sr_config(tmp_path / "other", ["generator.kwargs={scale: [4, 1, 1], channels: 6, growth_rate: 2, "
                                           "n_blocks: 1, n_units: 1}"]) if (tmp_path / "other").mkdir() is None \
        else None
    other.train.init_generator = str(model_path)
    with pytest.raises(ValueError, match=r"init_generator: model .* is \{'name': 'mdcsrn-3d'.*channels': 4"):
        build_trainer(other, tmp_path / "run3")
    other.train.init_generator = "ldct-default"
    with pytest.raises(ValueError, match="model 'ldct-default' was trained for task 'ldct', not 'mri-sr'"):
        build_trainer(other, tmp_path / "run5")
    other.train.init_generator = str(tmp_path / "missing.safetensors")
    with pytest.raises(ValueError, match="init_generator: .*missing"):
        build_trainer(other, tmp_path / "run4")


def test_init_generator_path_is_relative_to_the_config(tmp_path):
    (tmp_path / "configs").mkdir()
    path = tmp_path / "configs" / "sr.yaml"
    header = "task: mri-sr\ndata:\n  volumes: [train]\n"
    path.write_text(header + "train:\n  init_generator: ../models/start.safetensors\n")
    assert load_config(path).train.init_generator == str(tmp_path / "configs" / ".." / "models" / "start.safetensors")
    path.write_text(header + "train:\n  init_generator: mri-sr-default\n")
    assert load_config(path).train.init_generator == "mri-sr-default"
