"""``medgan infer``: restore one scan, or a cohort of scans, with a trained model."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from medgan.cli.options import (
    FiniteFloatRange,
    check_output_folder,
    check_output_free,
    device_option,
    output_suffix,
    overwrite_option,
    progress_enabled,
    sidecar_path,
)

logger = logging.getLogger("medgan.cli")

WRITABLE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".mha")


def _default_output(scan: Path, output_format: str | None = None) -> Path:
    name = scan.name
    for suffix in (".nii.gz", ".nii", ".nrrd", ".mha", ".dcm"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    suffix = {None: ".nii.gz", "nifti": ".nii.gz", "nrrd": ".nrrd", "mha": ".mha", "dicom": ""}[output_format]
    return Path.cwd() / f"{name}_restored{suffix}"


def _output_format(scan: Path, output: Path, requested: str | None) -> str:
    """Return the output format: ``requested``, else dicom for a DICOM folder written to a folder, else the suffix's.

    Raises click.BadParameter when the suffix of ``output`` does not fit the format.
    """
    from medgan.io.readers import FORMAT_SUFFIXES, has_dicom_preamble

    suffix = output_suffix(output)
    names_folder = output.is_dir() or suffix == ""
    if requested is None:
        if scan.is_dir() and names_folder:
            return "dicom"
        for name, suffixes in FORMAT_SUFFIXES.items():
            if suffix in suffixes:
                return name
        raise click.BadParameter(f"{output.name} has an unsupported suffix; use one of "
                                 f"{', '.join(WRITABLE_SUFFIXES)}, or a folder name without a suffix for a "
                                 "DICOM folder input.", param_hint="--output")

    if requested == "dicom":
        if suffix in WRITABLE_SUFFIXES:
            raise click.BadParameter(f"--format dicom writes a folder, but {output.name} has the file suffix "
                                     f"{suffix}. Name a folder, or choose another --format.", param_hint="--output")
        if not (scan.is_dir() or output_suffix(scan) == ".dcm" or has_dicom_preamble(scan)):
            raise click.BadParameter(f"--format dicom writes a derived series of a DICOM input, but {scan} is not "
                                     "DICOM. Choose nifti, nrrd or mha.", param_hint="--format")
    elif suffix not in FORMAT_SUFFIXES[requested]:
        raise click.BadParameter(f"{output.name} does not end with a {requested} suffix "
                                 f"({', '.join(FORMAT_SUFFIXES[requested])}).", param_hint="--output")
    return requested


PRECISION_CHOICES = ("fp32", "bf16", "fp16")


@dataclass(frozen=True)
class RestoreSettings:
    """The options of one ``medgan infer`` run that every scan shares."""

    roi: tuple[int, int, int] | None
    overlap: float
    batch_size: int
    precision: str
    stitch_device: Any
    ignore_modality: bool
    overwrite: bool
    adapt_minutes: float | None = None
    data_consistency: bool = True
    strength: float = 1.0


@click.command()
@click.argument("scan", type=click.Path(exists=True, path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path),
              help="Output volume (.nii.gz, .nii, .nrrd or .mha), or a new folder for a derived DICOM series, "
                   "written in the input's exact geometry. Default: SCAN's name with _restored.nii.gz (_restored "
                   "for DICOM), in the current folder. For a cohort: the output folder (required), created if "
                   "missing.")
@click.option("--format", "output_format", type=click.Choice(["nifti", "nrrd", "mha", "dicom"]), default=None,
              help="Output format. Default: dicom when SCAN is a DICOM folder and OUTPUT is a folder or has no "
                   "suffix, otherwise the format of OUTPUT's suffix; nifti for a cohort. dicom writes one int16 CT "
                   "or MR file per slice into the folder OUTPUT, as a new series in the input's study.")
@click.option("--model", "model_name", default=None,
              help="Shipped model name or path to a .safetensors model file (its .json card beside it). "
                   "Default: the task's shipped model.")
@click.option("--task", default="ldct", show_default=True, help="Task whose default model is used when --model is "
                                                                "not given.")
@device_option
@click.option("--roi", nargs=3, type=click.IntRange(min=1), default=None, metavar="D H W",
              help="Sliding-window size in input voxels along the slice axis (k), rows (j) and columns (i), "
                   "shrunk to the volume along any shorter axis. Default: the model's training patch size, grown "
                   "to the network's receptive field.")
@click.option("--overlap", type=FiniteFloatRange(0.0, 0.95), default=0.25, show_default=True,
              help="Fraction of each window shared with its neighbours along every axis, in [0, 0.95].")
@click.option("--batch-size", type=click.IntRange(min=1), default=1, show_default=True,
              help="Windows per network call; larger is faster on a GPU and needs more memory.")
@click.option("--precision", type=click.Choice(PRECISION_CHOICES), default="fp32", show_default=True,
              help="Numeric precision of the network: fp32, or bf16 / fp16 autocast (faster on hardware that "
                   "supports it, with small intensity errors; docs/benchmarks.md gives the measured error in HU).")
@click.option("--stitch-device", default="cpu", show_default=True,
              help="Where the overlapping windows are averaged: cpu (float64, exact) or cuda[:N] (float32, saves "
                   "host-device copies, needs GPU memory for the whole output).")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="CPU threads for torch (torch.set_num_threads). Default: torch's own choice.")
@click.option("--compile", "compile_network", is_flag=True, default=False,
              help="Run the network through torch.compile. The first window takes longer; if compiling fails, a "
                   "warning is logged and the network runs uncompiled.")
@click.option("--series-uid", default=None,
              help="SeriesInstanceUID to read when the DICOM folder contains several series.")
@click.option("--resample-z", is_flag=True, default=False,
              help="For DICOM input with uneven slice gaps (such as a missing slice), interpolate the slices "
                   "linearly onto a uniform grid at about the median gap, keeping the first and last slice, "
                   "instead of stopping with an error.")
@click.option("--preview", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="PNG of the middle slices: input | output | difference. Default: OUTPUT's name with _preview.png.")
@click.option("--no-preview", is_flag=True, default=False, help="Do not write the PNG preview.")
@click.option("--adapt", is_flag=True, default=False,
              help="Adapt the model to the scan itself before restoring it: for thick-slice MRI a 2D network learns, "
                   "from the scan's own in-plane axes degraded like the slice axis, to refine the model's output; "
                   "a CT model is fine-tuned on extra noise simulated on the scan's own content. The sidecar "
                   "records what was done.")
@click.option("--adapt-minutes", type=FiniteFloatRange(min=0.05, max=120.0), default=5.0, show_default=True,
              help="Wall-clock budget of --adapt, in minutes.")
@click.option("--data-consistency/--no-data-consistency", default=True, show_default=True,
              help="Super-resolution only: shift each group of output slices so that their mean equals the input "
                   "slice they came from, so the output degraded again reproduces the input.")
@click.option("--strength", type=FiniteFloatRange(0.0, 1.0), default=1.0, show_default=True,
              help="Models that keep the grid (ldct): the fraction of the model's change applied, output = input + "
                   "STRENGTH * (restored - input). Lower values keep part of the input's noise texture.")
@click.option("--ignore-modality", is_flag=True, default=False,
              help="Restore a volume whose DICOM modality differs from the model's (for example MR through a CT "
                   "model). Without it such input is rejected.")
@overwrite_option
def infer(scan: Path, output: Path | None, output_format: str | None, model_name: str | None, task: str,
          device: str, roi: tuple[int, int, int] | None, overlap: float, batch_size: int, precision: str,
          stitch_device: str, threads: int | None, compile_network: bool, series_uid: str | None,
          resample_z: bool, preview: Path | None, no_preview: bool, adapt: bool, adapt_minutes: float,
          data_consistency: bool, strength: float, ignore_modality: bool, overwrite: bool) -> None:
    """Restore SCAN (a NIfTI, NRRD or MHA file, or a folder holding one DICOM series) with a trained model.

    The output keeps the input's physical extent, orientation and voxel values' unit (HU for CT). A model
    with an output scale (super-resolution) writes more voxels over the same extent; otherwise the output has
    the input's grid and affine. A JSON sidecar beside the output records the model, settings, run time and
    fidelity checks.

    SCAN may also be a cohort: a folder of NIfTI, NRRD or MHA files and sub-folders each holding one DICOM
    series, or a .txt file listing such paths one per line. Every scan is restored into the folder OUTPUT; a
    scan that fails is reported and skipped, a scan whose outputs exist is skipped unless --overwrite is
    given, and a summary table ends the run. Under torchrun (RANK and WORLD_SIZE set) each process takes
    every WORLD_SIZE-th scan of the sorted list, starting at RANK.

    \b
    Examples:
      medgan infer scan.nii.gz -o scan_denoised.nii.gz
      medgan infer dicom_folder/ -o denoised.nii.gz --device cuda --batch-size 8
      medgan infer dicom_folder/ -o denoised_series --overwrite
      medgan infer scans/ -o restored/ --threads 8
      torchrun --nproc-per-node 4 -m medgan infer scans.txt -o restored/ --device cuda
      medgan infer --task mri-sr thick.nii.gz -o fine.nii.gz --adapt --adapt-minutes 5
    """
    from click.core import ParameterSource

    from medgan.inference.cohort import is_cohort_input

    context = click.get_current_context()
    if not adapt and context.get_parameter_source("adapt_minutes") == ParameterSource.COMMANDLINE:
        raise click.BadParameter("it sets the budget of --adapt; add --adapt or drop it.",
                                 param_hint="--adapt-minutes")
    task_given = context.get_parameter_source("task") == ParameterSource.COMMANDLINE

    if not overlap < 0.95 + 1e-12 or not overlap >= 0:
        raise click.BadParameter(f"{overlap} is not a number in [0, 0.95].", param_hint="--overlap")
    settings = RestoreSettings(roi=roi, overlap=overlap, batch_size=batch_size, precision=precision,
                               stitch_device=stitch_device, ignore_modality=ignore_modality, overwrite=overwrite,
                               adapt_minutes=adapt_minutes if adapt else None, data_consistency=data_consistency,
                               strength=strength)
    if is_cohort_input(scan):
        if preview is not None:
            raise click.BadParameter("a cohort writes one preview per scan beside its output; drop --preview or "
                                     "use --no-preview.", param_hint="--preview")
        if series_uid is not None:
            raise click.BadParameter("a cohort reads each DICOM folder's only series; restore a folder with "
                                     "several series on its own.", param_hint="--series-uid")
        if output is None:
            raise click.BadParameter(f"{scan} is a cohort, so -o must name the output folder.", param_hint="--output")
        if output.exists() and not output.is_dir():
            raise click.BadParameter(f"{output} is a file, but a cohort writes into a folder.", param_hint="--output")
        # The cohort's folder is created later, so a missing one needs a writable parent folder.
        check_output_folder(output if output.is_dir() else output.parent, "--output")
        restorer, settings = _prepare_run(model_name, task, device, threads, compile_network, settings, task_given)
        _infer_cohort(scan, output, output_format or "nifti", restorer, settings, resample_z, not no_preview)
        return

    output = output or _default_output(scan, output_format)
    output_format = _output_format(scan, output, output_format)
    check_output_folder(output.parent, "--output")
    if output_format == "dicom" and output.exists() and not output.is_dir():
        raise click.BadParameter(f"{output} is a file, but --format dicom writes a folder.", param_hint="--output")
    if output_format != "dicom" and output.is_dir():
        raise click.BadParameter(f"{output} is a folder, but --format {output_format} writes a file.",
                                 param_hint="--output")
    if preview is None and not no_preview:
        stem = output.name if output_format == "dicom" else output.name[: -len(output_suffix(output))]
        preview = output.with_name(f"{stem}_preview.png")
    if no_preview:
        preview = None
    if preview is not None:
        if preview.suffix.lower() != ".png":
            raise click.BadParameter(f"{preview.name} must end in .png.", param_hint="--preview")
        check_output_folder(preview.parent, "--preview")
        if preview.resolve() in (output.resolve(), scan.resolve()):
            raise click.BadParameter(f"{preview} is also the input or the output; choose another file.",
                                     param_hint="--preview")
    if output.resolve() == scan.resolve():
        raise click.BadParameter(f"{output} is the input scan; choose another output so the scan is never "
                                 "replaced.", param_hint="--output")
    sidecar = _sidecar_for(output, output_format)
    if sidecar.resolve() == scan.resolve():
        raise click.BadParameter(f"the JSON sidecar {sidecar} would replace the input; choose another output name.",
                                 param_hint="--output")
    check_output_free(output, overwrite, "--output")
    check_output_free(sidecar, overwrite, "--output (its JSON sidecar)")
    if preview is not None:
        check_output_free(preview, overwrite, "--preview")

    restorer, settings = _prepare_run(model_name, task, device, threads, compile_network, settings, task_given)
    _check_scale_fits_format(restorer, output_format)
    if sidecar.resolve() == _model_card_path(restorer):
        raise click.BadParameter(f"the JSON sidecar {sidecar} would replace the model's card; choose another output "
                                 "name.", param_hint="--output")
    _infer_one(scan, output, output_format, preview, sidecar, restorer, settings, series_uid, resample_z)
    written = [str(output)] + ([str(preview)] if preview is not None else []) + [str(sidecar)]
    click.echo("Wrote " + ", ".join(written[:-1]) + " and " + written[-1])


def _sidecar_for(output: Path, output_format: str) -> Path:
    """Return the JSON sidecar of ``output``: beside a DICOM folder as FOLDER.json, else the volume suffix replaced."""
    if output_format == "dicom":
        return output.with_name(output.name + ".json")
    return sidecar_path(output)


def _prepare_run(model_name: str | None, task: str, device: str, threads: int | None, compile_network: bool,
                 settings: RestoreSettings, task_given: bool = False):
    """Apply --threads, resolve the devices and load the model; return the restorer and the resolved settings."""
    import torch

    from medgan.inference.restorer import check_strength, load_model, resolve_device
    from medgan.tasks import get_task
    from medgan.cli.errors import InvalidInput

    if threads is not None:
        torch.set_num_threads(threads)
    try:
        device = resolve_device(_device_for_local_rank(device))
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--device") from error
    try:
        stitch_device = resolve_device(settings.stitch_device)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--stitch-device") from error
    try:
        model = model_name or get_task(task).default_model
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--task") from error
    if model is None:
        raise click.BadParameter(f"task {task!r} has no shipped model; pass --model.", param_hint="--model")
    try:
        restorer = load_model(model, device=device, compile=compile_network)
    except FileNotFoundError as error:
        hint = "" if model_name else (f" It is the default model of --task {task}; train one with configs/ and "
                                      "pass it with --model FILE.safetensors.")
        raise click.BadParameter(f"{error}{hint}", param_hint="--model") from error
    except ValueError as error:
        raise InvalidInput(f"Model {model}: {error}") from error
    if task_given and restorer.card.task != task:
        raise click.BadParameter(f"model {model!r} restores task {restorer.card.task!r}, not {task!r}; drop --task "
                                 "or pass a model of that task.", param_hint="--task")
    try:
        check_strength(settings.strength, restorer.output_scale_ijk)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--strength") from error
    logger.info("Model %s (task %s, network %s, output scale %s along i, j, k) on %s with %d CPU threads",
                restorer.card.name or model, restorer.card.task, restorer.card.network["name"],
                restorer.output_scale_ijk, restorer.device, torch.get_num_threads())
    return restorer, RestoreSettings(**{**settings.__dict__, "stitch_device": stitch_device})


def _device_for_local_rank(device: str) -> str:
    """Under torchrun, put each process on its own GPU (``cuda:LOCAL_RANK``) when --device is auto or cuda."""
    import os

    import torch

    local_rank = os.environ.get("LOCAL_RANK")
    if device in ("auto", "cuda") and local_rank is not None and local_rank.isdigit() and torch.cuda.is_available():
        return f"cuda:{int(local_rank) % torch.cuda.device_count()}"
    return device


def _check_scale_fits_format(restorer, output_format: str) -> None:
    """Reject, before any work, a DICOM output for a model that changes the number of rows or columns."""
    scale_i, scale_j, _ = restorer.output_scale_ijk
    if output_format == "dicom" and (scale_i, scale_j) != (1, 1):
        raise click.BadParameter(f"model {restorer.card.name or 'unnamed'!r} scales i and j by {scale_i} and "
                                 f"{scale_j}, but a derived DICOM series keeps the source's rows and columns. "
                                 "Choose nifti, nrrd or mha.", param_hint="--format")


def _model_card_path(restorer) -> Path | None:
    """Return the resolved path of the model's JSON card, or None when it cannot be found by the card's name."""
    from medgan.models.files import card_path_for, resolve_model_path

    if not restorer.card.name:
        return None
    try:
        return card_path_for(resolve_model_path(restorer.card.name)).resolve()
    except FileNotFoundError:
        return None


def _infer_one(scan: Path, output: Path, output_format: str, preview: Path | None, sidecar: Path, restorer,
               settings: RestoreSettings, series_uid: str | None, resample_z: bool) -> None:
    """Read, restore and write one scan; raise the CLI's errors (InvalidInput, RuntimeFailure, OutputExists)."""
    from medgan.cli.errors import InvalidInput, OutputExists, OutputNotWritable
    from medgan.evaluation.figures import save_preview_png
    from medgan.io import VolumeReadError, read_volume, write_volume
    from medgan.io.atomic import OutputNotWritableError

    try:
        volume = read_volume(scan, series_uid=series_uid, resample_z=resample_z)
    except (VolumeReadError, ValueError) as error:
        message = str(error) if str(scan) in str(error) else f"Cannot read {scan}: {error}"
        raise InvalidInput(message) from error
    if output_format == "dicom" and volume.metadata.get("format") != "dicom":
        raise InvalidInput(f"--format dicom writes a derived series of a DICOM input, but {scan} was read as "
                           f"{volume.metadata.get('format') or 'another format'}. Choose nifti, nrrd or mha.")
    logger.info("Input %s: %r", scan, volume)

    adaptation = None
    if settings.adapt_minutes is not None:
        restorer, adaptation = _adapt(scan, volume, restorer, settings)
    restored, window, seconds = _restore(scan, volume, restorer, settings)
    if adaptation is not None:
        restored.metadata["medgan_model"] += " adapted"
    record = _run_record(scan, series_uid, output, volume, restored, restorer, settings, window, seconds)
    if adaptation is not None:
        record["adaptation"] = adaptation
    # The sidecar goes last: it records a finished output. If any write fails, the files this call created are
    # removed, so a rerun does not mistake a half-written result for a finished one.
    targets = [path for path in (preview, output, sidecar) if path is not None]
    existed = {path: path.exists() for path in targets}
    try:
        if preview is not None:
            save_preview_png(volume, restored, preview, overwrite=settings.overwrite)
        write_volume(restored, output, overwrite=settings.overwrite, format=output_format)
        if output.is_dir():
            record["derived_series_instance_uid"] = _derived_series_uid(output)
        _write_sidecar(record, sidecar, settings.overwrite)
    except BaseException as error:
        _remove_created(targets, existed)
        if isinstance(error, FileExistsError):
            raise OutputExists(str(error)) from error
        if isinstance(error, OutputNotWritableError):
            raise OutputNotWritable(str(error)) from error
        if isinstance(error, ValueError):
            raise InvalidInput(f"Cannot write {output}: {error}") from error
        raise


