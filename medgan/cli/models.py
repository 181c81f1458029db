"""``medgan models``: list the shipped models, or print one model's card."""

from __future__ import annotations

from typing import Any

import click


def _key_metrics(metrics: dict[str, Any]) -> str:
    """Return the card's headline numbers: PSNR, SSIM and noise reduction of each protocol's model output."""
    parts = []
    for protocol, values in sorted(metrics.items()):
        if not isinstance(values, dict):
            continue
        found = []
        for key, value in sorted(values.items()):
            if isinstance(value, dict) and (key.endswith("output") or key == "model"):
                found += [f"{metric} {value[metric]:g}" for metric in ("psnr_db", "ssim")
                          if isinstance(value.get(metric), (int, float))]
            elif isinstance(value, (int, float)) and (key.endswith("noise_reduction") or key.startswith("val_")):
                found.append(f"{key} {value:g}")
        if found:
            parts.append(f"{protocol}: {', '.join(found)}")
    return "; ".join(parts) or "none recorded"


def _size_text(size_bytes: int) -> str:
    return f"{size_bytes / 1e6:.2f} MB" if size_bytes >= 1e5 else f"{size_bytes / 1e3:.1f} kB"


@click.command()
@click.argument("name", required=False)
def models(name: str | None) -> None:
    """List the shipped models, or print the whole JSON card of model NAME.

    NAME is a shipped model name or a path to a .safetensors model file with its card beside it.

    \b
    Examples:
      medgan models
      medgan models ldct-default
    """
    from medgan.cli.errors import InvalidInput
    from medgan.models.card import ModelCard
    from medgan.models.files import card_path_for, resolve_model_path, shipped_model_names

    if name is not None:
        try:
            card_path = card_path_for(resolve_model_path(name))
            card = ModelCard.read(card_path)
        except (FileNotFoundError, ValueError) as error:
            raise InvalidInput(str(error)) from error
        click.echo(card.to_json(), nl=False)
        return

    names = shipped_model_names()
    if not names:
        click.echo("No shipped models found.")
        return
    for model_name in names:
        weights = resolve_model_path(model_name)
        try:
            card = ModelCard.read(card_path_for(weights))
        except (FileNotFoundError, ValueError) as error:
            click.echo(f"{model_name}\n  card: unreadable ({error})\n")
            continue
        scale = " x ".join(str(n) for n in card.output_scale)
        click.echo(f"{model_name}\n"
                   f"  task: {card.task}\n"
                   f"  network: {card.network['name']} {card.network.get('kwargs', {})}\n"
                   f"  output scale (i x j x k): {scale}\n"
                   f"  size: {_size_text(weights.stat().st_size)}\n"
                   f"  metrics: {_key_metrics(card.metrics)}\n")
