"""Make the training and validation volumes of the shipped LDCT model from real CT slices.

Real contiguous CT volumes cannot be had offline, so each real slice becomes a pseudo-volume: slice k is the
real slice under a smooth random deformation whose displacement varies slowly with k. Anatomy then changes
along the slice axis as in a real scan, while every pixel keeps real CT values and texture. Low dose is
simulated later, on the fly, by the training pipeline.

Sources (installed from PyPI, nothing is downloaded at run time):
- pydicom-data 1.0.0 (MIT): explicit_VR-UN.dcm (abdomen, PANCREAS_0001), bad_sequence.dcm (Siemens, spine),
  693_UNCI.dcm (head, CQ500-CT-310).
- pydicom's test files (MIT): CT_small.dcm is NOT used here; it is the held-out test case.
- With ``--invesalius Cranium.inv3``: one real contiguous CT volume, added to the training folder as it is.
  ``Cranium.inv3`` is the example project of the Debian package invesalius-examples (GPL-2; get it with
  ``apt-get download invesalius-examples && dpkg -x invesalius-examples_*.deb invesalius``, then
  ``invesalius/usr/share/doc/invesalius-examples/examples/Cranium.inv3``). It holds "ProMED CT 0051", a head CT
  of 108 axial slices of 256 x 256 pixels, 0.957 mm pixels and 1.5 mm slices, in HU, as a gzipped tar with a
  property list (``main.plist``) and the raw int16 voxels (``matrix.dat``). The project does not record the
  patient axes, so the affine is a plain scaling; training needs the slice axis and the pixel size only.

Usage: python scripts/prepare_ldct_data.py OUTDIR [--depth 24] [--seed 0] [--invesalius Cranium.inv3]
"""

from __future__ import annotations

import argparse
import os
import plistlib
import tarfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from medgan.io import Volume, VolumeReadError, read_volume, write_volume

TRAIN_SOURCES = ["explicit_VR-UN.dcm", "bad_sequence.dcm"]
VALIDATION_SOURCES = ["693_UNCI.dcm"]
AIR_HU = -1024.0


def pydicom_data_file(name: str) -> Path:
    try:
        import data_store
    except ImportError:
        raise SystemExit("pydicom-data is not installed; run: pip install -e \".[recipe]\"") from None

    path = Path(os.path.dirname(data_store.__file__)) / "data" / name
    if not path.is_file():
        raise FileNotFoundError(f"{name} not found in pydicom-data; install it with 'pip install pydicom-data'.")
    return path


def smooth_field(shape: tuple[int, int], sigma_px: float, amplitude_px: float, generator: torch.Generator) -> torch.Tensor:
    """Draw a (2, H, W) displacement field in pixels: Gaussian-blurred white noise with ``amplitude_px`` RMS."""
    noise = torch.randn((2, 1, *shape), generator=generator, dtype=torch.float64)
    radius = int(3 * sigma_px)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (x / sigma_px) ** 2)
    kernel = kernel / kernel.sum()
    blurred = F.conv2d(F.pad(noise, (radius, radius, 0, 0), mode="reflect"), kernel.view(1, 1, 1, -1))
    blurred = F.conv2d(F.pad(blurred, (0, 0, radius, radius), mode="reflect"), kernel.view(1, 1, -1, 1))
    blurred = blurred[:, 0]
    return blurred * (amplitude_px / blurred.pow(2).mean().sqrt())


