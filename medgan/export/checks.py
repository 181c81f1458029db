"""Shared steps of every export format: loading the model, numerical checks against PyTorch, the card beside."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from medgan.io.atomic import atomic_output, check_folder_writable
from medgan.models.card import ModelCard
from medgan.models.files import card_path_for, check_card_not_shared, load_model_files, resolve_model_path

logger = logging.getLogger(__name__)

# Largest accepted absolute difference between the exported network and PyTorch, in network units. For ldct
# (HU / 1024) it is about 0.1 HU, far below CT noise, and float32 reordering gives about 1e-6.
DEFAULT_TOLERANCE = 1e-4

# Input patches of the checks, (D, H, W) in input voxels. The second has odd sizes on purpose: a network whose
# forward turns shapes into Python values (a branch such as `if x.shape[-1] % 2:`) is traced with those values
# fixed, and then fails or differs on it.
CHECK_PATCH_DHW = (8, 16, 16)
SECOND_CHECK_PATCH_DHW = (7, 13, 11)
CHECK_SEED = 0
# The two checked input shapes (B, C, D, H, W): one patch, then two patches of the odd size.
CHECK_SHAPES = [(1, 1, *CHECK_PATCH_DHW), (2, 1, *SECOND_CHECK_PATCH_DHW)]


class ExportCheckError(ValueError):
    """The exported network does not reproduce PyTorch's output within the tolerance, or rejects a patch size."""


@dataclass
class ExportResult:
    """Outputs of one export and their differences from PyTorch.

    Args:
        format: ``"torchscript"``, ``"onnx"`` or ``"monai-bundle"``.
        path: the exported file, or the bundle folder.
        card_path: the model card written beside it.
        max_abs_difference: per checked input shape (as text), the maximum absolute difference from PyTorch
            in network units.
        tolerance: the largest accepted difference, in network units.
    """

    format: str
    path: Path
    card_path: Path
    max_abs_difference: dict[str, float] = field(default_factory=dict)
    tolerance: float = DEFAULT_TOLERANCE


def load_network(model: str | Path) -> tuple[torch.nn.Module, ModelCard]:
    """Load a shipped model name or ``.safetensors`` file on the CPU in evaluation mode, in float32."""
    network, card = load_model_files(model, device="cpu")
    return network.float().eval(), card


def random_patch(shape: tuple[int, ...], seed: int = CHECK_SEED) -> torch.Tensor:
    """Return a float32 patch of ``shape`` with values uniform in ``[-1, 1)`` network units, reproducibly."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=generator, dtype=torch.float32) * 2.0 - 1.0


def check_difference(reference: torch.Tensor, candidate, shape: tuple[int, ...], tolerance: float,
                     runtime: str) -> float:
    """Return the max absolute difference of ``candidate`` from ``reference``.

    Raises:
        ExportCheckError: if the shapes differ or the difference exceeds ``tolerance``.
    """
    candidate = torch.as_tensor(candidate)
    if tuple(candidate.shape) != tuple(reference.shape):
        raise ExportCheckError(f"The {runtime} returns shape {tuple(candidate.shape)} for input {shape}, but PyTorch "
                               f"returns {tuple(reference.shape)}; the export is not usable.")
    difference = float((candidate.float() - reference.float()).abs().max())
    logger.debug("%s on a random patch of shape %s: max abs difference from PyTorch %.3g (tolerance %.3g)",
                runtime, shape, difference, tolerance)
    if not difference <= tolerance:
        raise ExportCheckError(f"The {runtime} differs from PyTorch by {difference:.3g} network units on a random "
                               f"patch of shape {shape}, above the tolerance {tolerance:.3g}; nothing was written.")
    return difference


def check_tolerance(tolerance: float) -> float:
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not tolerance > 0:
        raise ValueError(f"tolerance must be a positive number in network units, got {tolerance!r}.")
    return float(tolerance)


def card_path_beside(path: Path) -> Path:
    """Return the card path of an exported file: ``path`` with ``.json`` in place of its suffix."""
    return path.with_suffix(".json")


def check_outputs_free(paths: list[Path], overwrite: bool) -> None:
    """Raise FileExistsError before any work when one of ``paths`` exists and ``overwrite`` is false."""
    if overwrite:
        return
    for path in paths:
        if path.exists() or path.is_symlink():
            raise FileExistsError(f"Output already exists: {path}. Pass --overwrite (overwrite=True in Python) "
                                  "to replace it.")


def card_already_written(model: str | Path, card: ModelCard, path: Path) -> bool:
    """Return whether ``path`` already contains this card: the model file's own card, or an earlier export's."""
    if not path.is_file():
        return False
    source = card_path_for(resolve_model_path(model))
    if source.exists() and path.resolve() == source.resolve():
        return True
    return path.read_text(encoding="utf-8") == card.to_json()


def write_card(card: ModelCard, path: Path, overwrite: bool) -> Path:
    """Write ``card`` as JSON to ``path`` atomically; it is the same card as the model file's."""
    with atomic_output(path, overwrite=overwrite) as temporary:
        temporary.write_text(card.to_json(), encoding="utf-8")
    return path


def check_suffix(path: Path, suffixes: tuple[str, ...], runtime: str) -> None:
    if path.suffix.lower() not in suffixes:
        raise ValueError(f"The {runtime} output {str(path)!r} must end in {' or '.join(suffixes)}.")


@dataclass
class FileExport:
    """A single-file export, checked and ready to write: the network, its card and where each goes."""

    output: Path
    tolerance: float
    card_path: Path
    network: torch.nn.Module
    card: ModelCard
    keep_card: bool


def prepare_file_export(model: str | Path, output: str | Path, suffixes: tuple[str, ...], runtime: str,
                        tolerance: float, overwrite: bool) -> FileExport:
    """Check the output suffix, tolerance and free paths, and load the model, before any export work.

    The same card may already be beside the output: the model file's own (m.safetensors exported to m.ts) or an
    earlier export's (m.ts, then m.onnx). It is kept, so exporting to several formats needs no --overwrite. A
    different card is replaced only when no other export of the same stem uses it.

    Raises:
        ValueError: for a bad suffix or tolerance, or an invalid model.
        FileExistsError: if an output exists and ``overwrite`` is false, or if the card beside ``output`` differs
            and another export of the same stem still uses it.
        OutputNotWritableError: if the output's folder cannot be written to.
    """
    output = Path(output)
    check_suffix(output, suffixes, runtime)
    tolerance = check_tolerance(tolerance)
    card_path = card_path_beside(output)
    if output.parent.is_dir():
        check_folder_writable(output.parent)
    network, card = load_network(model)
    keep_card = card_already_written(model, card, card_path)
    if not keep_card:
        check_card_not_shared(card_path, card.to_json(), output)
    check_outputs_free([output] if keep_card else [output, card_path], overwrite)
    return FileExport(output, tolerance, card_path, network, card, keep_card)
