"""``medgan simulate``: degrade a scan the way a cheaper acquisition would (low-dose CT, low-resolution MRI)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import click

from medgan.cli.infer import WRITABLE_SUFFIXES
from medgan.cli.options import (
    FiniteFloatRange,
    check_output_folder,
    check_output_free,
    finite_float,
    output_suffix,
    overwrite_option,
    sidecar_path,
)

logger = logging.getLogger("medgan.cli")

TASKS = ("ldct", "mri-sr")
# Options that belong to one task only; giving one with the other task is a usage error.
CT_OPTIONS = ("dose_fraction", "photons_per_ray", "electronic_noise_std_photons", "n_views", "geometry",
              "filter_name", "bowtie_photons_fraction_at_edge", "assume_noiseless_input", "source_to_isocenter_mm",
              "source_to_detector_mm")
MRI_OPTIONS = ("slice_thickness_mm", "slice_axis", "slice_gap_mm", "profile", "profile_fwhm_mm", "output_grid",
               "kspace_keep_fraction", "snr")
SLICE_AXES = {"i": 0, "j": 1, "k": 2}


@click.command()
@click.argument("scan", type=click.Path(exists=True, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Output volume (.nii.gz, .nii, .nrrd or .mha). A JSON sidecar with the same name and a .json "
                   "suffix records every parameter.")
@click.option("--task", type=click.Choice(TASKS), default="ldct", show_default=True,
              help="ldct: low-dose CT from a CT scan in HU. mri-sr: thick-slice, low-resolution MRI.")
@click.option("--dose-fraction", type=FiniteFloatRange(0.0, 1.0, min_open=True), default=None,
              help="[ldct, required] Simulated dose as a fraction of the scan's dose, in (0, 1]; 0.25 is quarter "
                   "dose.")
@click.option("--photons-per-ray", type=FiniteFloatRange(0.0, min_open=True), default=1.0e5, show_default=True,
              help="[ldct] Incident photons per detector ray at full dose; sets the noise level.")
@click.option("--electronic-noise", "electronic_noise_std_photons", type=FiniteFloatRange(0.0), default=5.0,
              show_default=True, help="[ldct] Standard deviation of the detector's electronic noise, in photons.")
@click.option("--views", "n_views", type=click.IntRange(min=1), default=None,
              help="[ldct] Projection angles: over 180 degrees for parallel beam (default 720), over 360 degrees "
                   "for fan beam (default 1440).")
@click.option("--geometry", type=click.Choice(["parallel", "fan"]), default="parallel", show_default=True,
              help="[ldct] Scan geometry of each axial slice: parallel beam, or fan beam with an equiangular "
                   "detector over 360 degrees.")
@click.option("--filter", "filter_name", type=click.Choice(["ram-lak", "shepp-logan", "hann", "cosine"]),
              default="ram-lak", show_default=True, help="[ldct] Reconstruction filter of the added noise.")
@click.option("--bowtie-edge-fraction", "bowtie_photons_fraction_at_edge",
              type=FiniteFloatRange(0.0, 1.0, min_open=True), default=1.0, show_default=True,
              help="[ldct] Fraction of the central ray's photons reaching the edge of the field (bowtie filter); "
                   "1 means no bowtie.")
@click.option("--assume-noiseless-input/--insert-noise", "assume_noiseless_input", default=True, show_default=True,
              help="[ldct] --insert-noise treats the input as a real full-dose scan and adds only the extra noise "
                   "of the lower dose. The default treats it as noise-free and adds the full low-dose noise.")
@click.option("--source-to-isocenter-mm", type=FiniteFloatRange(0.0, min_open=True), default=595.0,
              show_default=True, help="[ldct, fan beam] Distance from the X-ray source to the rotation centre, mm.")
@click.option("--source-to-detector-mm", type=FiniteFloatRange(0.0, min_open=True), default=1085.6,
              show_default=True, help="[ldct, fan beam] Distance from the X-ray source to the detector, mm.")
@click.option("--slice-thickness-mm", type=FiniteFloatRange(0.0, min_open=True), default=None,
              help="[mri-sr, required] Thickness of the simulated slices, mm.")
@click.option("--slice-axis", type=click.Choice(list(SLICE_AXES)), default="k", show_default=True,
              help="[mri-sr] Voxel axis across the slices.")
@click.option("--slice-gap-mm", type=finite_float, default=0.0, show_default=True,
              help="[mri-sr] Gap between neighbouring slices, mm; negative for overlapping slices.")
@click.option("--profile", type=click.Choice(["boxcar", "gaussian"]), default="boxcar", show_default=True,
              help="[mri-sr] Slice profile.")
@click.option("--profile-fwhm-mm", type=FiniteFloatRange(0.0, min_open=True), default=None,
              help="[mri-sr] FWHM of the Gaussian slice profile, mm (default: the slice thickness).")
@click.option("--output-grid", type=click.Choice(["low", "original"]), default="low", show_default=True,
              help="[mri-sr] low: one voxel per thick slice, with the affine updated. original: interpolated back "
                   "to the input grid.")
@click.option("--kspace-keep-fraction", type=FiniteFloatRange(0.0, 1.0, min_open=True), default=None,
              help="[mri-sr] Also keep only this central fraction of k-space along the two in-plane axes.")
@click.option("--snr", type=FiniteFloatRange(0.0, min_open=True), default=None,
              help="[mri-sr] Also add Rician noise at this SNR (mean foreground signal / noise sigma).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the noise; one seed, one output.")
@click.option("--series-uid", default=None, help="SeriesInstanceUID to read when the DICOM folder contains several series.")
@overwrite_option
@click.pass_context
def simulate(ctx: click.Context, scan: Path, output: Path, task: str, seed: int, series_uid: str | None,
             overwrite: bool, **options: Any) -> None:
    """Simulate a degraded acquisition of SCAN and write it with a JSON sidecar of its parameters.

    \b
    ldct: each axial slice is forward projected (parallel or fan beam), and Poisson photon noise and Gaussian
    electronic noise are drawn at the reduced dose. The filtered back-projection of the noise is added to
    the slice, in HU, on the input's grid.
    mri-sr: slices along --slice-axis are averaged into thick slices under the slice profile, optionally
    after k-space truncation in-plane, and Rician noise is added when --snr is given.

    The same seed and options give a byte-identical output file.

    \b
    Examples:
      medgan simulate scan.nii.gz -o scan_quarter.nii.gz --dose-fraction 0.25
      medgan simulate t1.nii.gz -o t1_4mm.nii.gz --task mri-sr --slice-thickness-mm 4 --slice-axis k
    """
    from medgan.cli.errors import InvalidInput, OutputExists, OutputNotWritable
    from medgan.io.atomic import OutputNotWritableError

    _check_task_options(ctx, task, options)
    if output_suffix(output) not in WRITABLE_SUFFIXES:
        raise click.BadParameter(f"{output.name} has an unsupported suffix; use one of "
                                 f"{', '.join(WRITABLE_SUFFIXES)}.", param_hint="--output")
    sidecar = sidecar_path(output)
    check_output_folder(output.parent, "--output")
    check_output_free(output, overwrite, "--output")
    check_output_free(sidecar, overwrite, "--output (its JSON sidecar)")

    from medgan import __version__
    from medgan.io import VolumeReadError, atomic_output, read_volume, write_volume

    try:
        volume = read_volume(scan, series_uid=series_uid)
    except (VolumeReadError, ValueError) as error:
        raise InvalidInput(f"Cannot read {scan}: {error}") from error

    try:
        if task == "ldct":
            result, parameters = _simulate_low_dose(volume, scan, seed, options)
        else:
            result, parameters = _simulate_low_resolution_mri(volume, scan, seed, options)
    except ValueError as error:
        raise InvalidInput(f"Cannot simulate {task} for {scan}: {error}") from error

    record = {
        "medgan_version": __version__,
        "task": task,
        "input": str(scan.resolve()),
        "series_uid": series_uid,
        "output": output.name,
        "seed": seed,
        "parameters": parameters,
        "input_shape": list(volume.shape),
        "output_shape": list(result.shape),
        "output_affine": result.affine.tolist(),
    }
    try:
        write_volume(result, output, overwrite=overwrite)
        with atomic_output(sidecar, overwrite) as temporary:
            temporary.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    except FileExistsError as error:
        raise OutputExists(str(error)) from error
    except OutputNotWritableError as error:
        raise OutputNotWritable(str(error)) from error
    click.echo(f"Wrote {output} and {sidecar} ({task}, seed {seed})")


def _check_task_options(ctx: click.Context, task: str, options: dict[str, Any]) -> None:
    """Reject options of the other task given on the command line, and check each task's required option."""
    foreign = MRI_OPTIONS if task == "ldct" else CT_OPTIONS
    for name in foreign:
        if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE:
            param = next(param for param in ctx.command.params if param.name == name)
            flags = "/".join(param.opts + param.secondary_opts)
            raise click.UsageError(f"{flags} applies only to --task {'mri-sr' if task == 'ldct' else 'ldct'}.")
    if task == "ldct" and options["dose_fraction"] is None:
        raise click.UsageError("--task ldct needs --dose-fraction, the simulated fraction of the scan's dose.")
    if task == "mri-sr" and options["slice_thickness_mm"] is None:
        raise click.UsageError("--task mri-sr needs --slice-thickness-mm, the thickness of the simulated slices.")


