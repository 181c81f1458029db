"""``medgan export``: write a training run's generator as a model file, or a model in another runtime's format."""

from __future__ import annotations

from pathlib import Path

import click

from medgan.cli.options import FiniteFloatRange, check_output_folder, overwrite_option

MODEL_FORMATS = ("torchscript", "onnx", "monai-bundle")


def _is_run_dir(path: Path) -> bool:
    return path.is_dir() and (path / "config.yaml").is_file()


@click.command()
@click.argument("source", metavar="RUN_DIR|MODEL")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="RUN_DIR: model weights ending in .safetensors. MODEL: a .ts or .pt file (torchscript), an .onnx "
                   "file (onnx) or a new folder (monai-bundle). The JSON card is written beside a file.")
@click.option("--format", "output_format", type=click.Choice(MODEL_FORMATS), default=None,
              help="Format to export MODEL to; required for MODEL and not accepted for RUN_DIR, which always "
                   "exports to safetensors.")
@click.option("--tolerance", type=FiniteFloatRange(min=0.0, min_open=True), default=None,
              help="MODEL only: largest max absolute difference from PyTorch accepted on the random check patches, "
                   "in network units (HU / 1024 for ldct). Default: 1e-4.")
@click.option("--bundle-engine", type=click.Choice(["medgan", "monai"]), default="medgan", show_default=True,
              help="monai-bundle only: medgan restores with medgan.transforms.Restoredd (needs medgan installed; "
                   "output equals medgan infer's, for every model); monai uses MONAI components only (ldct-style "
                   "models; differs from medgan infer where windows overlap).")
@click.option("--name", default="", help="RUN_DIR only: model name recorded in the card. Default: the output's stem.")
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="RUN_DIR only: a specific checkpoint file of the run. Default: the latest.")
@click.option("--training-data", default="",
              help="RUN_DIR only: what the training volumes are and where they come from; stored in the card "
                   "before the description generated from the run's config.")
@click.option("--weights", type=click.Choice(["ema", "generator"]), default="ema", show_default=True,
              help="RUN_DIR only: ema: the generator's moving average, which validation scored; generator: the raw "
                   "weights of the last step.")
@overwrite_option
@click.pass_context
def export(ctx: click.Context, source: str, output: Path, output_format: str | None, tolerance: float | None,
           bundle_engine: str, name: str, checkpoint: Path | None, training_data: str, weights: str, overwrite: bool) -> None:
    """Export a training run's generator, or a model to TorchScript, ONNX or a MONAI bundle.

    RUN_DIR, a training run folder holding config.yaml, is written as a safetensors model file with its JSON
    model card. MODEL, a shipped model name or a .safetensors model file, is written in --format. Every MODEL
    export is compared with PyTorch on random patches (two sizes) and fails above --tolerance.

    \b
    Examples:
      medgan export runs/ldct -o ldct.safetensors
      medgan export ldct-default --format torchscript -o ldct.ts
      medgan export ldct-default --format onnx -o ldct.onnx
      medgan export ldct-default --format monai-bundle -o ldct_bundle
    """
    source_path = Path(source)
    if _is_run_dir(source_path):
        if output_format is not None or tolerance is not None:
            option = "--format" if output_format is not None else "--tolerance"
            raise click.BadParameter(f"{source} is a training run, which exports to safetensors only; drop "
                                     f"{option}, or export the .safetensors file it wrote.", param_hint=option)
        _export_run(source_path, output, name, checkpoint, training_data, weights, overwrite)
        return

    if source_path.is_dir():
        raise click.BadParameter(f"{source} is a folder without config.yaml, so it is not a training run; pass a "
                                 "run folder, a shipped model name or a .safetensors model file.",
                                 param_hint="RUN_DIR|MODEL")
    run_options = [option for option, parameter in (("--name", "name"), ("--checkpoint", "checkpoint"),
                                                     ("--training-data", "training_data"), ("--weights", "weights"))
                   if ctx.get_parameter_source(parameter) != click.core.ParameterSource.DEFAULT]
    if run_options:
        raise click.BadParameter(f"{', '.join(run_options)} only apply to a training run folder, and {source} is "
                                 "a model.", param_hint=run_options[0])
    if output_format is None:
        raise click.BadParameter(f"{source} is a model, so --format is required: one of {', '.join(MODEL_FORMATS)}.",
                                 param_hint="--format")
    _export_model(source, output, output_format, tolerance, overwrite, bundle_engine)


