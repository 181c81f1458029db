"""Grid checks for evaluation: volumes are compared voxel by voxel, so their grids must match and are never resampled."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medgan.io.volume import Volume

GRID_TOLERANCE_MM = 1e-4
"""Largest difference between two affines' entries, in mm, for their grids to count as one."""


class GridMismatchError(ValueError):
    """Two volumes that must share a grid (shape and affine) do not."""


def _directions(affine: np.ndarray) -> np.ndarray:
    """Return the unit vectors of the voxel axes i, j and k as the columns of a 3x3 matrix."""
    columns = np.asarray(affine, dtype=np.float64)[:3, :3]
    return columns / np.linalg.norm(columns, axis=0)


def describe_grid(volume: Volume) -> str:
    """Return shape, spacing, origin and orientation of ``volume`` in one line, with axis directions if oblique."""
    spacing = ", ".join(f"{value:.6g}" for value in volume.spacing_mm)
    origin = ", ".join(f"{value:.6g}" for value in volume.affine[:3, 3])
    text = f"shape {volume.shape}, spacing ({spacing}) mm, origin ({origin}) mm, orientation {volume.orientation}"
    directions = _directions(volume.affine)
    # The orientation code names only the nearest RAS axes, so an oblique grid also shows its axis directions.
    if not np.allclose(np.abs(directions), np.round(np.abs(directions)), atol=1e-6):
        axes = ", ".join(f"{name} ({', '.join(f'{value:.4g}' for value in directions[:, index])})"
                         for index, name in enumerate("ijk"))
        text += f" (oblique: RAS directions {axes})"
    return text


def axis_angle_degrees(first: np.ndarray, second: np.ndarray) -> float:
    """Return the largest angle between corresponding voxel axes of two affines, in degrees."""
    cosines = np.sum(_directions(first) * _directions(second), axis=0)
    return float(np.degrees(np.max(np.arccos(np.clip(cosines, -1.0, 1.0)))))


def check_same_grid(first: Volume, second: Volume, first_name: str, second_name: str,
                    tolerance_mm: float = GRID_TOLERANCE_MM) -> None:
    """Check that two volumes have one shape and affines equal within ``tolerance_mm`` in every entry.

    Raises:
        GridMismatchError: naming both grids and the largest affine difference.
    """
    if first.shape == second.shape:
        difference = float(np.max(np.abs(first.affine - second.affine)))
        if difference <= tolerance_mm:
            return
        reason = f"their affines differ by up to {difference:.3g} mm (tolerance {tolerance_mm:g} mm)"
        angle = axis_angle_degrees(first.affine, second.affine)
        if angle > 0.01:
            reason += f", and their voxel axes are rotated by up to {angle:.3g} degrees against each other"
    else:
        reason = "their shapes differ"
    raise GridMismatchError(
        f"The {first_name} and the {second_name} are on different grids, because {reason}. "
        f"{first_name}: {describe_grid(first)}. {second_name}: {describe_grid(second)}. Evaluation compares voxels "
        f"one to one and does not resample: write the {second_name} on the grid of the {first_name} first."
    )


@dataclass(frozen=True)
class ThickSliceRelation:
    """How a thick-slice input relates to its high-resolution reference: boxcar slices along one axis, no gap.

    Attributes:
        slice_axis: voxel axis across the slices (0 to 2, ``i``, ``j``, ``k``).
        slice_thickness_mm: thickness of the input's slices, equal to their spacing.
        scale: input slice spacing divided by the reference's spacing along ``slice_axis``.
    """

    slice_axis: int
    slice_thickness_mm: float
    scale: float

    def transform(self):
        """Return the ``ThickSliceMRI`` that maps the reference grid onto the input grid."""
        from medgan.transforms.mri import ThickSliceMRI

        return ThickSliceMRI(self.slice_thickness_mm, slice_axis=self.slice_axis, profile="boxcar",
                             output_grid="low")

    def degrade(self, high_resolution: Volume) -> Volume:
        """Average ``high_resolution`` into the input's thick slices, on the input's grid."""
        return self.transform()(high_resolution)

    def to_dict(self) -> dict:
        return {"slice_axis": "ijk"[self.slice_axis], "slice_thickness_mm": self.slice_thickness_mm,
                "scale": self.scale, "profile": "boxcar", "slice_gap_mm": 0.0}


def thick_slice_relation(low_resolution: Volume, reference: Volume,
                         tolerance_mm: float = GRID_TOLERANCE_MM) -> ThickSliceRelation:
    """Find the slice axis and thickness that turn ``reference``'s grid into ``low_resolution``'s.

    Exactly one axis may have a coarser spacing in ``low_resolution``. The grid that boxcar thick slices of that
    thickness make from the reference (``medgan.transforms.mri.ThickSliceMRI``) must match ``low_resolution``'s
    shape and affine within ``tolerance_mm``.

    NOTE: inputs made with a slice gap or a Gaussian slice profile have another grid or another degradation, and
    are rejected or degraded as boxcar slices without gap.

    Raises:
        GridMismatchError: if no such relation exists, naming both grids.
    """
    ratios = np.array(low_resolution.spacing_mm) / np.array(reference.spacing_mm)
    coarser = [axis for axis in range(3) if ratios[axis] > 1 + 1e-6]
    finer = [axis for axis in range(3) if ratios[axis] < 1 - 1e-6]
    if len(coarser) != 1 or finer:
        raise GridMismatchError(
            "The input must be thicker than the reference along exactly one axis, with the same spacing along the "
            f"others; the spacing ratios input / reference along (i, j, k) are "
            f"({', '.join(f'{ratio:.4g}' for ratio in ratios)}). input: {describe_grid(low_resolution)}. "
            f"reference: {describe_grid(reference)}."
        )
    axis = coarser[0]
    relation = ThickSliceRelation(slice_axis=axis, slice_thickness_mm=float(low_resolution.spacing_mm[axis]),
                                  scale=float(ratios[axis]))
    transform = relation.transform()
    try:
        n_thick = transform.sampling(reference.shape[axis], reference.spacing_mm[axis]).n_thick
    except ValueError as error:
        raise GridMismatchError(f"The input's {relation.slice_thickness_mm:g} mm slices do not fit in the reference "
                                f"({describe_grid(reference)}): {error}") from error
    expected_shape = list(reference.shape)
    expected_shape[axis] = n_thick
    expected = Volume(np.zeros(expected_shape, dtype=np.float32), transform.output_affine(reference.affine,
                                                                                         reference.shape[axis]))
    check_same_grid(expected, low_resolution, f"reference's thick slices along {'ijk'[axis]}", "input",
                    tolerance_mm)
    return relation
