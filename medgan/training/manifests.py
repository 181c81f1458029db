"""Lists of training pairs: CSV or JSON manifests, and folders of paired full-dose and low-dose series.

Every entry names its patient, so the train/validation split can keep all of a patient's scans on one side.
"""

from __future__ import annotations

import csv
import fnmatch
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from medgan.io import Volume, read_volume
from medgan.io.readers import has_dicom_preamble

logger = logging.getLogger(__name__)

VOLUME_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".mha")


@dataclass(frozen=True)
class SeriesSource:
    """One volume on disk: a file, a DICOM series folder, or one series among several in a folder.

    Attributes:
        path: file or folder passed to `medgan.io.read_volume`.
        series_uid: SeriesInstanceUID that selects the series when ``path`` contains several, else ``None``.
        names: texts matched against the dose patterns: folder or file names and the DICOM SeriesDescription.
    """

    path: Path
    series_uid: str | None = None
    names: tuple[str, ...] = field(default=(), compare=False)

    def read(self) -> Volume:
        return read_volume(self.path, series_uid=self.series_uid)

    def __str__(self) -> str:
        return str(self.path) if self.series_uid is None else f"{self.path} (series {self.series_uid})"


@dataclass(frozen=True)
class PairEntry:
    """A training case: the high-quality volume, the paired low-quality one (``None`` when simulated)."""

    patient: str
    high: SeriesSource
    low: SeriesSource | None = None


def read_pairs_manifest(manifest: str | Path) -> list[PairEntry]:
    """Read a CSV or JSON manifest of ``low``/``high`` paths, relative to the manifest, with optional ``patient``.

    A JSON manifest is a list of objects with the same keys. Rows without a patient become their own patient,
    named after the ``high`` path.

    Raises:
        FileNotFoundError: if the manifest does not exist.
        ValueError: if a column is missing, a value is empty, or the manifest lists no pairs.
    """
    manifest = Path(manifest)
    if not manifest.is_file():
        raise FileNotFoundError(f"Manifest {manifest} not found (data.manifest or data.validation_manifest).")
    if manifest.suffix.lower() == ".json":
        rows = _json_rows(manifest)
    else:
        with open(manifest, newline="", encoding="utf-8") as stream:
            reader = csv.DictReader(stream)
            if reader.fieldnames is None or not {"low", "high"} <= set(reader.fieldnames):
                raise ValueError(f"Manifest {manifest} needs 'low' and 'high' columns, found {reader.fieldnames}.")
            rows = list(reader)
    if not rows:
        raise ValueError(f"Manifest {manifest} lists no volume pairs.")
    entries = []
    for number, row in enumerate(rows, start=1):
        for key in ("low", "high"):
            if not isinstance(row.get(key), str) or not row[key].strip():
                raise ValueError(f"Manifest {manifest}, entry {number}: '{key}' must be a non-empty path, got "
                                 f"{row.get(key)!r}.")
        high = manifest.parent / row["high"].strip()
        patient = str(row.get("patient") or "").strip() or row["high"].strip()
        entries.append(PairEntry(patient, SeriesSource(high), SeriesSource(manifest.parent / row["low"].strip())))
    return entries


def _json_rows(manifest: Path) -> list[dict]:
    try:
        rows = json.loads(manifest.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"Manifest {manifest} is not valid JSON: {error}.") from error
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise ValueError(f"Manifest {manifest} must contain a JSON list of objects with 'low' and 'high' keys.")
    return rows


def _matches(source: SeriesSource, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatch(name.lower(), pattern.lower()) for name in source.names for pattern in patterns)


def _dicom_header(path: Path) -> tuple[str, str] | None:
    """Return ``(SeriesInstanceUID, SeriesDescription)`` of a DICOM file, or ``None`` for other files."""
    import pydicom

    if not has_dicom_preamble(path):
        return None
    try:
        dataset = pydicom.dcmread(path, stop_before_pixels=True,
                                  specific_tags=["SeriesInstanceUID", "SeriesDescription"])
    except (pydicom.errors.InvalidDicomError, OSError, ValueError) as error:
        logger.debug("Skipping %s: unreadable DICOM header (%s)", path, error)
        return None
    return str(dataset.get("SeriesInstanceUID", "")), str(dataset.get("SeriesDescription", ""))


def _first_series_description(folder: Path) -> str:
    for path in sorted(folder.iterdir()):
        if path.is_file():
            header = _dicom_header(path)
            if header is not None:
                return header[1]
    return ""


def series_candidates(patient_folder: Path) -> list[SeriesSource]:
    """List the volumes of one patient folder: sub-folders, volume files, and DICOM series mixed in the folder.

    A sub-folder counts as one DICOM series and is matched by its name and its first file's SeriesDescription.
    DICOM files directly in the folder are grouped by SeriesInstanceUID and matched by their file names and
    SeriesDescription.
    """
    candidates: list[SeriesSource] = []
    mixed: dict[str, list[str]] = {}
    for path in sorted(patient_folder.iterdir()):
        if path.is_dir():
            description = _first_series_description(path)
            candidates.append(SeriesSource(path, None, tuple(n for n in (path.name, description) if n)))
        elif path.name.lower().endswith(VOLUME_SUFFIXES):
            candidates.append(SeriesSource(path, None, (path.name,)))
        else:
            header = _dicom_header(path)
            if header is not None:
                uid, description = header
                names = mixed.setdefault(uid, [description] if description else [])
                names.append(path.name)
    for uid, names in mixed.items():
        candidates.append(SeriesSource(patient_folder, uid, tuple(names)))
    return candidates


def discover_paired_folders(root: str | Path, full_dose_patterns: list[str],
                            low_dose_patterns: list[str]) -> list[PairEntry]:
    """Find one full-dose and one low-dose series in every patient folder under ``root``.

    Patient folders are the direct sub-folders of ``root``; the patient ID is the folder name. A series is
    full-dose when one of its names (see `series_candidates`) matches a pattern of ``full_dose_patterns``,
    case-insensitively, and low-dose likewise.

    Raises:
        FileNotFoundError: if ``root`` is not a folder.
        ValueError: if ``root`` has no patient folder, or a patient does not have exactly one series of each
            dose or has a series that matches both. The message lists the series found.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data.root {root} is not a folder.")
    patients = sorted(path for path in root.iterdir() if path.is_dir())
    if not patients:
        raise ValueError(f"data.root {root} contains no patient folders; paired-folders mode needs one sub-folder "
                         "per patient with a full-dose and a low-dose series.")
    entries = []
    for folder in patients:
        candidates = series_candidates(folder)
        full = [c for c in candidates if _matches(c, full_dose_patterns)]
        low = [c for c in candidates if _matches(c, low_dose_patterns)]
        both = [c for c in full if c in low]
        if both or len(full) != 1 or len(low) != 1:
            found = "\n".join(f"  {c} (names: {', '.join(c.names) or 'none'})" for c in candidates) or "  nothing"
            raise ValueError(
                f"Patient {folder.name} must have exactly one full-dose and one low-dose series, found "
                f"{len(full)} matching data.full_dose_patterns {full_dose_patterns}, {len(low)} matching "
                f"data.low_dose_patterns {low_dose_patterns}"
                f"{f', and {len(both)} matching both' if both else ''}. Series in {folder}:\n{found}\n"
                "Adjust the patterns, or move the extra series out of the patient folder."
            )
        entries.append(PairEntry(folder.name, full[0], low[0]))
    logger.info("Found %d patients with paired series under %s", len(entries), root)
    return entries
