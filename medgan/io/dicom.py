"""DICOM input: one CT or MR series from a folder, or a single file, as a float32 volume with its RAS+ affine.

Geometry comes from the Image Plane module only: ImageOrientationPatient (IOP), ImagePositionPatient (IPP) and
PixelSpacing. Slices are ordered by the projection of IPP onto the slice normal, never by file name or
InstanceNumber. Voxel (i, j, k) is (column, row, sorted slice), and in DICOM's LPS+ patient coordinates::

    world_LPS = IPP_0 + i * PixelSpacing[1] * row_cosine + j * PixelSpacing[0] * column_cosine + k * step

where ``row_cosine`` (the first three IOP values) is the direction along a row, i.e. of increasing column index,
PixelSpacing[0] is the distance between rows, and ``step`` is ``slice_gap * normal`` with
``normal = row_cosine x column_cosine``. The RAS+ affine is ``diag(-1, -1, 1, 1)`` times the LPS+ affine.

Enhanced multi-frame CT/MR files, which store the same attributes in per-frame functional groups, are read
frame by frame. Multi-frame files without functional groups are rejected.

Uneven slice gaps (a missing slice, mixed spacing) are rejected unless the caller passes ``resample_z=True``.
Then the slices are interpolated linearly along the normal onto a uniform grid that keeps the first and last
slice positions.
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from medgan.io.readers import LPS_TO_RAS, VolumeReadError, reject_nonfinite
from medgan.io.volume import Volume

logger = logging.getLogger(__name__)

# Elements larger than this are read from the file only when accessed, so that scanning the headers of a folder
# does not load every slice's pixel data.
_DEFER_SIZE = "4 KB"

# Tolerances for the geometry checks, in millimetres or as fractions of a spacing.
_ORIENTATION_TOLERANCE = 1e-4  # max difference between IOP values of slices in one series
_COSINE_TOLERANCE = 1e-3  # max deviation of an IOP cosine from unit length, and of their dot product from 0
_SPACING_TOLERANCE_MM = 1e-4  # max difference between PixelSpacing values of slices in one series
_DUPLICATE_TOLERANCE_MM = 0.01  # slices closer than this along the normal are at the same position
_GAP_TOLERANCE_FRACTION = 0.01  # max deviation of a slice gap from the median gap, as a fraction of the gap ...
_GAP_TOLERANCE_MM = 0.01  # ... or in millimetres, whichever is larger
# In-plane offset of a slice from the line through the first slice along the normal, as a fraction of the
# smallest pixel spacing (at least _GAP_TOLERANCE_MM). Larger offsets mean a tilted stack (CT gantry tilt).
_IN_PLANE_TOLERANCE_FRACTION = 0.05
_DEFAULT_SLICE_SPACING_MM = 1.0

_DECODER_HINT = (
    "For JPEG, JPEG-LS and JPEG 2000 data, install the decoders: "
    "pip install pylibjpeg pylibjpeg-openjpeg pylibjpeg-libjpeg"
)
_MAX_LISTED = 10  # files or groups named in one error message
# pydicom converts an element's value when it is first accessed, and a damaged element then raises one of these
# (NotImplementedError, a RuntimeError, for an unknown VR; struct.error for a bad binary length; UnicodeDecodeError,
# a ValueError, for undecodable text). The reader turns them into VolumeReadError naming the file.
_DAMAGED_VALUE_ERRORS = (
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
    OverflowError,
    EOFError,
    OSError,
    RuntimeError,
    struct.error,
)


@dataclass
class _Slice:
    """One 2D image: a single-frame file, or one frame of an enhanced multi-frame file."""

    path: Path
    frame: int | None  # 0-based frame index in a multi-frame file, None for a single-frame file
    dataset: Dataset | None  # released after the pixel data is read
    position: np.ndarray  # ImagePositionPatient, LPS+ mm
    orientation: np.ndarray  # ImageOrientationPatient: row cosine, then column cosine
    pixel_spacing: np.ndarray  # (distance between rows, distance between columns) in mm
    rows: int
    columns: int
    slope: float
    intercept: float
    slice_thickness: float | None
    spacing_between_slices: float | None

    @property
    def label(self) -> str:
        return str(self.path) if self.frame is None else f"{self.path} (frame {self.frame + 1})"


def read_dicom_series(
    folder: str | os.PathLike[str],
    *,
    series_uid: str | None = None,
    recursive: bool = False,
    resample_z: bool = False,
) -> Volume:
    """Read the DICOM image series in ``folder`` into one volume.

    Every file in the folder (and its subfolders when ``recursive``) is tried. Files that are not DICOM, or are
    DICOM without pixel data (such as DICOMDIR), are skipped; an image object without pixel data is damaged and
    rejected. Slices are grouped by SeriesInstanceUID, and a
    folder with several series needs ``series_uid`` to select one. With ``resample_z``, slices with uneven gaps
    are interpolated onto a uniform grid (see :func:`_resample_slices`) instead of being rejected.

    Raises:
        VolumeReadError: if the folder has no DICOM images, several series and no ``series_uid``, a
            ``series_uid`` that is not present, or slices that do not form one regular 3D grid.
    """
    directory = Path(folder)
    series = _scan_folder(directory, recursive)
    if series_uid is not None:
        if series_uid not in series:
            raise VolumeReadError(
                f"Series {series_uid} not found in {directory}. Series present:\n{_describe_all(series)}"
            )
        records = series[series_uid]
    elif len(series) > 1:
        raise VolumeReadError(
            f"{directory} contains {len(series)} DICOM series:\n{_describe_all(series)}\n"
            "Pass a folder with one series, or select one with --series-uid on the command line "
            "(series_uid=... in read_volume)."
        )
    else:
        records = next(iter(series.values()))
    return _assemble(records, directory, resample_z)


def read_dicom_file(
    path: str | os.PathLike[str], *, series_uid: str | None = None, resample_z: bool = False
) -> Volume:
    """Read a single DICOM file: a one-slice volume, or every frame of an enhanced multi-frame file.

    ``resample_z`` applies to the frames of an enhanced multi-frame file as in :func:`read_dicom_series`.

    Raises:
        VolumeReadError: if the file is not DICOM, has no pixel data, belongs to another series than
            ``series_uid``, or lacks the geometry attributes.
    """
    source = Path(path)
    dataset = _read_dataset(source)
    if dataset is None:
        raise VolumeReadError(f"{source} is not a DICOM file (no 128-byte preamble followed by 'DICM').")
    if not _has_pixel_data(dataset):
        raise VolumeReadError(f"{source} is a DICOM file without pixel data (SOP class {_sop_class(dataset)}).")
    uid, records = _interpret_header(source, dataset)
    if series_uid is not None and uid != series_uid:
        raise VolumeReadError(f"{source} belongs to series {uid}, not to the requested series {series_uid}.")
    return _assemble(records, source, resample_z)


def _scan_folder(directory: Path, recursive: bool) -> dict[str, list[_Slice]]:
    """Read the headers of all files in ``directory`` and group the image slices by SeriesInstanceUID."""
    paths = sorted(directory.rglob("*") if recursive else directory.iterdir())
    files = [path for path in paths if path.is_file()]
    series: dict[str, list[_Slice]] = {}
    without_pixels = 0
    for path in files:
        dataset = _read_dataset(path)
        if dataset is None:
            continue
        if not _has_pixel_data(dataset):
            sop_class = _sop_class(dataset)
            if "Image Storage" in sop_class:
                # An image object without pixels is damaged or truncated; skipping it would silently shorten
                # the volume when it is the first or last slice.
                raise VolumeReadError(f"{path} is a {sop_class} file without pixel data, so it is damaged or "
                                      "truncated. Restore or re-export that slice, or move it out of the folder.")
            logger.debug("Skipping %s: DICOM without pixel data (SOP class %s)", path, sop_class)
            without_pixels += 1
            continue
        uid, records = _interpret_header(path, dataset)
        series.setdefault(uid, []).extend(records)

    if not series:
        message = (
            f"No DICOM image files found in {directory}: none of its {len(files)} files is a DICOM image "
            f"({without_pixels} are DICOM files without pixel data, such as DICOMDIR). Pass the folder that holds "
            "the series' slice files."
        )
        subfolders = sorted(path.name for path in paths if path.is_dir())
        if subfolders and not recursive:
            listed = ", ".join(subfolders[:_MAX_LISTED]) + (", ..." if len(subfolders) > _MAX_LISTED else "")
            message += f" The folder has subfolders ({listed}). Pass the one that contains the series."
        raise VolumeReadError(message)
    return series


def _read_dataset(path: Path) -> Dataset | None:
    """Read the header of a DICOM file, deferring pixel data. Return None for a file that is not DICOM."""
    try:
        return pydicom.dcmread(path, force=False, defer_size=_DEFER_SIZE)
    except InvalidDicomError:
        logger.debug("Skipping %s: not a DICOM file", path)
        return None
    except Exception as error:
        # pydicom raises many exception types for damaged files (EOFError, struct.error, ValueError, ...).
        raise VolumeReadError(f"Failed to read DICOM file {path}: {error}") from error


def _interpret_header(path: Path, dataset: Dataset) -> tuple[str, list[_Slice]]:
    """Return the SeriesInstanceUID and the slices of a DICOM file with pixel data.

    Raises:
        VolumeReadError: if an attribute is missing or invalid, or its value cannot be decoded.
    """
    try:
        return str(dataset.get("SeriesInstanceUID", "")), _slices_from_dataset(path, dataset)
    except VolumeReadError:
        raise
    except _DAMAGED_VALUE_ERRORS as error:
        raise VolumeReadError(f"Failed to read the DICOM attributes of {path}: {error}") from error


def _has_pixel_data(dataset: Dataset) -> bool:
    return any(keyword in dataset for keyword in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"))


def _sop_class(dataset: Dataset) -> str:
    try:
        uid = dataset.get("SOPClassUID")
        return f"{uid.name} {uid}" if uid is not None else "unknown"
    except _DAMAGED_VALUE_ERRORS:
        return "unreadable"


def _slices_from_dataset(path: Path, dataset: Dataset) -> list[_Slice]:
    samples = int(dataset.get("SamplesPerPixel", 1) or 1)
    if samples != 1:
        raise VolumeReadError(
            f"{path} has {samples} samples per pixel (colour); medgan reads greyscale CT and MR images only."
        )
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    enhanced = "PerFrameFunctionalGroupsSequence" in dataset or "SharedFunctionalGroupsSequence" in dataset
    if not enhanced:
        if frames > 1:
            raise VolumeReadError(
                f"{path} is a multi-frame file ({frames} frames) without per-frame functional groups. Reading "
                "this kind of multi-frame file is not supported; convert it to one file per slice first."
            )
        return [_classic_slice(path, dataset)]
    return [_enhanced_slice(path, dataset, frame) for frame in range(frames)]


def _classic_slice(path: Path, dataset: Dataset) -> _Slice:
    def lookup(keyword: str) -> Any:
        return dataset.get(keyword)

    return _make_slice(path, None, dataset, lookup)


def _enhanced_slice(path: Path, dataset: Dataset, frame: int) -> _Slice:
    """Build a slice from the per-frame functional groups, falling back to the shared ones."""
    groups = {
        "ImagePositionPatient": "PlanePositionSequence",
        "ImageOrientationPatient": "PlaneOrientationSequence",
        "PixelSpacing": "PixelMeasuresSequence",
        "SliceThickness": "PixelMeasuresSequence",
        "SpacingBetweenSlices": "PixelMeasuresSequence",
        "RescaleSlope": "PixelValueTransformationSequence",
        "RescaleIntercept": "PixelValueTransformationSequence",
    }
    per_frame = dataset.get("PerFrameFunctionalGroupsSequence")
    shared = dataset.get("SharedFunctionalGroupsSequence")
    if per_frame is not None and len(per_frame) <= frame:
        raise VolumeReadError(
            f"{path} has NumberOfFrames {dataset.get('NumberOfFrames')} but only {len(per_frame)} items in "
            "PerFrameFunctionalGroupsSequence."
        )
    containers = [per_frame[frame] if per_frame is not None else None, shared[0] if shared else None]

    def lookup(keyword: str) -> Any:
        sequence_keyword = groups.get(keyword)
        for container in containers:
            if container is None or sequence_keyword is None:
                continue
            sequence = container.get(sequence_keyword)
            if sequence and keyword in sequence[0]:
                return sequence[0].get(keyword)
        # Some converters also put these attributes at the top level.
        return dataset.get(keyword)

    return _make_slice(path, frame, dataset, lookup)


def _make_slice(path: Path, frame: int | None, dataset: Dataset, lookup: Callable[[str], Any]) -> _Slice:
    where = str(path) if frame is None else f"{path} (frame {frame + 1})"
    rows = dataset.get("Rows")
    columns = dataset.get("Columns")
    if not rows or not columns:
        raise VolumeReadError(f"{where} is missing Rows (0028,0010) or Columns (0028,0011).")

    slope = _optional_float(lookup("RescaleSlope"), "RescaleSlope", where)
    intercept = _optional_float(lookup("RescaleIntercept"), "RescaleIntercept", where)
    slope = 1.0 if slope is None else slope
    if slope == 0.0:
        raise VolumeReadError(f"{where} has RescaleSlope 0, which would map every pixel to the intercept.")
    return _Slice(
        path=path,
        frame=frame,
        dataset=dataset,
        position=_required_vector(lookup("ImagePositionPatient"), "ImagePositionPatient (0020,0032)", 3, where),
        orientation=_required_vector(
            lookup("ImageOrientationPatient"), "ImageOrientationPatient (0020,0037)", 6, where
        ),
        pixel_spacing=_required_vector(lookup("PixelSpacing"), "PixelSpacing (0028,0030)", 2, where),
        rows=int(rows),
        columns=int(columns),
        slope=slope,
        intercept=0.0 if intercept is None else intercept,
        slice_thickness=_optional_float(lookup("SliceThickness"), "SliceThickness", where),
        spacing_between_slices=_optional_float(lookup("SpacingBetweenSlices"), "SpacingBetweenSlices", where),
    )


def _required_vector(value: Any, name: str, length: int, where: str) -> np.ndarray:
    if value is None or value == "":
        raise VolumeReadError(f"{where} is missing {name}, which is needed to place the slice in space.")
    try:
        vector = np.array([float(item) for item in value], dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise VolumeReadError(f"{where} has an invalid {name}: {value!r}.") from error
    if vector.shape != (length,) or not np.all(np.isfinite(vector)):
        raise VolumeReadError(f"{where} has an invalid {name}: expected {length} finite numbers, got {value!r}.")
    return vector


def _optional_float(value: Any, name: str, where: str) -> float | None:
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError) as error:
        raise VolumeReadError(f"{where} has an invalid {name}: {value!r}.") from error
    if not np.isfinite(number):
        raise VolumeReadError(f"{where} has an invalid {name}: {value!r}.")
    return number


def _describe_all(series: dict[str, list[_Slice]]) -> str:
    return "\n".join(_describe_series(uid, records) for uid, records in series.items())


def _describe_series(uid: str, records: list[_Slice]) -> str:
    first = records[0]
    dataset = first.dataset if first.dataset is not None else Dataset()
    try:
        number = dataset.get("SeriesNumber", "?")
        description = dataset.get("SeriesDescription", "")
    except _DAMAGED_VALUE_ERRORS:
        number, description = "(unreadable)", "(unreadable)"
    return (
        f"  SeriesInstanceUID {uid or '(missing)'}: SeriesNumber {number}, SeriesDescription {description!r}, "
        f"{len(records)} slices of {first.rows} x {first.columns} (Rows x Columns)"
    )


def _assemble(records: list[_Slice], source: Path, resample_z: bool = False) -> Volume:
    """Check that the slices form one regular grid, then stack them into a volume with its affine.

    With ``resample_z``, slices with uneven gaps are interpolated onto a uniform grid instead of being rejected.
    """
    _check_consistent(records)
    row_cosine, column_cosine, normal = _orientation(records[0])
    distances = np.array([record.position @ normal for record in records])
    order = np.argsort(distances, kind="stable")
    ordered = [records[index] for index in order]
    distances = distances[order]
    _check_duplicates(ordered, distances)

    row_spacing, column_spacing = (float(value) for value in ordered[0].pixel_spacing)
    smallest_pixel_spacing = min(row_spacing, column_spacing)
    targets = None
    if resample_z and len(ordered) > 1 and _has_uneven_gaps(distances):
        targets = _uniform_grid(distances)
        direction = _stack_direction(ordered, distances, normal, smallest_pixel_spacing)
        step = direction * (targets[1] - targets[0])
    else:
        step = _slice_step(ordered, distances, normal, smallest_pixel_spacing)

    lps = np.eye(4)
    lps[:3, 0] = row_cosine * column_spacing
    lps[:3, 1] = column_cosine * row_spacing
    lps[:3, 2] = step
    lps[:3, 3] = ordered[0].position

    try:
        metadata = _series_metadata(ordered)
    except _DAMAGED_VALUE_ERRORS as error:
        raise VolumeReadError(f"Failed to read the series attributes of {ordered[0].label}: {error}") from error
    array = _stack_pixels(ordered)
    reject_nonfinite(array, source)
    if targets is not None:
        # "files", "sop_instance_uids" and "rescale" still list the measured slices. "source_slices" gives, for
        # each slice of the resampled volume, the indexes into those lists that it was computed from.
        array, metadata["source_slices"] = _resample_slices(array, distances, targets, source)

    modality = metadata["modality"] if metadata["modality"] in ("CT", "MR") else ""
    if not modality:
        logger.info("%s has Modality %r. Volume.modality is set only for CT and MR.", source, metadata["modality"])
    logger.debug("Read %d DICOM slices from %s: shape %s", len(ordered), source, array.shape)
    return Volume(array=array, affine=LPS_TO_RAS @ lps, modality=modality, metadata=metadata)


def _check_consistent(records: list[_Slice]) -> None:
    first = records[0]
    for record in records[1:]:
        if (record.rows, record.columns) != (first.rows, first.columns):
            raise VolumeReadError(
                f"Slices of one series differ in size: {record.label} has {record.rows} x {record.columns} "
                f"(Rows x Columns) but {first.label} has {first.rows} x {first.columns}."
            )
        if not np.allclose(record.orientation, first.orientation, rtol=0, atol=_ORIENTATION_TOLERANCE):
            raise VolumeReadError(
                f"Slices of one series differ in ImageOrientationPatient: {record.label} has "
                f"{record.orientation.tolist()} but {first.label} has {first.orientation.tolist()}. "
                "Pass a folder with a single stack of parallel slices."
            )
        if not np.allclose(record.pixel_spacing, first.pixel_spacing, rtol=0, atol=_SPACING_TOLERANCE_MM):
            raise VolumeReadError(
                f"Slices of one series differ in PixelSpacing: {record.label} has "
                f"{record.pixel_spacing.tolist()} but {first.label} has {first.pixel_spacing.tolist()}."
            )
    if np.any(first.pixel_spacing <= 0):
        raise VolumeReadError(f"{first.label} has an invalid PixelSpacing {first.pixel_spacing.tolist()}.")


def _orientation(record: _Slice) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return the unit row cosine, column cosine and slice normal of a slice's IOP."""
    row_cosine = record.orientation[:3]
    column_cosine = record.orientation[3:]
    row_norm = np.linalg.norm(row_cosine)
    column_norm = np.linalg.norm(column_cosine)
    if abs(row_norm - 1) > _COSINE_TOLERANCE or abs(column_norm - 1) > _COSINE_TOLERANCE:
        raise VolumeReadError(
            f"{record.label} has an invalid ImageOrientationPatient {record.orientation.tolist()}: "
            "the row and column direction cosines must have unit length."
        )
    row_cosine = row_cosine / row_norm
    column_cosine = column_cosine / column_norm
    if abs(row_cosine @ column_cosine) > _COSINE_TOLERANCE:
        raise VolumeReadError(
            f"{record.label} has an invalid ImageOrientationPatient {record.orientation.tolist()}: "
            "the row and column direction cosines must be orthogonal."
        )
    normal = np.cross(row_cosine, column_cosine)
    return row_cosine, column_cosine, normal / np.linalg.norm(normal)