def _derived_series_uid(folder: Path) -> str:
    """Return the SeriesInstanceUID of the derived DICOM series just written into ``folder``."""
    import pydicom

    first = min(path for path in folder.iterdir() if path.is_file())
    return str(pydicom.dcmread(first, stop_before_pixels=True).SeriesInstanceUID)


def _remove_created(paths: list[Path], existed: dict[Path, bool]) -> None:
    """Delete the outputs among ``paths`` that did not exist before this run wrote them."""
    import shutil

    for path in paths:
        if existed[path] or not path.exists():
            continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        logger.info("Removed %s, written before the failure", path)


def _adapt(scan: Path, volume, restorer, settings: RestoreSettings):
    """Fine-tune a copy of the restorer's network on ``volume``; return a restorer around it and the record."""
    from medgan.adaptation import adapt_denoiser, refine_super_resolution
    from medgan.cli.errors import InvalidInput
    from medgan.inference.restorer import Restorer
    from medgan.models.files import network_weights_sha256
    from medgan.tasks import IntensityMapping

    card = restorer.card
    intensity = IntensityMapping.from_dict(card.intensity)
    scale_i, scale_j, scale_k = restorer.output_scale_ijk
    logger.info("Adapting model %s to %s for up to %.1f minutes", card.name or "unnamed", scan,
                settings.adapt_minutes)
    try:
        if (scale_i, scale_j) == (1, 1) and scale_k > 1:
            adapted, record = refine_super_resolution(restorer.network, volume, task_intensity=intensity,
                                                      slice_axis_scale=scale_k, minutes=settings.adapt_minutes,
                                                      device=restorer.device)
        elif (scale_i, scale_j, scale_k) == (1, 1, 1) and card.task == "ldct":
            adapted, record = adapt_denoiser(restorer.network, volume, task_intensity=intensity,
                                             minutes=settings.adapt_minutes, device=restorer.device)
        else:
            raise ValueError(f"--adapt supports ldct denoisers and super-resolution along k only; model "
                             f"{card.name or 'unnamed'!r} has task {card.task} and output scale "
                             f"{restorer.output_scale_ijk} along i, j, k.")
    except ValueError as error:
        raise InvalidInput(f"Cannot adapt to {scan}: {error}") from error
    record["adapted_weights_sha256"] = network_weights_sha256(adapted)
    return Restorer(adapted, card, device=restorer.device), record


