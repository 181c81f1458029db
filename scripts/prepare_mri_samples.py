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

With ``--colin27 ch2.nii.gz``, a second held-out pair is made instead, at the scale the ``mri-sr`` task is
meant for: 1 mm slices from 4 mm ones. Source: ``ch2.nii.gz`` of the Debian package mricron-data (BSD-3-clause,
in ``/usr/share/mricron/templates/``), the Colin27 brain: one person's T1 scanned 27 times and averaged, 181 x
217 x 181 voxels of 1 mm in MNI space, stored as 8-bit integers. It is a real single-subject scan that no
``mri-sr`` model trains on (docs/models.md says which choices looked at it). Get it without installing the
package: ``apt-get download mricron-data && dpkg -x mricron-data_*.deb mricron``. Writes:

- ``work/mri-eval/colin27_reference_1mm.nii.gz``: the first 180 slices along k (axial), the ones that the 45
  thick slices cover.
- ``work/mri-eval/colin27_thick_4mm.nii.gz``: the scan averaged along k into contiguous 4 mm boxcar slices.

Usage: python scripts/prepare_mri_samples.py [--overwrite] [--eval-dir work/mri-eval] [--colin27 PATH]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import nibabel
import numpy as np
import torch

from medgan.io import Volume, VolumeReadError, read_volume, write_volume
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


def read_colin27(path: Path) -> Volume:
    """Read Colin27's ``ch2.nii.gz`` and check that it is the 1 mm file of mricron-data."""
    if not path.is_file():
        raise SystemExit(f"--colin27: {path} not found. Get it with: apt-get download mricron-data && dpkg -x "
                         "mricron-data_*.deb mricron (then mricron/usr/share/mricron/templates/ch2.nii.gz).")
    try:
        volume = read_volume(path)
    except VolumeReadError as error:
        raise SystemExit(f"--colin27: {error}") from None
    if volume.shape != (181, 217, 181) or not np.allclose(volume.spacing_mm, (1.0, 1.0, 1.0)):
        raise SystemExit(f"{path} has shape {volume.shape} and spacing {volume.spacing_mm} mm, not the expected "
                         "181 x 217 x 181 voxels of 1 mm of mricron-data's ch2.nii.gz.")
    volume.array = volume.array.astype(np.float32)
    volume.modality = "MR"
    return volume


def thick_slice_pair(volume: Volume, slice_thickness_mm: float = SLICE_THICKNESS_MM) -> tuple[Volume, Volume]:
    """Return ``(reference, thick)``: the slices that the thick slices cover, and the thick-slice volume."""
    transform = ThickSliceMRI(slice_thickness_mm, slice_axis=2, profile="boxcar")
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
    parser.add_argument("--colin27", type=Path, default=None, metavar="PATH",
                        help="mricron-data's ch2.nii.gz: also write the 1 mm / 4 mm Colin27 pair.")
    arguments = parser.parse_args()

    if arguments.colin27 is not None:
        reference, thick = thick_slice_pair(read_colin27(arguments.colin27), slice_thickness_mm=4.0)
        arguments.eval_dir.mkdir(parents=True, exist_ok=True)
        for volume, name in ((reference, "colin27_reference_1mm.nii.gz"), (thick, "colin27_thick_4mm.nii.gz")):
            write_volume(volume, arguments.eval_dir / name, overwrite=arguments.overwrite)
            print(f"Wrote {arguments.eval_dir / name}: shape {volume.shape}")
        return

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