def _check_duplicates(ordered: list[_Slice], distances: np.ndarray) -> None:
    # Runs of consecutive sorted slices that share one position.
    runs: list[list[int]] = []
    for index in np.flatnonzero(np.diff(distances) < _DUPLICATE_TOLERANCE_MM):
        if runs and runs[-1][-1] == index:
            runs[-1].append(index + 1)
        else:
            runs.append([index, index + 1])
    if not runs:
        return
    lines = [
        f"  {distances[run[0]]:.3f} mm along the normal: " + ", ".join(ordered[i].label for i in run)
        for run in runs[:_MAX_LISTED]
    ]
    raise VolumeReadError(
        f"Found {len(runs)} positions with more than one slice (duplicate ImagePositionPatient):\n"
        + "\n".join(lines)
        + "\nThe series may hold several echoes, phases or time points; pass a folder with one slice per position."
    )


def _slice_step(ordered: list[_Slice], distances: np.ndarray, normal: np.ndarray, pixel_spacing: float) -> np.ndarray:
    """Return the LPS vector from one slice to the next, after checking that the slices are evenly spaced."""
    if len(ordered) == 1:
        return normal * _single_slice_spacing(ordered[0])

    gaps = np.diff(distances)
    median_gap, tolerance, deviations = _gap_deviations(distances)
    if deviations.max() > tolerance:
        worst = int(np.argmax(deviations))
        values, counts = np.unique(np.round(gaps, 3), return_counts=True)
        found = ", ".join(f"{value:g} mm (x{count})" for value, count in zip(values, counts))
        raise VolumeReadError(
            f"Uneven slice spacing: the gaps between slice positions are {found}, but must all be within "
            f"{tolerance:.3g} mm of the median gap {median_gap:.4g} mm. The largest deviation is between "
            f"{ordered[worst].label} and {ordered[worst + 1].label}. A slice may be missing, or the folder may "
            "contain several series. To interpolate the slices onto a uniform grid instead, pass --resample-z "
            "(resample_z=True in Python)."
        )
    direction = _stack_direction(ordered, distances, normal, pixel_spacing)
    return direction * (distances[-1] - distances[0]) / (len(ordered) - 1)


