"""Volumetric inference: the Restorer and its sliding-window engine."""
