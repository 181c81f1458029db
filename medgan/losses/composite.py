"""Losses by name, and `CompositeLoss`: the weighted sum of the generator's non-adversarial terms.

Every loss built here is a module called as ``loss(prediction, target)`` on ``(B, C, D, H, W)`` tensors in
network units, returning a float32 scalar.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch

from medgan.losses.content import ContentLoss
from medgan.losses.perceptual import AutoencoderPerceptualLoss, MedicalNetPerceptualLoss, VGG25DPerceptualLoss
from medgan.losses.ssim import SSIM3DLoss

logger = logging.getLogger(__name__)

LOSSES: dict[str, type[torch.nn.Module]] = {
    "l1": ContentLoss,
    "mse": ContentLoss,
    "ssim3d": SSIM3DLoss,
    "perceptual-ae": AutoencoderPerceptualLoss,
    "perceptual-vgg25d": VGG25DPerceptualLoss,
    "perceptual-medicalnet": MedicalNetPerceptualLoss,
}
# Arguments fixed by the name rather than given as kwargs.
_FIXED_ARGUMENTS: dict[str, dict[str, Any]] = {"l1": {"kind": "l1"}, "mse": {"kind": "mse"}}
# Kwargs that name files; configs resolve them against the config file's folder.
PATH_KWARGS = ("weights",)


def loss_names() -> list[str]:
    """Names accepted by `build_loss`."""
    return list(LOSSES)


def loss_kwargs(name: str) -> tuple[list[str], list[str]]:
    """Return the kwargs that loss ``name`` accepts and those among them it requires.

    Raises:
        ValueError: if ``name`` is unknown.
    """
    _check_name(name)
    parameters = inspect.signature(LOSSES[name].__init__).parameters
    accepted = [p for p in parameters if p != "self" and p not in _FIXED_ARGUMENTS.get(name, {})]
    # The file-backed losses take weights=None only to raise a clear error; the file is required.
    required = [p for p in accepted if p in PATH_KWARGS or parameters[p].default is inspect.Parameter.empty]
    if name == "perceptual-vgg25d":
        required.append("sha256")
    return accepted, required


def _check_name(name: str) -> None:
    if name not in LOSSES:
        raise ValueError(f"Unknown loss {name!r}; choose one of {', '.join(LOSSES)}.")


def build_loss(name: str, **kwargs: Any) -> torch.nn.Module:
    """Build the loss ``name`` (see `loss_names`) with its keyword arguments.

    Raises:
        ValueError: if the name or a kwarg is unknown or invalid, or a weights file does not fit.
        FileNotFoundError: if a weights file is missing.
    """
    _check_name(name)
    accepted, _ = loss_kwargs(name)
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ValueError(f"{name}: unknown kwarg(s) {', '.join(unknown)}; valid kwargs: {', '.join(accepted) or 'none'}.")
    return LOSSES[name](**_FIXED_ARGUMENTS.get(name, {}), **kwargs)


class CompositeLoss(torch.nn.Module):
    """Weighted sum of named loss terms; calling it returns the total and each term's unweighted value.

    Terms with weight 0 are built (so their arguments are checked) and logged, but do not enter the total's
    graph. Each term's log key is its name, with ``_2``, ``_3`` ... appended when a name repeats.

    Args:
        terms: ``(name, weight, kwargs)`` triples.
        key: config key of the term list, used to point errors at the term, for example ``loss.terms``.

    Raises:
        ValueError, FileNotFoundError: from `build_loss`, prefixed with ``key[index] (name)``; ValueError also for
            an empty list or a negative or non-finite weight.
    """

    def __init__(self, terms: Iterable[tuple[str, float, Mapping[str, Any]]], key: str = "loss.terms") -> None:
        super().__init__()
        terms = list(terms)
        if not terms:
            raise ValueError(f"{key} must list at least one loss term.")
        self.labels: list[str] = []
        self.weights: list[float] = []
        self.terms = torch.nn.ModuleList()
        for index, (name, weight, kwargs) in enumerate(terms):
            where = f"{key}[{index}] ({name})"
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) \
                    or weight < 0:
                raise ValueError(f"{where}: weight must be a finite number >= 0, got {weight!r}.")
            try:
                self.terms.append(build_loss(name, **dict(kwargs)))
            except FileNotFoundError as error:
                raise FileNotFoundError(f"{where}: {error}") from error
            except (TypeError, ValueError) as error:
                raise ValueError(f"{where}: {error}") from error
            label = name
            repeat = 2
            while label in self.labels:
                label = f"{name}_{repeat}"
                repeat += 1
            self.labels.append(label)
            self.weights.append(float(weight))
        logger.info("Generator content loss: %s",
                    " + ".join(f"{weight:g} * {label}" for weight, label in zip(self.weights, self.labels)))

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Return ``(sum of weight * term, {label: detached unweighted term})``."""
        total = prediction.new_zeros((), dtype=torch.float32)
        values: dict[str, torch.Tensor] = {}
        for label, weight, term in zip(self.labels, self.weights, self.terms):
            value = term(prediction, target)
            values[label] = value.detach()
            if weight != 0:
                total = total + weight * value
        return total, values
