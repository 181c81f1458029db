"""Training checkpoints: tensors and plain values only, read back with ``torch.load(weights_only=True)``."""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medgan.io.atomic import atomic_output

logger = logging.getLogger(__name__)

LATEST = "latest.pt"


def save_checkpoint(run_dir: Path, state: dict[str, Any], step: int) -> Path:
    """Write ``state`` as ``checkpoints/step-NNNNNNN.pt`` and refresh ``checkpoints/latest.pt``, atomically."""
    folder = Path(run_dir) / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"step-{step:07d}.pt"
    for target in (path, folder / LATEST):
        with atomic_output(target, overwrite=True) as temporary:
            torch.save(state, temporary)
    logger.info("Saved checkpoint %s", path)
    return path


def load_checkpoint(run_dir_or_file: str | Path) -> dict[str, Any]:
    """Load a checkpoint file, or the latest one of a run folder, without unpickling arbitrary objects.

    Raises:
        FileNotFoundError: if no checkpoint exists there.
    """
    path = Path(run_dir_or_file)
    if path.is_dir():
        path = path / "checkpoints" / LATEST
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint {path} not found. Pass a run folder that contains checkpoints/{LATEST}.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for files that are not checkpoints
        raise ValueError(f"{path} is not a medgan checkpoint: {error}") from error
    if not isinstance(state, dict) or "generator" not in state or "step" not in state:
        raise ValueError(f"{path} is not a medgan checkpoint: it has no generator weights and step.")
    return state


def capture_rng_state(generator: torch.Generator) -> dict[str, Any]:
    """Random states a resumed run needs: the data generator, torch's global CPU state, NumPy's and Python's."""
    version, internal, gauss = random.getstate()
    name, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    return {
        "data_generator": generator.get_state(),
        "torch_cpu": torch.get_rng_state(),
        "python": [version, list(internal), gauss],
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss),
                  float(cached_gaussian)],
    }


def restore_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
    generator.set_state(state["data_generator"])
    torch.set_rng_state(state["torch_cpu"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "numpy" in state:
        name, keys, position, has_gauss, cached_gaussian = state["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached_gaussian))
