"""Reading the perceptual networks' weight files without executing code from them.

``.safetensors`` files are read with safetensors. Other files (``.pth``, ``.pt``) go through
``torch.load(weights_only=True)``, which unpickles tensors and plain containers only.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file

logger = logging.getLogger(__name__)


def sha256_of_file(path: Path) -> str:
    """Return the hex SHA-256 of the file at ``path``."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def existing_weights_path(loss_name: str, weights: str | Path | None) -> Path:
    """Return ``weights`` as a path to an existing file.

    Raises:
        ValueError: if ``weights`` is not given.
        FileNotFoundError: if the file does not exist; the message names the kwarg and the path.
    """
    if weights is None or (isinstance(weights, str) and not weights.strip()):
        raise ValueError(f"{loss_name}: the kwarg weights (path of the network's weights file) is required.")
    if not isinstance(weights, (str, Path)):
        raise ValueError(f"{loss_name}: the kwarg weights must be a file path, got {weights!r}.")
    path = Path(weights).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{loss_name}: weights file {path} (kwarg weights) not found. "
                                "Check the path; relative paths in a config file are relative to the file's folder.")
    return path


def verify_sha256(loss_name: str, path: Path, expected: str | None, source: str = "kwarg sha256") -> str:
    """Hash ``path`` and compare it with ``expected`` (skipped when ``None``); return the actual hash.

    Raises:
        ValueError: if the hashes differ or ``expected`` is not a 64-digit hex string.
    """
    actual = sha256_of_file(path)
    if expected is None:
        return actual
    if not isinstance(expected, str) or len(expected.strip()) != 64:
        raise ValueError(f"{loss_name}: {source} must be a 64-digit hex SHA-256, got {expected!r}.")
    if actual != expected.strip().lower():
        raise ValueError(f"{loss_name}: weights file {path} has SHA-256 {actual}, but {source} expects "
                         f"{expected.strip().lower()}. The file is damaged or is not the expected release; "
                         "fetch it again or correct the checksum.")
    return actual


def read_state_dict(loss_name: str, path: Path) -> dict[str, torch.Tensor]:
    """Read a state dict from ``path`` onto the CPU.

    A ``.pth`` file that contains ``{"state_dict": {...}}`` (as MedicalNet's releases do) is unwrapped.

    Raises:
        ValueError: if the file cannot be read safely or does not contain a mapping of names to tensors.
    """
    try:
        if path.suffix == ".safetensors":
            loaded = load_file(str(path), device="cpu")
        else:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # safetensors and the restricted unpickler raise several error types
        raise ValueError(f"{loss_name}: weights file {path} could not be read as safetensors or as a "
                         f"weights-only torch file: {error}") from error
    if isinstance(loaded, Mapping) and isinstance(loaded.get("state_dict"), Mapping):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, Mapping) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise ValueError(f"{loss_name}: weights file {path} does not contain a state dict (a mapping of "
                         "parameter names to tensors).")
    return dict(loaded)


def load_exact_state(loss_name: str, module: torch.nn.Module, state: Mapping[str, torch.Tensor], path: Path) -> None:
    """Load ``state`` into ``module`` and require that every key matches with the right shape.

    Raises:
        ValueError: listing missing and unexpected keys (up to five each) or the shape mismatch.
    """
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(f"{loss_name}: weights file {path} does not fit the network: missing keys {missing[:5]} "
                         f"({len(missing)} in all), unexpected keys {unexpected[:5]} ({len(unexpected)} in all).")
    for key, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise ValueError(f"{loss_name}: weights file {path} has {key} of shape {tuple(tensor.shape)}, but the "
                             f"network needs {tuple(expected[key].shape)}.")
    module.load_state_dict({key: tensor.to(expected[key].dtype) for key, tensor in state.items()})
