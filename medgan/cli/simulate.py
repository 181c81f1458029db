"""``medgan simulate``: make a low-dose version of a normal-dose CT scan."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from medgan.cli.infer import WRITABLE_SUFFIXES
from medgan.cli.options import check_output_free, output_suffix, overwrite_option

logger = logging.getLogger("medgan.cli")


@click.command()
@click.argument("scan", type=click.Path(exists=True, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Output volume (.nii.gz, .nii, .nrrd or .mha) on the input's grid, in HU.")
@click.option("--dose-fraction", type=click.FloatRange(0.0, 1.0, min_open=True), required=True,
              help="Simulated dose as a fraction of the scan's dose, in (0, 1]; 0.25 is quarter dose.")
@click.option("--photons-per-ray", type=click.FloatRange(0.0, min_open=True), default=1.0e5, show_default=True,
              help="Incident photons per detector ray at full dose; sets the noise level.")
@click.option("--electronic-noise", "electronic_noise_std_photons", type=click.FloatRange(0.0), default=5.0,
              show_default=True, help="Standard deviation of the detector's electronic noise, in photons.")
@click.option("--views", "n_views", type=click.IntRange(min=1), default=720, show_default=True,
              help="Projection angles over 180 degrees.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the noise; one seed, one output.")
@click.option("--series-uid", default=None, help="SeriesInstanceUID to read when the DICOM folder contains several series.")
@overwrite_option
def simulate(scan: Path, output: Path, dose_fraction: float, photons_per_ray: float,
             electronic_noise_std_photons: float, n_views: int, seed: int, series_uid: str | None,
             overwrite: bool) -> None:
    """Simulate a reduced-dose scan of the normal-dose CT SCAN in the projection domain.

    Each axial slice is forward projected (parallel beam), Poisson photon noise and Gaussian electronic noise
    are drawn at the reduced dose, and the filtered back-projection of the noise is added to the slice. The
    input's own noise stays, so the output's noise variance is the input's plus the simulated increase.

    \b
    Example:
      medgan simulate scan.nii.gz -o scan_quarter.nii.gz --dose-fraction 0.25
    """
    from medgan.cli.errors import InvalidInput, OutputExists

    if output_suffix(output) not in WRITABLE_SUFFIXES:
        raise click.BadParameter(f"{output.name} has an unsupported suffix; use one of "
                                 f"{', '.join(WRITABLE_SUFFIXES)}.", param_hint="--output")
    check_output_free(output, overwrite, "--output")

    import torch

    from medgan.inference.restorer import tensor_to_volume_array, volume_to_tensor
    from medgan.io import VolumeReadError, read_volume, write_volume
    from medgan.transforms import LowDoseCT

    try:
        volume = read_volume(scan, series_uid=series_uid)
    except (VolumeReadError, ValueError) as error:
        raise InvalidInput(f"Cannot read {scan}: {error}") from error
    if volume.modality and volume.modality != "CT":
        raise InvalidInput(f"{scan} has modality {volume.modality}; low-dose simulation needs CT in HU.")
    spacing_i, spacing_j, _ = volume.spacing_mm
    transform = LowDoseCT(dose_fraction, photons_per_ray=photons_per_ray,
                          electronic_noise_std_photons=electronic_noise_std_photons, n_views=n_views)
    hu = volume_to_tensor(volume.array)[0, 0].double()
    low = transform(hu, (spacing_j, spacing_i), generator=torch.Generator().manual_seed(seed))
    result = volume.with_array(tensor_to_volume_array(low[None, None]))
    result.metadata["simulated"] = transform.params()
    try:
        write_volume(result, output, overwrite=overwrite)
    except FileExistsError as error:
        raise OutputExists(str(error)) from error
    click.echo(f"Wrote {output} ({transform!r}, seed {seed})")
