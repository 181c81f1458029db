"""Model files (safetensors weights + JSON card), shipped defaults and safe loading."""

from medgan.models.card import ModelCard
from medgan.models.files import load_model_files, resolve_model_path, save_model, shipped_model_names

__all__ = ["ModelCard", "load_model_files", "resolve_model_path", "save_model", "shipped_model_names"]
