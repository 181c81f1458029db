"""``medgan infer``: restore one scan with a trained model."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import click

from medgan.cli.options import check_output_free, device_option, output_suffix, overwrite_option, progress_enabled

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


@click.command()
@click.argument("scan", type=click.Path(exists=True, path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path),
              help="Output volume (.nii.gz, .nii, .nrrd or .mha), or a new folder for a derived DICOM series, "
                   "written in the input's exact geometry. Default: SCAN's name with _restored.nii.gz (_restored "
                   "for DICOM), in the current folder.")
@click.option("--format", "output_format", type=click.Choice(["nifti", "nrrd", "mha", "dicom"]), default=None,
              help="Output format. Default: dicom when SCAN is a DICOM folder and OUTPUT is a folder or has no "
                   "suffix, otherwise the format of OUTPUT's suffix. dicom writes one int16 CT or MR file per slice "
                   "into the folder OUTPUT, as a new series in the input's study.")
@click.option("--model", "model_name", default=None,
              help="Shipped model name or path to a .safetensors model file (its .json card beside it). "
                   "Default: the task's shipped model.")
@click.option("--task", default="ldct", show_default=True, help="Task whose default model is used when --model is "
                                                                "not given.")
@device_option
@click.option("--roi", nargs=3, type=click.IntRange(min=1), default=None, metavar="D H W",
              help="Sliding-window size in voxels along the slice axis (k), rows (j) and columns (i). "
                   "Default: the model's training patch size, grown to the network's receptive field.")
@click.option("--overlap", type=click.FloatRange(0.0, 0.95), default=0.25, show_default=True,
              help="Fraction of each window shared with its neighbours along every axis.")
@click.option("--batch-size", type=click.IntRange(min=1), default=1, show_default=True,
              help="Windows per network call; larger is faster on a GPU and needs more memory.")
@click.option("--series-uid", default=None,
              help="SeriesInstanceUID to read when the DICOM folder contains several series.")
@click.option("--resample-z", is_flag=True, default=False,
              help="For DICOM input with uneven slice gaps (such as a missing slice), interpolate the slices "
                   "linearly onto a uniform grid at about the median gap, keeping the first and last slice, "
                   "instead of stopping with an error.")
@click.option("--preview", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="PNG of the middle slices: input | output | difference. Default: OUTPUT's name with _preview.png.")
@click.option("--no-preview", is_flag=True, default=False, help="Do not write the PNG preview.")
@click.option("--ignore-modality", is_flag=True, default=False,
              help="Restore a volume whose DICOM modality differs from the model's (for example MR through a CT "
                   "model). Without it such input is rejected.")
@overwrite_option
def infer(scan: Path, output: Path | None, output_format: str | None, model_name: str | None, task: str,
          device: str, roi: tuple[int, int, int] | None, overlap: float, batch_size: int, series_uid: str | None,
          resample_z: bool, preview: Path | None, no_preview: bool, ignore_modality: bool,
          overwrite: bool) -> None:
    """Restore SCAN (a NIfTI, NRRD or MHA file, or a folder holding one DICOM series) with a trained model.

    The output keeps the input's grid, affine and voxel values' unit (HU for CT).

    \b
    Examples:
      medgan infer scan.nii.gz -o scan_denoised.nii.gz
      medgan infer dicom_folder/ -o denoised.nii.gz --device cuda --batch-size 8
      medgan infer dicom_folder/ -o denoised_series --overwrite
    """
    from medgan.cli.errors import InvalidInput, OutputExists, RuntimeFailure

    output = output or _default_output(scan, output_format)
    output_format = _output_format(scan, output, output_format)
    if not output.parent.is_dir():
        raise click.BadParameter(f"folder {output.parent} does not exist.", param_hint="--output")
    if output_format == "dicom" and output.exists() and not output.is_dir():
        raise click.BadParameter(f"{output} is a file, but --format dicom writes a folder.", param_hint="--output")
    if output_format != "dicom" and output.is_dir():
        raise click.BadParameter(f"{output} is a folder, but --format {output_format} writes a file.",
                                 param_hint="--output")
    if not overlap < 0.95 + 1e-12 or not overlap >= 0:
        raise click.BadParameter(f"{overlap} is not a number in [0, 0.95].", param_hint="--overlap")
    if preview is None and not no_preview:
        stem = output.name if output_format == "dicom" else output.name[: -len(output_suffix(output))]
        preview = output.with_name(f"{stem}_preview.png")
    if no_preview:
        preview = None
    if preview is not None:
        if preview.suffix.lower() != ".png":
            raise click.BadParameter(f"{preview.name} must end in .png.", param_hint="--preview")
        if not preview.parent.is_dir():
            raise click.BadParameter(f"folder {preview.parent} does not exist.", param_hint="--preview")
        if preview.resolve() in (output.resolve(), scan.resolve()):
            raise click.BadParameter(f"{preview} is also the input or the output; choose another file.",
                                     param_hint="--preview")
    check_output_free(output, overwrite, "--output")
    if preview is not None:
        check_output_free(preview, overwrite, "--preview")

    import torch
    from tqdm import tqdm

    from medgan.evaluation.figures import save_preview_png
    from medgan.inference.restorer import load_model, resolve_device

    try:
        device = resolve_device(device)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--device") from error
    from medgan.io import VolumeReadError, read_volume, write_volume
    from medgan.tasks import get_task

    try:
        model = model_name or get_task(task).default_model
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--task") from error
    if model is None:
        raise click.BadParameter(f"task {task!r} has no shipped model; pass --model.", param_hint="--model")
    try:
        restorer = load_model(model, device=device)
    except FileNotFoundError as error:
        raise click.BadParameter(str(error), param_hint="--model") from error
    except ValueError as error:
        raise InvalidInput(f"Model {model}: {error}") from error
    logger.info("Model %s (task %s, network %s) on %s", restorer.card.name or model, restorer.card.task,
                restorer.card.network["name"], restorer.device)

    try:
        volume = read_volume(scan, series_uid=series_uid, resample_z=resample_z)
    except (VolumeReadError, ValueError) as error:
        raise InvalidInput(f"Cannot read {scan}: {error}") from error
    if output_format == "dicom" and volume.metadata.get("format") != "dicom":
        raise InvalidInput(f"--format dicom writes a derived series of a DICOM input, but {scan} was read as "
                           f"{volume.metadata.get('format') or 'another format'}. Choose nifti, nrrd or mha.")
    logger.info("Input %s: %r", scan, volume)

    started = time.perf_counter()
    with tqdm(total=0, unit="window", desc="restoring", disable=not progress_enabled(), leave=False) as bar:
        def report(done: int, total: int) -> None:
            bar.total = total
            bar.n = done
            bar.refresh()

        try:
            restored = restorer.restore(volume, roi_size=roi, overlap=overlap, batch_size=batch_size,
                                        progress=report, allow_modality_mismatch=ignore_modality)
        except ValueError as error:
            raise InvalidInput(f"Cannot restore {scan}: {error}") from error
        except (RuntimeError, torch.cuda.OutOfMemoryError) as error:
            raise RuntimeFailure(f"Restoration failed: {error}. Try a smaller --roi or --batch-size, "
                                 "or --device cpu.") from error
    logger.info("Restored in %.1f s", time.perf_counter() - started)

    try:
        write_volume(restored, output, overwrite=overwrite, format=output_format)
        if preview is not None:
            save_preview_png(volume, restored, preview, overwrite=overwrite)
    except FileExistsError as error:
        raise OutputExists(str(error)) from error
    except ValueError as error:
        raise InvalidInput(f"Cannot write {output}: {error}") from error
    click.echo(f"Wrote {output}" + (f" and {preview}" if preview is not None else ""))
