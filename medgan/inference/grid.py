"""The output grid of a model with an output scale: its affine and the source metadata that stays true on it.

A scale ``s`` along a voxel axis splits each input voxel into ``s`` output voxels with the same physical
extent. Output voxel index ``m`` along that axis has its centre at input voxel coordinate ``(m + 0.5) / s - 0.5``,
and the output voxel spacing is the input spacing divided by ``s``.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Sequence

import numpy as np

logger = logging.getLogger(__name__)

# NIfTI reader keys holding the source header's qform and sform matrices, which describe the input grid.
_NIFTI_GRID_KEYS = ("qform", "sform")


def input_coordinates(output_index: np.ndarray | int, scale: int) -> np.ndarray | float:
    """Return the input voxel coordinate of the centre of output voxel ``output_index`` along an axis of ``scale``."""
    return (np.asarray(output_index, dtype=np.float64) + 0.5) / scale - 0.5


def scaled_affine(affine: np.ndarray, scale_ijk: Sequence[int]) -> np.ndarray:
    """Return the affine of the output grid for a voxel-to-world ``affine`` and a scale along (i, j, k).

    Column ``a`` of the new affine is column ``a`` of ``affine`` divided by ``s_a``, and the origin moves to
    the world position of output voxel 0, which lies at input coordinate ``0.5 / s_a - 0.5`` along each axis.
    """
    scales = np.asarray(scale_ijk, dtype=np.float64)
    result = np.array(affine, dtype=np.float64, copy=True)
    if np.all(scales == 1):
        return result
    offsets = 0.5 / scales - 0.5
    result[:3, 3] = affine[:3, 3] + affine[:3, :3] @ offsets
    result[:3, :3] = affine[:3, :3] / scales[None, :]
    return result


def scaled_metadata(metadata: dict[str, Any], scale_ijk: Sequence[int], input_shape: Sequence[int],
                    input_spacing_mm: Sequence[float] | None = None) -> dict[str, Any]:
    """Return a copy of a volume's source ``metadata`` that no longer describes the input grid.

    - NIfTI: the source header's ``qform`` and ``sform`` matrices are dropped (the writer takes the geometry
      from the volume's affine, and only the codes from the metadata).
    - DICOM: with a scale along k, ``source_slices`` is rebuilt so that each output slice references the input
      slices on either side of its centre, mapped through any earlier ``source_slices``. The files, UIDs and
      rescale values stay, because they describe the source files that those indexes point to. With
      ``input_spacing_mm`` given, ``slice_thickness_override_mm`` (the new slice spacing) gives the writer the
      SliceThickness of the finer slices.

    A DICOM source scaled along i or j keeps its metadata: the derived-series writer checks Rows and Columns
    against the source files and rejects the new matrix size with an error.
    """
    result = dict(metadata)
    if tuple(int(s) for s in scale_ijk) == (1, 1, 1):
        return result
    for key in _NIFTI_GRID_KEYS:
        result.pop(key, None)
    scale_k = int(scale_ijk[2])
    if result.get("format") == "dicom" and scale_k != 1:
        result["source_slices"] = _scaled_source_slices(result.get("source_slices"), scale_k, int(input_shape[2]))
    if result.get("format") == "dicom" and scale_k != 1 and input_spacing_mm is not None:
        # Each output slice stands for its share of an input slice, so the derived series states that width.
        result["slice_thickness_override_mm"] = float(input_spacing_mm[2]) / scale_k
    return result


def _scaled_source_slices(source_slices: list[list[int]] | None, scale: int, slices: int) -> list[list[int]]:
    """Return, per output slice, the source file indexes of the input slices around its centre."""
    previous = source_slices or [[index] for index in range(slices)]
    result = []
    for output_index in range(slices * scale):
        centre = float(input_coordinates(output_index, scale))
        below = min(max(math.floor(centre), 0), slices - 1)
        above = min(max(math.ceil(centre), 0), slices - 1)
        result.append(sorted(set(previous[below]) | set(previous[above])))
    return result
