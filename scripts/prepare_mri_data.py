"""Write the training and validation volumes of configs/mri_sr.yaml from the MNI152 T1 template.

Source: ``nilearn.datasets.load_mni152_template(resolution=1)``, the MNI152 2009 T1 template that the nilearn
package ships (nothing is downloaded): 197 x 233 x 189 voxels of 1 mm, intensities scaled to [0, 1].

The template is one image, so the split is by region, not by subject: the training volume is the slab
k < 124 and the validation volume the slab k >= 132, with 8 slices between them that neither uses. Each slab
keeps its exact position: the affine's origin moves to the slab's first slice. The training slab is also
written block-averaged to 2 mm, so the network also learns anatomy at the voxel scale of 2 mm scans.

Writes ``OUTDIR/train/mni152_t1_k000-123.nii.gz`` and ``OUTDIR/validation/mni152_t1_k132-188.nii.gz``.

Usage: python scripts/prepare_mri_data.py [OUTDIR] [--overwrite]   (OUTDIR defaults to work/mri-data)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from medgan.io import Volume, write_volume

TRAIN_SLICES = (0, 124)
VALIDATION_SLICES = (132, None)


def slab(array: np.ndarray, affine: np.ndarray, start: int, stop: int | None) -> Volume:
    """Return slices ``[start, stop)`` along k as a volume whose affine keeps every voxel's world position."""
    stop = array.shape[2] if stop is None else stop
    shifted = affine.copy()
    shifted[:3, 3] = affine[:3, 3] + affine[:3, 2] * start
    return Volume(np.ascontiguousarray(array[:, :, start:stop], dtype=np.float32), shifted, "MR")


def block_average(volume: Volume, factor: int) -> Volume:
    """Average ``factor``-voxel cubes: a coarser acquisition of the same anatomy, each voxel at its cube's centre.

    The SR network works in voxel units, so a copy at 2 mm teaches it anatomy at the scale of 2 mm scans too.
    """
    shape = [n // factor for n in volume.shape]
    cropped = volume.array[:shape[0] * factor, :shape[1] * factor, :shape[2] * factor]
    averaged = cropped.reshape(shape[0], factor, shape[1], factor, shape[2], factor).mean(axis=(1, 3, 5))
    to_old_voxels = np.diag([factor, factor, factor, 1.0])
    to_old_voxels[:3, 3] = (factor - 1) / 2.0
    return Volume(averaged.astype(np.float32), volume.affine @ to_old_voxels, volume.modality)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir", nargs="?", type=Path, default=Path("work/mri-data"))
    parser.add_argument("--overwrite", action="store_true", help="Replace volumes that already exist.")
    arguments = parser.parse_args()

    from nilearn.datasets import load_mni152_template

    template = load_mni152_template(resolution=1)
    array = np.asarray(template.get_fdata(), dtype=np.float32)
    affine = np.asarray(template.affine, dtype=np.float64)
    for folder, (start, stop) in (("train", TRAIN_SLICES), ("validation", VALIDATION_SLICES)):
        volume = slab(array, affine, start, stop)
        last = (array.shape[2] if stop is None else stop) - 1
        path = arguments.outdir / folder / f"mni152_t1_k{start:03d}-{last:03d}.nii.gz"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_volume(volume, path, overwrite=arguments.overwrite)
        print(f"Wrote {path}: {volume.shape} voxels of {volume.spacing_mm} mm")
        if folder == "train":
            coarse = block_average(volume, 2)
            coarse_path = path.with_name(path.name.replace(".nii.gz", "_2mm.nii.gz"))
            write_volume(coarse, coarse_path, overwrite=arguments.overwrite)
            print(f"Wrote {coarse_path}: {coarse.shape} voxels of {coarse.spacing_mm} mm")


if __name__ == "__main__":
    main()
