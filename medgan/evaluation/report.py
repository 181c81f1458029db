"""Evaluation reports: a JSON record, a Markdown table and PNG figures, each written atomically.

Figures use matplotlib with the Agg backend, so no display is needed.
"""

from __future__ import annotations

import json
import logging
import math
import platform
import textwrap
from importlib import metadata
from pathlib import Path

import numpy as np

from medgan.evaluation.evaluator import CaseImages
from medgan.evaluation.protocols import Protocol
from medgan.io.atomic import atomic_output

logger = logging.getLogger(__name__)

REPORT_JSON = "evaluation.json"
REPORT_MARKDOWN = "evaluation.md"
PSNR_FIGURE = "psnr.png"
FIGURE_FOLDER = "figures"

TABLE_COLUMNS = (
    ("psnr_db", "PSNR (dB)", 2),
    ("ssim", "SSIM", 4),
    ("rmse", "RMSE", 4),
    ("mae", "MAE", 4),
    ("rmse_hu", "RMSE (HU)", 1),
    ("mae_hu", "MAE (HU)", 1),
    ("mean_bias_hu", "bias (HU)", 1),
    ("noise_std_ratio", "noise std / input", 3),
    ("dc_psnr_db", "data consistency PSNR (dB)", 2),
    ("dc_relative_rmse", "data consistency relative RMSE", 4),
)


def report_paths(output_dir: Path) -> list[Path]:
    """Return the files a report writes into ``output_dir`` that must not be replaced without overwrite."""
    return [output_dir / REPORT_JSON, output_dir / REPORT_MARKDOWN, output_dir / PSNR_FIGURE]


