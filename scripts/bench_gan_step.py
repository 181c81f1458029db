"""Time one GANTrainer step against a bare PyTorch loop doing the same maths, and the data pipeline's rate.

Both loops use copies of the same generator and critic, the same fixed batch, the same Adam settings, and per
step ``n_critic`` critic updates with the WGAN-GP penalty followed by one generator update and the EMA update.
The overhead is ``(trainer time - bare time) / bare time``. The data pipeline is timed separately: ``PatchSampler``
(noise-bank simulation over a synthetic CT phantom) drawing the batches that one step consumes.

Usage: nice python scripts/bench_gan_step.py [--steps 30] [--warmup 3] [--batch-size 4] [--patch 8 48 48]
"""

from __future__ import annotations

import argparse
import copy
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from medgan.config import load_config
from medgan.io import Volume, write_volume
from medgan.networks.critics import critic_input
from medgan.training import build_trainer


def phantom(shape=(96, 96, 24)) -> Volume:
    """Return a water ellipse with bone and fat inserts in air, in HU, on 1 x 1 x 2 mm voxels."""
    i, j = np.meshgrid(np.linspace(-1, 1, shape[0]), np.linspace(-1, 1, shape[1]), indexing="ij")
    slice_hu = np.where(i**2 / 0.8 + j**2 / 0.6 < 1, 40.0, -1000.0)
    slice_hu[(i - 0.3) ** 2 + j**2 < 0.02] = 700.0
    slice_hu[(i + 0.3) ** 2 + (j - 0.1) ** 2 < 0.02] = -100.0
    return Volume(np.repeat(slice_hu[:, :, None], shape[2], axis=2).astype(np.float32), np.diag([1.0, 1.0, 2.0, 1.0]),
                  "CT")


def bare_step(generator, critic, ema, optimizer_g, optimizer_c, low, high, n_critic, gp_weight, adv_weight,
              ema_decay, step, eps_generator):
    for _ in range(n_critic):
        optimizer_c.zero_grad(set_to_none=True)
        with torch.no_grad():
            fake = generator(low)
        wasserstein = critic(critic_input(low, fake)).mean() - critic(critic_input(low, high)).mean()
        eps = torch.rand((low.shape[0], 1, 1, 1, 1), generator=eps_generator).to(low.device)
        mixed = (eps * high + (1 - eps) * fake).requires_grad_(True)
        (grad,) = torch.autograd.grad(critic(critic_input(low, mixed)).sum(), mixed, create_graph=True)
        penalty = ((grad.reshape(low.shape[0], -1).norm(2, dim=1) - 1) ** 2).mean()
        (wasserstein + gp_weight * penalty).backward()
        optimizer_c.step()
    optimizer_g.zero_grad(set_to_none=True)
    fake = generator(low)
    critic.requires_grad_(False)
    loss = (fake - high).abs().mean() + adv_weight * -critic(critic_input(low, fake)).mean()
    critic.requires_grad_(True)
    loss.backward()
    optimizer_g.step()
    decay = min(ema_decay, (1.0 + step) / (10.0 + step))
    with torch.no_grad():
        for average, current in zip(ema.parameters(), generator.parameters()):
            average.lerp_(current, 1.0 - decay)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3, help="Untimed steps before each measurement.")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--patch", type=int, nargs=3, default=[8, 48, 48], metavar=("D", "H", "W"))
    parser.add_argument("--device", default="cpu")
    arguments = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        (folder / "train").mkdir()
        write_volume(phantom(), folder / "train" / "phantom.nii.gz")
        config = load_config(None, [
            f"data.volumes=[{folder / 'train'}]", f"data.patch_size={arguments.patch}", "data.n_views=180",
            "data.simulation=noise-bank", "data.noise_bank_size=2", "data.thin_patch_probability=0",
            f"train.batch_size={arguments.batch_size}", "train.n_critic=2", "train.warmup_steps=0",
            f"train.steps={arguments.steps + arguments.warmup + 1}", "train.tensorboard=false",
            f"train.device={arguments.device}", "generator.kwargs={channels: 16, depth: 3}",
            "critic.kwargs={channels: 8, n_layers: 3}"])
        trainer = build_trainer(config, folder / "run")
        sampler = trainer.sample_batch
        data_generator = torch.Generator().manual_seed(0)
        batches_per_step = 1 + config.train.n_critic

        started = time.perf_counter()
        for _ in range(arguments.steps):
            for _ in range(batches_per_step):
                sampler(arguments.batch_size, data_generator)
        data_seconds = time.perf_counter() - started
        data_rate = arguments.steps * batches_per_step * arguments.batch_size / data_seconds

        device = trainer.device
        low, high = sampler(arguments.batch_size, data_generator)
        low, high = low.to(device), high.to(device)
        generator = copy.deepcopy(trainer.generator)
        critic = copy.deepcopy(trainer.critic)
        ema = copy.deepcopy(trainer.ema.average)
        train = config.train
        optimizer_g = torch.optim.Adam(generator.parameters(), lr=train.lr_generator, betas=tuple(train.betas))
        optimizer_c = torch.optim.Adam(critic.parameters(), lr=train.lr_critic, betas=tuple(train.betas))
        trainer.sample_batch = lambda batch_size, generator_: (low, high)

        def time_trainer() -> float:
            for _ in range(arguments.warmup):
                trainer.train_step()
            begin = time.perf_counter()
            for _ in range(arguments.steps):
                trainer.train_step()
            return (time.perf_counter() - begin) / arguments.steps

        def time_bare() -> float:
            eps_generator = torch.Generator().manual_seed(1)
            for step in range(arguments.warmup):
                bare_step(generator, critic, ema, optimizer_g, optimizer_c, low, high, train.n_critic,
                          config.loss.gradient_penalty_weight, config.loss.adversarial_weight, train.ema_decay, step,
                          eps_generator)
            begin = time.perf_counter()
            for step in range(arguments.steps):
                bare_step(generator, critic, ema, optimizer_g, optimizer_c, low, high, train.n_critic,
                          config.loss.gradient_penalty_weight, config.loss.adversarial_weight, train.ema_decay, step,
                          eps_generator)
            return (time.perf_counter() - begin) / arguments.steps

        # Alternate the two so that a change in machine load hits both alike.
        bare_times, trainer_times = [], []
        for _ in range(2):
            bare_times.append(time_bare())
            trainer_times.append(time_trainer())
        bare, trained = min(bare_times), min(trainer_times)

    step_patches = batches_per_step * arguments.batch_size
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
          f"torch {torch.__version__}, device {device}")
    print(f"batch {arguments.batch_size}, patch {arguments.patch}, n_critic {train.n_critic}, "
          f"{arguments.steps} timed steps (best of 2 rounds)")
    print(f"bare PyTorch step: {bare * 1000:.1f} ms; GANTrainer.train_step: {trained * 1000:.1f} ms; "
          f"overhead {100 * (trained - bare) / bare:+.1f} %")
    print(f"data pipeline: {data_rate:.1f} patches/s; a step consumes {step_patches} patches, so sampling them "
          f"takes {1000 * step_patches / data_rate:.1f} ms per step")


if __name__ == "__main__":
    main()