def _gap_deviations(distances: np.ndarray) -> tuple[float, float, np.ndarray]:
    """Return the median gap between sorted slice positions, the allowed deviation and each gap's deviation (mm)."""
    gaps = np.diff(distances)
    median_gap = float(np.median(gaps))
    tolerance = max(_GAP_TOLERANCE_FRACTION * median_gap, _GAP_TOLERANCE_MM)
    return median_gap, tolerance, np.abs(gaps - median_gap)


def _has_uneven_gaps(distances: np.ndarray) -> bool:
    _, tolerance, deviations = _gap_deviations(distances)
    return bool(deviations.max() > tolerance)


def _stack_direction(
    ordered: list[_Slice], distances: np.ndarray, normal: np.ndarray, pixel_spacing: float
) -> np.ndarray:
    """Return the LPS displacement of the slice position per millimetre along the normal.

    For an ordinary stack this is the normal itself. For a tilted stack (CT gantry tilt) it also has an in-plane
    component, which gives the affine a shear.

    Raises:
        VolumeReadError: if the slice positions do not lie on one straight line.
    """
    # Offsets of each slice from the line through the first slice along the normal.
    offsets = np.array([record.position - ordered[0].position for record in ordered])
    along_normal = distances - distances[0]
    in_plane = offsets - np.outer(along_normal, normal)
    # NOTE: offsets below this tolerance are treated as IPP rounding, so the affine stays orthogonal and may
    # misplace slices by up to this much.
    in_plane_tolerance = max(_IN_PLANE_TOLERANCE_FRACTION * pixel_spacing, _GAP_TOLERANCE_MM)
    if np.linalg.norm(in_plane, axis=1).max() <= in_plane_tolerance:
        return normal

    # The stack is tilted: follow the line from the first to the last slice position.
    direction = offsets[-1] / along_normal[-1]
    residuals = offsets - np.outer(along_normal, direction)
    deviation = float(np.linalg.norm(residuals, axis=1).max())
    if deviation > in_plane_tolerance:
        raise VolumeReadError(
            f"The slice positions of {ordered[0].label} to {ordered[-1].label} deviate from a straight line by "
            f"up to {deviation:.3g} mm (tolerance {in_plane_tolerance:.3g} mm), so the slices do not form a "
            "regular 3D grid."
        )
    tilt = np.degrees(np.arccos(np.clip(1.0 / np.linalg.norm(direction), -1.0, 1.0)))
    logger.warning(
        "The slices starting at %s are stacked at %.2f degrees from their normal (gantry tilt). The affine has "
        "shear so that each slice keeps its DICOM position.",
        ordered[0].label,
        tilt,
    )
    return direction


