"""Turn a training run into a model file: the generator's weights and a `ModelCard`."""

from __future__ import annotations

import csv
from pathlib import Path

import yaml

from medgan import __version__
from medgan.config import load_config
from medgan.models.card import ModelCard
from medgan.models.files import save_model
from medgan.networks import build_network
from medgan.tasks import get_task
from medgan.training.checkpoints import load_checkpoint
from medgan.training.datasets import list_volume_paths


def _validation_at(log_path: Path, step: int) -> dict[str, float]:
    """Return the validation scores logged at ``step``, or nothing when that step did not validate."""
    if not log_path.is_file():
        return {}
    found: dict[str, float] = {}
    with open(log_path, newline="", encoding="utf-8") as stream:
        for row in csv.DictReader(stream):
            if row.get("val_psnr_db") and int(row["step"]) == step:
                found = {"step": step, "val_psnr_db": float(row["val_psnr_db"]), "val_ssim": float(row["val_ssim"])}
    return found


def describe_training_data(config_dict: dict) -> str:
    data = config_dict["data"]
    if data["mode"] == "paired":
        return f"Paired low/normal-dose volumes from manifest {data['manifest']}."
    if data["mode"] == "paired-folders":
        return (f"Paired full-dose and low-dose DICOM series, one folder per patient, under {data['root']} "
                f"(full dose {data['full_dose_patterns']}, low dose {data['low_dose_patterns']}).")
    try:
        names = [path.name for path in list_volume_paths(data["volumes"])]
    except FileNotFoundError:
        names = [Path(entry).name for entry in data["volumes"]]
    if config_dict["task"] == "mri-sr":
        scale = get_task("mri-sr").output_scale
        snr = data["rician_snr_range"]
        noise = f"Rician noise at SNR {snr[0]:g} to {snr[1]:g}" if snr else "no added noise"
        return (f"High-resolution MRI volumes {', '.join(names)}, degraded on the fly to slices {scale[2]}x "
                f"thicker along k with a {data['slice_profile']} slice profile and {noise}.")
    return (
        f"Normal-dose volumes {', '.join(names)}, low dose simulated in the "
        f"projection domain with dose fractions {data['dose_fraction_range']}, {data['photons_per_ray']:g} "
        f"photons per ray at full dose, electronic noise {data['electronic_noise_std_photons']:g} photons, "
        f"{data['n_views']} views."
    )


def export_run(run_dir: str | Path, output: str | Path, *, name: str = "", checkpoint: str | Path | None = None,
               training_data: str = "", weights: str = "ema", overwrite: bool = False) -> Path:
    """Write the generator of ``run_dir`` (its latest checkpoint unless ``checkpoint`` is given) as a model file.

    ``weights`` is ``"ema"`` for the moving average (what validation scored) or ``"generator"`` for the raw
    weights of the last optimizer step.

    ``training_data`` is prepended to the card's generated description of the data and its simulation.

    Raises:
        FileNotFoundError: if the run folder lacks ``config.yaml`` or a checkpoint.
        FileExistsError: if the output exists and ``overwrite`` is false.
    """
    run_dir = Path(run_dir)
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path} not found; pass a folder written by 'medgan train'.")
    config_dict = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    config = load_config(config_path)
    if checkpoint is not None and Path(checkpoint).resolve().parent != (run_dir / "checkpoints").resolve():
        raise ValueError(f"Checkpoint {checkpoint} is not in {run_dir / 'checkpoints'}; the card would describe "
                         "another run. Pass a checkpoint of RUN_DIR.")
    state = load_checkpoint(checkpoint or run_dir)
    generator = build_network(config.generator.name, config.generator.kwargs)
    if weights not in ("ema", "generator"):
        raise ValueError(f"weights must be 'ema' or 'generator', got {weights!r}.")
    # Checkpoints written before the moving average existed lack it; their generator is the only choice.
    chosen = state.get("ema", state["generator"]) if weights == "ema" else state["generator"]
    try:
        generator.load_state_dict(chosen)
    except RuntimeError as error:
        raise ValueError(f"The checkpoint does not fit the generator in {config_path}: {error}") from error
    # Validation scored the moving average when the checkpoint has one, so its numbers describe only that.
    scored_exported_weights = weights == "ema" or "ema" not in state
    validation = _validation_at(run_dir / "log.csv", int(state["step"])) if scored_exported_weights else {}
    metrics = {}
    task = get_task(config.task)
    if validation:
        if task.name == "mri-sr":
            protocol = ("network units (1 = the volume's 99.5th percentile) clipped to [0, 1]; thick slices "
                        "simulated from the validation volume; PSNR and mean 2D SSIM over axial slices")
        else:
            protocol = (f"window [-1000, 1000] HU mapped to [0, 1]; simulated dose fraction "
                        f"{config.data.validation_dose_fraction}; PSNR and mean 2D SSIM over axial slices")
        metrics["validation"] = {**validation, "protocol": protocol}
    card = ModelCard(
        task=config.task,
        network={"name": config.generator.name, "kwargs": config.generator.kwargs},
        intensity=task.intensity.to_dict(),
        patch_size=tuple(config.data.patch_size),
        output_scale=tuple(task.output_scale),
        training_data=" ".join(part for part in (training_data, describe_training_data(config_dict)) if part),
        metrics=metrics,
        medgan_version=__version__,
        name=name or Path(output).stem,
        notes=f"Exported from {run_dir.name} at step {int(state['step'])}, "
              f"{'moving-average' if weights == 'ema' else 'raw generator'} weights.",
    )
    return save_model(generator, card, output, overwrite=overwrite)
