"""Transforms that build degraded training inputs from clean volumes.

The MONAI dictionary versions (``LowDoseCTd``, ``RandomLowDoseCTd``, ``ThickSliceMRId`` and the others in
``medgan.transforms.dictionary``) are imported on first use, so ``import medgan.transforms`` does not load
MONAI.
"""

from __future__ import annotations

import importlib
from typing import Any

from medgan.transforms.lowdose import LowDoseCT, RandomLowDoseCT
from medgan.transforms.mri import (
    KSpaceTruncationMRI,
    RandomKSpaceTruncationMRI,
    RandomRicianNoiseMRI,
    RandomThickSliceMRI,
    RicianNoiseMRI,
    ThickSliceMRI,
)

_DICTIONARY_TRANSFORMS = (
    "KSpaceTruncationMRId",
    "LowDoseCTd",
    "RandomKSpaceTruncationMRId",
    "RandomLowDoseCTd",
    "RandomRicianNoiseMRId",
    "RandomThickSliceMRId",
    "RicianNoiseMRId",
    "ThickSliceMRId",
)

# MONAI transforms that restore images with a trained model (medgan.transforms.restore), also imported on first use.
_RESTORE_TRANSFORMS = ("Restored", "Restoredd")

__all__ = [
    "KSpaceTruncationMRI",
    "LowDoseCT",
    "RandomKSpaceTruncationMRI",
    "RandomLowDoseCT",
    "RandomRicianNoiseMRI",
    "RandomThickSliceMRI",
    "RicianNoiseMRI",
    "ThickSliceMRI",
    *_DICTIONARY_TRANSFORMS,
    *_RESTORE_TRANSFORMS,
]


def __getattr__(name: str) -> Any:
    if name in _DICTIONARY_TRANSFORMS:
        return getattr(importlib.import_module("medgan.transforms.dictionary"), name)
    if name in _RESTORE_TRANSFORMS:
        return getattr(importlib.import_module("medgan.transforms.restore"), name)
    raise AttributeError(f"module 'medgan.transforms' has no attribute {name!r}")