def _uniform_grid(distances: np.ndarray) -> np.ndarray:
    """Return evenly spaced positions along the normal from the first to the last slice, about a median gap apart.

    The number of gaps is the span in median gaps, rounded half up. So the spacing equals the median gap whenever
    the span is a whole number of median gaps, as when slices are missing from a regular series.
    """
    median_gap, _, _ = _gap_deviations(distances)
    span = float(distances[-1] - distances[0])
    count = max(int(np.floor(span / median_gap + 0.5)), 1) + 1
    return np.linspace(distances[0], distances[-1], count)


def _resample_slices(
    array: np.ndarray, distances: np.ndarray, targets: np.ndarray, source: Path
) -> tuple[np.ndarray, list[list[int]]]:
    """Interpolate the slices (sorted, at ``distances`` along the normal) linearly onto the ``targets`` positions.

    A target within the gap tolerance of a slice takes that slice's values unchanged. Returns the new array and,
    for each new slice, the indexes of the one or two source slices it was computed from.
    """
    spacing = float(targets[1] - targets[0])
    tolerance = max(_GAP_TOLERANCE_FRACTION * spacing, _GAP_TOLERANCE_MM)
    resampled = np.empty(array.shape[:2] + (len(targets),), dtype=np.float32)
    sources: list[list[int]] = []
    for k, target in enumerate(targets):
        nearest = int(np.argmin(np.abs(distances - target)))
        if abs(distances[nearest] - target) <= tolerance:
            resampled[:, :, k] = array[:, :, nearest]
            sources.append([nearest])
            continue
        upper = int(np.searchsorted(distances, target))
        lower = upper - 1
        weight = (target - distances[lower]) / (distances[upper] - distances[lower])
        below = array[:, :, lower].astype(np.float64)
        above = array[:, :, upper].astype(np.float64)
        resampled[:, :, k] = (1.0 - weight) * below + weight * above
        sources.append([lower, upper])

    median_gap, _, _ = _gap_deviations(distances)
    gaps = np.diff(distances)
    interpolated = sum(1 for indexes in sources if len(indexes) == 2)
    logger.warning(
        "Resampled %s onto a uniform slice grid because its slice gaps are uneven (median %.4g mm, smallest "
        "%.4g mm, largest %.4g mm): %d slices became %d slices %.4g mm apart, keeping the first and last slice "
        "positions. %d slices were interpolated linearly along the slice normal and are not measured data.",
        source,
        median_gap,
        gaps.min(),
        gaps.max(),
        len(distances),
        len(targets),
        spacing,
        interpolated,
    )
    return resampled, sources


