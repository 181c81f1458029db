"""NIfTI-1/2 input and NIfTI-1 output with nibabel, keeping the affine and the qform/sform codes."""

from __future__ import annotations

import logging
import math
import os
import zlib
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError
from nibabel.spatialimages import HeaderDataError

from medgan.io.atomic import atomic_output
from medgan.io.readers import VolumeReadError, output_array, reject_nonfinite
from medgan.io.volume import Volume

logger = logging.getLogger(__name__)

# Millimetres per unit for the spatial units nibabel reports from xyzt_units. NIfTI leaves "unknown" undefined,
# and nearly every tool reads it as millimetres, so this module does too.
_MILLIMETRES_PER_UNIT = {"mm": 1.0, "unknown": 1.0, "meter": 1000.0, "micron": 0.001}
_DEFAULT_XFORM_CODE = 1  # NIFTI_XFORM_SCANNER_ANAT
# Deflate emits at least 2 bits for each length/distance pair, which copies at most 258 bytes, so gzip data cannot
# expand by more than 258 * 8 / 2 = 1032 times.
_MAX_DEFLATE_RATIO = 1032


def read_nifti(path: str | os.PathLike[str]) -> Volume:
    """Read a ``.nii`` or ``.nii.gz`` file into a float32 volume with its RAS+ affine in millimetres.

    The affine is nibabel's ``img.affine``: the sform when sform_code > 0, else the qform when qform_code > 0,
    else a fallback built from the voxel sizes. scl_slope/scl_inter are applied. A 2D image becomes (i, j, 1),
    and trailing singleton dimensions (such as a 4D image with one time point) are dropped.

    Raises:
        VolumeReadError: if the file cannot be parsed, has several volumes along dimensions 4 and up, or
            contains NaN or infinite voxels.
    """
    source = Path(path)
    try:
        image = nib.load(source)
    except (ImageFileError, HeaderDataError, OSError, EOFError, ValueError, OverflowError, zlib.error) as error:
        hint = ""
        if "not a gzip file" in str(error).lower() and source.name.endswith(".gz"):
            hint = " Its name ends in .gz but it is not gzip-compressed; if it is an uncompressed NIfTI, rename it to .nii."
        raise VolumeReadError(f"Failed to read NIfTI file {source}: {error}.{hint}") from error
    if not isinstance(image, (nib.Nifti1Image, nib.Nifti2Image)):
        raise VolumeReadError(f"{source} is not a single-file NIfTI image (nibabel loaded {type(image).__name__}).")

    header = image.header
    stored = header.get_data_dtype()
    if stored.fields is not None or stored.kind not in "biuf":
        raise VolumeReadError(
            f"{source} stores {stored} voxels (complex, RGB or structured); medgan reads real-valued scalar images "
            "only. Convert it to one real channel first."
        )
    shape = tuple(int(n) for n in image.shape)
    _check_shape(shape, source)
    _check_data_size(header, shape, source)

    try:
        data = image.get_fdata(dtype=np.float32)
    except (OSError, EOFError, ValueError, OverflowError, zlib.error) as error:
        raise VolumeReadError(f"Failed to read the voxel data of {source}: {error}") from error
    data = _to_3d(data)
    reject_nonfinite(data, source)

    try:
        spatial_unit, temporal_unit = header.get_xyzt_units()
    except KeyError as error:
        raise VolumeReadError(
            f"{source} has an invalid xyzt_units code {int(header['xyzt_units'])}, so the unit of its affine is "
            "unknown. Set the spatial unit (for example with nibabel's header.set_xyzt_units('mm')) and save the "
            "file again."
        ) from error
    affine = np.array(image.affine, dtype=np.float64)
    qform_code = int(header["qform_code"])
    sform_code = int(header["sform_code"])
    if qform_code == 0 and sform_code == 0:
        logger.warning(
            "%s has qform_code and sform_code 0, so its orientation is unknown. Using nibabel's fallback affine "
            "from the voxel sizes, which may not match the scanner orientation.",
            source,
        )
    millimetres = _MILLIMETRES_PER_UNIT.get(spatial_unit, 1.0)
    if millimetres != 1.0:
        logger.warning("%s gives its spatial unit as %s. Converting the affine to millimetres.", source, spatial_unit)
        affine[:3, :] *= millimetres

    metadata: dict[str, Any] = {
        "format": "nifti",
        "qform_code": qform_code,
        "sform_code": sform_code,
        "qform": header.get_qform().tolist(),
        "sform": header.get_sform().tolist(),
        "xyzt_units": (spatial_unit, temporal_unit),
        "source_dtype": str(header.get_data_dtype()),
        # The image proxy stores the scaling that get_fdata applied (1 and 0 when the file has none).
        "scl_slope": float(image.dataobj.slope),
        "scl_inter": float(image.dataobj.inter),
    }
    logger.debug("Read %s: shape %s, qform_code %d, sform_code %d", source, data.shape, qform_code, sform_code)
    return Volume(array=data, affine=affine, modality="", metadata=metadata)


