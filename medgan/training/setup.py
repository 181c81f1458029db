"""Assemble a `GANTrainer` from a validated config: data sources, patient split, networks, samplers, validation."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from medgan.config import Config, DataConfig
from medgan.inference.restorer import resolve_device, volume_to_tensor
from medgan.io import Volume
from medgan.models.files import load_model_files
from medgan.networks import build_network
from medgan.tasks import Task, get_task
from medgan.training import distributed
from medgan.training.datasets import PatchSampler, _check_same_grid, _slice_spacing_mm, list_volume_paths, \
    load_training_volumes
from medgan.training.manifests import PairEntry, SeriesSource, discover_paired_folders, read_pairs_manifest
from medgan.training.simulation import SliceNoiseSimulator
from medgan.training.split import PatientSplit, resolve_split
from medgan.training.sr_data import ThickSlicePatchSampler, build_sr_validation_cases
from medgan.training.trainer import GANTrainer, ValidationCase

logger = logging.getLogger(__name__)

_VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")


def patient_id(path: Path) -> str:
    """Name a volume's patient after its file or folder name, without the volume suffix."""
    name = path.name
    for suffix in _VOLUME_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[:-len(suffix)]
    return name


def list_training_entries(data: DataConfig) -> list[PairEntry]:
    """List the training cases of ``data.mode``, before any validation patient is held out."""
    if data.mode == "paired":
        return read_pairs_manifest(data.manifest)
    if data.mode == "paired-folders":
        return discover_paired_folders(data.root, data.full_dose_patterns, data.low_dose_patterns)
    return [PairEntry(patient_id(path), SeriesSource(path)) for path in list_volume_paths(data.volumes)]


def list_validation_entries(data: DataConfig) -> list[PairEntry]:
    """List the held-out validation cases named in the config (``validation_volumes`` or ``_manifest``)."""
    if data.mode != "simulate" and data.validation_manifest:
        return read_pairs_manifest(data.validation_manifest)
    if data.mode == "simulate" and data.validation_volumes:
        return [PairEntry(patient_id(path), SeriesSource(path)) for path in list_volume_paths(data.validation_volumes)]
    return []


def split_entries(config: Config, entries: list[PairEntry], run_dir: Path | None,
                  resume: bool) -> tuple[list[PairEntry], list[PairEntry], PatientSplit | None]:
    """Return ``(train, validation, split)``; ``split`` is ``None`` when the config lists its own validation set.

    Raises:
        ValueError: if a patient of the config's validation set is also a training patient.
    """
    patients = [entry.patient for entry in entries]
    split = resolve_split(patients, config.data.validation_fraction, config.seed, run_dir, resume)
    if split.validation:
        held_out = set(split.validation)
        return ([e for e in entries if e.patient not in held_out], [e for e in entries if e.patient in held_out],
                split)
    validation = list_validation_entries(config.data)
    shared = sorted({e.patient for e in validation} & set(patients))
    if shared:
        raise ValueError(f"Patient(s) {', '.join(shared)} are in both the training data and the validation set; "
                         "keep each patient on one side.")
    return entries, validation, None


def _simulated_ct_case(data: DataConfig, task: Task, name: str, volume: Volume,
                       generator: torch.Generator) -> ValidationCase:
    hu = volume_to_tensor(volume.array)[0, 0]
    simulator = SliceNoiseSimulator(hu, _slice_spacing_mm(volume), data)
    noise = simulator.noise_hu(range(hu.shape[0]), (0, hu.shape[1], 0, hu.shape[2]), data.validation_dose_fraction,
                               generator)
    return ValidationCase(name, task.intensity.forward(hu + noise)[None, None], task.intensity.forward(hu)[None, None])