def _restore(scan: Path, volume, restorer, settings: RestoreSettings):
    """Restore ``volume`` with a progress bar; return (restored volume, window used, seconds)."""
    import torch
    from tqdm import tqdm

    from medgan.cli.errors import InvalidInput, RuntimeFailure

    window = tuple(settings.roi) if settings.roi is not None else restorer.default_roi()
    started = time.perf_counter()
    with tqdm(total=0, unit="window", desc="restoring", disable=not progress_enabled(), leave=False) as bar:
        def report(done: int, total: int) -> None:
            bar.total = total
            bar.n = done
            bar.refresh()

        try:
            restored = restorer.restore(volume, roi_size=window, overlap=settings.overlap,
                                        batch_size=settings.batch_size, precision=settings.precision,
                                        stitch_device=settings.stitch_device, progress=report,
                                        allow_modality_mismatch=settings.ignore_modality,
                                        data_consistency=settings.data_consistency,
                                        strength=settings.strength)
        except ValueError as error:
            raise InvalidInput(f"Cannot restore {scan}: {error}") from error
        except (RuntimeError, torch.cuda.OutOfMemoryError) as error:
            raise RuntimeFailure(f"Restoration of {scan} failed: {error}. Try a smaller --roi or --batch-size, "
                                 "or --device cpu.") from error
    seconds = time.perf_counter() - started
    logger.info("Restored %s in %.1f s", scan, seconds)
    return restored, window, seconds


