"""Make the shipped CT samples from pydicom's real test slice CT_small.dcm.

Writes medgan/data/ct_small.nii.gz (the real slice, HU, its DICOM geometry) and
medgan/data/ct_small_quarter_dose.nii.gz (the same slice at a simulated 25 % dose, seed 0, 720 views,
1e5 photons per ray at full dose, 5 photons of electronic noise).

Usage: python scripts/make_samples.py [--overwrite]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from pydicom.data import get_testdata_file

from medgan.inference.restorer import tensor_to_volume_array, volume_to_tensor
from medgan.io import read_volume, write_volume
from medgan.transforms import LowDoseCT

DATA = Path(__file__).resolve().parent.parent / "medgan" / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--overwrite", action="store_true")
    arguments = parser.parse_args()
    volume = read_volume(get_testdata_file("CT_small.dcm"))
    volume.metadata = {"format": "nifti"}
    write_volume(volume, DATA / "ct_small.nii.gz", overwrite=arguments.overwrite)
    spacing_i, spacing_j, _ = volume.spacing_mm
    transform = LowDoseCT(0.25, photons_per_ray=1.0e5, electronic_noise_std_photons=5.0, n_views=720)
    hu = volume_to_tensor(volume.array)[0, 0].double()
    low = transform(hu, (spacing_j, spacing_i), generator=torch.Generator().manual_seed(0))
    write_volume(volume.with_array(tensor_to_volume_array(low[None, None])), DATA / "ct_small_quarter_dose.nii.gz",
                 overwrite=arguments.overwrite)
    print(f"Wrote {DATA / 'ct_small.nii.gz'} and {DATA / 'ct_small_quarter_dose.nii.gz'}")


if __name__ == "__main__":
    main()
