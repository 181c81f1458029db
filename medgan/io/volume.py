"""The `Volume` type: a voxel array with its physical geometry."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Volume:
    """A 3D image in physical space.

    Args:
        array: voxel values as float32, indexed ``(i, j, k)`` in voxel order (the NIfTI convention). For CT the
            values are Hounsfield units.
        affine: 4x4 matrix mapping voxel indices ``(i, j, k, 1)`` to RAS+ world coordinates in millimetres.
        modality: ``"CT"``, ``"MR"``, or ``""`` when the source does not record it.
        metadata: facts about the source needed to write a faithful output (format, NIfTI qform/sform codes and
            units, DICOM tags). Readers fill it, writers read it, and nothing else depends on it.

    Raises:
        ValueError: if ``array`` is not 3D or ``affine`` is not a finite, invertible 4x4 matrix.
    """

    array: np.ndarray
    affine: np.ndarray
    modality: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.array = np.asarray(self.array)
        if self.array.ndim != 3:
            raise ValueError(f"Volume array must be 3D (i, j, k), got shape {self.array.shape}.")
        if self.array.dtype != np.float32:
            self.array = self.array.astype(np.float32)
        self.affine = np.asarray(self.affine, dtype=np.float64)
        if self.affine.shape != (4, 4):
            raise ValueError(f"Volume affine must be 4x4, got shape {self.affine.shape}.")
        if not np.all(np.isfinite(self.affine)):
            raise ValueError(f"Volume affine must be finite, got\n{self.affine}")
        if abs(np.linalg.det(self.affine[:3, :3])) < 1e-12:
            raise ValueError(f"Volume affine must be invertible, got\n{self.affine}")

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(n) for n in self.array.shape)  # type: ignore[return-value]

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        """Voxel size along i, j and k in millimetres (the column norms of the affine)."""
        norms = np.linalg.norm(self.affine[:3, :3], axis=0)
        return tuple(float(n) for n in norms)  # type: ignore[return-value]

    @property
    def orientation(self) -> str:
        """Axis codes such as ``"RAS"`` or ``"LPS"``: the world direction each voxel axis points to."""
        import nibabel as nib

        return "".join(nib.orientations.aff2axcodes(self.affine))

    def with_array(self, array: np.ndarray) -> "Volume":
        """Return a copy with new voxel values on the same grid and with the same metadata."""
        if tuple(array.shape) != self.shape:
            raise ValueError(f"New array shape {tuple(array.shape)} does not match the volume shape {self.shape}.")
        return Volume(array=array, affine=self.affine.copy(), modality=self.modality, metadata=dict(self.metadata))

    def __repr__(self) -> str:
        spacing = ", ".join(f"{s:.3g}" for s in self.spacing_mm)
        megabytes = self.array.nbytes / 2**20
        return (
            f"Volume(shape={self.shape}, spacing_mm=({spacing}), orientation={self.orientation}, "
            f"modality={self.modality or '?'}, dtype={self.array.dtype}, memory={megabytes:.1f} MiB)"
        )
