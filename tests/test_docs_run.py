"""Run every shell command shown in README.md and docs/*.md, in document order, and check what each one writes.

Each doc file gets its own sandbox folder, prepared once, and its commands run there in the order the page
shows them, so ``medgan train`` makes ``runs/...`` before ``medgan export runs/...`` reads it. A test named
``docs/guide-ldct.md:88`` runs that line. Run alone, it first runs the earlier lines of its page that have not
run yet. ``test_every_shell_line_run_or_excluded`` fails when a shell line is neither run here nor on
``SETUP_SEGMENTS`` or ``NOT_COMMANDS``, so a new doc command cannot be skipped silently.

How a line runs:

- ``medgan ...`` runs in this process through click's CliRunner with the documented arguments. Each run must
  exit with 0, and its outputs must exist and read back: volumes with the expected shape and affine, JSON
  sidecars, cards and reports that parse, run folders with a checkpoint.
- ``--device cuda`` without CUDA must exit with the usage-error code 2 and a message that names the device.
  With CUDA the command runs as documented.
- ``python scripts/...``, ``nice -n 10 python scripts/...``, ``python -m monai.bundle run ...``,
  ``torchrun ... -m medgan ...`` and the shell-completion lines run in a subprocess, with the sandbox as the
  working folder and as ``HOME``.
- The pages show alternatives that write the same output name. So when an earlier line of the page wrote an
  output named by ``-o`` (with its sidecar and preview), or the run folder of a ``medgan train`` without
  ``--resume``, it is removed first.

No command can write into the repository through the sandbox. ``medgan/`` contains links to the entries of the
repository's medgan/, so ``python -m medgan`` imports the package, but its ``data/`` is a folder of links to
the shipped samples. ``scripts/`` is a copy, because scripts/prepare_mri_samples.py writes beside its own
resolved path, into ``medgan/data/`` and ``work/``. ``docs/`` is a new folder holding an empty
``evaluation/``, so ``-o docs/evaluation/...`` stays in the sandbox. The placeholders the pages name are real
small files:

- ``scan.nii.gz``: a copy of medgan/data/ct_small_quarter_dose.nii.gz. ``dicom_folder/``: 3 slices made from
  the shipped CT sample, written by medgan's DICOM writer with pydicom's CT_small.dcm as the source header, as
  series 1.2.840.113619.2.55.3. ``low.nii.gz`` is that series as NIfTI, and ``full.nii.gz`` and
  ``restored.nii.gz`` (a Gaussian-smoothed ``low``) share its grid.
- ``t1.nii.gz``: a 40 x 48 x 32 crop of nilearn's 2 mm MNI152 template. ``work/mri-eval/``: the pair that
  scripts/prepare_mri_samples.py writes, made with its functions (in the models.md sandbox the script itself
  makes it), and for configs/eval/mri-sr-validation-slab.csv a 40 x 48 x 16 crop of the 1 mm template with
  its 4 mm slices. ``thick.nii.gz`` and ``reference_2mm.nii.gz``: medgan/data/mri_thick_slices.nii.gz and the
  pair's reference with their slice order reversed. That is the right-handed grid on which a DICOM reader
  returns ``mr_dicom_folder/``, the same volume as an MR series, so ``fine.nii.gz`` fits the reference
  whichever of the two it was restored from.
- ``scans/`` and ``scans.txt``: two CT volumes (two thick-slice MR volumes for guide-mri-sr.md). ``test.csv``:
  the shipped CT pair. ``my.yaml``: a small ldct config. ``runs/ldct``: a 3-step run made with configs/ldct.yaml.

Substitutions that keep the documented commands fast (2 minutes in all on a 2-core CPU shared with another
job):

- configs/ is a copy whose training configs read tiny volumes under ``work/tiny-ct`` and ``work/tiny-mri``,
  with small patches and networks, 3 steps and matching validation, checkpoint and preview intervals. Only
  values change: every key of the repository's config stays, and configs/pairs.csv and
  configs/validation_pairs.csv are added for configs/paired-example.yaml.
- ``medgan.training.build_trainer`` is wrapped so a run trains at most ``TRAIN_MAX_STEPS`` steps, whatever
  ``--set train.steps=N`` requests. A ``--resume`` run trains ``RESUME_EXTRA_STEPS`` past its checkpoint, because
  the capped run it continues has already finished.
- ``medgan.adaptation.adapt_denoiser``, ``adapt_super_resolution`` and ``refine_super_resolution`` are wrapped to
  stop after ``ADAPT_MAX_STEPS`` steps, whatever ``--adapt-minutes`` requests. The sidecar must record that stop.
- ``python scripts/bench_infer.py --shape 64 192 192`` took 60 s, so it runs with ``--shape 16 64 64``, and
  ``python scripts/probe_smore_2d.py ... --minutes 10`` runs with ``--minutes 0.02``.
- torch runs on one thread, and subprocesses get ``OMP_NUM_THREADS=1``: on this 2-core machine, shared with
  another job, two OpenMP threads made a GAN step 90 times slower.

Only ``python scripts/prepare_ldct_data.py`` may be skipped, when pydicom-data (``import data_store``) is not
installed. ``KNOWN_FAILURES`` lists documented commands that fail for a reason outside the pages' text; each
is a strict expected failure.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import runpy
import shutil
import socket
import subprocess
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner, Result
from scipy.ndimage import gaussian_filter

import medgan
from docs_commands_support import DOC_FILES, MEDGAN_WORD, REPO, medgan_args, shell_lines, split_segments, split_tokens
from medgan.cli.main import cli
from medgan.cli.options import output_suffix, sidecar_path
from medgan.io import Volume, read_volume, write_volume

SAMPLES = REPO / "medgan" / "data"
SHIPPED_MODELS = REPO / "medgan" / "models" / "shipped"
SERIES_UID = "1.2.840.113619.2.55.3"
BUNDLE_DIR = "ldct_bundle"  # the bundle that docs/pipelines.md exports, standing for DIR in its monai.bundle line
TRAIN_MAX_STEPS = 3
RESUME_EXTRA_STEPS = 2
ADAPT_MAX_STEPS = 3
SUBPROCESS_TIMEOUT_S = 600

# Set-up commands that CI itself runs, as the words of one segment of a shell line.
SETUP_SEGMENTS = {
    "python3 -m venv .venv": "creates the virtual environment",
    ". .venv/bin/activate": "activates the virtual environment",
    "pip install torch==2.13.0": "installs torch",
    "pip install -e .": "installs medgan",
    "pip install -e .[test,dicom-codecs]": "installs medgan with the test extras",
    "pip install -e .[recipe]": "installs the recipe extra (pydicom-data)",
    "python -m pytest -q": "the test suite itself",
}

# Lines of shell code blocks that are not commands, by doc file.
NOT_COMMANDS = {
    "docs/architecture.md": [
        "cli/          one module per subcommand (infer, train, evaluate, export, simulate, models,",
        "|           pretrain-perceptual); parses options, sets up logging, maps library errors to exit codes, shows",
        "|           progress bars",
        "export/       a model to TorchScript, ONNX (opset 17, dynamic axes) or a MONAI bundle, each checked numerically",
        "|           against PyTorch after writing",
        "training/     GANTrainer, patch samplers (CT noise simulation, thick-slice MRI), paired manifests and",
        "|           paired-folders discovery, patient split, run logging (CSV, TensorBoard, run.log), checkpoints,",
        "|           export, perceptual autoencoder pre-training",
        "adaptation/   self-supervised adaptation to the scan itself: a 2D refiner or fine-tuning from in-plane pairs",
        "|           for thick-slice MRI, fine-tuning on extra simulated noise for CT",
        "inference/    Restorer (model + intensity mapping + sliding window -> Volume on the output grid), sliding",
        "|           window engine (output scale, blending, precision, stitch device), output-grid affines, cohorts",
        "evaluation/   protocols, metrics (PSNR, 3D SSIM, RMSE, MAE, bias/noise in uniform regions), classical",
        "|           baselines, bootstrap intervals, reports, fidelity checks, PNG previews",
        "tasks.py      the tasks as data: modality, intensity mapping (fixed or per-volume), default networks, output",
        "scale, default model",
        "config.py     typed training config from YAML, validated, with key.path=value overrides and generated docs",
        "models/       ModelCard, model files (safetensors + JSON card), shipped models, safe loading",
        "networks/     generators (red-cnn-3d, cpce-3d, unet-3d, mdcsrn-3d), critics and critic_input, receptive",
        "fields, registry (name -> class, built from a declarative spec)",
        "losses/       Wasserstein critic and generator terms, gradient penalty, content losses (L1, MSE, SSIM 3D),",
        "offline perceptual losses, CompositeLoss",
        "transforms/   deterministic degradations and their seeded random samplers, as array and MONAI dictionary",
        "transforms: LowDoseCT, ThickSliceMRI, KSpaceTruncationMRI, RicianNoiseMRI; Restored/Restoredd",
        "run a Restorer on MONAI MetaTensors",
        "physics/      parallel- and fan-beam projectors (Joseph's method, sparse backend), FBP, Poisson/electronic",
        "noise and dose-reduction noise insertion, HU <-> mu; MRI thick slices, k-space truncation, Rician",
        "noise",
        "io/           Volume; NIfTI, DICOM series or file, NRRD/MHA reading; NIfTI/NRRD/MHA and derived DICOM series",
        "writing; atomic output",
    ],
    "docs/guide-ldct.md": [
        "patient,low,high",
        "L067,L067/quarter_dose,L067/full_dose",
        "L096,L096/quarter_dose,L096/full_dose",
    ],
    "docs/simulation.md": [
        "var_d = (d lambda + sigma_e^2) / (d lambda)^2",
        "var_d - var_1 = (1/d - 1) / lambda + sigma_e^2 (1/d^2 - 1) / lambda^2",
        "f(x, y) = 2 pi / n_views * sum over views of  Q_beta(gamma') / L^2",
        "Q_beta(gamma) = a * sum over n of  R_beta(n a) D cos(n a) g(gamma - n a)",
        "g(n a) = 1 / (8 a^2)            for n = 0",
        "= 0                      for even n",
        "= -1 / (2 pi^2 sin^2(n a))  for odd n",
    ],
    "docs/training.md": [
        "patient,low,high",
        "L067,L067/quarter_dose,L067/full_dose",
        "L096,L096/quarter_dose,L096/full_dose",
        "root/",
        "L067/full_1mm/*.dcm         root/L096/*.CT.FD.*.IMA   (files of two series mixed in one folder)",
        "L067/quarter_1mm/*.dcm      root/L096/*.CT.QD.*.IMA",
    ],
}

# Lines that need real volumes from a Debian or npm package, by doc file. The suite runs offline and downloads
# nothing, so it lists these lines instead of running them; scripts/train_default_models.sh runs them.
EXTERNAL_DATA_LINES: dict[str, list[str]] = {
    "docs/adaptation.md": [
        "medgan infer --task mri-sr work/mri-eval/colin27_thick_4mm.nii.gz -o colin27_adapted.nii.gz --adapt "
        "--adapt-minutes 10",
        "medgan evaluate --reference work/mri-eval/colin27_reference_1mm.nii.gz --candidate colin27_adapted.nii.gz "
        "--input work/mri-eval/colin27_thick_4mm.nii.gz --protocol mri-brain -o eval-colin27-adapted",
        "python scripts/probe_smore_2d.py work/mri-eval/colin27_thick_4mm.nii.gz "
        "work/mri-eval/colin27_reference_1mm.nii.gz --minutes 10",
    ],
    "docs/models.md": [
        "apt-get download mricron-data && dpkg -x mricron-data_*.deb mricron",
        "python scripts/prepare_mri_samples.py --colin27 mricron/usr/share/mricron/templates/ch2.nii.gz",
        "medgan evaluate --model mri-sr-default --pairs configs/eval/mri-sr-colin27.csv --protocol mri-brain "
        "--baselines linear,bspline -o docs/evaluation/mri-sr-default-mri-sr-colin27",
    ],
}
EXTERNAL_SOURCES = ("apt-get download", "dpkg -x", "npm pack", "--brainbrowser", "--invesalius", "colin27")

# Documented arguments replaced by smaller values of the same options, with the reason.
SMALLER_ARGUMENTS = {
    "python scripts/bench_infer.py --shape 64 192 192 --no-reference": (
        ["python", "scripts/bench_infer.py", "--shape", "16", "64", "64", "--no-reference"],
        "the documented shape took 60 s on the 2-core machine",
    ),
    "python scripts/probe_smore_2d.py work/mri-eval/thick_8mm.nii.gz work/mri-eval/reference_2mm.nii.gz "
    "--minutes 10 --threads 1": (
        ["python", "scripts/probe_smore_2d.py", "work/mri-eval/thick_8mm.nii.gz",
         "work/mri-eval/reference_2mm.nii.gz", "--minutes", "0.02", "--threads", "1"],
        "the documented run trains for 10 minutes",
    ),
}

OPTIONAL_BASELINES = ("bm3d", "bm4d")

COMPLETION_MARKERS = {
    "bash_source": "complete -o nosort -F _medgan_completion medgan",
    "zsh_source": "compdef _medgan_completion medgan",
    "fish_source": "complete --no-files --command medgan",
}


# --- Sorting the doc lines into steps -------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One command of a shell line: ``kind`` is how it runs and ``words`` its words as the shell splits them."""

    kind: str
    words: tuple[str, ...]