def _export_run(run_dir: Path, output: Path, name: str, checkpoint: Path | None, training_data: str, weights: str,
                overwrite: bool) -> None:
    from medgan.cli.errors import InvalidInput, OutputExists, OutputNotWritable
    from medgan.io.atomic import OutputNotWritableError

    if output.suffix != ".safetensors":
        raise click.BadParameter(f"{output.name} must end in .safetensors.", param_hint="--output")
    _check_output_is_file(output, "a training run exports to a .safetensors file")
    check_output_folder(output.parent, "--output")
    from medgan.training.export import export_run

    try:
        path = export_run(run_dir, output, name=name, checkpoint=checkpoint, training_data=training_data,
                          weights=weights, overwrite=overwrite)
    except FileExistsError as error:
        raise OutputExists(str(error)) from error
    except OutputNotWritableError as error:
        raise OutputNotWritable(str(error)) from error
    except (FileNotFoundError, ValueError) as error:
        raise InvalidInput(str(error)) from error
    click.echo(f"Wrote {path} and {path.with_suffix('.json')}")


def _export_model(model: str, output: Path, output_format: str, tolerance: float | None, overwrite: bool,
                  bundle_engine: str = "medgan") -> None:
    from medgan.cli.errors import InvalidInput, OutputExists, OutputNotWritable, RuntimeFailure
    from medgan.io.atomic import OutputNotWritableError

    suffixes = {"torchscript": (".ts", ".pt"), "onnx": (".onnx",), "monai-bundle": ("",)}[output_format]
    if output.suffix.lower() not in suffixes:
        expected = "a folder name without a suffix" if output_format == "monai-bundle" else " or ".join(suffixes)
        raise click.BadParameter(f"--format {output_format} writes {expected}, got {output.name}.",
                                 param_hint="--output")
    if output_format == "monai-bundle":
        if output.exists() and not output.is_dir():
            raise click.BadParameter(f"{output} is a file, but --format monai-bundle writes a folder. Choose a new "
                                     "folder name.", param_hint="--output")
    else:
        _check_output_is_file(output, f"--format {output_format} writes a file")
    check_output_folder(output.parent, "--output")

    from medgan.export import DEFAULT_TOLERANCE, ExportCheckError, export_monai_bundle, export_onnx, export_torchscript

    exporter = {"torchscript": export_torchscript, "onnx": export_onnx, "monai-bundle": export_monai_bundle}
    options = {"engine": bundle_engine} if output_format == "monai-bundle" else {}
    try:
        result = exporter[output_format](model, output, overwrite=overwrite,
                                         tolerance=DEFAULT_TOLERANCE if tolerance is None else tolerance, **options)
    except FileExistsError as error:
        raise OutputExists(str(error)) from error
    except OutputNotWritableError as error:
        raise OutputNotWritable(str(error)) from error
    except ExportCheckError as error:
        raise RuntimeFailure(str(error)) from error
    except ImportError as error:
        raise RuntimeFailure(str(error)) from error
    except (FileNotFoundError, ValueError, IsADirectoryError, NotADirectoryError) as error:
        raise InvalidInput(str(error)) from error
    for shape, difference in result.max_abs_difference.items():
        click.echo(f"Check on a random patch of shape {shape}: max abs difference from PyTorch {difference:.3g} "
                   f"network units (tolerance {result.tolerance:.3g})")
    if output_format == "monai-bundle":
        click.echo(f"Wrote MONAI bundle {result.path} (card in {result.card_path})")
    else:
        click.echo(f"Wrote {result.path} and {result.card_path}")


def _check_output_is_file(output: Path, writes: str) -> None:
    """Reject an output path that is an existing folder. ``writes`` describes the file that the export writes."""
    if output.is_dir():
        raise click.BadParameter(f"{output} is a folder, but {writes}, and --overwrite does not replace a folder. "
                                 "Choose a file name.", param_hint="--output")
