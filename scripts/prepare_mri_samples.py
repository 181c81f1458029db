"""Derive the held-out MRI evaluation pair and the shipped thick-slice MRI sample from a real T1 brain scan.

Source: ``nibabel/tests/data/anatomical.nii`` from the installed nibabel package (MIT licence), a real
T1-weighted brain MRI, 33 x 41 x 25 voxels of 2 mm, LAS, whose header says
"spm - 3D normalized" (SPM spatially normalised and resampled it). None of the offline packages checked ships
a real single-subject MRI at about 1 mm (see medgan/data/README.md). So this 2 mm scan is the reference, and
its 8 mm thick-slice version keeps the ``mri-sr`` factor of 4.

Writes, deterministically, with no downloads:

- ``work/mri-eval/reference_2mm.nii.gz``: the scan's first 24 slices along k, the ones that the 6 thick
  slices cover, on the scan's own grid.
- ``work/mri-eval/thick_8mm.nii.gz``: the scan averaged along k into contiguous 8 mm boxcar slices by
  ``ThickSliceMRI`` (exact geometry: the affine's k column is 4 times longer and the origin is thick slice
  0's centre).
- ``medgan/data/mri_thick_slices.nii.gz``: the same thick-slice volume, shipped as the input of
  ``medgan infer --task mri-sr``.

A super-resolution output of factor 4 along k has 24 slices, each on the grid of ``reference_2mm.nii.gz``.

Usage: python scripts/prepare_mri_samples.py [--overwrite] [--eval-dir work/mri-eval]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import nibabel
import numpy as np
import torch

from medgan.io import Volume, read_volume, write_volume
from medgan.transforms import ThickSliceMRI

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "medgan" / "data"
SOURCE = Path(nibabel.__file__).resolve().parent / "tests" / "data" / "anatomical.nii"
SLICE_THICKNESS_MM = 8.0
SCALE = 4


def read_source() -> Volume:
    """Read the source scan and check that it is the file this script was written for."""
    if not SOURCE.is_file():
        raise SystemExit(f"Source scan not found: {SOURCE}. Install nibabel with its test data (pip install "
                         "nibabel).")
    volume = read_volume(SOURCE)
    if volume.shape != (33, 41, 25) or not np.allclose(volume.spacing_mm, (2.0, 2.0, 2.0)):
        raise SystemExit(f"{SOURCE} has shape {volume.shape} and spacing {volume.spacing_mm} mm, not the "
                         "expected 33 x 41 x 25 voxels of 2 mm; this nibabel version ships a different file.")
    volume.modality = "MR"
    return volume


def thick_slice_pair(volume: Volume) -> tuple[Volume, Volume]:
    """Return ``(reference, thick)``: the slices that the thick slices cover, and the thick-slice volume."""
    transform = ThickSliceMRI(SLICE_THICKNESS_MM, slice_axis=2, profile="boxcar")
    thick_array = transform(torch.from_numpy(volume.array.astype(np.float64)), spacing_mm=volume.spacing_mm)
    thick_affine = transform.output_affine(volume.affine, volume.shape[2])
    n_thick = int(thick_array.shape[2])
    metadata = {"format": "nifti"}
    thick = Volume(array=thick_array.numpy().astype(np.float32), affine=thick_affine, modality="MR",
                   metadata=dict(metadata))
    # Thick slice m averages slices 4m .. 4m + 3, so slices from 4 * n_thick on are not covered.
    reference = Volume(array=volume.array[:, :, :SCALE * n_thick], affine=volume.affine.copy(), modality="MR",
                       metadata=dict(metadata))
    return reference, thick


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--overwrite", action="store_true", help="Replace existing output files.")
    parser.add_argument("--eval-dir", type=Path, default=ROOT / "work" / "mri-eval",
                        help="Folder for the evaluation pair (default: work/mri-eval).")
    arguments = parser.parse_args()

    reference, thick = thick_slice_pair(read_source())
    arguments.eval_dir.mkdir(parents=True, exist_ok=True)
    outputs = [
        (reference, arguments.eval_dir / "reference_2mm.nii.gz"),
        (thick, arguments.eval_dir / "thick_8mm.nii.gz"),
        (thick, DATA / "mri_thick_slices.nii.gz"),
    ]
    for volume, path in outputs:
        write_volume(volume, path, overwrite=arguments.overwrite)
        print(f"Wrote {path}: shape {volume.shape}, spacing {tuple(round(s, 4) for s in volume.spacing_mm)} mm")


if __name__ == "__main__":
    main()