@dataclass(frozen=True)
class DocLine:
    doc: str
    line: int
    text: str
    steps: tuple[Step, ...]

    @property
    def where(self) -> str:
        return f"{self.doc}:{self.line}"

    @property
    def runs(self) -> bool:
        return any(step.kind != "setup" for step in self.steps)


def classify(segment: list[str]) -> Step | None:
    """Return how one command of a shell line runs, or None when it is neither a known command nor set-up."""
    words = tuple(segment)
    if " ".join(segment) in SETUP_SEGMENTS:
        return Step("setup", words)
    if segment[0] in ("medgan", "$"):
        args = medgan_args(segment)
        return None if args is None else Step("medgan", tuple(args))
    if segment[0] == "torchrun" and medgan_args(segment) is not None:
        return Step("torchrun", words)
    python_at = 3 if segment[:2] == ["nice", "-n"] else 0
    if segment[python_at:python_at + 1] == ["python"] and len(segment) > python_at + 1:
        if segment[python_at + 1].startswith("scripts/"):
            return Step("script", words)
        if segment[python_at + 1:python_at + 4] == ["-m", "monai.bundle", "run"]:
            return Step("monai-bundle", words)
    if segment[0].startswith("_MEDGAN_COMPLETE=") and segment[0].split("=", 1)[1] in COMPLETION_MARKERS:
        return Step("completion", words)
    return None


