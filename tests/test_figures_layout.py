"""Layout of the inference preview PNG and of the PSNR bar chart."""

import math

import numpy as np
import pytest
from PIL import Image

from medgan.evaluation import report as reports
from medgan.evaluation.figures import _preview_figure, save_preview_png
from medgan.io.volume import Volume

# A 512 x 512 x 8 CT with 0.5 mm pixels and 2.5 mm slices: 256 mm wide views, 20 mm thick reformats.
CT_SHAPE = (512, 512, 8)
CT_AFFINE = np.diag([0.5, 0.5, 2.5, 1.0])


def _flat_ct(value_hu: float = 40.0) -> Volume:
    """Return a CT of one value. 40 HU is the centre of the [-160, 240] HU window, so it shows mid-grey."""
    return Volume(np.full(CT_SHAPE, value_hu, np.float32), CT_AFFINE, "CT")


def _grey_runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Return (start, length) of each run of true values in a 1-D mask."""
    runs = []
    start = None
    for index, value in enumerate(list(mask) + [False]):
        if value and start is None:
            start = index
        elif not value and start is not None:
            runs.append((start, index - start))
            start = None
    return runs


def test_preview_panels_keep_physical_aspect(tmp_path):
    path = save_preview_png(_flat_ct(), _flat_ct(), tmp_path / "preview.png")
    pixels = np.asarray(Image.open(path).convert("L")).astype(np.int16)
    height, width = pixels.shape
    assert width < 2000
    assert height < width

    # Every panel, the zero difference included, is flat mid-grey on a white canvas. Anti-aliased text also has
    # grey pixels, so a row of panels needs more than 300 of them.
    grey = np.abs(pixels - 128) <= 4
    rows = _grey_runs(grey.sum(axis=1) > 300)
    assert len(rows) == 3, rows
    (axial_top, axial_height), (_, coronal_height), (_, sagittal_height) = rows
    panel_width = grey[axial_top + axial_height // 2].sum() / 3.0

    # 256 mm x 256 mm axial and 256 mm x 20 mm reformats, so one mm spans the same pixels in every panel.
    pixels_per_mm = panel_width / 256.0
    assert panel_width > 300
    assert abs(axial_height - 256.0 * pixels_per_mm) <= 3
    assert abs(coronal_height - 20.0 * pixels_per_mm) <= 3
    assert abs(sagittal_height - 20.0 * pixels_per_mm) <= 3


def test_preview_rows_filled_by_panels(tmp_path):
    path = save_preview_png(_flat_ct(), _flat_ct(), tmp_path / "preview.png")
    pixels = np.asarray(Image.open(path).convert("L")).astype(np.int16)
    grey = np.abs(pixels - 128) <= 4
    rows = _grey_runs(grey.sum(axis=1) > 300)
    assert len(rows) == 3, rows

    # Within each row band the three panels, not empty canvas, take most of the width.
    for top, height in rows:
        band = grey[top:top + height]
        assert float(band.mean()) > 0.8, (top, height)


def test_preview_figure_labels_and_note():
    volume = _flat_ct()
    figure = _preview_figure(volume.array, volume, (-160.0, 240.0), 100.0, " HU")
    axes = figure.axes
    assert len(axes) == 9
    assert [a.get_title() for a in axes[:3]] == ["input", "output", "output - input"]
    assert [axes[row * 3].get_ylabel() for row in range(3)] == ["axial", "coronal", "sagittal"]
    notes = " ".join(text.get_text() for text in figure.texts)
    assert "window [-160, 240] HU" in notes
    assert "[-100, +100] HU" in notes


def test_preview_figure_same_mm_per_pixel():
    volume = _flat_ct()
    figure = _preview_figure(volume.array, volume, (-160.0, 240.0), 100.0, " HU")
    figure.canvas.draw()
    extents_mm = [(256.0, 256.0), (256.0, 20.0), (256.0, 20.0)]
    for row, (width_mm, height_mm) in enumerate(extents_mm):
        box = figure.axes[row * 3].get_window_extent()
        assert box.width / width_mm == pytest.approx(box.height / height_mm, rel=0.01)
        assert box.width / width_mm == pytest.approx(figure.axes[0].get_window_extent().width / 256.0, rel=0.01)


def test_preview_single_slice_one_row(tmp_path):
    volume = Volume(np.full((64, 48, 1), 40.0, np.float32), np.diag([1.0, 1.0, 3.0, 1.0]), "CT")
    figure = _preview_figure(volume.array, volume, (-160.0, 240.0), 100.0, " HU")
    assert len(figure.axes) == 3
    assert figure.axes[0].get_ylabel() == "axial"
    box = figure.axes[0].get_window_extent()
    assert box.width / box.height == pytest.approx(64.0 / 48.0, rel=0.01)
    assert save_preview_png(volume, volume, tmp_path / "one.png").stat().st_size > 0


def test_preview_existing_file_kept(tmp_path):
    path = tmp_path / "preview.png"
    path.write_bytes(b"old")
    with pytest.raises(FileExistsError):
        save_preview_png(_flat_ct(), _flat_ct(), path)
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["preview.png"]
    save_preview_png(_flat_ct(), _flat_ct(), path, overwrite=True)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _summary(mean, low, high):
    return {"mean": mean, "ci_low": low, "ci_high": high, "n_cases": 3}


@pytest.fixture
def chart_axes(tmp_path, monkeypatch):
    """Write a PSNR chart for four methods, two without an interval, and return its axes."""
    plt = reports._pyplot()
    closed = []
    monkeypatch.setattr(plt, "close", closed.append)
    report = {
        "method": "medgan",
        "protocol": {"name": "ct-denoise"},
        "means": {
            "input": {"psnr_db": _summary(30.0, 29.0, 31.5)},
            "bm3d": {"psnr_db": _summary(32.0, None, None)},
            "medgan": {"psnr_db": _summary(33.0, "n/a", "n/a")},
            "other": {"psnr_db": _summary(34.0, 33.0, 35.0)},
        },
    }
    path = reports.write_psnr_chart(report, tmp_path / "psnr.png", overwrite=False)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    [figure] = closed
    yield figure.axes[0]
    monkeypatch.undo()
    plt.close(figure)


def test_psnr_chart_error_bars_only_with_interval(chart_axes):
    from matplotlib.container import ErrorbarContainer

    containers = [c for c in chart_axes.containers if isinstance(c, ErrorbarContainer)]
    assert len(containers) == 1
    bar_lines = containers[0].lines[2][0]
    segments = bar_lines.get_segments()
    assert len(segments) == 2
    centres = sorted(float(segment[0][0]) for segment in segments)
    assert centres == [0.0, 3.0]
    assert sorted(tuple(float(y) for y in segment[:, 1]) for segment in segments) == [(29.0, 31.5), (33.0, 35.0)]


def test_psnr_chart_axis_starts_at_zero(chart_axes):
    low, high = chart_axes.get_ylim()
    assert low == 0.0
    assert high >= 35.0
    labels = {text.get_text() for text in chart_axes.texts}
    assert {"30.00", "32.00", "33.00", "34.00"} <= labels


def test_psnr_chart_missing_mean_marked(tmp_path, monkeypatch):
    plt = reports._pyplot()
    closed = []
    monkeypatch.setattr(plt, "close", closed.append)
    report = {"method": "a", "protocol": {"name": "p"},
              "means": {"a": {"psnr_db": _summary(math.nan, None, None)}, "b": {"psnr_db": _summary(20.0, 19.0, 21.0)}}}
    reports.write_psnr_chart(report, tmp_path / "psnr.png", overwrite=False)
    [figure] = closed
    axes = figure.axes[0]
    assert {text.get_text() for text in axes.texts} == {"n/a", "20.00"}
    assert axes.get_ylim()[0] == 0.0
    assert axes.get_xlim()[0] < 0.0 < 1.0 < axes.get_xlim()[1]
    monkeypatch.undo()
    plt.close(figure)
