"""The ``medgan`` command group: logging set-up and subcommand registration.

Subcommands import torch and the library inside their functions, so ``medgan --help`` stays fast.
"""

from __future__ import annotations

import logging

import click

from medgan import __version__
from medgan.cli.evaluate import evaluate
from medgan.cli.export import export
from medgan.cli.infer import infer
from medgan.cli.models import models
from medgan.cli.pretrain import pretrain_perceptual
from medgan.cli.simulate import simulate
from medgan.cli.train import train


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="medgan")
@click.option("-v", "--verbose", count=True,
              help="More log output: -v for medgan's debug messages, -vv for every library's.")
@click.option("-q", "--quiet", count=True, help="Less log output: -q shows warnings and errors only, -qq errors only.")
def cli(verbose: int, quiet: int) -> None:
    """Restore medical volumes with 3D generative adversarial networks.

    \b
    Tasks:
      ldct    low-dose CT denoising (HU in, HU out, same grid)
      mri-sr  MRI super-resolution (thick slices in, 4x finer slices out)

    Options -v and -q go before the command: medgan -q infer ...

    \b
    Exit codes: 0 success, 1 runtime failure, 2 usage error,
                3 invalid input data, 4 output exists (pass --overwrite) or cannot be written.
    """
    level = logging.INFO + 10 * quiet
    if verbose >= 2:
        level = logging.DEBUG
    logging.basicConfig(level=min(level, logging.CRITICAL), format="%(levelname)s %(name)s: %(message)s")
    if verbose == 1:
        logging.getLogger("medgan").setLevel(logging.DEBUG)


cli.add_command(infer)
cli.add_command(train)
cli.add_command(export)
cli.add_command(simulate)
cli.add_command(evaluate)
cli.add_command(pretrain_perceptual)
cli.add_command(models)