def plan_doc(path: Path) -> tuple[list[DocLine], list[str]]:
    """Return the doc's shell lines with their steps, and a description of each line that fits no step."""
    doc = str(path.relative_to(REPO))
    planned, unplanned = [], []
    for line, text in shell_lines(path):
        if text in NOT_COMMANDS.get(doc, []) or text in EXTERNAL_DATA_LINES.get(doc, []):
            planned.append(DocLine(doc, line, text, ()))
            continue
        try:
            segments = split_segments(split_tokens(text.removeprefix("$ ")))
        except ValueError as error:
            unplanned.append(f"{doc}:{line}: {text!r} cannot be split into words: {error}")
            continue
        steps = [classify(segment) for segment in segments]
        unknown = [" ".join(segment) for segment, step in zip(segments, steps) if step is None]
        if unknown or not steps:
            unplanned.append(f"{doc}:{line}: {text!r} (not a known command: {unknown})")
            continue
        planned.append(DocLine(doc, line, text, tuple(steps)))
    return planned, unplanned


PLANS = {str(path.relative_to(REPO)): plan_doc(path) for path in DOC_FILES}
RUN_LINES = [doc_line for planned, _ in PLANS.values() for doc_line in planned if doc_line.runs]


def test_every_shell_line_run_or_excluded():
    unplanned = [entry for _, unknown in PLANS.values() for entry in unknown]

    assert not unplanned, ("shell lines that this module neither runs nor lists in SETUP_SEGMENTS or NOT_COMMANDS:\n"
                           + "\n".join(unplanned))


def test_excluded_lines_exist_in_docs():
    doc_texts = {doc: {doc_line.text for doc_line in planned} for doc, (planned, _) in PLANS.items()}
    stale = [f"{doc}: {text!r}" for listing in (NOT_COMMANDS, EXTERNAL_DATA_LINES) for doc, texts in listing.items()
             for text in texts if text not in doc_texts.get(doc, set())]
    segments = {" ".join(step.words) for planned, _ in PLANS.values() for doc_line in planned
                for step in doc_line.steps if step.kind == "setup"}

    assert not stale, "NOT_COMMANDS or EXTERNAL_DATA_LINES entries no doc shows:\n" + "\n".join(stale)
    assert segments == set(SETUP_SEGMENTS)


def test_excluded_lines_hold_no_command():
    commands = [f"{doc}: {text!r}" for doc, texts in NOT_COMMANDS.items() for text in texts
                if MEDGAN_WORD.search(text) or text.split()[0] in ("python", "python3", "torchrun", "pip", "nice")]

    assert not commands


def test_external_data_lines_need_external_data():
    unrelated = [f"{doc}: {text!r}" for doc, texts in EXTERNAL_DATA_LINES.items() for text in texts
                 if not any(source in text for source in EXTERNAL_SOURCES)]

    assert not unrelated, "EXTERNAL_DATA_LINES entries that name no Debian or npm data:\n" + "\n".join(unrelated)


def test_unknown_shell_line_reported(tmp_path, monkeypatch):
    doc = tmp_path / "page.md"
    doc.write_text("# Page\n\n```bash\nmedgan models\nmake install && medgan --version\n```\n\n```\nq = f(x')\n```\n",
                   encoding="utf-8")
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)

    planned, unplanned = plan_doc(doc)

    assert [doc_line.line for doc_line in planned] == [4]
    assert len(unplanned) == 2
    assert unplanned[0].startswith("page.md:5: 'make install && medgan --version'")
    assert unplanned[1].startswith("page.md:9:")


def test_docs_run_many_commands():
    medgan_steps = [step for doc_line in RUN_LINES for step in doc_line.steps if step.kind == "medgan"]
    kinds = {step.kind for doc_line in RUN_LINES for step in doc_line.steps}

    assert len(medgan_steps) >= 60
    assert kinds == {"setup", "medgan", "torchrun", "script", "monai-bundle", "completion"}


# --- The sandbox ----------------------------------------------------------------------------------------------


def set_key(config: dict, dotted: str, value: Any) -> None:
    """Set an existing key of a nested config dict. A key the config lacks is an error, so the keys stay valid."""
    *parents, last = dotted.split(".")
    node = config
    for part in parents:
        node = node[part]
    assert last in node, f"{dotted} is not a key of the config"
    node[last] = value


def shrink_config(name: str, target: Path, changes: dict[str, Any]) -> None:
    config = yaml.safe_load((REPO / "configs" / name).read_text(encoding="utf-8"))
    for dotted, value in changes.items():
        set_key(config, dotted, value)
    (target / name).write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")


TINY_TRAIN = {"train.steps": TRAIN_MAX_STEPS, "train.batch_size": 2, "train.warmup_steps": 1}
TINY_CRITIC = {"critic.kwargs": {"in_channels": 2, "channels": 4, "n_layers": 2}}