def _run_record(scan: Path, series_uid: str | None, output: Path, volume, restored, restorer,
                settings: RestoreSettings, window: tuple[int, ...], seconds: float) -> dict[str, Any]:
    """Return the JSON sidecar's record of one restoration, with the fidelity checks of the output."""
    from medgan import __version__

    card = restorer.card
    return {
        "medgan_version": __version__,
        "model": {"name": card.name, "task": card.task, "network": card.network,
                  "weights_sha256": card.weights_sha256},
        "input": str(scan.resolve()),
        "series_uid": series_uid,
        "source_series_instance_uid": volume.metadata.get("series_instance_uid") or None,
        "output": output.name,
        "device": str(restorer.device),
        "stitch_device": str(settings.stitch_device),
        "precision": settings.precision,
        "roi_dhw_voxels": [int(n) for n in window],
        "overlap": settings.overlap,
        "batch_size": settings.batch_size,
        "output_scale_ijk": list(restorer.output_scale_ijk),
        # For super-resolution: the input's slice spacing over its finest pixel, which the model's factor along k
        # should match (a warning is logged when it differs by more than 5 %).
        "slice_to_pixel_ratio": (round(float(volume.spacing_mm[2] / min(volume.spacing_mm[:2])), 4)
                                 if restorer.output_scale_ijk[2] > 1 else None),
        "data_consistency": settings.data_consistency and restorer.output_scale_ijk != (1, 1, 1),
        "strength": settings.strength,
        "input_shape": list(volume.shape),
        "output_shape": list(restored.shape),
        "output_affine": restored.affine.tolist(),
        "wall_time_s": round(seconds, 3),
        "fidelity": _fidelity(volume, restored, card.task),
    }