def write_nifti(
    volume: Volume, path: str | os.PathLike[str], *, overwrite: bool = False, dtype: str = "float32"
) -> Path:
    """Write a volume as NIfTI-1 (``.nii`` or ``.nii.gz``) through :func:`atomic_output` and return the path.

    The affine is stored as the sform and, when it has no shear, as the qform too. The codes come from
    ``volume.metadata["qform_code"]`` and ``["sform_code"]`` when a NIfTI reader set them, otherwise both are
    1 (scanner). Units are millimetres and seconds. ``dtype="int16"`` rounds and clips, and scl_slope/scl_inter
    are 1 and 0 in both cases, so no scaling is hidden in the header.

    Raises:
        ValueError: for an unsupported ``dtype`` or non-finite voxels.
        FileExistsError: if ``path`` exists and ``overwrite`` is false.
    """
    target = Path(path)
    data = output_array(volume, dtype, target)
    qform_code, sform_code = _output_xform_codes(volume.metadata)

    header = nib.Nifti1Header()
    header.set_data_dtype(data.dtype)
    image = nib.Nifti1Image(data, volume.affine, header=header)
    image.set_sform(volume.affine, code=sform_code)
    try:
        image.set_qform(volume.affine, code=qform_code, strip_shears=False)
    except HeaderDataError:
        # The qform is a rotation, voxel sizes and an offset, so it cannot hold a shear. The sform stays exact.
        logger.warning(
            "The affine of %s has shear, which a NIfTI qform cannot store. Writing qform_code 0, so readers use "
            "the exact sform.",
            target,
        )
        image.set_qform(volume.affine, code=0)
    image.header.set_xyzt_units("mm", "sec")
    # Explicit values stop nibabel from choosing its own scaling when it saves.
    image.header.set_slope_inter(1.0, 0.0)

    with atomic_output(target, overwrite) as temporary:
        nib.save(image, temporary)
    logger.debug("Wrote %s as %s", target, dtype)
    return target


def _check_shape(shape: tuple[int, ...], source: Path) -> None:
    if len(shape) < 2:
        raise VolumeReadError(f"{source} has {len(shape)} dimension(s) {shape}; a volume needs 2 or 3.")
    if any(n < 1 for n in shape):
        raise VolumeReadError(f"{source} is damaged: its header gives the shape {shape}, with sizes below 1.")
    extra = shape[3:]
    if any(n != 1 for n in extra):
        raise VolumeReadError(
            f"{source} has shape {shape}: several volumes (time points or components) along dimension 4 and up. "
            "medgan reads one 3D volume; extract one first (for example with nibabel's image slicing or "
            "fslroi)."
        )


def _check_data_size(header: Any, shape: tuple[int, ...], source: Path) -> None:
    """Reject a file too small for the voxel data its header describes, before nibabel allocates a buffer for it."""
    offset = int(header.get_data_offset())
    data_bytes = math.prod(shape) * header.get_data_dtype().itemsize
    needed = offset + data_bytes
    file_bytes = source.stat().st_size
    compressed = source.name.lower().endswith(".gz")
    if needed <= (file_bytes * _MAX_DEFLATE_RATIO if compressed else file_bytes):
        return
    if compressed:
        problem = (
            f"its header describes {data_bytes} bytes of voxel data (shape {shape}), more than a "
            f"{file_bytes}-byte gzip file can hold"
        )
    else:
        problem = (
            f"its header describes {data_bytes} bytes of voxel data (shape {shape}) from byte "
            f"{offset}, but the file has {file_bytes} bytes"
        )
    raise VolumeReadError(f"{source} is truncated or its header is damaged: {problem}. Export the file again.")


def _to_3d(data: np.ndarray) -> np.ndarray:
    if data.ndim == 2:
        return data[:, :, np.newaxis]
    if data.ndim > 3:
        return data.reshape(data.shape[:3])
    return data


def _output_xform_codes(metadata: dict[str, Any]) -> tuple[int, int]:
    """Return (qform_code, sform_code) for output from the source's codes, defaulting to scanner (1)."""
    if "qform_code" not in metadata and "sform_code" not in metadata:
        return _DEFAULT_XFORM_CODE, _DEFAULT_XFORM_CODE
    qform_code = int(metadata.get("qform_code") or 0)
    sform_code = int(metadata.get("sform_code") or 0)
    if qform_code == 0 and sform_code == 0:
        # The source had no orientation, but the affine is now set explicitly on both forms.
        return _DEFAULT_XFORM_CODE, _DEFAULT_XFORM_CODE
    if sform_code == 0:
        # Readers prefer the sform, which stores the affine exactly, but ignore it at code 0. Give it the
        # qform's code so that the output's affine does not pass through the float32 quaternion.
        sform_code = qform_code
    return qform_code, sform_code
