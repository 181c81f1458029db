"""Transforms that build degraded training inputs from clean volumes."""

from medgan.transforms.lowdose import LowDoseCT, RandomLowDoseCT

__all__ = ["LowDoseCT", "RandomLowDoseCT"]
