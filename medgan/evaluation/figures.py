"""PNG previews of restored volumes: middle slices of input, output and their difference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from medgan.io.atomic import atomic_output
from medgan.io.volume import Volume

SOFT_TISSUE_WINDOW_HU = (-160.0, 240.0)
DIFFERENCE_RANGE_HU = 100.0


def _middle_slices(array: np.ndarray) -> list[np.ndarray]:
    """Axial, coronal and sagittal middle slices of an (i, j, k) array, each shown with rows top to bottom."""
    i, j, k = array.shape
    views = [array[:, :, k // 2].T]
    if k > 1:
        views.append(array[:, j // 2, :].T[::-1])
        views.append(array[i // 2, :, :].T[::-1])
    return views


def _to_gray(image: np.ndarray, low: float, high: float) -> np.ndarray:
    return (np.clip((image - low) / (high - low), 0.0, 1.0) * 255.0).astype(np.uint8)


def _aspect_resize(image: Image.Image, pixel_aspect: float, height: int = 256) -> Image.Image:
    width = max(1, int(round(height * image.width * pixel_aspect / max(image.height, 1))))
    return image.resize((width, height), Image.Resampling.BILINEAR)


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


def _display_window(volume: Volume) -> tuple[tuple[float, float], float]:
    """Return (window, difference range): the soft-tissue HU window for CT, the 0.5-99.5 percentiles otherwise."""
    values = volume.array
    is_ct = volume.modality == "CT" or (volume.modality == "" and values.size and float(values.min()) < -500.0)
    if is_ct:
        return SOFT_TISSUE_WINDOW_HU, DIFFERENCE_RANGE_HU
    low, high = (float(v) for v in np.percentile(values, [0.5, 99.5]))
    high = high if high > low else low + 1.0
    return (low, high), 0.25 * (high - low)


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
    input | output | output - input.

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
    spacing_i, spacing_j, spacing_k = after.spacing_mm
    aspects = [spacing_i / spacing_j, spacing_i / spacing_k, spacing_j / spacing_k]
    rows = []
    for view, (a, b) in enumerate(zip(_middle_slices(before_array), _middle_slices(after.array))):
        tiles = [
            _to_gray(a, *window),
            _to_gray(b, *window),
            _to_gray(b - a, -difference_range, difference_range),
        ]
        rows.append([_aspect_resize(Image.fromarray(t), aspects[view]) for t in tiles])
    header = 18
    width = max(sum(t.width for t in row) for row in rows)
    height = sum(row[0].height for row in rows) + header
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    unit = " HU" if window == SOFT_TISSUE_WINDOW_HU else ""
    labels = [f"input  [{window[0]:.4g}, {window[1]:.4g}]{unit}", "output",
              f"output - input  [+/-{difference_range:.4g}]"]
    x = 0
    for tile, label in zip(rows[0], labels):
        draw.text((x + 4, 3), label, fill=255)
        x += tile.width
    y = header
    for row in rows:
        x = 0
        for tile in row:
            canvas.paste(tile, (x, y))
            x += tile.width
        y += row[0].height
    path = Path(path)
    with atomic_output(path, overwrite=overwrite) as temporary:
        canvas.save(temporary, format="PNG")
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