def _fidelity(volume, restored, task: str) -> dict[str, Any]:
    """Return the fidelity report of the output; a check that cannot run is recorded as an error and logged.

    ``fidelity_report`` logs each of its own warnings.
    """
    from medgan.evaluation.fidelity import fidelity_report

    try:
        return fidelity_report(volume, restored, task)
    except ValueError as error:
        logger.warning("Fidelity checks could not run: %s", error)
        return {"task": task, "passed": False, "error": str(error), "warnings": [str(error)]}


def _write_sidecar(record: dict[str, Any], sidecar: Path, overwrite: bool) -> None:
    from medgan.io import atomic_output

    with atomic_output(sidecar, overwrite) as temporary:
        temporary.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")


@dataclass
class CohortResult:
    """Outcome of one cohort scan for the summary table: ``status`` is done, skipped or failed."""

    scan: Path
    status: str
    detail: str
    exit_code: int = 0


def _infer_cohort(cohort: Path, folder: Path, output_format: str, restorer, settings: RestoreSettings,
                  resample_z: bool, with_preview: bool) -> None:
    """Restore every scan of ``cohort`` (this rank's share) into ``folder``, then print a summary table.

    Raises:
        InvalidInput or RuntimeFailure: after the summary, when at least one scan failed.
    """
    from medgan.cli.errors import (
        EXIT_OUTPUT_EXISTS,
        EXIT_RUNTIME_FAILURE,
        InvalidInput,
        OutputNotWritable,
        RuntimeFailure,
    )
    from medgan.inference.cohort import find_name_collisions, list_cohort, shard_for_rank

    try:
        entries, rank, world_size = shard_for_rank(list_cohort(cohort))
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="SCAN") from error
    scans = [entry for entry in entries if not entry.skip_reason]
    collisions = find_name_collisions(scans, output_format)
    if collisions:
        listing = "; ".join(f"{name}: {', '.join(str(p) for p in paths)}" for name, paths in collisions.items())
        raise click.BadParameter(f"several scans would write the same output ({listing}). Rename them or restore "
                                 "them in separate runs.", param_hint="SCAN")
    _check_scale_fits_format(restorer, output_format)
    try:
        folder.mkdir(exist_ok=True)
    except OSError as error:
        raise OutputNotWritable(f"Cannot create the output folder {folder}: {error.strerror or error}. Choose "
                                "another output folder, or make its parent folder writable.") from error
    logger.info("Cohort %s: %d entries for rank %d of %d", cohort, len(entries), rank, world_size)

    results = []
    for index, entry in enumerate(entries, start=1):
        logger.info("Scan %d of %d: %s", index, len(entries), entry.path)
        results.append(_cohort_scan(entry, folder, output_format, restorer, settings, resample_z, with_preview))
        if results[-1].status == "failed":
            logger.error("Failed %s: %s", entry.path, results[-1].detail)

    _print_summary(results, rank, world_size)
    failed = [result for result in results if result.status == "failed"]
    if failed:
        message = f"{len(failed)} of {len(results)} scans failed; the summary above gives each reason."
        if any(result.exit_code == EXIT_RUNTIME_FAILURE for result in failed):
            raise RuntimeFailure(message)
        if any(result.exit_code == EXIT_OUTPUT_EXISTS for result in failed):
            raise OutputNotWritable(message)
        raise InvalidInput(message)


