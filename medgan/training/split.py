"""Patient-level train/validation split, seeded, recorded in the run folder as ``split.json``."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from medgan.io.atomic import atomic_output

logger = logging.getLogger(__name__)

SPLIT_FILE = "split.json"


@dataclass
class PatientSplit:
    """Patient IDs on each side of the split, and how the split was drawn."""

    train: list[str]
    validation: list[str]
    seed: int
    validation_fraction: float

    def write(self, run_dir: Path) -> Path:
        path = Path(run_dir) / SPLIT_FILE
        with atomic_output(path, overwrite=True) as temporary:
            temporary.write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def read(cls, path: Path) -> "PatientSplit":
        """Read a ``split.json``.

        Raises:
            ValueError: if the file is not a split record or lists a patient on both sides.
        """
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            split = cls(train=[str(p) for p in data["train"]], validation=[str(p) for p in data["validation"]],
                        seed=int(data["seed"]), validation_fraction=float(data["validation_fraction"]))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{path} is not a medgan split record: {error}. Delete it to draw a new split.") from error
        shared = sorted(set(split.train) & set(split.validation))
        if shared:
            raise ValueError(f"{path} lists patient(s) {', '.join(shared)} in both train and validation.")
        return split


def draw_split(patients: list[str], validation_fraction: float, seed: int) -> PatientSplit:
    """Hold out ``round(validation_fraction * n)`` patients (at least one when the fraction is above 0).

    The patients are sorted before a seeded permutation, so the split depends only on the set of IDs and the seed.

    Raises:
        ValueError: if the split would leave no training patient.
    """
    unique = sorted(set(patients))
    if validation_fraction <= 0:
        return PatientSplit(unique, [], seed, validation_fraction)
    n_validation = max(1, round(validation_fraction * len(unique)))
    if n_validation >= len(unique):
        raise ValueError(f"data.validation_fraction {validation_fraction:g} of {len(unique)} patient(s) leaves no "
                         "patient to train on; add patients or lower the fraction.")
    order = torch.randperm(len(unique), generator=torch.Generator().manual_seed(seed)).tolist()
    validation = sorted(unique[i] for i in order[:n_validation])
    train = sorted(unique[i] for i in order[n_validation:])
    return PatientSplit(train, validation, seed, validation_fraction)


def reuse_split(recorded: PatientSplit, patients: list[str], source: Path) -> PatientSplit:
    """Check a recorded split against the patients found now, for a resumed run.

    Patients that appeared since the split was drawn join the training side, with a warning, so no new patient
    can move a recorded validation patient into training.

    Raises:
        ValueError: if a recorded patient is no longer in the data.
    """
    found = set(patients)
    missing = sorted((set(recorded.train) | set(recorded.validation)) - found)
    if missing:
        raise ValueError(f"{source} lists patient(s) {', '.join(missing)} that the data no longer contains; resume "
                         "with the data the run started with, or start a new run.")
    new = sorted(found - set(recorded.train) - set(recorded.validation))
    if new:
        logger.warning("%d patient(s) not in %s join the training side: %s", len(new), source, ", ".join(new))
    return PatientSplit(sorted(recorded.train + new), list(recorded.validation), recorded.seed,
                        recorded.validation_fraction)


def resolve_split(patients: list[str], validation_fraction: float, seed: int, run_dir: Path | None,
                  resume: bool) -> PatientSplit:
    """Return the recorded split of ``run_dir`` when resuming and one exists, else a newly drawn one."""
    path = Path(run_dir) / SPLIT_FILE if run_dir is not None else None
    if resume and path is not None and path.is_file():
        split = reuse_split(PatientSplit.read(path), patients, path)
        logger.info("Reusing the patient split of %s: %d train, %d validation", path, len(split.train),
                    len(split.validation))
        return split
    split = draw_split(patients, validation_fraction, seed)
    if split.validation:
        logger.info("Split %d patients: %d train, %d validation (seed %d)", len(split.train) + len(split.validation),
                    len(split.train), len(split.validation), seed)
    return split

