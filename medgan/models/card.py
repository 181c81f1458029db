"""`ModelCard`: what a model file is, stored as JSON beside its safetensors weights."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

CARD_FORMAT_VERSION = 1


@dataclass
class ModelCard:
    """Description of a trained model, enough to rebuild its network without unpickling code.

    Args:
        task: task name (see ``medgan.tasks.TASKS``).
        network: generator spec ``{"name": registry name, "kwargs": constructor arguments}``.
        intensity: intensity mapping as ``{"offset", "scale", "unit"}``.
        patch_size: training patch size ``(D, H, W)`` in voxels; the default inference window.
        output_scale: output voxels per input voxel along (i, j, k).
        training_data: free text: which data, how it was degraded, what was held out.
        metrics: measured numbers, each with the protocol that produced them.
        medgan_version: version of medgan that wrote the card.
        weights_sha256: SHA-256 of the weights file, checked on load.
        name: short model name.
        notes: anything a user must know before trusting the model.
    """

    task: str
    network: dict[str, Any]
    intensity: dict[str, Any]
    patch_size: tuple[int, int, int]
    output_scale: tuple[int, int, int] = (1, 1, 1)
    training_data: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    medgan_version: str = ""
    weights_sha256: str = ""
    name: str = ""
    notes: str = ""
    format_version: int = CARD_FORMAT_VERSION

    def to_json(self) -> str:
        data = asdict(self)
        data["patch_size"] = list(self.patch_size)
        data["output_scale"] = list(self.output_scale)
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str = "model card") -> "ModelCard":
        """Parse a card, rejecting unknown format versions and missing or unexpected keys.

        Raises:
            ValueError: naming ``source`` and the offending key.
        """
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"{source} is not valid JSON: {error}.") from error
        if not isinstance(data, dict):
            raise ValueError(f"{source} must hold a JSON object, got {type(data).__name__}.")
        version = data.get("format_version")
        if version != CARD_FORMAT_VERSION:
            raise ValueError(
                f"{source} has format_version {version!r}; this medgan reads version {CARD_FORMAT_VERSION}."
            )
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{source} has unknown key(s): {', '.join(unknown)}.")
        for key in ("task", "network", "intensity", "patch_size"):
            if key not in data:
                raise ValueError(f"{source} is missing the required key {key!r}.")
        network = data["network"]
        if not isinstance(network, dict) or not isinstance(network.get("name"), str):
            raise ValueError(f"{source}: 'network' must be an object with a string 'name', got {network!r}.")
        for key, default in (("patch_size", None), ("output_scale", (1, 1, 1))):
            value = data.get(key, default)
            if (not isinstance(value, (list, tuple)) or len(value) != 3
                    or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in value)):
                raise ValueError(f"{source}: {key!r} must be three positive integers, got {value!r}.")
            data[key] = tuple(value)
        return cls(**data)

    @classmethod
    def read(cls, path: str | Path) -> "ModelCard":
        path = Path(path)
        return cls.from_json(path.read_text(encoding="utf-8"), source=str(path))