def package_versions() -> dict[str, str | None]:
    """Return the versions of Python and of the packages that shape the numbers (``None`` if not installed)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for package in ("medgan", "numpy", "scipy", "torch", "scikit-image", "bm3d", "bm4d", "matplotlib"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    if versions["medgan"] is None:
        from medgan import __version__

        versions["medgan"] = __version__
    return versions


def _json_value(value):
    """Replace non-finite floats, which JSON cannot store, with the strings "inf", "-inf" and "nan"."""
    if isinstance(value, float) and not math.isfinite(value):
        if math.isnan(value):
            return "nan"
        return "inf" if value > 0 else "-inf"
    if isinstance(value, dict):
        return {key: _json_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_value(item) for item in value]
    if isinstance(value, np.generic):
        return _json_value(value.item())
    return value


def write_json(report: dict, path: Path, overwrite: bool) -> Path:
    with atomic_output(path, overwrite=overwrite) as temporary:
        temporary.write_text(json.dumps(_json_value(report), indent=2) + "\n", encoding="utf-8")
    return path


def _format_mean(summary: dict | None, digits: int) -> str:
    if summary is None:
        return "-"
    mean = summary["mean"]
    if not math.isfinite(mean):
        return f"{mean}"
    if summary["ci_low"] is None:
        return f"{mean:.{digits}f} (CI n/a)"
    return f"{mean:.{digits}f} [{summary['ci_low']:.{digits}f}, {summary['ci_high']:.{digits}f}]"


def below_baseline_notes(report: dict) -> dict[str, list[str]]:
    """Return ``{method: ["below baseline gaussian (PSNR)", ...]}`` for the method under test."""
    notes: dict[str, list[str]] = {}
    names = {"psnr_db": "PSNR", "ssim": "SSIM"}
    for comparison in report["comparisons"]:
        if comparison["below_baseline"]:
            notes.setdefault(report["method"], []).append(
                f"below baseline {comparison['baseline']} ({names[comparison['metric']]})")
    return notes


def _column_notes(columns: list) -> str:
    """Return the sentences that explain the HU, bias and noise columns, for those columns the table has."""
    names = {column[0] for column in columns}
    notes = ""
    if names & {"rmse_hu", "mae_hu"}:
        notes += " The HU columns are over all voxels without clipping."
    if names & {"mean_bias_hu", "noise_std_ratio"}:
        notes += (" Bias is candidate mean - reference mean and noise std is relative to the input's, both in "
                  "automatically found uniform regions.")
    return notes


def markdown_table(report: dict) -> str:
    """Return the report as Markdown: the protocol, then means with 95 % bootstrap intervals per method."""
    protocol = report["protocol"]
    means = report["means"]
    columns = [column for column in TABLE_COLUMNS if any(column[0] in summary for summary in means.values())]
    notes = below_baseline_notes(report)
    n_cases = len(report["cases"])
    lines = [
        f"# Evaluation: protocol {protocol['name']}",
        "",
        f"Protocol: {protocol['summary']}. RMSE and MAE are in {protocol['unit']}." + _column_notes(columns),
        "",
        f"Means over {n_cases} case(s), with 95 % percentile-bootstrap intervals over cases "
        f"({report['bootstrap']['n_resamples']} resamples, seed {report['bootstrap']['seed']}).",
        "",
        "| method | " + " | ".join(title for _, title, _ in columns) + " | note |",
        "|---|" + "---|" * len(columns) + "---|",
    ]

    for method, summary in means.items():
        cells = [_format_mean(summary.get(key), digits) for key, _, digits in columns]
        note = "; ".join(notes.get(method, []))
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {note} |")
    lines.append("")

    parameters = report["baselines"]["parameters"]
    if parameters or report["baselines"]["skipped"]:
        lines += ["## Baselines", ""]
        gaussian = parameters.get("gaussian")
        if gaussian:
            lines.append(f"- gaussian: sigma {gaussian['sigma_voxels']} voxels along (i, j, k), chosen by "
                         f"{gaussian['selection']} on case {gaussian['validation_case']}.")
        for name in ("nlm", "bm3d", "bm4d"):
            if name in parameters:
                lines.append(f"- {name}: parameters per case in {REPORT_JSON}.")
        for name in ("linear", "bspline"):
            if name in parameters:
                lines.append(f"- {name}: spline order {parameters[name]['order']}, "
                             f"{parameters[name]['centre_convention']}.")
        for name, reason in report["baselines"]["skipped"].items():
            lines.append(f"- {name}: skipped, because {reason}.")
        lines.append("")

    lines += ["## Cases", "", "| case | method | PSNR (dB) | SSIM |", "|---|---|---|---|"]
    for row in report["rows"]:
        lines.append(f"| {row['case']} | {row['method']} | {row['psnr_db']:.2f} | {row['ssim']:.4f} |")
    return "\n".join(lines) + "\n"


def write_markdown(report: dict, path: Path, overwrite: bool) -> Path:
    with atomic_output(path, overwrite=overwrite) as temporary:
        temporary.write_text(markdown_table(report), encoding="utf-8")
    return path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_psnr_chart(report: dict, path: Path, overwrite: bool) -> Path:
    """Write a bar chart of the mean PSNR per method, with the value on each bar and the 95 % interval as an
    error bar where it exists. The y-axis starts at 0 dB."""
    def finite_or_none(value) -> float | None:
        # A summary stores None, "n/a" or NaN where a value is not available.
        is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
        return float(value) if is_number and math.isfinite(value) else None

    plt = _pyplot()
    methods = [method for method, summary in report["means"].items() if "psnr_db" in summary]
    means = [report["means"][method]["psnr_db"] for method in methods]
    heights = [finite_or_none(summary["mean"]) for summary in means]
    intervals = [(finite_or_none(summary.get("ci_low")), finite_or_none(summary.get("ci_high"))) for summary in means]

    figure, axes = plt.subplots(figsize=(1.2 * len(methods) + 2.5, 3.5))
    colours = ["tab:red" if method == report["method"] else "tab:gray" for method in methods]
    positions = np.arange(len(methods))
    axes.bar(positions, [np.nan if height is None else height for height in heights], color=colours)
    axes.set_xticks(positions, methods)
    # A method without a mean draws no bar, so the x-axis keeps its slot explicitly.
    axes.set_xlim(-0.6, len(methods) - 0.4)
    with_interval = [index for index, (low, high) in enumerate(intervals)
                     if heights[index] is not None and low is not None and high is not None]
    if with_interval:
        errors = np.array([[heights[index] - intervals[index][0], intervals[index][1] - heights[index]]
                           for index in with_interval]).T
        axes.errorbar(positions[with_interval], [heights[index] for index in with_interval],
                      yerr=np.clip(errors, 0.0, None), fmt="none", ecolor="black", capsize=4)
    for position, height in zip(positions, heights):
        if height is None:
            axes.text(position, 0.0, "n/a", ha="center", va="bottom", fontsize=8)
        else:
            axes.text(position, 0.5 * height, f"{height:.2f}", ha="center", va="center", fontsize=8, color="white")

    # The y-axis starts at 0 dB so that bar heights compare as ratios. Only a negative PSNR extends it below 0.
    values = [value for value in heights + [value for interval in intervals for value in interval] if value is not None]
    top = 1.1 * max(values) if values and max(values) > 0.0 else 1.0
    axes.set_ylim(min([0.0] + values), top)
    axes.set_ylabel("PSNR (dB)")
    axes.set_title(f"{report['protocol']['name']}: mean PSNR, 95 % bootstrap CI", fontsize=9)
    figure.tight_layout()
    with atomic_output(path, overwrite=overwrite) as temporary:
        figure.savefig(temporary, format="png", dpi=100)
    plt.close(figure)
    return path


def _middle_slice(array: np.ndarray, axis: int) -> np.ndarray:
    """Return the middle slice across ``axis`` of an ``(i, j, k)`` array, rows top to bottom."""
    index = array.shape[axis] // 2
    plane = np.take(array, index, axis=axis)
    return plane.T[::-1] if axis != 2 else plane.T


def _slice_aspect(spacing_mm: tuple[float, float, float], axis: int) -> float:
    """Return the height / width of one displayed pixel, in mm, for `_middle_slice` across ``axis``."""
    row_axis, column_axis = {2: (1, 0), 1: (2, 0), 0: (2, 1)}[axis]
    return float(spacing_mm[row_axis]) / float(spacing_mm[column_axis])


def _input_on_reference_grid(images: CaseImages) -> np.ndarray | None:
    """Return the input as shown in figures: itself on the reference grid, or nearest-neighbour upsampled."""
    if images.input is None:
        return None
    if images.relation is None:
        return images.input.array
    from scipy.ndimage import affine_transform

    mapping = np.linalg.inv(images.input.affine) @ images.reference.affine
    return affine_transform(images.input.array.astype(np.float64), mapping[:3, :3], offset=mapping[:3, 3],
                            output_shape=images.reference.shape, order=0, mode="nearest")


def _difference_scale(figure, axes, protocol: Protocol) -> None:
    """Draw the colour scale of the difference maps as a horizontal bar across the middle of ``axes``."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    box = axes.get_position()
    bar_axes = figure.add_axes((box.x0 + 0.1 * box.width, box.y0 + 0.45 * box.height, 0.8 * box.width,
                                0.08 * box.height))
    limit = protocol.difference_range
    scale = ScalarMappable(norm=Normalize(-limit, limit), cmap="coolwarm")
    bar = figure.colorbar(scale, cax=bar_axes, orientation="horizontal", ticks=[-limit, 0.0, limit])
    bar.ax.tick_params(labelsize=6)
    bar.set_label(textwrap.fill(f"image - reference ({protocol.unit})", width=32), fontsize=6)