def write_configs(root: Path) -> None:
    configs = root / "configs"
    shutil.copytree(REPO / "configs", configs)
    shrink_config("ldct.yaml", configs, {
        "data.volumes": ["../work/tiny-ct/train"], "data.validation_volumes": ["../work/tiny-ct/validation"],
        "data.patch_size": [4, 16, 16], "data.n_views": 48, "data.noise_bank_size": 2,
        "generator.kwargs": {"channels": 8, "depth": 2}, **TINY_CRITIC, **TINY_TRAIN,
        "train.validate_every": TRAIN_MAX_STEPS, "train.checkpoint_every": TRAIN_MAX_STEPS,
        "train.preview_every": TRAIN_MAX_STEPS,
    })
    shrink_config("mri_sr.yaml", configs, {
        "data.volumes": ["../work/tiny-mri/train"], "data.validation_volumes": ["../work/tiny-mri/validation"],
        "data.patch_size": [8, 16, 16],
        "generator.kwargs": {"scale": [4, 1, 1], "channels": 8, "growth_rate": 4, "n_blocks": 1, "n_units": 2},
        **TINY_CRITIC, **TINY_TRAIN, "train.n_critic": 1,
        "train.validate_every": TRAIN_MAX_STEPS, "train.checkpoint_every": TRAIN_MAX_STEPS, "train.log_every": 1,
    })
    shrink_config("paired-example.yaml", configs, {"data.patch_size": [4, 16, 16], **TINY_TRAIN, "train.n_critic": 2})
    pairs = "patient,low,high\n" + "".join(
        f"P{n},../work/tiny-ct/paired/p{n}_low.nii.gz,../work/tiny-ct/paired/p{n}_high.nii.gz\n" for n in (1, 2))
    (configs / "pairs.csv").write_text(pairs, encoding="utf-8")
    (configs / "validation_pairs.csv").write_text(
        "patient,low,high\nP3,../work/tiny-ct/paired/p3_low.nii.gz,../work/tiny-ct/paired/p3_high.nii.gz\n",
        encoding="utf-8")
    my_config = {
        "task": "ldct", "seed": 0, "run_dir": "runs/my",
        "data": {"mode": "simulate", "volumes": ["work/tiny-ct/train"], "validation_volumes": ["work/tiny-ct/validation"],
                 "patch_size": [4, 16, 16], "n_views": 48, "simulation": "noise-bank", "noise_bank_size": 2},
        "generator": {"name": "red-cnn-3d", "kwargs": {"channels": 8, "depth": 2}},
        "critic": {"name": "patch-critic-3d", "kwargs": TINY_CRITIC["critic.kwargs"]},
        "train": {"steps": TRAIN_MAX_STEPS, "batch_size": 2, "warmup_steps": 1, "validate_every": TRAIN_MAX_STEPS,
                  "checkpoint_every": TRAIN_MAX_STEPS},
    }
    (root / "my.yaml").write_text(yaml.safe_dump(my_config, sort_keys=False), encoding="utf-8")


