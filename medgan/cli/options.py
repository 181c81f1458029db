"""Options and helpers shared by several subcommands."""

from __future__ import annotations

import logging
import math
import os
import sys
from pathlib import Path

import click

overwrite_option = click.option(
    "--overwrite", is_flag=True, default=False,
    help="Replace output files that already exist. Without it an existing output is an error and stays untouched.",
)

device_option = click.option(
    "--device", default="auto", show_default=True,
    help="Where the network runs: auto (CUDA when available, else CPU), cpu, cuda or cuda:N.",
)


def _reject_non_finite(param_type: click.ParamType, number: float, value, param, ctx) -> float:
    """Return ``number``, or fail the option with an invalid-value message when it is NaN or infinite."""
    if not math.isfinite(number):
        param_type.fail(f"{value!r} is not a finite number.", param, ctx)
    return number


class FiniteFloatRange(click.FloatRange):
    """Range of floats like ``click.FloatRange`` that also rejects NaN and infinity, which pass its bound checks."""

    def convert(self, value, param, ctx):
        return _reject_non_finite(self, super().convert(value, param, ctx), value, param, ctx)


class FiniteFloat(click.types.FloatParamType):
    """Float type without bounds that rejects NaN and infinity."""

    def convert(self, value, param, ctx):
        return _reject_non_finite(self, super().convert(value, param, ctx), value, param, ctx)


finite_float = FiniteFloat()


def output_suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def sidecar_path(output: Path) -> Path:
    """Return the JSON sidecar path: ``output`` with ``.json`` in place of its volume suffix."""
    suffix = output_suffix(output)
    return output.with_name(output.name[: len(output.name) - len(suffix)] + ".json")


def check_output_free(path: Path, overwrite: bool, option: str) -> None:
    """Fail before any work when ``path`` exists and ``--overwrite`` was not given."""
    from medgan.cli.errors import OutputExists

    if path.exists() and not overwrite:
        raise OutputExists(f"{option}: {path} already exists; pass --overwrite to replace it.")


def check_output_folder(folder: Path, option: str) -> None:
    """Fail before any work when ``folder`` is missing, is a file, or cannot be written to."""
    from medgan.cli.errors import OutputNotWritable
    from medgan.io.atomic import OutputNotWritableError, check_folder_writable

    if folder.exists() and not folder.is_dir():
        raise click.BadParameter(f"{folder} is a file, not a folder. Choose an output path inside an existing "
                                 "folder.", param_hint=option)
    if not folder.is_dir():
        raise click.BadParameter(f"folder {folder} does not exist. Create it first, or choose an existing folder.",
                                 param_hint=option)
    try:
        check_folder_writable(folder)
    except OutputNotWritableError as error:
        raise OutputNotWritable(f"{option}: {error}") from error


def progress_enabled() -> bool:
    """Return whether to draw progress bars on stderr.

    They are hidden with -q, when stderr is not a terminal (a pipe, a file or a batch job's log), and when the
    NO_COLOR environment variable is set to a non-empty value.
    """
    if logging.getLogger().getEffectiveLevel() > logging.INFO:
        return False
    if os.environ.get("NO_COLOR"):
        return False
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty is not None and isatty())