def _simulate_low_dose(volume, scan: Path, seed: int, options: dict[str, Any]):
    """Return ``(low-dose volume, parameters)`` for the ldct task."""
    from medgan.cli.errors import InvalidInput

    if volume.modality and volume.modality != "CT":
        raise InvalidInput(f"{scan} has modality {volume.modality}; low-dose simulation needs CT in HU.")

    import torch

    from medgan.inference.restorer import tensor_to_volume_array, volume_to_tensor
    from medgan.transforms import LowDoseCT

    transform = LowDoseCT(**{name: options[name] for name in CT_OPTIONS})
    spacing_i, spacing_j, _ = volume.spacing_mm
    # volume_to_tensor gives (k, j, i): axial slices of j rows and i columns.
    hu = volume_to_tensor(volume.array)[0, 0].double()
    low = transform(hu, (spacing_j, spacing_i), generator=torch.Generator().manual_seed(seed))
    result = volume.with_array(tensor_to_volume_array(low[None, None]))
    parameters = transform.params()
    result.metadata["simulated"] = parameters
    return result, parameters


def _simulate_low_resolution_mri(volume, scan: Path, seed: int, options: dict[str, Any]):
    """Return ``(low-resolution volume, parameters)`` for the mri-sr task: k-space, thick slices, noise."""
    from medgan.cli.errors import InvalidInput

    if volume.modality == "CT":
        raise InvalidInput(f"{scan} has modality CT; --task mri-sr needs an MR image.")

    import torch

    from medgan.transforms import KSpaceTruncationMRI, RicianNoiseMRI, ThickSliceMRI

    slice_axis = SLICE_AXES[options["slice_axis"]]
    steps = []
    if options["kspace_keep_fraction"] is not None:
        in_plane = tuple(axis for axis in range(3) if axis != slice_axis)
        steps.append(KSpaceTruncationMRI(options["kspace_keep_fraction"], axes=in_plane))
    steps.append(ThickSliceMRI(
        options["slice_thickness_mm"],
        slice_axis=slice_axis,
        slice_gap_mm=options["slice_gap_mm"],
        profile=options["profile"],
        profile_fwhm_mm=options["profile_fwhm_mm"],
        output_grid=options["output_grid"],
    ))
    result = volume
    for step in steps:
        result = step(result)
    if options["snr"] is not None:
        steps.append(RicianNoiseMRI(options["snr"]))
        result = steps[-1](result, generator=torch.Generator().manual_seed(seed))
    parameters = {"steps": [{"transform": type(step).__name__, **step.params()} for step in steps]}
    result.metadata["simulated"] = parameters
    return result, parameters
