"""Assemble a `GANTrainer` from a validated config: networks, patch sampler and validation cases."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from medgan.config import Config
from medgan.inference.restorer import resolve_device, volume_to_tensor
from medgan.io import read_volume
from medgan.networks import build_network
from medgan.tasks import get_task
from medgan.training.datasets import (
    PatchSampler,
    _slice_spacing_mm,
    list_volume_paths,
    load_training_volumes,
    read_pairs_manifest,
)
from medgan.training import distributed
from medgan.training.simulation import SliceNoiseSimulator
from medgan.training.trainer import GANTrainer, ValidationCase

logger = logging.getLogger(__name__)


def build_validation_cases(config: Config) -> list[ValidationCase]:
    """Whole validation volumes with their low-quality inputs, made once with a fixed seed."""
    intensity = get_task(config.task).intensity
    data = config.data
    cases: list[ValidationCase] = []
    if data.mode == "paired" and data.validation_manifest:
        for low_path, high_path in read_pairs_manifest(data.validation_manifest):
            low, high = read_volume(low_path), read_volume(high_path)
            cases.append(ValidationCase(high_path.name, intensity.forward(volume_to_tensor(low.array)),
                                        intensity.forward(volume_to_tensor(high.array))))
    elif data.validation_volumes:
        generator = torch.Generator().manual_seed(config.seed + 1)
        for path in list_volume_paths(data.validation_volumes):
            volume = read_volume(path)
            hu = volume_to_tensor(volume.array)[0, 0]
            simulator = SliceNoiseSimulator(hu, _slice_spacing_mm(volume), data)
            noise = simulator.noise_hu(range(hu.shape[0]), (0, hu.shape[1], 0, hu.shape[2]),
                                       data.validation_dose_fraction, generator)
            cases.append(ValidationCase(path.name, intensity.forward(hu + noise)[None, None],
                                        intensity.forward(hu)[None, None]))
    return cases


def build_trainer(config: Config, run_dir: Path) -> GANTrainer:
    """Build networks, data and validation cases for ``config``, with the run folder ``run_dir``."""
    task = get_task(config.task)
    torch.manual_seed(config.seed)
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    device = resolve_device(config.train.device)
    distributed.init_from_environment(device)
    if device.type == "cuda" and distributed.is_distributed():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    networks = {}
    for key in ("generator", "critic"):
        spec = getattr(config, key)
        try:
            networks[key] = build_network(spec.name, spec.kwargs)
        except ValueError as error:
            raise ValueError(f"{key}: {error}") from error
    generator, critic = networks["generator"], networks["critic"]
    highs, lows = load_training_volumes(config.data)
    sampler = PatchSampler(config.data, task.intensity, highs, lows,
                           generator=torch.Generator().manual_seed(config.seed + 2))
    validation = build_validation_cases(config)
    logger.info("Training on %d volume(s), validating on %d, device %s", len(highs), len(validation), device)
    return GANTrainer(config, generator, critic, sampler, validation, task.intensity, run_dir, device)
