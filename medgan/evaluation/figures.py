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


def save_preview_png(
    before: Volume,
    after: Volume,
    path: str | Path,
    *,
    window: tuple[float, float] = SOFT_TISSUE_WINDOW_HU,
    difference_range: float = DIFFERENCE_RANGE_HU,
    overwrite: bool = False,
) -> Path:
    """Write a PNG with one row per view (axial, then coronal and sagittal when there are several slices):
    input | output | output - input.

    Input and output are shown in ``window`` (low, high); the difference maps ``[-difference_range,
    difference_range]`` to black..white, so mid-grey means no change. Both volumes must share one grid.

    Raises:
        ValueError: if the volumes' shapes differ.
        FileExistsError: if ``path`` exists and ``overwrite`` is false.
    """
    if before.shape != after.shape:
        raise ValueError(f"Preview needs volumes of one shape, got {before.shape} and {after.shape}.")
    spacing_i, spacing_j, spacing_k = before.spacing_mm
    aspects = [spacing_i / spacing_j, spacing_i / spacing_k, spacing_j / spacing_k]
    rows = []
    for view, (a, b) in enumerate(zip(_middle_slices(before.array), _middle_slices(after.array))):
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
    labels = [f"input  [{window[0]:g}, {window[1]:g}] HU", "output", f"output - input  [+/-{difference_range:g}]"]
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
