"""Cohorts of scans for batch inference: listing the inputs, sharding them across ranks, naming the outputs."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

logger = logging.getLogger(__name__)

# Volume files that a cohort folder may contain; sub-folders are read as one DICOM series each.
COHORT_VOLUME_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
LIST_FILE_SUFFIXES = (".txt", ".lst")
# Suffixes removed from an input's name to build its output name.
_NAME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm")


@dataclass(frozen=True)
class CohortEntry:
    """One input of a cohort.

    Args:
        path: the input, as listed or found.
        error: why the input fails before any work (a listed path that does not exist), or ``""``.
        skip_reason: why a file found in a cohort folder is not an input (not a volume file), or ``""``.
    """

    path: Path
    error: str = ""
    skip_reason: str = ""


def is_dicom_file(path: Path) -> bool:
    """Return whether ``path`` is a file named ``*.dcm`` or starting with the DICOM preamble."""
    from medgan.io.readers import has_dicom_preamble

    return path.is_file() and (path.name.lower().endswith(".dcm") or has_dicom_preamble(path))


def is_cohort_input(path: Path) -> bool:
    """Return whether ``path`` names a cohort: a list file (``.txt``, ``.lst``) or a folder of scans.

    A folder that directly contains a DICOM file is one DICOM series, not a cohort. Any other folder is a
    cohort when it contains a volume file or a sub-folder; hidden entries are ignored.
    """
    if path.is_file():
        return path.name.lower().endswith(LIST_FILE_SUFFIXES)
    if not path.is_dir():
        return False
    entries = [entry for entry in path.iterdir() if not entry.name.startswith(".")]
    if any(is_dicom_file(entry) for entry in entries if entry.is_file()):
        return False
    return any(entry.is_dir() or _has_volume_suffix(entry) for entry in entries)


def list_cohort(path: Path) -> list[CohortEntry]:
    """Return the cohort's entries sorted by path.

    A folder gives its volume files and its sub-folders (each one DICOM series). Its other files are returned
    with a ``skip_reason``, so the summary shows them. A list file gives one path per line. Blank lines and
    lines starting with ``#`` are ignored, and relative paths are relative to the list file's folder.

    Raises:
        ValueError: if the cohort is empty or the list file cannot be read as UTF-8 text.
    """
    if path.is_dir():
        entries = []
        for entry in path.iterdir():
            if entry.name.startswith("."):
                continue
            if entry.is_dir() or _has_volume_suffix(entry):
                entries.append(CohortEntry(entry))
            else:
                entries.append(CohortEntry(entry, skip_reason="not a NIfTI, NRRD or MetaImage file or a folder"))
    else:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as error:
            raise ValueError(f"Cannot read the list file {path}: {error}.") from error
        entries = []
        for line in lines:
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            listed = Path(text).expanduser()
            listed = listed if listed.is_absolute() else path.parent / listed
            entries.append(CohortEntry(listed, error="" if listed.exists() else "listed path does not exist"))
    if not entries:
        raise ValueError(f"{path} lists no scans: expected NIfTI, NRRD or MetaImage files, DICOM series folders, "
                         "or a text file with one path per line.")
    return sorted(entries, key=lambda entry: str(entry.path))


def shard_for_rank(entries: Sequence[CohortEntry], environment: Mapping[str, str] | None = None
                   ) -> tuple[list[CohortEntry], int, int]:
    """Return this process's share of ``entries`` (every ``world_size``-th one from ``rank``), rank and world size.

    ``RANK`` and ``WORLD_SIZE`` come from the environment that ``torchrun`` sets; without them the process takes
    every entry. No ``torch.distributed`` initialisation is needed, because ranks share nothing.

    Raises:
        ValueError: if only one of the variables is set, or they are not integers with 0 <= RANK < WORLD_SIZE.
    """
    environment = os.environ if environment is None else environment
    rank_text, world_text = environment.get("RANK"), environment.get("WORLD_SIZE")
    if rank_text is None and world_text is None:
        return list(entries), 0, 1
    if rank_text is None or world_text is None:
        raise ValueError(f"RANK={rank_text!r} and WORLD_SIZE={world_text!r}: set both (torchrun does) or neither.")
    try:
        rank, world_size = int(rank_text), int(world_text)
    except ValueError as error:
        raise ValueError(f"RANK={rank_text!r} and WORLD_SIZE={world_text!r} must be integers.") from error
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"RANK={rank} and WORLD_SIZE={world_size} must satisfy 0 <= RANK < WORLD_SIZE.")
    return list(entries[rank::world_size]), rank, world_size


def output_name(scan: Path, output_format: str) -> str:
    """Return the output name for ``scan``: its name without a volume suffix, ``_restored``, the format's suffix."""
    name = scan.name
    for suffix in _NAME_SUFFIXES:
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    suffix = {"nifti": ".nii.gz", "nrrd": ".nrrd", "mha": ".mha", "dicom": ""}[output_format]
    return f"{name}_restored{suffix}"


def find_name_collisions(entries: Sequence[CohortEntry], output_format: str) -> dict[str, list[Path]]:
    """Return the output names that two or more entries would share, with those entries' paths."""
    by_name: dict[str, list[Path]] = {}
    for entry in entries:
        by_name.setdefault(output_name(entry.path, output_format), []).append(entry.path)
    return {name: paths for name, paths in by_name.items() if len(paths) > 1}


def _has_volume_suffix(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(COHORT_VOLUME_SUFFIXES)
