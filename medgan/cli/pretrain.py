"""``medgan pretrain-perceptual``: train the perceptual-ae loss network on a config's high-quality volumes."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from medgan.cli.options import FiniteFloatRange, device_option, overwrite_option, progress_enabled

logger = logging.getLogger("medgan.cli")


@click.command("pretrain-perceptual")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              required=True, help="YAML training config; its data section lists the high-quality volumes.")
@click.option("-o", "--output", "--out", "out_path", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Weights file to write (.safetensors); the JSON card goes beside it with the suffix .json.")
@click.option("--steps", type=click.IntRange(min=1), default=2000, show_default=True,
              help="Optimizer steps of the L1 reconstruction training.")
@click.option("--batch-size", type=click.IntRange(min=1), default=4, show_default=True, help="Patches per step.")
@click.option("--lr", "learning_rate", type=FiniteFloatRange(min=0, min_open=True), default=1.0e-3,
              show_default=True, help="Adam learning rate.")
@click.option("--channels", default="16,32,64", show_default=True,
              help="Feature channels of each encoder level, comma-separated; one level per entry.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override one config value, e.g. --set data.patch_size=[8,48,48]. Values are parsed as YAML.")
@device_option
@overwrite_option
def pretrain_perceptual(config_path: Path, out_path: Path, steps: int, batch_size: int, learning_rate: float,
                        channels: str, overrides: tuple[str, ...], device: str, overwrite: bool) -> None:
    """Train the 3D autoencoder of the perceptual-ae loss on random patches of your own volumes.

    The patches come from the high-quality volumes in the config's data section (data.patch_size, data.flips,
    seed). Use the result in a config as a loss term:

    \b
      loss:
        terms:
          - {name: l1, weight: 1.0}
          - {name: perceptual-ae, weight: 0.1, kwargs: {weights: ae.safetensors}}

    \b
    Example:
      medgan pretrain-perceptual --config configs/ldct.yaml -o ae.safetensors --steps 2000
    """
    from medgan.cli.errors import InvalidInput, OutputExists, OutputNotWritable
    from medgan.io.atomic import OutputNotWritableError
    from medgan.cli.options import check_output_free

    from tqdm import tqdm

    from medgan.config import ConfigError, load_config
    from medgan.inference.restorer import resolve_device
    from medgan.training.pretrain_perceptual import pretrain_perceptual_autoencoder

    if out_path.suffix != ".safetensors":
        raise click.BadParameter(f"{out_path} must end in .safetensors.", param_hint="-o/--output")
    try:
        channel_list = [int(part) for part in channels.split(",")]
    except ValueError as error:
        raise click.BadParameter(f"{channels!r} must be comma-separated integers, e.g. 16,32,64.",
                                 param_hint="--channels") from error
    if not channel_list or any(c < 1 for c in channel_list):
        raise click.BadParameter(f"{channels!r} must list positive integers.", param_hint="--channels")
    check_output_free(out_path, overwrite, "-o/--output")
    check_output_free(out_path.with_suffix(".json"), overwrite, "-o/--output (its .json card)")
    try:
        config = load_config(config_path, list(overrides))
    except (ConfigError, FileNotFoundError) as error:
        raise InvalidInput(str(error)) from error
    try:
        resolved_device = resolve_device(device)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--device") from error

    with tqdm(total=steps, unit="step", disable=not progress_enabled()) as bar:
        def on_step(step: int, loss: float) -> None:
            bar.update(1)
            bar.set_postfix({"l1": f"{loss:.4g}"}, refresh=False)

        try:
            card = pretrain_perceptual_autoencoder(
                config, out_path, steps=steps, batch_size=batch_size, learning_rate=learning_rate,
                channels=channel_list, device=resolved_device, overwrite=overwrite, on_step=on_step)
        except FileExistsError as error:
            raise OutputExists(str(error)) from error
        except OutputNotWritableError as error:
            raise OutputNotWritable(str(error)) from error
        except (ValueError, FileNotFoundError) as error:
            raise InvalidInput(str(error)) from error
    click.echo(f"Wrote {out_path} and {out_path.with_suffix('.json')} after {steps} steps "
               f"(final L1 {card['final_loss']:.4g}, SHA-256 {card['sha256']}).")