def save(volume: Volume, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_volume(volume, path)


def crop(volume: Volume, start: tuple[int, int, int], size: tuple[int, int, int]) -> Volume:
    """Return the block of ``size`` voxels at voxel ``start``, with the affine that keeps its world position."""
    (i, j, k), (ni, nj, nk) = start, size
    affine = volume.affine.copy()
    affine[:3, 3] = (volume.affine @ np.array([i, j, k, 1.0]))[:3]
    array = np.ascontiguousarray(volume.array[i:i + ni, j:j + nj, k:k + nk], dtype=np.float32)
    return Volume(array, affine, volume.modality)


def reverse_slices(volume: Volume) -> Volume:
    """Return the volume with its slice order reversed and the affine that keeps every voxel's world position."""
    affine = volume.affine.copy()
    affine[:3, 2] = -volume.affine[:3, 2]
    affine[:3, 3] = volume.affine[:3, 3] + volume.affine[:3, 2] * (volume.shape[2] - 1)
    return Volume(np.ascontiguousarray(volume.array[:, :, ::-1]), affine, "MR")


def ct_stack(slice_volume: Volume, count: int) -> Volume:
    """Stack ``count`` copies of a one-slice volume, each shifted by one more row, into a volume of ``count`` slices."""
    slices = [np.roll(slice_volume.array[:, :, 0], shift, axis=1) for shift in range(count)]
    return Volume(np.stack(slices, axis=2).astype(np.float32), slice_volume.affine.copy(), "CT")


def write_dicom_copy(volume: Volume, folder: Path, source_file: str, series_uid: str | None = None) -> Volume:
    """Write ``volume`` as a DICOM series with pydicom's test file ``source_file`` as the source header.

    Returns the series as medgan reads it back, after checking that it keeps the volume's grid.
    """
    import pydicom
    from pydicom.data import get_testdata_file

    from medgan.io.dicom_write import write_dicom_series

    header = pydicom.dcmread(get_testdata_file(source_file, download=False))
    header.Rows, header.Columns = volume.shape[1], volume.shape[0]
    header.SliceThickness = float(abs(volume.spacing_mm[2]))
    write_dicom_series(volume, folder, reference=[header])
    if series_uid is not None:
        for path in folder.iterdir():
            dataset = pydicom.dcmread(path)
            dataset.SeriesInstanceUID = series_uid
            dataset.save_as(path, enforce_file_format=True)
    written = read_volume(folder)
    assert written.shape == volume.shape
    np.testing.assert_allclose(written.affine, volume.affine, atol=1e-4)
    return written


def write_ct_inputs(root: Path) -> None:
    full_slice = read_volume(SAMPLES / "ct_small.nii.gz")
    low_slice = read_volume(SAMPLES / "ct_small_quarter_dose.nii.gz")
    shutil.copy(SAMPLES / "ct_small_quarter_dose.nii.gz", root / "scan.nii.gz")

    low = write_dicom_copy(ct_stack(low_slice, 3), root / "dicom_folder", "CT_small.dcm", SERIES_UID)
    low.metadata = {}
    save(low, root / "low.nii.gz")
    save(Volume(ct_stack(full_slice, 3).array, low.affine, "CT"), root / "full.nii.gz")
    save(Volume(gaussian_filter(low.array, (1.0, 1.0, 0.0)), low.affine, "CT"), root / "restored.nii.gz")
    (root / "test.csv").write_text("id,input,reference\n"
                                   "ct_small,medgan/data/ct_small_quarter_dose.nii.gz,medgan/data/ct_small.nii.gz\n",
                                   encoding="utf-8")

    tiny = root / "work" / "tiny-ct"
    full_stack, low_stack = ct_stack(full_slice, 4), ct_stack(low_slice, 4)
    save(crop(full_stack, (32, 32, 0), (64, 64, 4)), tiny / "train" / "ct_train.nii.gz")
    save(crop(full_stack, (40, 24, 0), (48, 48, 2)), tiny / "validation" / "ct_validation.nii.gz")
    for number, start in ((1, (16, 16, 0)), (2, (48, 48, 0)), (3, (32, 40, 0))):
        save(crop(low_stack, start, (48, 48, 4)), tiny / "paired" / f"p{number}_low.nii.gz")
        save(crop(full_stack, start, (48, 48, 4)), tiny / "paired" / f"p{number}_high.nii.gz")


def mni152(resolution_mm: int) -> Volume:
    from nilearn.datasets import load_mni152_template

    image = load_mni152_template(resolution=resolution_mm)
    return Volume(np.asarray(image.get_fdata(), dtype=np.float32), image.affine.astype(np.float64), "MR")


def load_script(root: Path, name: str) -> dict[str, Any]:
    """Return the globals of a sandbox script, loaded without running its main()."""
    return runpy.run_path(str(root / "scripts" / name), run_name="docs_sandbox")


def write_mri_inputs(root: Path) -> None:
    template_2mm = mni152(2)
    save(crop(template_2mm, (30, 35, 30), (40, 48, 32)), root / "t1.nii.gz")
    # DICOM readers return a right-handed grid, so thick.nii.gz is the sample in the slice order its MR series
    # reads back with. Then fine.nii.gz fits reference_2mm.nii.gz whichever of the two it was restored from.
    thick = reverse_slices(read_volume(SAMPLES / "mri_thick_slices.nii.gz"))
    save(thick, root / "thick.nii.gz")
    write_dicom_copy(thick, root / "mr_dicom_folder", "MR_small.dcm")

    tiny = root / "work" / "tiny-mri"
    save(crop(template_2mm, (34, 40, 30), (32, 32, 32)), tiny / "train" / "mri_train.nii.gz")
    save(crop(template_2mm, (38, 44, 50), (24, 24, 16)), tiny / "validation" / "mri_validation.nii.gz")

    samples = load_script(root, "prepare_mri_samples.py")
    reference, thick_8mm = samples["thick_slice_pair"](samples["read_source"]())
    evaluation = root / "work" / "mri-eval"
    save(reference, evaluation / "reference_2mm.nii.gz")
    save(thick_8mm, evaluation / "thick_8mm.nii.gz")
    save(reverse_slices(reference), root / "reference_2mm.nii.gz")

    from medgan.transforms import ThickSliceMRI

    slab = crop(mni152(1), (78, 90, 140), (40, 48, 16))
    transform = ThickSliceMRI(4.0, slice_axis=2, profile="boxcar")
    thick_array = transform(torch.from_numpy(slab.array.astype(np.float64)), spacing_mm=slab.spacing_mm)
    slab_thick = Volume(thick_array.numpy().astype(np.float32), transform.output_affine(slab.affine, slab.shape[2]),
                        "MR")
    save(slab, evaluation / "mni152_validation_reference.nii.gz")
    save(slab_thick, evaluation / "mni152_validation_thick4mm.nii.gz")


def write_scans(root: Path, kind: str) -> None:
    """Write the cohort ``scans/`` and the list file ``scans.txt``: two CT volumes, or two thick-slice MR volumes."""
    scans = root / "scans"
    scans.mkdir()
    if kind == "mri":
        thick = read_volume(SAMPLES / "mri_thick_slices.nii.gz")
        shutil.copy(SAMPLES / "mri_thick_slices.nii.gz", scans / "thick_a.nii.gz")
        save(crop(thick, (4, 4, 0), (24, 32, 6)), scans / "thick_b.nii.gz")
    else:
        shutil.copy(SAMPLES / "ct_small_quarter_dose.nii.gz", scans / "ct_a.nii.gz")
        shutil.copy(root / "low.nii.gz", scans / "ct_b.nii.gz")
    names = sorted(path.name for path in scans.iterdir())
    (root / "scans.txt").write_text("".join(f"scans/{name}\n" for name in names), encoding="utf-8")


def build_assets(root: Path) -> None:
    """Write everything the sandboxes share into ``root``."""
    # medgan/ imports as the package (python -m medgan runs from the sandbox), but data/ is a folder of its own,
    # so a script that writes there cannot replace a shipped sample.
    package = root / "medgan"
    package.mkdir()
    for entry in (REPO / "medgan").iterdir():
        if entry.name not in ("data", "__pycache__"):
            (package / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    (package / "data").mkdir()
    for sample in SAMPLES.iterdir():
        if sample.name != "__pycache__":
            (package / "data" / sample.name).symlink_to(sample)
    shutil.copytree(REPO / "scripts", root / "scripts", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "docs" / "evaluation").mkdir(parents=True)
    (root / "home" / ".config" / "fish" / "completions").mkdir(parents=True)
    write_configs(root)
    write_ct_inputs(root)
    write_mri_inputs(root)

    result = invoke(["train", "--config", str(root / "configs" / "ldct.yaml"), "--run-dir", str(root / "runs" / "ldct")])
    assert result.exit_code == 0, describe_result(["train", "--run-dir", "runs/ldct"], result)


@dataclass
class Sandbox:
    """The folder where one doc file's commands run, and the lines of that file already run."""

    root: Path
    doc: str
    done: set[int] = field(default_factory=set)


def make_sandbox(assets: Path, root: Path, doc: str) -> Sandbox:
    shutil.copytree(assets, root, symlinks=True)
    write_scans(root, "mri" if doc == "docs/guide-mri-sr.md" else "ct")
    if doc == "docs/models.md":
        # The page runs scripts/prepare_mri_samples.py, which writes these files and never replaces one.
        (root / "medgan" / "data" / "mri_thick_slices.nii.gz").unlink()
        for name in ("reference_2mm.nii.gz", "thick_8mm.nii.gz"):
            (root / "work" / "mri-eval" / name).unlink()
    return Sandbox(root, doc)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def sandboxes(tmp_path_factory, one_torch_thread):
    """Return a function that gives the sandbox of a doc file, made on first use from assets built once."""
    assets = tmp_path_factory.mktemp("docs-assets")
    build_assets(assets)
    made: dict[str, Sandbox] = {}

    def sandbox_for(doc: str) -> Sandbox:
        if doc not in made:
            name = doc.replace("/", "-").removesuffix(".md")
            made[doc] = make_sandbox(assets, tmp_path_factory.mktemp(name) / "sandbox", doc)
        return made[doc]

    return sandbox_for


# --- Step caps ------------------------------------------------------------------------------------------------


@pytest.fixture
def step_caps(monkeypatch):
    """Cap training at TRAIN_MAX_STEPS steps (a resumed run RESUME_EXTRA_STEPS past its checkpoint) and adaptation
    at ADAPT_MAX_STEPS steps."""
    import medgan.adaptation
    import medgan.training
    from medgan.training.checkpoints import load_checkpoint

    build_trainer = medgan.training.build_trainer

    def capped_build_trainer(config, run_dir, *, resume=False):
        if resume:
            config.train.steps = int(load_checkpoint(run_dir)["step"]) + RESUME_EXTRA_STEPS
        else:
            config.train.steps = min(config.train.steps, TRAIN_MAX_STEPS)
        return build_trainer(config, run_dir, resume=resume)

    monkeypatch.setattr(medgan.training, "build_trainer", capped_build_trainer)
    for name in ("adapt_denoiser", "adapt_super_resolution", "refine_super_resolution"):
        adapt = getattr(medgan.adaptation, name)
        monkeypatch.setattr(medgan.adaptation, name, functools.partial(adapt, max_steps=ADAPT_MAX_STEPS))


# --- Running medgan -------------------------------------------------------------------------------------------


def invoke(args: list[str]) -> Result:
    """Run ``medgan ARGS`` in this process, then restore torch's thread count, which ``--threads`` changes."""
    threads = torch.get_num_threads()
    try:
        return CliRunner().invoke(cli, list(args), prog_name="medgan", catch_exceptions=True)
    finally:
        torch.set_num_threads(threads)


def describe_result(args: list[str], result: Result) -> str:
    text = f"medgan {' '.join(args)} exited with {result.exit_code}:\n{result.output}"
    if result.exc_info is not None and not isinstance(result.exception, SystemExit):
        text += "".join(traceback.format_exception(*result.exc_info))
    return text


def parse_medgan(args: tuple[str, ...]) -> tuple[str, dict[str, Any]]:
    """Return the subcommand name and its parameter values as click converts them, without running it."""
    if args[:1] == ("--version",):
        return "--version", {}
    group_ctx = cli.make_context("medgan", list(args), resilient_parsing=True)
    rest = [*getattr(group_ctx, "_protected_args", []), *group_ctx.args]
    name, command, sub_args = cli.resolve_command(group_ctx, rest)
    ctx = command.make_context(name, list(sub_args), parent=group_ctx, resilient_parsing=True)
    return name, ctx.params


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def stem_of(output: Path) -> str:
    suffix = output_suffix(output)
    return output.name[: len(output.name) - len(suffix)] if suffix else output.name


def train_run_dir(params: dict[str, Any]) -> Path:
    from medgan.config import load_config

    if params.get("run_dir") is not None:
        return params["run_dir"]
    return Path(load_config(params["config_path"], []).run_dir)


def remove_earlier_outputs(name: str, params: dict[str, Any]) -> None:
    """Remove the outputs that an earlier line of the page wrote under the name this command writes."""
    if name in ("infer", "simulate") and params.get("output") is not None and params["output"].exists():
        output = params["output"]
        for path in (output, output.with_name(output.name + ".json"), output.with_name(f"{stem_of(output)}.json"),
                     output.with_name(f"{stem_of(output)}_preview.png")):
            remove(path)
    elif name == "evaluate" and params.get("output_dir") is not None:
        remove(params["output_dir"])
    elif name == "export" and params["output"].exists():
        card = params["output"].with_suffix(".json")
        remove(params["output"])
        if card != Path(params["source"]).with_suffix(".json"):
            remove(card)
    elif name == "train" and not params["resume"]:
        run_dir = train_run_dir(params)
        if (run_dir / "checkpoints").exists():
            remove(run_dir)


def cuda_requested(args: tuple[str, ...]) -> bool:
    return any(word == "--device" and value.startswith("cuda") for word, value in zip(args, args[1:]))


def run_medgan(args: tuple[str, ...], where: str) -> None:
    name, params = parse_medgan(args)
    remove_earlier_outputs(name, params)
    result = invoke(list(args))
    if cuda_requested(args) and not torch.cuda.is_available():
        assert result.exit_code == 2, f"{where}: {describe_result(list(args), result)}"
        assert "--device" in result.output, f"{where}: {result.output}"
        assert "'cuda'" in result.output, f"{where}: {result.output}"
        assert "CUDA is not available" in result.output, f"{where}: {result.output}"
        return
    assert result.exit_code == 0, f"{where}: {describe_result(list(args), result)}"
    if "--help" in args:
        assert f"Usage: medgan {name}" in result.output, where
        return
    CHECKS[name](params, result, where)


# --- Checks of the outputs ------------------------------------------------------------------------------------


def expected_grid(source: Volume, scale: tuple[int, int, int]) -> tuple[tuple[int, ...], np.ndarray]:
    """Return the shape and affine of ``source`` restored with output ``scale`` along i, j, k.

    Along a scaled axis the spacing is divided by the scale and output voxel m sits at input voxel coordinate
    (m + 0.5) / scale - 0.5, so the physical extent stays the same.
    """
    shape = tuple(size * factor for size, factor in zip(source.shape, scale))
    affine = source.affine.copy()
    for axis, factor in enumerate(scale):
        affine[:3, axis] = source.affine[:3, axis] / factor
        affine[:3, 3] += source.affine[:3, axis] * (0.5 / factor - 0.5)
    return shape, affine


def model_task(params: dict[str, Any]) -> str:
    model = params.get("model_name")
    if model is None:
        return params["task"]
    card = Path(model).with_suffix(".json") if model.endswith(".safetensors") else SHIPPED_MODELS / f"{model}.json"
    return json.loads(card.read_text(encoding="utf-8"))["task"]


def check_restored(source: Volume, output: Path, record: dict[str, Any], task: str, where: str) -> None:
    scale = (1, 1, 4) if task == "mri-sr" else (1, 1, 1)
    restored = read_volume(output)
    shape, affine = expected_grid(source, scale)

    assert tuple(record["output_scale_ijk"]) == scale, where
    assert record["model"]["task"] == task, where
    assert restored.shape == shape, where
    np.testing.assert_allclose(restored.affine, affine, atol=1e-4, err_msg=where)
    assert np.isfinite(restored.array).all(), where


def check_infer(params: dict[str, Any], result: Result, where: str) -> None:
    from medgan.inference.cohort import is_cohort_input, list_cohort, output_name

    scan, output, task = params["scan"], params["output"], model_task(params)
    if is_cohort_input(scan):
        entries = list_cohort(scan)
        assert f"{len(entries)} done, 0 skipped, 0 failed" in result.output, f"{where}: {result.output}"
        for entry in entries:
            restored = output / output_name(entry.path, "nifti")
            record = json.loads(sidecar_path(restored).read_text(encoding="utf-8"))
            check_restored(read_volume(entry.path), restored, record, task, where)
        return

    dicom = params["output_format"] == "dicom"
    sidecar = output.with_name(output.name + ".json") if dicom else sidecar_path(output)
    record = json.loads(sidecar.read_text(encoding="utf-8"))
    source = read_volume(scan, series_uid=params["series_uid"], resample_z=params["resample_z"])
    check_restored(source, output, record, task, where)
    if dicom:
        assert read_volume(output).metadata["format"] == "dicom", where
    if not params["no_preview"]:
        assert output.with_name(f"{stem_of(output)}_preview.png").is_file(), where
    if params["series_uid"] is not None:
        assert record["series_uid"] == params["series_uid"], where
    if not params["data_consistency"]:
        assert record["data_consistency"] is False, where
    if params["adapt"]:
        adaptation = record["adaptation"]
        assert adaptation["stopped_by"] == "max_steps", where
        assert adaptation["steps"] == ADAPT_MAX_STEPS, where
        assert adaptation["budget_minutes"] == params["adapt_minutes"], where


def check_simulate(params: dict[str, Any], result: Result, where: str) -> None:
    source = read_volume(params["scan"], series_uid=params["series_uid"])
    simulated = read_volume(params["output"])
    record = json.loads(sidecar_path(params["output"]).read_text(encoding="utf-8"))

    assert record, where
    assert np.isfinite(simulated.array).all(), where
    if params["task"] == "ldct":
        assert simulated.shape == source.shape, where
        np.testing.assert_allclose(simulated.affine, source.affine, atol=1e-4, err_msg=where)
    else:
        assert simulated.shape[:2] == source.shape[:2], where
        np.testing.assert_allclose(simulated.spacing_mm[2], params["slice_thickness_mm"], rtol=1e-4, err_msg=where)


def check_evaluate(params: dict[str, Any], result: Result, where: str) -> None:
    output_dir = params["output_dir"]
    report = json.loads((output_dir / "evaluation.json").read_text(encoding="utf-8"))
    methods = {row["method"] for row in report["rows"]}

    assert (output_dir / "evaluation.md").is_file(), where
    assert (output_dir / "psnr.png").is_file(), where
    assert report["protocol"]["name"] == params["protocol_name"], where
    assert ("candidate" if params["candidate"] is not None else "model") in methods, where
    if params["protocol_name"] == "mri-brain" and params["input_path"] is not None:
        assert all("dc_relative_rmse" in row for row in report["rows"] if row["method"] == "candidate"), where
    elif params["protocol_name"] != "mri-brain":
        assert "input" in methods, where
    for baseline in filter(None, (params["baselines_option"] or "").split(",")):
        # bm3d and bm4d are skipped with a logged note when their package is missing.
        if baseline not in OPTIONAL_BASELINES or importlib.util.find_spec(baseline) is not None:
            assert baseline in methods, f"{where}: {baseline} missing from {methods}"
    for row in report["rows"]:
        assert np.isfinite(row["psnr_db"]), f"{where}: {row}"


def check_train(params: dict[str, Any], result: Result, where: str) -> None:
    from medgan.training.checkpoints import load_checkpoint

    run_dir = train_run_dir(params)
    config = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
    steps = config["train"]["steps"]
    log_rows = (run_dir / "log.csv").read_text(encoding="utf-8").splitlines()[1:]

    assert load_checkpoint(run_dir)["step"] == steps, where
    assert len(log_rows) == steps, where
    assert "started" in (run_dir / "run.log").read_text(encoding="utf-8"), where
    if params["resume"]:
        assert f"resumed at step {steps - RESUME_EXTRA_STEPS}" in (run_dir / "run.log").read_text(encoding="utf-8")
    if params["task"] is not None:
        assert config["task"] == params["task"], where
    for override in params["overrides"]:
        key, value = override.split("=", 1)
        if key != "train.steps":
            section, name = key.split(".")
            assert config[section][name] == yaml.safe_load(value), f"{where}: {key}"


def check_export(params: dict[str, Any], result: Result, where: str) -> None:
    output, output_format = params["output"], params["output_format"]
    if output_format is None:
        card = json.loads(output.with_suffix(".json").read_text(encoding="utf-8"))
        restorer = medgan.load_model(str(output), device="cpu")
        assert restorer.card.task == card["task"], where
        assert params["training_data"] in card["training_data"], where
        return
    if output_format == "monai-bundle":
        for part in ("configs/inference.json", "configs/metadata.json", "docs/medgan_card.json"):
            assert json.loads((output / part).read_text(encoding="utf-8")), f"{where}: {part}"
        assert any((output / "models").iterdir()), where
        return
    assert json.loads(output.with_suffix(".json").read_text(encoding="utf-8")), where
    if output_format == "torchscript":
        module = torch.jit.load(str(output))
        assert module(torch.zeros(1, 1, 4, 16, 16)).shape[:2] == (1, 1), where
    else:
        import onnx

        onnx.checker.check_model(onnx.load(str(output)))


def check_models(params: dict[str, Any], result: Result, where: str) -> None:
    if params.get("name"):
        assert json.loads(result.output)["name"] == params["name"], where
    else:
        assert "ldct-default" in result.output, where
        assert "mri-sr-default" in result.output, where


def check_version(params: dict[str, Any], result: Result, where: str) -> None:
    assert medgan.__version__ in result.output, where


CHECKS = {"infer": check_infer, "simulate": check_simulate, "evaluate": check_evaluate, "train": check_train,
          "export": check_export, "models": check_models, "--version": check_version}


# --- Running the other commands -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def subprocess_env(box: Sandbox) -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "HOME": str(box.root / "home"), "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PET_MASTER_PORT": str(free_port()),
            "PET_MASTER_ADDR": "127.0.0.1"}


def run_process(box: Sandbox, command: list[str], where: str, shell: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=box.root, env=subprocess_env(box), capture_output=True, text=True,
                          timeout=SUBPROCESS_TIMEOUT_S, shell=shell, executable="/bin/bash" if shell else None)


def process_output(process: subprocess.CompletedProcess) -> str:
    return f"exit code {process.returncode}\n--- stdout\n{process.stdout[-4000:]}\n--- stderr\n{process.stderr[-4000:]}"


def python_words(words: tuple[str, ...]) -> list[str]:
    """Return the words with the first ``python`` replaced by this interpreter."""
    replaced = list(words)
    replaced[replaced.index("python")] = sys.executable
    return replaced


def run_script(box: Sandbox, words: tuple[str, ...], where: str) -> None:
    documented = " ".join(words)
    if documented in SMALLER_ARGUMENTS:
        words = tuple(SMALLER_ARGUMENTS[documented][0])
    script = next(word for word in words if word.startswith("scripts/"))
    if script == "scripts/prepare_ldct_data.py" and importlib.util.find_spec("data_store") is None:
        pytest.skip(f"{where}: pydicom-data (import data_store) is not installed; pip install -e '.[recipe]'")

    process = run_process(box, python_words(words), where)
    assert process.returncode == 0, f"{where}: {' '.join(words)}\n{process_output(process)}"
    SCRIPT_CHECKS[script](box, words, process.stdout, where)


def check_prepare_ldct_data(box: Sandbox, words: tuple[str, ...], stdout: str, where: str) -> None:
    folder = box.root / words[words.index("scripts/prepare_ldct_data.py") + 1]
    depth = int(words[words.index("--depth") + 1])
    train = sorted((folder / "train").glob("*.nii.gz"))

    assert len(train) == 2, where
    assert list((folder / "validation").glob("*.nii.gz")), where
    for path in train:
        assert nib.load(path).shape[2] == depth, f"{where}: {path}"


def check_prepare_mri_data(box: Sandbox, words: tuple[str, ...], stdout: str, where: str) -> None:
    folder = box.root / words[words.index("scripts/prepare_mri_data.py") + 1]

    assert nib.load(folder / "train" / "mni152_t1_k000-123.nii.gz").shape[2] == 124, where
    assert nib.load(folder / "validation" / "mni152_t1_k132-188.nii.gz").shape[2] == 57, where


def check_prepare_mri_samples(box: Sandbox, words: tuple[str, ...], stdout: str, where: str) -> None:
    shipped = read_volume(SAMPLES / "mri_thick_slices.nii.gz")
    written = read_volume(box.root / "medgan" / "data" / "mri_thick_slices.nii.gz")
    reference = read_volume(box.root / "work" / "mri-eval" / "reference_2mm.nii.gz")
    thick = read_volume(box.root / "work" / "mri-eval" / "thick_8mm.nii.gz")

    assert not (box.root / "medgan" / "data" / "mri_thick_slices.nii.gz").is_symlink(), where
    np.testing.assert_array_equal(written.array, shipped.array, err_msg=where)
    np.testing.assert_allclose(written.affine, shipped.affine, atol=1e-6, err_msg=where)
    np.testing.assert_array_equal(thick.array, shipped.array, err_msg=where)
    assert reference.shape == (33, 41, 24), where


def check_bench_infer(box: Sandbox, words: tuple[str, ...], stdout: str, where: str) -> None:
    assert "convolution throughput" in stdout, f"{where}: {stdout}"
    assert "GFLOP/s" in stdout, f"{where}: {stdout}"


def check_bench_gan_step(box: Sandbox, words: tuple[str, ...], stdout: str, where: str) -> None:
    assert "GANTrainer.train_step" in stdout, f"{where}: {stdout}"
    assert "overhead" in stdout, f"{where}: {stdout}"


def check_probe_smore_2d(box: Sandbox, words: tuple[str, ...], stdout: str, where: str) -> None:
    # The held-out pair is the shipped sample and its reference, so B-spline scores as in docs/adaptation.md.
    assert "cubic B-spline: 19.98 dB" in stdout, f"{where}: {stdout}"
    assert "with data consistency" in stdout.splitlines()[-1], f"{where}: {stdout}"


SCRIPT_CHECKS = {
    "scripts/prepare_ldct_data.py": check_prepare_ldct_data,
    "scripts/prepare_mri_data.py": check_prepare_mri_data,
    "scripts/prepare_mri_samples.py": check_prepare_mri_samples,
    "scripts/bench_infer.py": check_bench_infer,
    "scripts/bench_gan_step.py": check_bench_gan_step,
    "scripts/probe_smore_2d.py": check_probe_smore_2d,
}


def run_monai_bundle(box: Sandbox, words: tuple[str, ...], where: str) -> None:
    bundle = box.root / BUNDLE_DIR
    assert (bundle / "configs" / "inference.json").is_file(), f"{where}: {BUNDLE_DIR} was not exported earlier"
    command = [word.replace("DIR", BUNDLE_DIR) for word in python_words(words)]
    output_dir = Path(command[command.index("--output_dir") + 1])
    remove(box.root / output_dir)

    process = run_process(box, command, where)
    assert process.returncode == 0, f"{where}: {' '.join(command)}\n{process_output(process)}"
    for scan in sorted((box.root / command[command.index("--dataset_dir") + 1]).glob("*.nii.gz")):
        restored = nib.load(box.root / output_dir / scan.name.replace(".nii.gz", "_restored.nii.gz"))
        # MONAI's SaveImaged drops trailing axes of length 1.
        assert restored.shape == tuple(size for size in nib.load(scan).shape if size > 1) or \
            restored.shape == nib.load(scan).shape, where
        assert np.isfinite(np.asarray(restored.dataobj)).all(), where


def run_completion(box: Sandbox, text: str, words: tuple[str, ...], where: str) -> None:
    process = run_process(box, text, where, shell=True)
    assert process.returncode == 0, f"{where}: {text}\n{process_output(process)}"
    target = box.root / "home" / words[words.index(">") + 1].removeprefix("~/")
    marker = COMPLETION_MARKERS[words[0].split("=", 1)[1]]

    assert marker in target.read_text(encoding="utf-8"), where


def run_torchrun(box: Sandbox, words: tuple[str, ...], where: str) -> None:
    args = tuple(medgan_args(list(words)))
    name, params = parse_medgan(args)
    remove_earlier_outputs(name, params)
    command = [str(Path(sys.executable).parent / "torchrun"), *words[1:]]

    process = run_process(box, command, where)
    if cuda_requested(args) and not torch.cuda.is_available():
        assert process.returncode != 0, f"{where}: {process_output(process)}"
        assert "CUDA is not available" in process.stdout + process.stderr, f"{where}: {process_output(process)}"
        return
    assert process.returncode == 0, f"{where}: {' '.join(words)}\n{process_output(process)}"
    if name == "train":
        run_dir = box.root / train_run_dir(params)
        processes = int(words[words.index("--nproc-per-node") + 1])
        assert f"world size: {processes}" in (run_dir / "run.log").read_text(encoding="utf-8"), where
        assert (run_dir / "checkpoints" / "latest.pt").is_file(), where


def run_line(box: Sandbox, doc_line: DocLine) -> None:
    box.done.add(doc_line.line)
    for step in doc_line.steps:
        if step.kind == "medgan":
            run_medgan(step.words, doc_line.where)
        elif step.kind == "torchrun":
            run_torchrun(box, step.words, doc_line.where)
        elif step.kind == "script":
            run_script(box, step.words, doc_line.where)
        elif step.kind == "monai-bundle":
            run_monai_bundle(box, step.words, doc_line.where)
        elif step.kind == "completion":
            run_completion(box, doc_line.text, step.words, doc_line.where)


# Documented commands that fail for a reason outside the docs' text, by doc line. Each is an expected failure
# that turns into a test failure once it passes, so the entry is removed with the fix.
KNOWN_FAILURES: dict[str, str] = {}


@pytest.mark.parametrize("doc_line", [
    pytest.param(doc_line, id=doc_line.where,
                 marks=[pytest.mark.xfail(strict=True, reason=KNOWN_FAILURES[doc_line.where])]
                 if doc_line.where in KNOWN_FAILURES else [])
    for doc_line in RUN_LINES
])
def test_doc_line_runs(doc_line, sandboxes, step_caps, monkeypatch):
    box = sandboxes(doc_line.doc)
    monkeypatch.chdir(box.root)
    # Run alone, a line first needs the earlier lines of its page; a known failure leaves nothing they read.
    for earlier in RUN_LINES:
        if (earlier.doc == doc_line.doc and earlier.line < doc_line.line and earlier.line not in box.done
                and earlier.where not in KNOWN_FAILURES):
            try:
                run_line(box, earlier)
            except pytest.skip.Exception:
                pass

    run_line(box, doc_line)
