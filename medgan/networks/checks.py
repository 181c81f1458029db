"""Argument and input checks shared by the networks, so every error names the argument, its value and the fix."""

from __future__ import annotations

from typing import Any, Sequence

import torch


def check_positive_int(name: str, value: Any) -> None:
    """Raise ValueError unless ``value`` is an integer of at least 1 (``bool`` is rejected)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")


def check_odd_kernel(name: str, value: Any) -> None:
    """Raise ValueError unless ``value`` is a positive odd integer, which 'same' padding needs."""
    check_positive_int(name, value)
    if value % 2 == 0:
        raise ValueError(f"{name} must be odd so the output keeps the input's shape, got {value}.")


def check_choice(name: str, value: Any, choices: Sequence[str]) -> None:
    """Raise ValueError unless ``value`` is one of ``choices``."""
    if value not in choices:
        options = ", ".join(repr(choice) for choice in choices)
        raise ValueError(f"{name} must be one of {options}, got {value!r}.")


def check_volume_batch(x: torch.Tensor, channels: int) -> None:
    """Raise ValueError unless ``x`` is a ``(B, C, D, H, W)`` tensor with ``C == channels`` and no empty axis."""
    if x.ndim != 5:
        raise ValueError(f"Expected a (B, C, D, H, W) tensor, got shape {tuple(x.shape)}.")
    if x.shape[1] != channels:
        raise ValueError(
            f"Expected {channels} input channel(s) (the network's in_channels), got shape {tuple(x.shape)}."
        )
    if min(x.shape) < 1:
        raise ValueError(f"Expected at least one element along every axis, got shape {tuple(x.shape)}.")
