"""PNG previews of restored volumes: middle slices of input, output and their difference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from medgan.io.atomic import atomic_output
from medgan.io.volume import Volume

SOFT_TISSUE_WINDOW_HU = (-160.0, 240.0)
DIFFERENCE_RANGE_HU = 100.0

PREVIEW_DPI = 100
VIEW_NAMES = ("axial", "coronal", "sagittal")
COLUMN_TITLES = ("input", "output", "output - input")

# Layout of the preview in inches: the widest view fills PANEL_WIDTH_INCHES unless the stacked views would be
# taller than MAX_PANELS_HEIGHT_INCHES, and then all views shrink by the same factor.
PANEL_WIDTH_INCHES = 5.0
MAX_PANELS_HEIGHT_INCHES = 15.0
_LEFT_INCHES = 0.85
_RIGHT_INCHES = 0.1
_TOP_INCHES = 0.35
_BOTTOM_INCHES = 0.45
_ROW_GAP_INCHES = 0.12
_COLUMN_GAP_INCHES = 0.08


def _middle_slices(array: np.ndarray) -> list[np.ndarray]:
    """Axial, coronal and sagittal middle slices of an (i, j, k) array, each shown with rows top to bottom."""
    i, j, k = array.shape
    views = [array[:, :, k // 2].T]
    if k > 1:
        views.append(array[:, j // 2, :].T[::-1])
        views.append(array[i // 2, :, :].T[::-1])
    return views


def _view_extents_mm(shape: tuple[int, int, int], spacing_mm: tuple[float, float, float]) -> list[tuple[float, float]]:
    """Return the (width, height) in mm of each view of `_middle_slices`, in the same order."""
    width_i, width_j, width_k = (n * float(s) for n, s in zip(shape, spacing_mm))
    extents = [(width_i, width_j)]
    if shape[2] > 1:
        extents += [(width_i, width_k), (width_j, width_k)]
    return extents


def _to_gray(image: np.ndarray, low: float, high: float) -> np.ndarray:
    return (np.clip((image - low) / (high - low), 0.0, 1.0) * 255.0).astype(np.uint8)


def _on_output_grid(before: Volume, after: Volume) -> np.ndarray:
    """Return the input's voxels repeated onto the output grid, for an output that is an integer multiple of it.

    Raises:
        ValueError: if some output axis is not a whole multiple of the input axis.
    """
    factors = []
    for n_in, n_out in zip(before.shape, after.shape):
        if n_out % n_in:
            raise ValueError(f"Preview needs an output grid that is a whole multiple of the input grid, got "
                             f"{before.shape} and {after.shape}.")
        factors.append(n_out // n_in)
    array = before.array
    for axis, factor in enumerate(factors):
        if factor > 1:
            array = np.repeat(array, factor, axis=axis)
    return array


def _is_ct(volume: Volume) -> bool:
    """Return whether ``volume`` is CT: so recorded, or unrecorded with values below -500 (air in HU)."""
    values = volume.array
    return volume.modality == "CT" or (volume.modality == "" and values.size > 0 and float(values.min()) < -500.0)


def _display_window(volume: Volume) -> tuple[tuple[float, float], float]:
    """Return (window, difference range): the soft-tissue HU window for CT, the 0.5-99.5 percentiles otherwise."""
    if _is_ct(volume):
        return SOFT_TISSUE_WINDOW_HU, DIFFERENCE_RANGE_HU
    values = volume.array
    low, high = (float(v) for v in np.percentile(values, [0.5, 99.5]))
    high = high if high > low else low + 1.0
    return (low, high), 0.25 * (high - low)


def _preview_figure(before_array: np.ndarray, after: Volume, window: tuple[float, float],
                    difference_range: float, unit: str):
    """Draw the preview as a matplotlib ``Figure``: one row per view, input | output | output - input.

    ``before_array`` is the input on the output grid. Each panel has the view's physical aspect, so one mm spans
    the same number of pixels along both displayed axes and in every row.
    """
    from matplotlib.figure import Figure

    spacing_mm = after.spacing_mm
    extents_mm = _view_extents_mm(after.shape, spacing_mm)
    max_width_mm = max(width for width, _ in extents_mm)
    total_height_mm = sum(height for _, height in extents_mm)
    mm_per_inch = max(max_width_mm / PANEL_WIDTH_INCHES, total_height_mm / MAX_PANELS_HEIGHT_INCHES)
    column_width_inches = max_width_mm / mm_per_inch
    row_heights_inches = [height / mm_per_inch for _, height in extents_mm]

    columns = len(COLUMN_TITLES)
    width_inches = _LEFT_INCHES + columns * column_width_inches + (columns - 1) * _COLUMN_GAP_INCHES + _RIGHT_INCHES
    height_inches = (_TOP_INCHES + sum(row_heights_inches) + (len(extents_mm) - 1) * _ROW_GAP_INCHES
                     + _BOTTOM_INCHES)
    figure = Figure(figsize=(width_inches, height_inches), dpi=PREVIEW_DPI, facecolor="white")

    views = zip(_middle_slices(before_array), _middle_slices(after.array), extents_mm, row_heights_inches)
    top_inches = _TOP_INCHES
    for row, (before_slice, after_slice, (width_mm, height_mm), row_height_inches) in enumerate(views):
        before_slice = before_slice.astype(np.float32)
        after_slice = after_slice.astype(np.float32)
        panels = [(before_slice, window), (after_slice, window),
                  (after_slice - before_slice, (-difference_range, difference_range))]
        panel_width_inches = width_mm / mm_per_inch
        for column, (image, (low, high)) in enumerate(panels):
            # A view narrower than the widest one is centred in its column.
            left_inches = (_LEFT_INCHES + column * (column_width_inches + _COLUMN_GAP_INCHES)
                           + 0.5 * (column_width_inches - panel_width_inches))
            bottom_inches = height_inches - top_inches - row_height_inches
            axes = figure.add_axes((left_inches / width_inches, bottom_inches / height_inches,
                                    panel_width_inches / width_inches, row_height_inches / height_inches))
            axes.imshow(image, cmap="gray", vmin=low, vmax=high, extent=(0.0, width_mm, height_mm, 0.0),
                        aspect="equal")
            axes.set_xticks([])
            axes.set_yticks([])
            for spine in axes.spines.values():
                spine.set_visible(False)
            if row == 0:
                axes.set_title(COLUMN_TITLES[column], fontsize=11)
            if column == 0:
                axes.set_ylabel(VIEW_NAMES[row], rotation=0, ha="right", va="center", fontsize=11)
        top_inches += row_height_inches + _ROW_GAP_INCHES

    spacing_text = " x ".join(f"{s:.3g}" for s in spacing_mm)
    note = (f"window [{window[0]:.4g}, {window[1]:.4g}]{unit};  output - input: [-{difference_range:.4g}, "
            f"+{difference_range:.4g}]{unit}, black to white, mid-grey = no change;  output voxel {spacing_text} mm")
    figure.text(0.5 * _LEFT_INCHES / width_inches, 0.15 / height_inches, note, fontsize=9, ha="left", va="bottom",
                wrap=True)
    return figure


def save_preview_png(
    before: Volume,
    after: Volume,
    path: str | Path,
    *,
    window: tuple[float, float] | None = None,
    difference_range: float | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a PNG with one row per view (axial, then coronal and sagittal when there are several slices):
    input | output | output - input, each panel at its physical aspect, with row and column labels and a note
    of the window and the difference range.

    Input and output are shown in ``window`` (low, high); the difference maps ``[-difference_range,
    difference_range]`` to black..white, so mid-grey means no change. By default CT uses the soft-tissue window
    [-160, 240] HU and +/-100 HU, and other images their 0.5-99.5 percentile range and a quarter of it. A
    super-resolved output on a finer grid is compared with the input's voxels repeated onto that grid.

    Raises:
        ValueError: if the output grid is not a whole multiple of the input grid.
        FileExistsError: if ``path`` exists and ``overwrite`` is false.
    """
    default_window, default_difference = _display_window(before)
    window = window if window is not None else default_window
    difference_range = difference_range if difference_range is not None else default_difference
    before_array = before.array if before.shape == after.shape else _on_output_grid(before, after)
    unit = " HU" if _is_ct(before) else ""
    figure = _preview_figure(before_array, after, window, difference_range, unit)
    path = Path(path)
    with atomic_output(path, overwrite=overwrite) as temporary:
        figure.savefig(temporary, format="png", dpi=PREVIEW_DPI, facecolor=figure.get_facecolor())
    return path


def save_validation_preview(low: np.ndarray, restored: np.ndarray, target: np.ndarray, path: str | Path, *,
                            window: tuple[float, float] = SOFT_TISSUE_WINDOW_HU,
                            difference_range: float = DIFFERENCE_RANGE_HU) -> Path:
    """Write one ``(H, W)`` slice as input | output | target | output - target, the difference in
    ``[-difference_range, difference_range]``; an existing file is replaced."""
    tiles = [_to_gray(low, *window), _to_gray(restored, *window), _to_gray(target, *window),
             _to_gray(restored - target, -difference_range, difference_range)]
    canvas = Image.fromarray(np.concatenate(tiles, axis=1))
    path = Path(path)
    with atomic_output(path, overwrite=True) as temporary:
        canvas.save(temporary, format="PNG")
    return path