def write_case_figure(images: CaseImages, protocol: Protocol, path: Path, overwrite: bool) -> Path:
    """Write middle slices input | baselines | method | reference, with candidate - reference below each.

    Images are shown in protocol units over ``protocol.display_range``; differences over
    ``[-difference_range, difference_range]``. One pair of rows per view: axial (across ``k``) and, when the
    volume has several slices, coronal (across ``j``).
    """
    plt = _pyplot()
    columns: list[tuple[str, np.ndarray]] = []
    shown_input = _input_on_reference_grid(images)
    if shown_input is not None:
        columns.append(("input" if images.relation is None else "input (nearest)", shown_input))
    columns += [(name, array) for name, array in images.candidates.items() if name != "input"]
    columns.append(("reference", images.reference.array))
    prepared = protocol.prepare(images.reference.array, *[array for _, array in columns])
    mapped_reference = prepared.arrays[0]
    mapped = prepared.arrays[1:]
    views = [2, 1] if images.reference.shape[2] > 1 else [2]
    figure, axes = plt.subplots(2 * len(views), len(columns), figsize=(2.2 * len(columns), 4.4 * len(views)),
                                squeeze=False)
    # A fixed layout, set before the colour scale reads its slot's position: tight_layout takes seconds on a
    # grid of 20 panels.
    figure.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.88, wspace=0.05, hspace=0.25)
    low, high = protocol.display_range
    for view_number, axis in enumerate(views):
        # Pixels keep their physical shape, so anatomy is not stretched to fill the panel.
        aspect = _slice_aspect(images.reference.spacing_mm, axis)
        for column, ((name, _), values) in enumerate(zip(columns, mapped)):
            image_axes = axes[2 * view_number, column]
            difference_axes = axes[2 * view_number + 1, column]
            image_axes.imshow(_middle_slice(values, axis), cmap="gray", vmin=low, vmax=high,
                              interpolation="nearest", aspect=aspect)
            image_axes.set_title(name, fontsize=8)
            image_axes.axis("off")
            difference_axes.axis("off")
            if column == len(columns) - 1:
                # The reference minus itself is blank: this slot holds the difference colour scale instead.
                _difference_scale(figure, difference_axes, protocol)
                continue
            difference = _middle_slice(values - mapped_reference, axis)
            difference_axes.imshow(difference, cmap="coolwarm", vmin=-protocol.difference_range,
                                   vmax=protocol.difference_range, interpolation="nearest", aspect=aspect)
            difference_axes.set_title(f"{name} - reference", fontsize=7)
    title = (f"case {images.case_id}; {protocol.summary()}; differences in "
             f"[-{protocol.difference_range:g}, {protocol.difference_range:g}] {protocol.unit}")
    # About 45 characters of 7-point text per 2.2-inch column: wrap so that the title stays inside the figure.
    figure.suptitle(textwrap.fill(title, width=max(40, 45 * len(columns))), fontsize=7)
    with atomic_output(path, overwrite=overwrite) as temporary:
        figure.savefig(temporary, format="png", dpi=100)
    plt.close(figure)
    return path


