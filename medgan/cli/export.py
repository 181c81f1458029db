"""``medgan export``: write a training run's generator as a model file."""

from __future__ import annotations

from pathlib import Path

import click

from medgan.cli.options import overwrite_option


@click.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Model weights path ending in .safetensors; the JSON card is written beside it.")
@click.option("--name", default="", help="Model name recorded in the card. Default: the output's stem.")
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="A specific checkpoint file of the run. Default: the latest.")
@click.option("--training-data", default="",
              help="What the training volumes are and where they come from; stored in the card before the "
                   "description generated from the run's config.")
@click.option("--weights", type=click.Choice(["ema", "generator"]), default="ema", show_default=True,
              help="ema: the generator's moving average, which validation scored; generator: the raw weights "
                   "of the last step.")
@overwrite_option
def export(run_dir: Path, output: Path, name: str, checkpoint: Path | None, training_data: str, weights: str,
           overwrite: bool) -> None:
    """Export the generator of RUN_DIR as a safetensors model file with its JSON model card."""
    from medgan.cli.errors import InvalidInput, OutputExists

    if output.suffix != ".safetensors":
        raise click.BadParameter(f"{output.name} must end in .safetensors.", param_hint="--output")
    from medgan.training.export import export_run

    try:
        path = export_run(run_dir, output, name=name, checkpoint=checkpoint, training_data=training_data,
                          weights=weights, overwrite=overwrite)
    except FileExistsError as error:
        raise OutputExists(str(error)) from error
    except (FileNotFoundError, ValueError) as error:
        raise InvalidInput(str(error)) from error
    click.echo(f"Wrote {path} and {path.with_suffix('.json')}")
