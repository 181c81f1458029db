"""Export a model's generator as TorchScript (``torch.jit.trace``), checked against PyTorch."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch

from medgan.export.checks import (
    CHECK_PATCH_DHW,
    CHECK_SHAPES,
    DEFAULT_TOLERANCE,
    ExportCheckError,
    ExportResult,
    check_difference,
    prepare_file_export,
    random_patch,
    write_card,
)
from medgan.io.atomic import atomic_output

logger = logging.getLogger(__name__)

TORCHSCRIPT_SUFFIXES = (".ts", ".pt")


def trace_network(network: torch.nn.Module, example: torch.Tensor) -> torch.jit.ScriptModule:
    """Trace ``network`` on ``example`` and return the TorchScript module.

    medgan's generators do not compile with ``torch.jit.script`` (their input checks build messages with
    f-strings), so they are traced. Tracing records the operations run on ``example`` and fixes any shape
    arithmetic done in Python, so callers check the result on a second input size.
    """
    with warnings.catch_warnings(record=True) as caught, torch.no_grad():
        warnings.simplefilter("always", torch.jit.TracerWarning)
        traced = torch.jit.trace(network, example, check_trace=False)
    # Most of these notes come from input checks (channel count, number of axes) whose fixed values are right
    # for every input. The check on a second input size decides, so the notes are logged at debug level only.
    for warning in caught:
        if issubclass(warning.category, torch.jit.TracerWarning):
            logger.debug("Tracing fixed a value that may depend on the input size: %s", warning.message)
    return traced


def check_traced(network: torch.nn.Module, traced, shapes: list[tuple[int, ...]], tolerance: float,
                 runtime: str) -> dict[str, float]:
    """Compare ``traced`` with ``network`` on a random patch of each shape; return the differences by shape.

    Raises:
        ExportCheckError: if the traced module fails on a shape or differs by more than ``tolerance``.
    """
    differences = {}
    for seed, shape in enumerate(shapes):
        patch = random_patch(shape, seed=seed)
        with torch.no_grad():
            reference = network(patch)
            try:
                candidate = traced(patch)
            except RuntimeError as error:
                raise ExportCheckError(
                    f"The {runtime} fails on an input of shape {shape}: {str(error).splitlines()[0]}. Tracing fixed "
                    "a shape-dependent step of this network (for example padding to a size multiple), so it "
                    "cannot be exported for any input size."
                ) from error
        differences[str(shape)] = check_difference(reference, candidate, shape, tolerance, runtime)
    return differences


def export_torchscript(model: str | Path, output: str | Path, *, overwrite: bool = False,
                       tolerance: float = DEFAULT_TOLERANCE) -> ExportResult:
    """Write the generator of ``model`` as TorchScript to ``output`` and its model card beside it.

    The module takes and returns float32 tensors ``(B, 1, D, H, W)`` in network units, with D along the
    volume's k axis, H along j and W along i, and returns ``(B, 1, D * sd, H * sh, W * sw)`` for the card's
    ``output_scale`` ``(si, sj, sk)`` = ``(sw, sh, sd)``. Callers map values with the card's ``intensity``
    (``x = (value - offset) / scale``, and per volume when ``reference_percentile`` is set) and back. The
    saved file is loaded again and compared with PyTorch on random patches of two sizes before it is moved
    into place.

    Args:
        model: shipped model name or ``.safetensors`` model file with its JSON card beside it.
        output: file ending in ``.ts`` or ``.pt``; the card goes to the same name with ``.json``.
        overwrite: replace existing outputs.
        tolerance: largest accepted max absolute difference from PyTorch, in network units.

    Raises:
        ValueError: for a bad suffix or tolerance, or an invalid model.
        ExportCheckError: if the TorchScript module does not match PyTorch; nothing is written then.
        FileExistsError: if an output exists and ``overwrite`` is false.
        FileNotFoundError: if the model or the output's folder is missing.
    """
    job = prepare_file_export(model, output, TORCHSCRIPT_SUFFIXES, "TorchScript", tolerance, overwrite)
    output, tolerance, card_path, network = job.output, job.tolerance, job.card_path, job.network

    traced = trace_network(network, random_patch((1, 1, *CHECK_PATCH_DHW)))
    with atomic_output(output, overwrite=overwrite) as temporary:
        torch.jit.save(traced, str(temporary))
        reloaded = torch.jit.load(str(temporary), map_location="cpu")
        differences = check_traced(network, reloaded, CHECK_SHAPES, tolerance, "TorchScript module")
    if not job.keep_card:
        write_card(job.card, card_path, overwrite)
    logger.info("Wrote TorchScript model %s and its card %s", output, card_path)
    return ExportResult(format="torchscript", path=output, card_path=card_path, max_abs_difference=differences,
                        tolerance=tolerance)
