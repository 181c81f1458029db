"""Fidelity guardrail: checks that a restored volume did not move the values it should keep.

CT denoising must not shift the mean HU of uniform tissue. Super-resolution must agree with the measured thick
slices once it is averaged back into them. Both checks need no reference, so inference can run them on every
output.
"""

from __future__ import annotations

import logging

import numpy as np

from medgan.evaluation.geometry import check_same_grid, thick_slice_relation
from medgan.evaluation.regions import find_uniform_regions
from medgan.io.volume import Volume
from medgan.tasks import get_task

logger = logging.getLogger(__name__)

CT_MEAN_TOLERANCE_HU = 10.0
SR_RELATIVE_RMSE_TOLERANCE = 0.1
"""Default limit of ``RMSE(degraded output, input) / RMS(input)``. The input's own noise counts against a
perfect output: noise whose sigma is 5 % of the input's RMS alone gives about 0.05 (an estimate, not measured on
scans)."""
FIDELITY_REGION_COUNT = 5
FIDELITY_REGION_SIZE_VOXELS = 11


def fidelity_report(input_volume: Volume, output_volume: Volume, task: str, *,
                    tolerance_hu: float = CT_MEAN_TOLERANCE_HU,
                    tolerance_relative_rmse: float = SR_RELATIVE_RMSE_TOLERANCE,
                    region_count: int = FIDELITY_REGION_COUNT) -> dict:
    """Check that ``output_volume`` keeps the measured values of ``input_volume`` and return figures and warnings.

    CT tasks (the task's modality is ``"CT"``): the output must be on the input grid. Up to ``region_count``
    non-overlapping uniform soft-tissue boxes are found in the input (`find_uniform_regions`), and in each the
    output's mean HU must be within ``tolerance_hu`` of the input's.

    MR super-resolution tasks: the output, on a finer grid, is averaged back into the input's boxcar thick
    slices (`medgan.evaluation.geometry.thick_slice_relation`) and compared with the input. The relative RMSE,
    ``RMSE / RMS(input)``, must not exceed ``tolerance_relative_rmse``.

    Every failed check adds a line to ``warnings`` and is logged as a warning. A check that cannot run (no
    uniform region) adds a warning too, so a missing check is never reported as passing.

    Returns:
        ``{"task", "check", "passed", "figures", "warnings"}``. ``figures`` contains the per-region means (CT) or
        the data-consistency errors (MR) and the tolerance.

    Raises:
        ValueError: for an unknown task or a tolerance that is not positive.
        GridMismatchError: if the output grid does not fit the input grid as the task requires.
    """
    modality = get_task(task).modality
    if not tolerance_hu > 0:
        raise ValueError(f"tolerance_hu must be positive, got {tolerance_hu!r}.")
    if not tolerance_relative_rmse > 0:
        raise ValueError(f"tolerance_relative_rmse must be positive, got {tolerance_relative_rmse!r}.")
    if modality == "CT":
        figures, warnings = _ct_mean_check(input_volume, output_volume, tolerance_hu, region_count)
        check = "mean HU in uniform regions of the input"
    else:
        figures, warnings = _thick_slice_check(input_volume, output_volume, tolerance_relative_rmse)
        check = "output averaged back into the input's thick slices"
    for warning in warnings:
        logger.warning("Fidelity (%s): %s", task, warning)
    return {"task": task, "check": check, "passed": not warnings, "figures": figures, "warnings": warnings}


def _ct_mean_check(input_volume: Volume, output_volume: Volume, tolerance_hu: float,
                   region_count: int) -> tuple[dict, list[str]]:
    check_same_grid(input_volume, output_volume, "input", "output")
    size = min(FIDELITY_REGION_SIZE_VOXELS, input_volume.shape[0], input_volume.shape[1])
    try:
        regions = find_uniform_regions(input_volume.array, count=region_count, size=size)
    except ValueError:
        return ({"tolerance_hu": tolerance_hu, "regions": []},
                [f"the mean-HU check could not run: no {size} x {size} box of uniform soft tissue (mean within "
                 "-200 to 200 HU) was found in the input. Check that the input is CT in HU."])
    rows = []
    warnings = []
    for region in regions:
        input_mean = float(region.take(input_volume.array).astype(np.float64).mean())
        output_mean = float(region.take(output_volume.array).astype(np.float64).mean())
        shift = output_mean - input_mean
        box = [region.i0, region.i1, region.j0, region.j1, region.k0, region.k1]
        rows.append({"region_ijk": box, "input_mean_hu": input_mean, "output_mean_hu": output_mean,
                     "shift_hu": shift})
        if abs(shift) > tolerance_hu:
            warnings.append(f"the mean HU in region i {box[0]}:{box[1]}, j {box[2]}:{box[3]} moved by {shift:+.1f} "
                            f"HU ({input_mean:.1f} -> {output_mean:.1f}), more than the tolerance of "
                            f"{tolerance_hu:g} HU")
    shifts = [abs(row["shift_hu"]) for row in rows]
    return {"tolerance_hu": tolerance_hu, "regions": rows, "max_abs_shift_hu": max(shifts)}, warnings


def _thick_slice_check(input_volume: Volume, output_volume: Volume,
                       tolerance_relative_rmse: float) -> tuple[dict, list[str]]:
    relation = thick_slice_relation(input_volume, output_volume)
    degraded = relation.degrade(output_volume).array.astype(np.float64)
    measured = input_volume.array.astype(np.float64)
    error = float(np.sqrt(np.mean((degraded - measured) ** 2)))
    input_rms = float(np.sqrt(np.mean(measured**2)))
    relative = error / input_rms if input_rms > 0 else float("inf")
    figures = {"relation": relation.to_dict(), "rmse": error, "input_rms": input_rms, "relative_rmse": relative,
               "tolerance_relative_rmse": tolerance_relative_rmse}
    warnings = []
    if not relative <= tolerance_relative_rmse:
        warnings.append(f"the output averaged into the input's {relation.slice_thickness_mm:g} mm slices differs "
                        f"from the input by a relative RMSE of {relative:.3f}, more than the tolerance of "
                        f"{tolerance_relative_rmse:g}")
    return figures, warnings
