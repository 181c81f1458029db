"""Exit codes and the error type the subcommands raise for them."""

from __future__ import annotations

import click

EXIT_OK = 0
EXIT_RUNTIME_FAILURE = 1
EXIT_USAGE_ERROR = 2
EXIT_INVALID_INPUT = 3
# Code 4 covers every output error: an output that exists without --overwrite, or a folder or file that cannot
# be written.
EXIT_OUTPUT_EXISTS = 4


class InvalidInput(click.ClickException):
    """An input file or config could not be used; exits with ``EXIT_INVALID_INPUT``."""

    exit_code = EXIT_INVALID_INPUT


class OutputExists(click.ClickException):
    """An output already exists and ``--overwrite`` was not given; exits with ``EXIT_OUTPUT_EXISTS``."""

    exit_code = EXIT_OUTPUT_EXISTS


class OutputNotWritable(click.ClickException):
    """An output folder or file cannot be written; exits with ``EXIT_OUTPUT_EXISTS``, the code of output errors."""

    exit_code = EXIT_OUTPUT_EXISTS


class RuntimeFailure(click.ClickException):
    """The work itself failed (out of memory, a device error); exits with ``EXIT_RUNTIME_FAILURE``."""

    exit_code = EXIT_RUNTIME_FAILURE