def safe_file_name(case_id: str) -> str:
    """Return ``case_id`` with every character other than letters, digits, ``-``, ``_`` and ``.`` replaced by ``_``."""
    cleaned = "".join(character if character.isalnum() or character in "-_." else "_" for character in case_id)
    return cleaned.strip(".") or "case"


def summary_lines(report: dict) -> list[str]:
    """Return one line per method with mean PSNR and SSIM, their intervals, the protocol and any baseline note."""
    protocol = report["protocol"]
    notes = below_baseline_notes(report)
    lines = []
    for method, summary in report["means"].items():
        parts = [f"PSNR {_format_mean(summary.get('psnr_db'), 2)} dB", f"SSIM {_format_mean(summary.get('ssim'), 4)}"]
        if "rmse_hu" in summary:
            parts.append(f"RMSE {_format_mean(summary['rmse_hu'], 1)} HU")
        if "dc_relative_rmse" in summary:
            parts.append(f"data consistency relative RMSE {_format_mean(summary['dc_relative_rmse'], 4)}")
        line = f"{method}: " + ", ".join(parts) + f" [protocol {protocol['name']}, data range " \
               f"{protocol['data_range']:g} {protocol['unit']}]"
        if method in notes:
            line += " - " + "; ".join(notes[method])
        lines.append(line)
    return lines