def _single_slice_spacing(record: _Slice) -> float:
    for value in (record.slice_thickness, record.spacing_between_slices):
        if value is not None and value > 0:
            return value
    logger.warning(
        "%s is a single slice without SliceThickness or SpacingBetweenSlices. Using %.1f mm along the normal.",
        record.label,
        _DEFAULT_SLICE_SPACING_MM,
    )
    return _DEFAULT_SLICE_SPACING_MM


def _series_metadata(ordered: list[_Slice]) -> dict[str, Any]:
    dataset = ordered[0].dataset
    assert dataset is not None
    datasets = [record.dataset for record in ordered if record.dataset is not None]
    transfer_syntaxes = sorted({_transfer_syntax(item) for item in datasets})
    series_number = dataset.get("SeriesNumber")
    metadata: dict[str, Any] = {
        "format": "dicom",
        "series_instance_uid": str(dataset.get("SeriesInstanceUID", "")),
        "study_instance_uid": str(dataset.get("StudyInstanceUID", "")),
        "frame_of_reference_uid": str(dataset.get("FrameOfReferenceUID", "")),
        "patient_id": str(dataset.get("PatientID", "")),
        "series_description": str(dataset.get("SeriesDescription", "")),
        "series_number": int(series_number) if series_number not in (None, "") else None,
        "modality": str(dataset.get("Modality", "")),
        "files": [str(record.path) for record in ordered],
        "sop_instance_uids": [str(item.get("SOPInstanceUID", "")) for item in datasets],
        "rescale": [(record.slope, record.intercept) for record in ordered],
        "slice_thickness": ordered[0].slice_thickness,
        # Several values, comma-separated, only when the slices of the series use different transfer syntaxes.
        "transfer_syntax": ", ".join(transfer_syntaxes),
    }
    if any(record.frame is not None for record in ordered):
        metadata["frames"] = [record.frame for record in ordered]
    return metadata


