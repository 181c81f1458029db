"""Format dispatch for reading and writing volumes, the SimpleITK formats (NRRD, MetaImage) and shared checks.

``medgan.io.nifti`` and ``medgan.io.dicom`` import ``VolumeReadError`` and the shared checks from here, so this
module imports them inside the functions that need them. That also keeps ``import medgan.io`` light.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from medgan.io.atomic import atomic_output
from medgan.io.volume import Volume

logger = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii", ".nii.gz")
ITK_READ_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
# Only single-file ITK formats are written, because the temporary-file rename of atomic_output moves one file.
ITK_WRITE_SUFFIXES = (".nrrd", ".mha")
WRITE_SUFFIXES = NIFTI_SUFFIXES + ITK_WRITE_SUFFIXES
OUTPUT_DTYPES = ("float32", "int16")
# Output formats by name, with the file suffixes each accepts. "dicom" writes a folder, so it has no suffix.
FORMAT_SUFFIXES = {"nifti": NIFTI_SUFFIXES, "nrrd": (".nrrd",), "mha": (".mha",), "dicom": ()}

# DICOM and ITK use LPS+ world coordinates, while Volume.affine uses RAS+: negate x and y.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

_SUPPORTED_INPUTS = (
    "a folder with one DICOM series, a DICOM file (.dcm, or any name with the DICM preamble), "
    "NIfTI (.nii, .nii.gz), NRRD (.nrrd, .nhdr) or MetaImage (.mha, .mhd)"
)


class VolumeReadError(ValueError):
    """An input exists but cannot be read as one 3D volume with a valid geometry."""


def read_volume(
    path: str | os.PathLike[str], *, series_uid: str | None = None, resample_z: bool = False
) -> Volume:
    """Read a volume from a DICOM folder, a DICOM file, NIfTI, NRRD or MetaImage.

    A directory is read as one DICOM series (``series_uid`` selects one when the folder contains several). Files
    are dispatched on their suffix. A file with another suffix is read as DICOM when it starts with the DICOM
    preamble and ``DICM`` marker.

    DICOM slices with uneven gaps (such as a missing slice) are rejected. With ``resample_z=True`` they are
    instead interpolated linearly along the slice normal onto a uniform grid that keeps the first and last slice
    positions, and a warning gives the number of interpolated slices.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        VolumeReadError: for an unsupported format, or an input that is not one valid 3D volume.
        ValueError: if ``series_uid`` or ``resample_z`` is given for a non-DICOM input.
    """
    source = Path(path)
    if not source.exists():
        raise FileNotFoundError(f"Input not found: {source}")

    if source.is_dir():
        from medgan.io.dicom import read_dicom_series

        return read_dicom_series(source, series_uid=series_uid, resample_z=resample_z)

    suffix = format_suffix(source)
    if suffix == ".dcm" or (suffix not in NIFTI_SUFFIXES + ITK_READ_SUFFIXES and has_dicom_preamble(source)):
        from medgan.io.dicom import read_dicom_file

        return read_dicom_file(source, series_uid=series_uid, resample_z=resample_z)

    if series_uid is not None:
        raise ValueError(f"series_uid applies only to DICOM input, but {source} is a {suffix} file.")
    if resample_z:
        raise ValueError(
            f"resample_z applies only to DICOM input, but {source} is a {suffix} file. Resample it with another "
            "tool, or read it without resample_z."
        )
    if suffix in NIFTI_SUFFIXES:
        from medgan.io.nifti import read_nifti

        return read_nifti(source)
    if suffix in ITK_READ_SUFFIXES:
        return _read_itk(source)
    raise VolumeReadError(
        f"Unsupported input format {suffix or '(no suffix)'} for {source}. Supported inputs: {_SUPPORTED_INPUTS}."
    )


def write_volume(
    volume: Volume,
    path: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    dtype: str | None = None,
    format: str | None = None,
) -> Path:
    """Write a volume to NIfTI-1 (``.nii``, ``.nii.gz``), NRRD (``.nrrd``), MetaImage (``.mha``) or DICOM.

    Without ``format`` the file suffix selects the format. ``format="dicom"`` writes a derived DICOM series into
    the folder ``path`` with :func:`medgan.io.dicom_write.write_dicom_series`, which needs a volume read from
    DICOM (call that function directly to pass a reference series or descriptions). Files and folders are
    written under a temporary name in the same parent folder and renamed onto ``path`` only when complete.
    ``dtype`` is ``"float32"`` (exact, the default for files) or ``"int16"`` (rounded, values outside the int16
    range are clipped with a warning). DICOM output is always int16. Returns the written path.

    Raises:
        ValueError: for an unsupported suffix, ``format`` or ``dtype``, a suffix that does not match
            ``format``, or voxels that are NaN or infinite.
        FileExistsError: if ``path`` exists and ``overwrite`` is false.
    """
    if not isinstance(volume, Volume):
        raise TypeError(f"write_volume expects a medgan.io.Volume, got {type(volume).__name__}.")
    target = Path(path)
    suffix = format_suffix(target)
    if format is not None and format not in FORMAT_SUFFIXES:
        raise ValueError(f"Unsupported output format {format!r}; expected one of {', '.join(FORMAT_SUFFIXES)}.")
    if format == "dicom":
        if dtype not in (None, "int16"):
            raise ValueError(f"DICOM output is always int16, so dtype {dtype!r} is invalid. Pass dtype=None.")
        from medgan.io.dicom_write import write_dicom_series

        return write_dicom_series(volume, target, overwrite=overwrite)
    if format is not None and suffix not in FORMAT_SUFFIXES[format]:
        raise ValueError(
            f"{target} does not end with a {format} suffix ({', '.join(FORMAT_SUFFIXES[format])}). "
            "Change the suffix or the format."
        )
    dtype = dtype or "float32"
    if suffix in NIFTI_SUFFIXES:
        from medgan.io.nifti import write_nifti

        return write_nifti(volume, target, overwrite=overwrite, dtype=dtype)
    if suffix in ITK_WRITE_SUFFIXES:
        return _write_itk(volume, target, overwrite=overwrite, dtype=dtype)
    raise ValueError(
        f"Unsupported output format {suffix or '(no suffix)'} for {target}. "
        f"Supported suffixes: {', '.join(WRITE_SUFFIXES)}."
    )


def format_suffix(path: Path) -> str:
    """Return the lower-case format suffix of ``path``, treating ``.nii.gz`` as one suffix."""
    name = path.name.lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    return path.suffix.lower()


def has_dicom_preamble(path: Path) -> bool:
    """Return whether the file has the 128-byte DICOM preamble followed by ``DICM``."""
    try:
        with open(path, "rb") as file:
            head = file.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def reject_nonfinite(array: np.ndarray, source: Path | str) -> None:
    """Raise VolumeReadError if ``array`` has NaN or infinite values, giving their count and ``source``."""
    finite = np.count_nonzero(np.isfinite(array))
    if finite != array.size:
        raise VolumeReadError(
            f"{source} contains {array.size - finite} NaN or infinite voxels (of {array.size}). "
            "Replace them with finite values (for example with numpy.nan_to_num) and save the file again."
        )


def output_array(volume: Volume, dtype: str, target: Path) -> np.ndarray:
    """Return the voxel values in the output data type: float32 as is, or int16 rounded and clipped.

    Raises:
        ValueError: for a ``dtype`` other than ``"float32"`` or ``"int16"``, or NaN or infinite voxels.
    """
    if dtype not in OUTPUT_DTYPES:
        raise ValueError(f"Unsupported output dtype {dtype!r}; expected one of {', '.join(OUTPUT_DTYPES)}.")
    array = volume.array
    finite = np.count_nonzero(np.isfinite(array))
    if finite != array.size:
        raise ValueError(f"Cannot write {target}: {array.size - finite} voxels are NaN or infinite.")
    if dtype == "float32":
        return np.asarray(array, dtype=np.float32)

    limits = np.iinfo(np.int16)
    rounded = np.rint(array)
    clipped = int(np.count_nonzero((rounded < limits.min) | (rounded > limits.max)))
    if clipped:
        logger.warning(
            "Writing %s as int16: clipped %d of %d voxels to the int16 range [%d, %d].",
            target,
            clipped,
            array.size,
            limits.min,
            limits.max,
        )
    return np.clip(rounded, limits.min, limits.max).astype(np.int16)


def _read_itk(source: Path) -> Volume:
    import SimpleITK as sitk

    try:
        image = sitk.ReadImage(str(source))
    except RuntimeError as error:
        raise VolumeReadError(f"Failed to read {source} with SimpleITK: {error}") from error
    components = image.GetNumberOfComponentsPerPixel()
    if components != 1:
        raise VolumeReadError(f"{source} has {components} components per voxel; medgan reads scalar volumes only.")

    size = image.GetSize()
    dimension = image.GetDimension()
    if dimension < 2 or any(n != 1 for n in size[3:]):
        raise VolumeReadError(
            f"{source} has size {size}; medgan reads one 2D or 3D volume (extra dimensions must have size 1)."
        )

    # GetArrayFromImage orders axes (..., k, j, i), so reversing them gives (i, j, k, ...).
    array = sitk.GetArrayFromImage(image).transpose()
    if dimension == 2:
        array = array[:, :, np.newaxis]
    else:
        array = array.reshape(array.shape[:3])
    reject_nonfinite(array, source)

    spatial = min(dimension, 3)
    direction = np.array(image.GetDirection(), dtype=np.float64).reshape(dimension, dimension)
    spacing = np.array(image.GetSpacing(), dtype=np.float64)
    origin = np.array(image.GetOrigin(), dtype=np.float64)
    lps = np.eye(4)
    lps[:spatial, :spatial] = direction[:spatial, :spatial] @ np.diag(spacing[:spatial])
    lps[:spatial, 3] = origin[:spatial]

    metadata: dict[str, Any] = {
        "format": "nrrd" if source.suffix.lower() in (".nrrd", ".nhdr") else "metaimage",
        "source_dtype": image.GetPixelIDTypeAsString(),
    }
    return Volume(array=array.astype(np.float32), affine=LPS_TO_RAS @ lps, modality="", metadata=metadata)


def _write_itk(volume: Volume, target: Path, *, overwrite: bool, dtype: str) -> Path:
    import SimpleITK as sitk

    data = output_array(volume, dtype, target)
    image = sitk.GetImageFromArray(np.ascontiguousarray(data.transpose()))

    lps = LPS_TO_RAS @ volume.affine
    matrix = lps[:3, :3]
    spacing = np.linalg.norm(matrix, axis=0)
    direction = matrix / spacing
    if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-6):
        logger.warning(
            "The affine of %s has shear. The file stores it exactly, but many ITK filters assume orthonormal "
            "directions.",
            target,
        )
    image.SetSpacing(spacing.tolist())
    image.SetDirection(direction.ravel().tolist())
    image.SetOrigin(lps[:3, 3].tolist())

    with atomic_output(target, overwrite) as temporary:
        try:
            sitk.WriteImage(image, str(temporary), useCompression=True)
        except RuntimeError as error:
            raise OSError(f"SimpleITK failed to write {target}: {error}") from error
    logger.debug("Wrote %s as %s", target, dtype)
    return target