def pseudo_volume(slice_hu: np.ndarray, depth: int, generator: torch.Generator, *, control_every: int = 6,
                  sigma_px: float = 40.0, amplitude_px: float = 6.0) -> np.ndarray:
    """Stack ``depth`` smoothly deformed copies of a (H, W) slice into a (depth, H, W) array."""
    height, width = slice_hu.shape
    n_controls = depth // control_every + 2
    controls = torch.stack([smooth_field((height, width), sigma_px, amplitude_px, generator)
                            for _ in range(n_controls)])
    image = torch.from_numpy(slice_hu.astype(np.float64))[None, None]
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64),
                            indexing="ij")
    slices = []
    for k in range(depth):
        position = k / control_every
        lower = int(position)
        weight = position - lower
        displacement = (1 - weight) * controls[lower] + weight * controls[lower + 1]
        sample_x = (xs + displacement[0]) / (width - 1) * 2 - 1
        sample_y = (ys + displacement[1]) / (height - 1) * 2 - 1
        grid = torch.stack([sample_x, sample_y], dim=-1)[None]
        warped = F.grid_sample(image - AIR_HU, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        slices.append((warped[0, 0] + AIR_HU).numpy())
    return np.stack(slices).astype(np.float32)


def block_factor(spacing_mm: float, pixel_mm: float | None, downsample: int) -> int:
    """Return the in-plane block-averaging factor: the one that brings ``spacing_mm`` nearest ``pixel_mm``, if given."""
    if pixel_mm is None:
        return downsample
    return max(1, round(pixel_mm / spacing_mm))


def make_volume(name: str, depth: int, generator: torch.Generator, downsample: int = 1,
                pixel_mm: float | None = None) -> Volume:
    try:
        source = read_volume(pydicom_data_file(name))
    except VolumeReadError as error:
        raise SystemExit(f"{error}\nThe recipe's decoders come with: pip install -e \".[recipe]\"") from None
    downsample = block_factor(float(source.spacing_mm[0]), pixel_mm, downsample)
    # Pixels outside the scan field of view carry padding values far below air; treat them as air.
    slice_hu = np.maximum(source.array[:, :, 0].T, AIR_HU)
    if downsample > 1:
        # Averaging blocks of pixels keeps HU and halves the cost of every projection per factor of 2.
        rows, cols = (n // downsample * downsample for n in slice_hu.shape)
        slice_hu = slice_hu[:rows, :cols].reshape(rows // downsample, downsample, cols // downsample, downsample)
        slice_hu = slice_hu.mean(axis=(1, 3))
    stack = pseudo_volume(slice_hu, depth, generator)  # (D, H, W) = (k, j, i)
    array = np.ascontiguousarray(np.transpose(stack, (2, 1, 0)))
    affine = source.affine.copy()
    affine[:3, :2] *= downsample
    # The first voxel's centre moves to the centre of the first block of pixels.
    affine[:3, 3] += source.affine[:3, :2] @ np.full(2, (downsample - 1) / 2)
    # Slice spacing of the pseudo-volume: 1 mm, thinner than the sources' 5 mm slices, as the deformation is mild.
    affine[:3, 2] = affine[:3, 2] / np.linalg.norm(affine[:3, 2])
    return Volume(array=array, affine=affine, modality="CT", metadata={"format": "nifti"})


def read_invesalius_project(path: Path) -> Volume:
    """Read the CT volume of an InVesalius 3 project (``.inv3``): ``main.plist`` plus int16 ``matrix.dat``."""
    try:
        with tarfile.open(path) as archive:
            members = {Path(member.name).name: member for member in archive.getmembers() if member.isfile()}
            if "main.plist" not in members:
                raise ValueError("it has no main.plist")
            info = plistlib.loads(archive.extractfile(members["main.plist"]).read())
            matrix = info["matrix"]
            if info.get("modality") != "CT" or matrix.get("dtype") != "int16":
                raise ValueError(f"expected a CT project with an int16 matrix, got modality {info.get('modality')!r} "
                                 f"and matrix dtype {matrix.get('dtype')!r}")
            if matrix.get("filename") not in members:
                raise ValueError(f"its matrix file {matrix.get('filename')!r} is missing")
            raw = archive.extractfile(members[matrix["filename"]]).read()
        shape = tuple(int(n) for n in matrix["shape"])  # (slices, rows, columns)
        spacing_mm = tuple(float(value) for value in info["spacing"])  # (x, y, z)
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"matrix shape must be 3 positive sizes, got {shape}")
        if len(spacing_mm) != 3 or not all(np.isfinite(spacing_mm)) or min(spacing_mm) <= 0:
            raise ValueError(f"spacing must be 3 positive sizes in mm, got {spacing_mm}")
        if len(raw) != 2 * int(np.prod(shape)):
            raise ValueError(f"{matrix['filename']} has {len(raw)} bytes, not the {2 * int(np.prod(shape))} of int16 "
                             f"voxels of shape {shape}")
    except (tarfile.TarError, plistlib.InvalidFileException, OSError, EOFError, KeyError, ValueError, TypeError,
            AttributeError) as error:
        raise SystemExit(f"{path} is not a readable InVesalius CT project (.inv3, a gzipped tar): "
                         f"{type(error).__name__}: {error}. Pass Cranium.inv3 of the Debian package "
                         "invesalius-examples.") from None
    stack = np.frombuffer(raw, dtype="<i2").reshape(shape).astype(np.float32)
    array = np.ascontiguousarray(np.transpose(np.maximum(stack, AIR_HU), (2, 1, 0)))  # (i, j, k) = (x, y, z)
    affine = np.diag([*spacing_mm, 1.0])
    return Volume(array=array, affine=affine, modality="CT", metadata={"format": "nifti"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--depth", type=int, default=24, help="slices per training pseudo-volume")
    parser.add_argument("--validation-depth", type=int, default=4, help="slices per validation pseudo-volume")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--downsample", type=int, default=2,
                        help="in-plane block averaging of the training slices (validation keeps full resolution)")
    parser.add_argument("--pixel-mm", type=float, default=None,
                        help="instead of --downsample, average each training slice in blocks of the size that brings "
                             "its pixels nearest this size in mm (at least 1 pixel)")
    parser.add_argument("--invesalius", type=Path, default=None, metavar="INV3",
                        help="Cranium.inv3 of the Debian package invesalius-examples: add its real CT volume to the "
                             "training folder")
    arguments = parser.parse_args()
    cranium = None
    if arguments.invesalius is not None:
        if not arguments.invesalius.is_file():
            raise SystemExit(f"--invesalius: {arguments.invesalius} not found.")
        cranium = read_invesalius_project(arguments.invesalius)  # read first, so a bad file leaves nothing written
    generator = torch.Generator().manual_seed(arguments.seed)
    for folder, sources, depth, downsample, pixel_mm in (
        ("train", TRAIN_SOURCES, arguments.depth, arguments.downsample, arguments.pixel_mm),
        ("validation", VALIDATION_SOURCES, arguments.validation_depth, 1, None),
    ):
        (arguments.outdir / folder).mkdir(parents=True, exist_ok=True)
        for name in sources:
            volume = make_volume(name, depth, generator, downsample, pixel_mm)
            path = arguments.outdir / folder / (Path(name).stem + ".nii.gz")
            write_volume(volume, path, overwrite=True)
            print(f"{path}: {volume!r}")
    if cranium is not None:
        path = arguments.outdir / "train" / "invesalius_cranium.nii.gz"
        write_volume(cranium, path, overwrite=True)
        print(f"{path}: {cranium!r}")


if __name__ == "__main__":
    main()
