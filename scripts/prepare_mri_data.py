"""Write the training and validation volumes of configs/mri_sr.yaml from the MNI152 T1 template.

Source: ``nilearn.datasets.load_mni152_template(resolution=1)``, the MNI152 2009 T1 template that the nilearn
package ships (nothing is downloaded): 197 x 233 x 189 voxels of 1 mm, intensities scaled to [0, 1].

The template is one image, so the split is by region, not by subject: the training volume is the slab
k < 124 and the validation volume the slab k >= 132, with 8 slices between them that neither uses. Each slab
keeps its exact position: the affine's origin moves to the slab's first slice. The training slab is also
written block-averaged to 2 mm, so the network also learns anatomy at the voxel scale of 2 mm scans.

Writes ``OUTDIR/train/mni152_t1_k000-123.nii.gz`` and ``OUTDIR/validation/mni152_t1_k132-188.nii.gz``.

With ``--brainbrowser TARBALL``, two real single-subject T1 scans are added to the training folder:
``examples/models/structural1`` and ``structural2`` of the npm package brainbrowser 2.3.0 (MINC volumes stored
as raw bytes plus a JSON header, 160 x 224 x 256 voxels of 1 mm, AGPL-3.0; get the tarball with
``npm pack brainbrowser@2.3.0``). They are used for training only and never committed. Each scan is written
three times, with each of its anatomical axes in turn as the volume's k axis (the axis that training makes
thick), so that the network trains on axial, coronal and sagittal slice stacks. Permuting the voxel axes permutes
the affine's columns with them, so every voxel keeps its world position.

Usage: python scripts/prepare_mri_data.py [OUTDIR] [--overwrite] [--brainbrowser brainbrowser-2.3.0.tgz]
(OUTDIR defaults to work/mri-data)
"""

from __future__ import annotations

import argparse
import gzip
import json
import tarfile
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


BRAINBROWSER_SCANS = ("structural1", "structural2")
BRAINBROWSER_FOLDER = "package/examples/models"
MINC_AXES = ("xspace", "yspace", "zspace")


def read_brainbrowser_scan(tarball: Path, name: str) -> Volume:
    """Read one of brainbrowser's MINC examples: ``NAME.mnc.header.gz`` (JSON) and ``NAME.mnc.raw.gz`` (uint8).

    The header lists the dimensions from slowest to fastest in ``order``; each has a start, a step and direction
    cosines, so world = sum over x, y, z of (start + step * index) * cosines.
    """
    try:
        with tarfile.open(tarball) as archive:
            def member(suffix: str) -> bytes:
                return gzip.decompress(archive.extractfile(f"{BRAINBROWSER_FOLDER}/{name}.mnc.{suffix}.gz").read())

            header = json.loads(member("header"))
            raw = member("raw")
        order = header["order"]
        shape = [int(header[axis]["space_length"]) for axis in order]
        if sorted(order) != sorted(MINC_AXES) or len(raw) != int(np.prod(shape)):
            raise ValueError(f"unexpected header {order} or {len(raw)} bytes for shape {shape}")
        array = np.frombuffer(raw, dtype=np.uint8).reshape(shape)
        array = np.transpose(array, [order.index(axis) for axis in MINC_AXES])
        affine = np.eye(4)
        for column, axis in enumerate(MINC_AXES):
            cosines = np.asarray(header[axis]["direction_cosines"], dtype=np.float64)
            if cosines.shape != (3,):
                raise ValueError(f"{axis} has direction cosines {cosines.tolist()}, not 3 numbers")
            affine[:3, column] = cosines * float(header[axis]["step"])
            affine[:3, 3] += cosines * float(header[axis]["start"])
        if abs(np.linalg.det(affine[:3, :3])) < 1e-6:
            raise ValueError(f"the direction cosines and steps give a singular affine {affine[:3, :3].tolist()}")
    except (tarfile.TarError, KeyError, EOFError, OSError, ValueError, TypeError, AttributeError) as error:
        # A missing member raises KeyError, a damaged gzip OSError or EOFError, a bad header the rest.
        raise SystemExit(f"{tarball}: cannot read {name} ({type(error).__name__}: {error}). Pass the tarball of "
                         "npm pack brainbrowser@2.3.0.") from None
    return Volume(np.ascontiguousarray(array, dtype=np.float32), affine, "MR")


def with_k_axis(volume: Volume, axis: int) -> Volume:
    """Return ``volume`` with voxel axis ``axis`` moved to k; the affine's columns move with the voxels."""
    order = [a for a in range(3) if a != axis] + [axis]
    affine = volume.affine.copy()
    affine[:3, :3] = volume.affine[:3, order]
    return Volume(np.ascontiguousarray(np.transpose(volume.array, order)), affine, volume.modality)


def write_brainbrowser_scans(scans: dict[str, Volume], outdir: Path, overwrite: bool) -> None:
    for name, scan in scans.items():
        for axis in range(3):
            path = outdir / "train" / f"brainbrowser_{name}_k{'ijk'[axis]}.nii.gz"
            write_volume(with_k_axis(scan, axis), path, overwrite=overwrite)
            print(f"Wrote {path}: original axis {'ijk'[axis]} as k")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir", nargs="?", type=Path, default=Path("work/mri-data"))
    parser.add_argument("--overwrite", action="store_true", help="Replace volumes that already exist.")
    parser.add_argument("--brainbrowser", type=Path, default=None, metavar="TARBALL",
                        help="brainbrowser-2.3.0.tgz (npm pack brainbrowser@2.3.0): add its two real T1 scans.")
    arguments = parser.parse_args()
    scans = {}
    if arguments.brainbrowser is not None:
        # Read the scans before writing anything, so that a bad tarball leaves no partial output.
        if not arguments.brainbrowser.is_file():
            raise SystemExit(f"--brainbrowser: {arguments.brainbrowser} not found; run npm pack brainbrowser@2.3.0.")
        scans = {name: read_brainbrowser_scan(arguments.brainbrowser, name) for name in BRAINBROWSER_SCANS}

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
    write_brainbrowser_scans(scans, arguments.outdir, arguments.overwrite)


if __name__ == "__main__":
    main()
