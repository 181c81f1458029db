"""The restoration tasks medgan supports, described as data.

A task fixes what a model's input and output mean: the modality, how voxel values map to network units and
back, the default networks, and how the output grid relates to the input grid. Adding a task means adding an
entry to ``TASKS``, not branching on task names elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class IntensityMapping:
    """Linear map from physical voxel values to network units: ``x = (value - offset) / scale``.

    The map is applied without clipping, so every value survives the round trip. Choosing ``scale`` as a power
    of two and ``offset`` as zero makes the round trip exact in floating point.

    Quantitative images (CT in HU) use a fixed map. Images in arbitrary units (MRI) set
    ``reference_percentile``: `for_volume` then measures that percentile of each volume and uses it as the scale,
    so the network receives every scan in the same range whatever the scanner's gain.

    Args:
        offset: physical value that maps to 0, in ``unit``.
        scale: physical range that maps to 1, in ``unit``; ignored when ``reference_percentile`` is set.
        unit: physical unit of the voxel values, for example ``"HU"``.
        reference_percentile: percentile in ``(0, 100]`` of each volume's values that maps to 1, or ``None``
            for a fixed map.
    """

    offset: float = 0.0
    scale: float = 1.0
    unit: str = ""
    reference_percentile: float | None = None

    def __post_init__(self) -> None:
        if not np.isfinite(self.scale) or self.scale <= 0:
            raise ValueError(f"IntensityMapping scale must be a positive finite number, got {self.scale!r}.")
        if not np.isfinite(self.offset):
            raise ValueError(f"IntensityMapping offset must be finite, got {self.offset!r}.")
        if self.reference_percentile is not None and not 0 < self.reference_percentile <= 100:
            raise ValueError("IntensityMapping reference_percentile must be in (0, 100] or None, got "
                             f"{self.reference_percentile!r}.")

    def for_volume(self, values) -> "IntensityMapping":
        """Return the fixed map to use for one volume: ``self`` when fixed, else a map scaled by its percentile.

        Raises:
            ValueError: if the percentile of the volume is not above ``offset`` (an empty or negative image).
        """
        if self.reference_percentile is None:
            return self
        array = np.asarray(values.detach().cpu() if hasattr(values, "detach") else values, dtype=np.float64)
        reference = float(np.percentile(array, self.reference_percentile)) - self.offset
        if not np.isfinite(reference) or reference <= 0:
            raise ValueError(f"The volume's {self.reference_percentile:g}th percentile ({reference + self.offset:g}) "
                             f"is not above {self.offset:g} {self.unit}; it cannot set the intensity scale. "
                             "Check that the image is not empty.")
        return IntensityMapping(offset=self.offset, scale=reference, unit=self.unit)

    def forward(self, values):
        """Map physical values (array or tensor) to network units."""
        return (values - self.offset) / self.scale

    def inverse(self, network_values):
        """Map network units back to physical values."""
        return network_values * self.scale + self.offset

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"offset": self.offset, "scale": self.scale, "unit": self.unit}
        if self.reference_percentile is not None:
            data["reference_percentile"] = self.reference_percentile
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "IntensityMapping":
        percentile = data.get("reference_percentile")
        return cls(offset=float(data["offset"]), scale=float(data["scale"]), unit=str(data.get("unit", "")),
                   reference_percentile=None if percentile is None else float(percentile))


@dataclass(frozen=True)
class Task:
    """One restoration task.

    Args:
        name: identifier used by ``--task`` and stored in model cards.
        modality: DICOM modality of the inputs (``"CT"``, ``"MR"``).
        description: one line for help texts.
        intensity: default intensity mapping of new models.
        generator: default generator spec ``{"name": ..., "kwargs": {...}}``.
        critic: default critic spec; a conditional critic scores (input, candidate) pairs, so it takes twice the
            input channels.
        output_scale: output voxels per input voxel along (i, j, k); ``(1, 1, 1)`` keeps the input grid.
        default_model: name of the shipped model used when ``--model`` is not given, or ``None``.
    """

    name: str
    modality: str
    description: str
    intensity: IntensityMapping
    generator: dict[str, Any] = field(default_factory=dict)
    critic: dict[str, Any] = field(default_factory=dict)
    output_scale: tuple[int, int, int] = (1, 1, 1)
    default_model: str | None = None


TASKS: dict[str, Task] = {
    "ldct": Task(
        name="ldct",
        modality="CT",
        description="Low-dose CT denoising: a reduced-dose CT volume in, normal-dose quality out, in HU.",
        # HU / 1024: water is 0 and air about -1, and dividing by a power of two is exact in floating point.
        intensity=IntensityMapping(offset=0.0, scale=1024.0, unit="HU"),
        generator={"name": "red-cnn-3d", "kwargs": {"channels": 32, "depth": 4}},
        critic={"name": "patch-critic-3d", "kwargs": {"in_channels": 2, "channels": 16, "n_layers": 3}},
        default_model="ldct-default",
    ),
    "mri-sr": Task(
        name="mri-sr",
        modality="MR",
        description="MRI super-resolution: a thick-slice MRI volume in, 4x finer along the slice axis (k) out.",
        # MRI intensities have no physical unit: each volume is scaled by its 99.5th percentile.
        intensity=IntensityMapping(offset=0.0, scale=1.0, unit="a.u.", reference_percentile=99.5),
        generator={"name": "mdcsrn-3d", "kwargs": {"scale": [4, 1, 1]}},
        critic={"name": "patch-critic-3d", "kwargs": {"in_channels": 2, "channels": 16, "n_layers": 3}},
        output_scale=(1, 1, 4),
        default_model="mri-sr-default",
    ),
}


def get_task(name: str) -> Task:
    """Return the task called ``name``.

    Raises:
        ValueError: if no task has that name; the message lists the known tasks.
    """
    if name not in TASKS:
        raise ValueError(f"Unknown task {name!r}; available tasks: {', '.join(sorted(TASKS))}.")
    return TASKS[name]
