"""Score candidates against references under a protocol, case by case, and summarise them over cases.

A case is a reference volume with an optional input (the degraded scan) and an optional candidate (a restored
volume read from disk). Candidates can also come from a model and from baselines applied to the input. Every
candidate must be on the reference grid. A CT input must be on it as well, and an MR super-resolution input
must be the reference's thick-slice grid (see `medgan.evaluation.geometry.thick_slice_relation`).
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from medgan.evaluation.baselines import Baselines
from medgan.evaluation.bootstrap import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, bootstrap_mean
from medgan.evaluation.geometry import ThickSliceRelation, check_same_grid, thick_slice_relation
from medgan.evaluation.metrics import mae, psnr_db, rmse, ssim_3d
from medgan.evaluation.protocols import Protocol
from medgan.evaluation.regions import Region, find_uniform_regions
from medgan.io.readers import read_volume
from medgan.io.volume import Volume

logger = logging.getLogger(__name__)

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm")
REGION_COUNT = 3
REGION_SIZE_VOXELS = 11
SUMMARY_METRICS = ("psnr_db", "ssim", "rmse", "mae", "rmse_hu", "mae_hu", "mean_bias_hu", "noise_std_ratio",
                   "dc_psnr_db", "dc_rmse", "dc_relative_rmse")


class ManifestError(ValueError):
    """A test-set manifest cannot be used."""


@dataclass(frozen=True)
class CaseFiles:
    """Paths of one case: the reference, and the input and candidate where given."""

    case_id: str
    reference: Path
    input: Path | None = None
    candidate: Path | None = None


def load_manifest(path: str | Path) -> list[CaseFiles]:
    """Read a CSV or JSON manifest of ``input`` and ``reference`` paths, relative to the manifest's folder.

    CSV: a header row with the columns ``input`` and ``reference`` and an optional ``id``. JSON: a list of
    objects with those keys, or an object whose ``cases`` key contains that list. Case ids default to the input
    file names without their suffix.

    Raises:
        ManifestError: for an unreadable manifest, a missing column or file, an empty list or duplicate ids.
    """
    manifest = Path(path)
    if not manifest.is_file():
        raise ManifestError(f"Manifest not found: {manifest}")
    suffix = manifest.suffix.lower()
    try:
        text = manifest.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ManifestError(f"Cannot read the manifest {manifest}: {error}") from error
    if suffix == ".csv":
        entries = list(csv.DictReader(text.splitlines()))
    elif suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ManifestError(f"The manifest {manifest} is not valid JSON: {error}") from error
        entries = data.get("cases") if isinstance(data, dict) else data
        if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
            raise ManifestError(f"The JSON manifest {manifest} must be a list of objects with 'input' and "
                                "'reference', or an object with such a list under 'cases'.")
    else:
        raise ManifestError(f"The manifest {manifest} must end in .csv or .json, got {suffix or 'no suffix'}.")
    if not entries:
        raise ManifestError(f"The manifest {manifest} lists no cases.")

    cases = []
    for number, entry in enumerate(entries, start=1):
        missing = [key for key in ("input", "reference") if not str(entry.get(key) or "").strip()]
        if missing:
            raise ManifestError(f"Case {number} of {manifest} has no {' or '.join(missing)}; every case needs "
                                "'input' and 'reference' paths.")
        paths = {}
        for key in ("input", "reference"):
            resolved = (manifest.parent / str(entry[key]).strip()).resolve()
            if not resolved.exists():
                raise ManifestError(f"Case {number} of {manifest}: the {key} {entry[key]!r} was not found at "
                                    f"{resolved}.")
            paths[key] = resolved
        case_id = str(entry.get("id") or "").strip() or case_id_from_path(paths["input"])
        cases.append(CaseFiles(case_id=case_id, reference=paths["reference"], input=paths["input"]))
    ids = [case.case_id for case in cases]
    duplicates = sorted({case_id for case_id in ids if ids.count(case_id) > 1})
    if duplicates:
        raise ManifestError(f"The manifest {manifest} repeats the case ids {', '.join(duplicates)}; give each case a "
                            "unique 'id'.")
    return cases


def case_id_from_path(path: Path) -> str:
    name = path.name
    for suffix in VOLUME_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def uniform_regions(reference: Volume, protocol: Protocol) -> list[Region]:
    """Return up to three uniform soft-tissue boxes of a CT reference, or none (logged) where none qualifies."""
    if not protocol.is_ct:
        return []
    size = min(REGION_SIZE_VOXELS, reference.shape[0], reference.shape[1])
    try:
        return find_uniform_regions(reference.array, count=REGION_COUNT, size=size)
    except ValueError as error:
        logger.warning("No uniform region for bias and noise: %s", error)
        return []


def region_statistics(reference_hu: np.ndarray, candidate_hu: np.ndarray, regions: list[Region],
                      input_hu: np.ndarray | None = None) -> list[dict]:
    """Return, per region, the mean HU bias ``candidate - reference`` and the noise std ratio candidate / input.

    The ratio is ``None`` without an input on the same grid, or where the input's std in the region is 0.
    """
    rows = []
    for region in regions:
        reference_values = region.take(reference_hu).astype(np.float64)
        candidate_values = region.take(candidate_hu).astype(np.float64)
        row = {
            "region_ijk": [region.i0, region.i1, region.j0, region.j1, region.k0, region.k1],
            "reference_mean_hu": float(reference_values.mean()),
            "candidate_mean_hu": float(candidate_values.mean()),
            "bias_hu": float(candidate_values.mean() - reference_values.mean()),
            "candidate_std_hu": float(candidate_values.std()),
            "input_std_hu": None,
            "noise_std_ratio": None,
        }
        if input_hu is not None:
            input_std = float(region.take(input_hu).astype(np.float64).std())
            row["input_std_hu"] = input_std
            row["noise_std_ratio"] = row["candidate_std_hu"] / input_std if input_std > 0 else None
        rows.append(row)
    return rows


def score_candidate(reference: Volume, candidate: np.ndarray, protocol: Protocol, *,
                    input_volume: Volume | None = None, regions: list[Region] | None = None,
                    relation: ThickSliceRelation | None = None) -> dict:
    """Return every metric of one candidate array (physical units, reference grid) under ``protocol``.

    PSNR, SSIM, RMSE and MAE are computed in protocol units over the protocol's mask. CT protocols add RMSE and
    MAE in HU over all voxels without clipping, and the bias and noise in ``regions``. With ``relation`` (MR
    super-resolution) the candidate is averaged into the input's thick slices again and compared with the input
    (data consistency, ``dc_*``), in the same units.
    """
    candidate = np.asarray(candidate, dtype=np.float64)
    if candidate.shape != reference.shape:
        raise ValueError(f"candidate shape {candidate.shape} does not match the reference grid {reference.shape}.")
    prepared = protocol.prepare(reference.array, candidate)
    mapped_reference, mapped_candidate = prepared.arrays
    row: dict = {
        "psnr_db": psnr_db(mapped_reference, mapped_candidate, protocol.data_range, prepared.mask),
        "ssim": ssim_3d(mapped_reference, mapped_candidate, protocol.data_range, prepared.mask),
        "rmse": rmse(mapped_reference, mapped_candidate, prepared.mask),
        "mae": mae(mapped_reference, mapped_candidate, prepared.mask),
    }
    if protocol.is_ct:
        row["rmse_hu"] = rmse(reference.array, candidate)
        row["mae_hu"] = mae(reference.array, candidate)
        same_grid_input = input_volume.array if input_volume is not None and relation is None else None
        statistics = region_statistics(reference.array, candidate, regions or [], same_grid_input)
        row["regions"] = statistics
        row["mean_bias_hu"] = float(np.mean([r["bias_hu"] for r in statistics])) if statistics else None
        ratios = [r["noise_std_ratio"] for r in statistics if r["noise_std_ratio"] is not None]
        row["noise_std_ratio"] = float(np.mean(ratios)) if ratios else None
    if relation is not None and input_volume is not None:
        degraded = relation.degrade(reference.with_array(candidate.astype(np.float32)))
        scale = prepared.scale if prepared.scale is not None else 1.0
        degraded_units = degraded.array.astype(np.float64) / scale
        input_units = input_volume.array.astype(np.float64) / scale
        row["dc_psnr_db"] = psnr_db(input_units, degraded_units, protocol.data_range)
        row["dc_rmse"] = rmse(input_units, degraded_units)
        input_rms = float(np.sqrt(np.mean(input_units**2)))
        row["dc_relative_rmse"] = row["dc_rmse"] / input_rms if input_rms > 0 else None
    return row


@dataclass
class CaseImages:
    """The volumes of one evaluated case, for figures: candidates by method, on the reference grid."""

    case_id: str
    reference: Volume
    input: Volume | None
    candidates: dict[str, np.ndarray]
    relation: ThickSliceRelation | None


def read_case(case: CaseFiles, protocol: Protocol) -> tuple[Volume, Volume | None, Volume | None,
                                                           ThickSliceRelation | None]:
    """Read a case's volumes and check their grids: ``(reference, input, candidate, relation)``.

    Raises:
        GridMismatchError: if a grid does not fit the reference.
        VolumeReadError, FileNotFoundError: if a file cannot be read.
    """
    reference = read_volume(case.reference)
    input_volume = read_volume(case.input) if case.input is not None else None
    candidate = read_volume(case.candidate) if case.candidate is not None else None
    if candidate is not None:
        check_same_grid(reference, candidate, "reference", "candidate")
    relation = None
    if input_volume is not None:
        if protocol.is_ct:
            check_same_grid(reference, input_volume, "reference", "input")
        else:
            relation = thick_slice_relation(input_volume, reference)
    return reference, input_volume, candidate, relation


def evaluate_cases(
    cases: list[CaseFiles],
    protocol: Protocol,
    *,
    restore: Callable[[Volume], Volume] | None = None,
    method_name: str = "candidate",
    baselines: Baselines | None = None,
    validation_case: str | None = None,
    seed: int = BOOTSTRAP_SEED,
    n_resamples: int = BOOTSTRAP_RESAMPLES,
    on_case: Callable[[CaseImages], None] | None = None,
) -> dict:
    """Score every case and return per-case rows, means with bootstrap intervals and baseline comparisons.

    The method under test is ``restore(input)`` when ``restore`` is given, else each case's candidate file; it
    is named ``method_name``. CT cases with an input also score the input itself as method ``"input"``.
    Baselines are tuned on ``validation_case`` (a case id; default the first case) and then applied to every
    case. ``on_case`` receives each case's volumes, for figures.

    Raises:
        ValueError: for an unknown ``validation_case``, a case without the input that ``restore`` or the
            baselines need, or a grid that does not fit (`GridMismatchError`).
    """
    ids = [case.case_id for case in cases]
    if validation_case is not None and validation_case not in ids:
        raise ValueError(f"validation case {validation_case!r} is not in the test set; its cases are "
                         f"{', '.join(ids)}.")
    needs_input = restore is not None or (baselines is not None and baselines.names)
    for case in cases:
        if needs_input and case.input is None:
            raise ValueError(f"Case {case.case_id} has no input, but the model and the baselines restore the input.")
        if restore is None and case.candidate is None:
            raise ValueError(f"Case {case.case_id} has no candidate and no model was given to produce one.")

    if baselines is not None and baselines.names:
        fit_id = validation_case or ids[0]
        fit_case = cases[ids.index(fit_id)]
        reference, input_volume, _, _ = read_case(fit_case, protocol)
        baselines.fit(fit_id, input_volume, reference)

    rows = []
    methods: list[str] = []
    for case in cases:
        reference, input_volume, candidate_volume, relation = read_case(case, protocol)
        candidates: dict[str, np.ndarray] = {}
        if input_volume is not None and relation is None:
            candidates["input"] = input_volume.array
        if baselines is not None:
            for name in baselines.names:
                candidates[name] = baselines.apply(name, case.case_id, input_volume, reference)
        if restore is not None:
            restored = restore(input_volume)
            check_same_grid(reference, restored, "reference", f"{method_name} output")
            candidates[method_name] = restored.array
        else:
            candidates[method_name] = candidate_volume.array
        regions = uniform_regions(reference, protocol)
        for method, array in candidates.items():
            row = score_candidate(reference, array, protocol, input_volume=input_volume, regions=regions,
                                  relation=relation)
            rows.append({"case": case.case_id, "method": method, "protocol": protocol.name, **row})
            if method not in methods:
                methods.append(method)
        logger.info("Case %s: %s", case.case_id, ", ".join(
            f"{r['method']} PSNR {r['psnr_db']:.2f} dB" for r in rows if r["case"] == case.case_id))
        if on_case is not None:
            on_case(CaseImages(case.case_id, reference, input_volume, candidates, relation))

    means = summarize(rows, methods, seed=seed, n_resamples=n_resamples)
    baseline_names = list(baselines.names) if baselines is not None else []
    return {
        "protocol": protocol.to_dict(),
        "method": method_name,
        "cases": [{"id": case.case_id, "reference": str(case.reference),
                   "input": None if case.input is None else str(case.input),
                   "candidate": None if case.candidate is None else str(case.candidate)} for case in cases],
        "rows": rows,
        "means": means,
        "comparisons": compare_with_baselines(means, method_name, baseline_names),
        "baselines": {
            "names": baseline_names,
            "parameters": baselines.parameters if baselines is not None else {},
            "skipped": baselines.skipped if baselines is not None else {},
        },
        "bootstrap": {"n_resamples": n_resamples, "seed": seed, "confidence": 0.95, "method": "percentile"},
    }


def summarize(rows: list[dict], methods: list[str], *, seed: int = BOOTSTRAP_SEED,
              n_resamples: int = BOOTSTRAP_RESAMPLES) -> dict:
    """Return ``{method: {metric: mean and interval}}`` over the cases, for the metrics each method has."""
    means: dict = {}
    for method in methods:
        method_rows = [row for row in rows if row["method"] == method]
        summary = {}
        for metric in SUMMARY_METRICS:
            values = [row.get(metric) for row in method_rows]
            if not values or any(value is None for value in values):
                continue
            summary[metric] = bootstrap_mean(values, n_resamples=n_resamples, seed=seed).to_dict()
        means[method] = summary
    return means


def compare_with_baselines(means: dict, method: str, baselines: list[str]) -> list[dict]:
    """Return, per baseline, whether ``method``'s mean PSNR and SSIM are below the baseline's."""
    comparisons = []
    for baseline in baselines:
        if baseline not in means or method not in means:
            continue
        for metric in ("psnr_db", "ssim"):
            ours = means[method].get(metric, {}).get("mean")
            theirs = means[baseline].get(metric, {}).get("mean")
            if ours is None or theirs is None:
                continue
            comparisons.append({"baseline": baseline, "metric": metric, "method_mean": ours,
                                "baseline_mean": theirs, "below_baseline": bool(ours < theirs)})
    return comparisons