def _transfer_syntax(dataset: Dataset) -> str:
    file_meta = getattr(dataset, "file_meta", None)
    uid = file_meta.get("TransferSyntaxUID") if file_meta is not None else None
    return str(uid) if uid is not None else ""


def _stack_pixels(ordered: list[_Slice]) -> np.ndarray:
    """Decode each slice, apply its RescaleSlope/RescaleIntercept and stack the slices as (column, row, slice)."""
    first = ordered[0]
    array: np.ndarray | None = None
    for k, record in enumerate(ordered):
        pixels = _decode(record)
        if array is None:
            # Allocate only after the first slice has decoded to Rows x Columns, so that a damaged header cannot
            # request gigabytes that its pixel data does not back.
            array = np.empty((first.columns, first.rows, len(ordered)), dtype=np.float32)
        values = pixels.astype(np.float64) * record.slope + record.intercept
        array[:, :, k] = values.T
        # Release the file's pixel data, which pydicom caches on the dataset. Frames of a multi-frame file
        # share one dataset, so they are released together after the loop.
        if record.frame is None:
            record.dataset = None
    for record in ordered:
        record.dataset = None
    assert array is not None  # a series has at least one slice
    return array


def _decode(record: _Slice) -> np.ndarray:
    dataset = record.dataset
    assert dataset is not None
    try:
        pixels = dataset.pixel_array
    except _DAMAGED_VALUE_ERRORS as error:
        # pydicom 3 raises NotImplementedError (a RuntimeError) when no installed plugin supports the transfer
        # syntax, and RuntimeError when every plugin failed.
        syntax = _transfer_syntax(dataset)
        name = UID(syntax).name if syntax else "unknown"
        message = f"Failed to decode the pixel data of {record.path} (transfer syntax {name}, {syntax}): {error}"
        if syntax and UID(syntax).is_compressed:
            message += f"\n{_DECODER_HINT}"
        raise VolumeReadError(message) from error

    if pixels.ndim == 3:
        pixels = pixels[record.frame or 0]
    if pixels.shape != (record.rows, record.columns):
        raise VolumeReadError(
            f"{record.label}: decoded pixel data has shape {pixels.shape}, expected "
            f"{(record.rows, record.columns)} (Rows, Columns)."
        )
    return pixels