def _cohort_scan(entry, folder: Path, output_format: str, restorer, settings: RestoreSettings, resample_z: bool,
                 with_preview: bool) -> CohortResult:
    """Restore one cohort scan and return its outcome; its errors are caught and returned, not raised."""
    from medgan.cli.errors import EXIT_INVALID_INPUT
    from medgan.inference.cohort import is_dicom_file, output_name

    if entry.skip_reason:
        return CohortResult(entry.path, "skipped", entry.skip_reason)
    if entry.error:
        return CohortResult(entry.path, "failed", entry.error, EXIT_INVALID_INPUT)
    output = folder / output_name(entry.path, output_format)
    sidecar = _sidecar_for(output, output_format)
    stem = output.name if output_format == "dicom" else output.name[: -len(output_suffix(output))]
    preview = folder / f"{stem}_preview.png" if with_preview else None
    existing = [path.name for path in (output, sidecar, preview) if path is not None and path.exists()]
    if existing and not settings.overwrite:
        return CohortResult(entry.path, "skipped", f"{', '.join(existing)} exists; pass --overwrite to replace")
    if sidecar.resolve() == _model_card_path(restorer):
        return CohortResult(entry.path, "failed", f"its sidecar {sidecar} would replace the model's card",
                            EXIT_INVALID_INPUT)
    is_dicom = entry.path.is_dir() or is_dicom_file(entry.path)
    try:
        _infer_one(entry.path, output, output_format, preview, sidecar, restorer, settings, None,
                   resample_z and is_dicom)
    except click.ClickException as error:
        return CohortResult(entry.path, "failed", error.format_message(), error.exit_code)
    return CohortResult(entry.path, "done", output.name)


def _print_summary(results: list[CohortResult], rank: int, world_size: int) -> None:
    counts = {status: sum(result.status == status for result in results) for status in ("done", "skipped", "failed")}
    shard = f" (rank {rank} of {world_size})" if world_size > 1 else ""
    click.echo(f"Summary{shard}: {counts['done']} done, {counts['skipped']} skipped, {counts['failed']} failed")
    width = max([len(str(result.scan)) for result in results] + [5])
    click.echo(f"{'status':<8} {'input':<{width}} output or reason")
    for result in results:
        click.echo(f"{result.status:<8} {str(result.scan):<{width}} {result.detail}")
