"""``medgan evaluate``: score restored volumes against references under a named protocol, with baselines."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from medgan.cli.options import device_option, overwrite_option

logger = logging.getLogger("medgan.cli")

PROTOCOL_NAMES = ("ct-hu", "ldct-chest", "ldct-abdomen", "ldct-head", "mri-brain")


def _baseline_names(value: str | None) -> tuple[str, ...]:
    if not value:
        return ()
    names = tuple(name.strip() for name in value.split(",") if name.strip())
    if len(set(names)) != len(names):
        raise click.BadParameter(f"{value!r} names a baseline twice.", param_hint="--baselines")
    return names


@click.command()
@click.option("--reference", type=click.Path(exists=True, path_type=Path), default=None,
              help="Pair mode: the reference volume (normal dose or high resolution).")
@click.option("--candidate", type=click.Path(exists=True, path_type=Path), default=None,
              help="Pair mode: the restored volume to score, on the reference grid.")
@click.option("--input", "input_path", type=click.Path(exists=True, path_type=Path), default=None,
              help="Pair mode: the degraded input. CT: on the reference grid, for the noise ratio and the input row. "
                   "mri-brain: the thick-slice input, for data consistency.")
@click.option("--model", "model_name", default=None,
              help="Model mode: shipped model name or .safetensors file (its .json card beside it) to run on every "
                   "input of --pairs.")
@click.option("--pairs", "manifest", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Model mode: CSV or JSON manifest of cases with 'input' and 'reference' paths (relative to the "
                   "manifest) and an optional 'id'.")
@click.option("--protocol", "protocol_name", type=click.Choice(PROTOCOL_NAMES), required=True,
              help="Intensity window or scaling, mask and data range of every number. See docs/evaluation.md.")
@click.option("-o", "--output-dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for evaluation.json, evaluation.md, psnr.png and figures/; created if missing (its "
                   "parent must exist).")
@click.option("--baselines", "baselines_option", default=None, metavar="NAMES",
              help="Comma-separated classical baselines run on the input: gaussian, nlm, bm3d, bm4d for CT "
                   "protocols; linear, bspline for mri-brain. bm3d and bm4d are skipped when not installed.")
@click.option("--validation-case", default=None,
              help="Case id on which the Gaussian baseline's sigma is chosen. Default: the first case.")
@device_option
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the bootstrap resampling.")
@click.option("--resamples", type=click.IntRange(min=1), default=2000, show_default=True,
              help="Bootstrap resamples for the 95 % confidence intervals of the means.")
@click.option("--figure-cases", type=click.IntRange(min=0), default=3, show_default=True,
              help="Write slice figures for this many cases, in manifest order.")
@overwrite_option
def evaluate(reference: Path | None, candidate: Path | None, input_path: Path | None, model_name: str | None,
             manifest: Path | None, protocol_name: str, output_dir: Path, baselines_option: str | None,
             validation_case: str | None, device: str, seed: int, resamples: int, figure_cases: int,
             overwrite: bool) -> None:
    """Score restored volumes against references and write a JSON record, a Markdown table and figures.

    Grids must match exactly (shape, and affine within 1e-4 mm); volumes are never resampled.

    \b
    Examples:
      medgan evaluate --reference full.nii.gz --candidate restored.nii.gz --input low.nii.gz \\
          --protocol ldct-abdomen -o report/
      medgan evaluate --model ldct-default --pairs test.csv --protocol ldct-abdomen -o report/ \\
          --baselines gaussian,nlm,bm3d
    """
    from medgan.cli.errors import InvalidInput, OutputExists, OutputNotWritable, RuntimeFailure
    from medgan.io.atomic import OutputNotWritableError

    pair_mode = reference is not None or candidate is not None
    model_mode = model_name is not None or manifest is not None
    if pair_mode == model_mode:
        raise click.UsageError("Give either --reference and --candidate (pair mode) or --model and --pairs "
                               "(model mode).")
    if pair_mode and (reference is None or candidate is None):
        raise click.UsageError("Pair mode needs both --reference and --candidate.")
    if model_mode and (model_name is None or manifest is None):
        raise click.UsageError("Model mode needs both --model and --pairs.")
    if model_mode and input_path is not None:
        raise click.UsageError("--input applies to pair mode; in model mode the manifest lists the inputs.")
    if not output_dir.parent.is_dir():
        raise click.BadParameter(f"folder {output_dir.parent} does not exist.", param_hint="--output-dir")
    if output_dir.exists() and not output_dir.is_dir():
        raise click.BadParameter(f"{output_dir} is a file, not a folder.", param_hint="--output-dir")

    from medgan.evaluation import report as reports

    existing = [path for path in reports.report_paths(output_dir) if path.exists()]
    if existing and not overwrite:
        raise OutputExists(f"--output-dir: {', '.join(str(path) for path in existing)} already exist(s); pass "
                           "--overwrite to replace the report.")

    from medgan.evaluation.baselines import Baselines
    from medgan.evaluation.evaluator import CaseFiles, ManifestError, case_id_from_path, evaluate_cases, load_manifest
    from medgan.evaluation.protocols import get_protocol
    from medgan.io import VolumeReadError

    protocol = get_protocol(protocol_name)
    try:
        baselines = Baselines(_baseline_names(baselines_option), protocol)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--baselines") from error
    if pair_mode:
        cases = [CaseFiles(case_id=case_id_from_path(candidate), reference=reference, input=input_path,
                           candidate=candidate)]
        method = "candidate"
    else:
        try:
            cases = load_manifest(manifest)
        except ManifestError as error:
            raise InvalidInput(str(error)) from error
        method = "model"
    if baselines.names and any(case.input is None for case in cases):
        raise click.UsageError("--baselines restore the input; give --input.")

    restore = None
    model_record = None
    if model_mode:
        from medgan.inference.restorer import load_model, resolve_device

        try:
            restorer = load_model(model_name, device=resolve_device(device))
        except FileNotFoundError as error:
            raise click.BadParameter(str(error), param_hint="--model") from error
        except ValueError as error:
            raise InvalidInput(f"Model {model_name}: {error}") from error
        model_record = {"name": restorer.card.name or model_name, "task": restorer.card.task,
                        "network": restorer.card.network, "weights_sha256": restorer.card.weights_sha256,
                        "device": str(restorer.device)}
        logger.info("Model %s (task %s) on %s", model_record["name"], restorer.card.task, restorer.device)
        restore = restorer.restore

    created_output_dir = not output_dir.exists()
    output_dir.mkdir(exist_ok=True)
    figure_dir = output_dir / reports.FIGURE_FOLDER
    written_figures: list[Path] = []

    def draw(images) -> None:
        if len(written_figures) >= figure_cases:
            return
        figure_dir.mkdir(exist_ok=True)
        path = figure_dir / f"{reports.safe_file_name(images.case_id)}.png"
        written_figures.append(reports.write_case_figure(images, protocol, path, overwrite=True))

    try:
        report = evaluate_cases(cases, protocol, restore=restore, method_name=method, baselines=baselines,
                                validation_case=validation_case, seed=seed, n_resamples=resamples, on_case=draw)
    except (VolumeReadError, ValueError) as error:
        _remove_partial_report(output_dir, created_output_dir, written_figures)
        raise InvalidInput(str(error)) from error
    except (RuntimeError, MemoryError) as error:
        _remove_partial_report(output_dir, created_output_dir, written_figures)
        raise RuntimeFailure(f"Evaluation failed: {error}. Try --device cpu or smaller volumes.") from error

    report["model"] = model_record
    report["versions"] = reports.package_versions()
    report["figures"] = [str(path.relative_to(output_dir)) for path in written_figures]
    try:
        json_path = reports.write_json(report, output_dir / reports.REPORT_JSON, overwrite)
        markdown_path = reports.write_markdown(report, output_dir / reports.REPORT_MARKDOWN, overwrite)
        reports.write_psnr_chart(report, output_dir / reports.PSNR_FIGURE, overwrite)
    except FileExistsError as error:
        raise OutputExists(str(error)) from error
    except OutputNotWritableError as error:
        raise OutputNotWritable(str(error)) from error

    click.echo(f"Protocol {protocol.summary()}")
    for line in reports.summary_lines(report):
        click.echo(line)
    click.echo(f"Wrote {json_path}, {markdown_path} and {len(written_figures) + 1} figure(s) in {output_dir}")


def _remove_partial_report(output_dir: Path, created_output_dir: bool, figures: list[Path]) -> None:
    """Remove the figures of an evaluation that failed, and the folders it created if they are left empty."""
    for path in figures:
        path.unlink(missing_ok=True)
    folders = [path.parent for path in figures[:1]] + ([output_dir] if created_output_dir else [])
    for folder in folders:
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