def build_validation_cases(config: Config, entries: list[PairEntry]) -> list[ValidationCase]:
    """Whole validation volumes with their low-quality inputs, degraded once with a fixed seed."""
    task = get_task(config.task)
    data = config.data
    if task.output_scale != (1, 1, 1):
        return build_sr_validation_cases(data, task, [(e.patient, e.high.read()) for e in entries], config.seed + 1)
    generator = torch.Generator().manual_seed(config.seed + 1)
    cases: list[ValidationCase] = []
    for entry in entries:
        high = entry.high.read()
        if entry.low is None:
            cases.append(_simulated_ct_case(data, task, entry.patient, high, generator))
            continue
        low = entry.low.read()
        _check_same_grid(low, high, entry.low, entry.high)
        cases.append(ValidationCase(entry.patient, task.intensity.forward(volume_to_tensor(low.array)),
                                    task.intensity.forward(volume_to_tensor(high.array))))
    return cases


def build_trainer(config: Config, run_dir: Path, *, resume: bool = False) -> GANTrainer:
    """Build networks, data and validation cases for ``config``, with the run folder ``run_dir``.

    With ``resume``, the patient split recorded in ``run_dir/split.json`` is reused instead of drawn again. Nothing
    is written to ``run_dir`` here: `GANTrainer.fit` writes the split when training starts.
    """
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
    _check_generator_scale(generator, task)
    if config.train.init_generator and not resume:
        _load_initial_generator(generator, config)

    train_entries, validation_entries, split = split_entries(config, list_training_entries(config.data),
                                                             Path(run_dir), resume)
    highs, lows = load_training_volumes(train_entries)
    if task.output_scale != (1, 1, 1):
        sampler = ThickSlicePatchSampler(config.data, task, highs)
    else:
        sampler = PatchSampler(config.data, task.intensity, highs, lows,
                               generator=torch.Generator().manual_seed(config.seed + 2))
    validation = build_validation_cases(config, validation_entries)
    logger.info("Training on %d volume(s), validating on %d, device %s", len(highs), len(validation), device)
    trainer = GANTrainer(config, generator, critic, sampler, validation, task.intensity, run_dir, device)
    trainer.split = split
    return trainer


def _load_initial_generator(generator: torch.nn.Module, config: Config) -> None:
    """Copy the weights of the model file ``train.init_generator`` into ``generator`` (fine-tuning).

    The model's card must describe the same network as ``config.generator`` and the same task, so that no weight
    is silently dropped or reinterpreted.
    """
    reference = config.train.init_generator
    try:
        network, card = load_model_files(reference)
    except (FileNotFoundError, ValueError) as error:
        raise ValueError(f"train.init_generator: {error}") from error
    if card.task != config.task:
        raise ValueError(f"train.init_generator: model {reference!r} was trained for task {card.task!r}, not "
                         f"{config.task!r}; choose a model of task {config.task!r}.")
    spec = {"name": config.generator.name, "kwargs": dict(config.generator.kwargs)}
    model_spec = {"name": card.network.get("name"), "kwargs": dict(card.network.get("kwargs", {}))}
    if model_spec != spec:
        raise ValueError(f"train.init_generator: model {reference!r} is {model_spec}, but the config's generator "
                         f"is {spec}; set generator.name and generator.kwargs to the model's, written out the "
                         "same way (defaults included only where the card lists them).")
    generator.load_state_dict(network.state_dict())
    named = f" ({card.name})" if card.name and card.name != str(reference) else ""
    logger.info("Generator starts from model %s%s", reference, named)


def _check_generator_scale(generator: torch.nn.Module, task: Task) -> None:
    """Raise unless the generator's output grid is the task's: ``output_scale`` (D, H, W) vs the task's (i, j, k)."""
    expected = tuple(reversed(task.output_scale))
    actual = tuple(int(n) for n in getattr(generator, "output_scale", (1, 1, 1)))
    if actual != expected:
        raise ValueError(f"generator: its output_scale (D, H, W) is {actual}, but task {task.name!r} needs "
                         f"{expected} (the task's output_scale {task.output_scale} along (i, j, k)). Set the "
                         "generator's kwargs to match, for example scale: [4, 1, 1] for mdcsrn-3d.")
