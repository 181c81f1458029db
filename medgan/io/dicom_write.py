"""Derived DICOM output: a restored volume as a new CT or MR image series in the study of its source series.

Each slice k of the volume becomes one single-frame CT Image Storage (or MR Image Storage) file named
``IM{k+1:06d}.dcm``, in Explicit VR Little Endian. The patient, study, frame of reference, equipment and
acquisition attributes are copied from the source slice that slice k came from. The series and every instance get
new UIDs, so the derived series sits beside the original in the same study and never replaces it. Private
attributes are never copied.

Pixel values are signed 16-bit integers equal to the rounded voxel values. CT files carry RescaleSlope 1 and
RescaleIntercept 0, so the stored value is the HU value and the range is -32768 to 32767 HU, which includes the
extended CT scale. Values outside that range are clipped and counted in one warning. MR files store the rounded
values without rescale attributes, because the MR Image IOD does not include them.

Geometry comes from the volume's RAS+ affine converted to DICOM's LPS+: ImageOrientationPatient from the first
two affine columns, PixelSpacing from their lengths, and ImagePositionPatient of slice k from voxel (0, 0, k).
An affine with a sheared slice axis (CT gantry tilt) is stored exactly, because each slice keeps its own
position. An in-plane shear cannot be stored and is rejected.
"""

from __future__ import annotations

import copy
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.sr.codedict import codes
from pydicom.uid import (
    HTJ2K,
    JPEG2000,
    CTImageStorage,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLSNearLossless,
    MRImageStorage,
    generate_uid,
)
from pydicom.valuerep import format_number_as_ds

from medgan.io.atomic import atomic_output
from medgan.io.dicom import _COSINE_TOLERANCE
from medgan.io.readers import LPS_TO_RAS, output_array
from medgan.io.volume import Volume

logger = logging.getLogger(__name__)

# The derived series is numbered SeriesNumber of the source plus this offset (or this offset when the source has
# no SeriesNumber), so that it sorts after the source series in a study browser.
SERIES_NUMBER_OFFSET = 1000
FILE_NAME_FORMAT = "IM{:06d}.dcm"  # formatted with InstanceNumber, which is k + 1

_SOP_CLASSES = {"CT": CTImageStorage, "MR": MRImageStorage}
_MAX_SERIES_NUMBER = 2**31 - 1  # the largest IS value
_MAX_LO_LENGTH = 64  # SeriesDescription (LO)
_MAX_ST_LENGTH = 1024  # DerivationDescription (ST)
_PREVIOUS_TAG = re.compile(r"\s*\[medgan [^\]]*\]?\s*$")

# Copied from the source slice when present, by module of the CT and MR Image IODs (DICOM PS3.3 A.3 and A.4).
_COPIED_COMMON = (
    # SOP Common: the character set that the copied names and descriptions are encoded in.
    "SpecificCharacterSet",
    "TimezoneOffsetFromUTC",
    # Patient
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientBirthTime",
    "PatientSex",
    "OtherPatientIDsSequence",
    "PatientComments",
    "PatientIdentityRemoved",
    "DeidentificationMethod",
    "DeidentificationMethodCodeSequence",
    "PatientSpeciesDescription",
    "PatientSpeciesCodeSequence",
    "PatientBreedDescription",
    "PatientBreedCodeSequence",
    "BreedRegistrationSequence",
    "ResponsiblePerson",
    "ResponsiblePersonRole",
    "ResponsibleOrganization",
    # Clinical Trial Subject and Clinical Trial Study
    "ClinicalTrialSponsorName",
    "ClinicalTrialProtocolID",
    "ClinicalTrialProtocolName",
    "ClinicalTrialSiteID",
    "ClinicalTrialSiteName",
    "ClinicalTrialSubjectID",
    "ClinicalTrialSubjectReadingID",
    "ClinicalTrialTimePointID",
    "ClinicalTrialTimePointDescription",
    # General Study
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
    "IssuerOfAccessionNumberSequence",
    "StudyDescription",
    "PhysiciansOfRecord",
    "NameOfPhysiciansReadingStudy",
    "ProcedureCodeSequence",
    # Patient Study
    "AdmittingDiagnosesDescription",
    "PatientAge",
    "PatientSize",
    "PatientWeight",
    "AdditionalPatientHistory",
    "PregnancyStatus",
    # General Series: attributes that describe the patient and the acquisition, which the derived series shares
    "Laterality",
    "BodyPartExamined",
    "PatientPosition",
    "ProtocolName",
    # Frame of Reference
    "FrameOfReferenceUID",
    "PositionReferenceIndicator",
    # General Equipment: the scanner that acquired the source images. medgan is listed in
    # ContributingEquipmentSequence instead.
    "Manufacturer",
    "InstitutionName",
    "InstitutionAddress",
    "StationName",
    "InstitutionalDepartmentName",
    "ManufacturerModelName",
    "DeviceSerialNumber",
    "SoftwareVersions",
    # General Acquisition and General Image
    "AcquisitionNumber",
    "AcquisitionDate",
    "AcquisitionTime",
    "AcquisitionDateTime",
    "BurnedInAnnotation",
    "RecognizableVisualFeatures",
    "LossyImageCompression",
    "LossyImageCompressionRatio",
    "LossyImageCompressionMethod",
    # Contrast/Bolus
    "ContrastBolusAgent",
    "ContrastBolusAgentSequence",
    "ContrastBolusRoute",
    "ContrastBolusVolume",
    "ContrastBolusStartTime",
    "ContrastBolusStopTime",
    "ContrastBolusTotalDose",
    "ContrastFlowRate",
    "ContrastFlowDuration",
    "ContrastBolusIngredient",
    "ContrastBolusIngredientConcentration",
    # VOI LUT: window values apply to rescaled values (HU for CT), which the derived images keep.
    "WindowCenter",
    "WindowWidth",
    "WindowCenterWidthExplanation",
    "VOILUTFunction",
)
_COPIED_CT = (
    "KVP",
    "ScanOptions",
    "DataCollectionDiameter",
    "DataCollectionCenterPatient",
    "ReconstructionDiameter",
    "ReconstructionTargetCenterPatient",
    "DistanceSourceToDetector",
    "DistanceSourceToPatient",
    "GantryDetectorTilt",
    "TableHeight",
    "RotationDirection",
    "ExposureTime",
    "XRayTubeCurrent",
    "Exposure",
    "ExposureInuAs",
    "FilterType",
    "GeneratorPower",
    "FocalSpots",
    "ConvolutionKernel",
    "RevolutionTime",
    "SingleCollimationWidth",
    "TotalCollimationWidth",
    "TableSpeed",
    "TableFeedPerRotation",
    "SpiralPitchFactor",
    "CTDIvol",
    "CTDIPhantomTypeCodeSequence",
    "ExposureModulationType",
)
_COPIED_MR = (
    "ScanningSequence",
    "SequenceVariant",
    "ScanOptions",
    "MRAcquisitionType",
    "SequenceName",
    "AngioFlag",
    "RepetitionTime",
    "EchoTime",
    "InversionTime",
    "NumberOfAverages",
    "ImagingFrequency",
    "ImagedNucleus",
    "EchoNumbers",
    "MagneticFieldStrength",
    "NumberOfPhaseEncodingSteps",
    "EchoTrainLength",
    "PercentSampling",
    "PercentPhaseFieldOfView",
    "PixelBandwidth",
    "ReceiveCoilName",
    "TransmitCoilName",
    "AcquisitionMatrix",
    "InPlanePhaseEncodingDirection",
    "FlipAngle",
    "VariableFlipAngleFlag",
    "SAR",
    "TriggerTime",
    "NominalInterval",
    "HeartRate",
    "CardiacNumberOfImages",
    "TriggerWindow",
)
# Type 2 attributes of the CT and MR Image IODs: present in every file, empty when the source does not have them.
_REQUIRED_EMPTY_COMMON = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
    "PatientPosition",
    "PositionReferenceIndicator",
    "Manufacturer",
    "AcquisitionNumber",
)
_REQUIRED_EMPTY = {
    "CT": _REQUIRED_EMPTY_COMMON + ("KVP",),
    "MR": _REQUIRED_EMPTY_COMMON + ("ScanOptions", "MRAcquisitionType", "EchoTime", "EchoTrainLength"),
}

# Defined terms for value 3 of ImageType in CT images (DICOM PS3.3 C.8.2.1.1.1).
_CT_IMAGE_TYPE_VALUE3 = ("AXIAL", "LOCALIZER")

# Source transfer syntaxes that are always or usually lossy, with the LossyImageCompressionMethod term (DICOM PS3.3
# C.7.6.1.1.5.1). A derived image of a lossy-compressed image must keep LossyImageCompression "01".
_LOSSY_METHODS = {
    JPEGBaseline8Bit: "ISO_10918_1",
    JPEGExtended12Bit: "ISO_10918_1",
    JPEGLSNearLossless: "ISO_14495_1",
    JPEG2000: "ISO_15444_1",
    HTJ2K: "ISO_15444_15",
}


@dataclass(frozen=True)
class _Reference:
    """One source image that a derived slice was computed from."""

    sop_class_uid: str
    sop_instance_uid: str
    series_instance_uid: str
    frame_number: int | None  # 1-based frame of a multi-frame source file, None for a single-frame file


@dataclass
class _SourceSlice:
    """The header that a derived slice copies its attributes from, and the source images it references."""

    dataset: Dataset
    transfer_syntax: str
    references: list[_Reference]
    slice_thickness: Any = None  # SliceThickness, from the header or from the functional groups of a multi-frame file


@dataclass
class _Geometry:
    """The Image Plane attributes of the derived slices, in LPS+ millimetres."""

    orientation: np.ndarray  # ImageOrientationPatient: row cosine, then column cosine
    pixel_spacing: tuple[float, float]  # (distance between rows, distance between columns)
    positions: np.ndarray  # ImagePositionPatient of each slice, shape (slices, 3)
    normal: np.ndarray
    spacing_between_slices: float


def write_dicom_series(
    volume: Volume,
    folder: str | os.PathLike[str],
    *,
    reference: str | os.PathLike[str] | Sequence[Dataset] | None = None,
    overwrite: bool = False,
    series_description: str | None = None,
    derivation_description: str | None = None,
    series_number: int | None = None,
) -> Path:
    """Write ``volume`` as a derived DICOM series, one file per slice, into the new folder ``folder``.

    The source series is taken from ``volume.metadata`` when the volume was read from DICOM. Otherwise pass
    ``reference``: the source DICOM folder or file, or pydicom datasets (one per slice in slice order, or a single
    one for every slice). The folder is filled under a temporary name and renamed onto ``folder`` only when every
    file is written.

    Defaults: SeriesNumber is the source's plus :data:`SERIES_NUMBER_OFFSET`, and SeriesDescription and
    DerivationDescription name medgan, its version and the model in ``volume.metadata["medgan_model"]``.

    NOTE: a volume whose slice axis points against the normal of its first two axes (a left-handed grid) is
    written slice by slice as given, and medgan and other readers return it with the slice order reversed.

    Raises:
        ValueError: if there is no DICOM source (no DICOM metadata and no ``reference``), the volume's shape no
            longer matches the source's slice count or matrix, the source modality is not CT or MR, the affine
            has an in-plane shear, a description is too long, or voxels are NaN or infinite.
        FileExistsError: if ``folder`` exists and ``overwrite`` is false.
    """
    target = Path(folder)
    sources = _source_slices(volume, reference, target)
    _check_shape(volume, sources, target)
    modality = _modality(volume, sources[0])
    geometry = _geometry(volume.affine, volume.shape[2], target)
    pixels = output_array(volume, "int16", target)

    created = datetime.now()
    first = sources[0].dataset
    model = str(volume.metadata.get("medgan_model") or "")
    interpolated = any(len(source.references) > 1 for source in sources)
    series = Dataset()
    series.Modality = modality
    series.SOPClassUID = _SOP_CLASSES[modality]
    series.SeriesInstanceUID = generate_uid()
    series.SeriesNumber = _series_number(series_number, first)
    series.SeriesDescription = _series_description(series_description, first, model)
    series.DerivationDescription = _derivation_description(derivation_description, first, model, interpolated)
    series.SeriesDate = series.ContentDate = series.InstanceCreationDate = created.strftime("%Y%m%d")
    series.SeriesTime = series.ContentTime = series.InstanceCreationTime = created.strftime("%H%M%S.%f")
    # Type 1 UIDs that the whole series shares, generated once when the source lacks them.
    for keyword in ("StudyInstanceUID", "FrameOfReferenceUID"):
        if keyword not in first:
            logger.warning("The source of %s has no %s. Generating a new one for the derived series.", target, keyword)
            setattr(series, keyword, generate_uid())

    with atomic_output(target, overwrite, directory=True) as temporary:
        for k, source in enumerate(sources):
            dataset = _slice_dataset(k, source, series, geometry, pixels[:, :, k], model, created)
            dataset.save_as(temporary / FILE_NAME_FORMAT.format(k + 1), enforce_file_format=True)
    logger.info(
        "Wrote %d slices of derived %s series %s (SeriesNumber %s) to %s",
        len(sources),
        modality,
        series.SeriesInstanceUID,
        series.SeriesNumber,
        target,
    )
    return target


def _source_slices(
    volume: Volume, reference: str | os.PathLike[str] | Sequence[Dataset] | None, target: Path
) -> list[_SourceSlice]:
    """Return the source header and referenced images of each slice of ``volume``."""
    if reference is None:
        return _slices_from_metadata(volume.metadata, target)
    if isinstance(reference, (str, os.PathLike)):
        from medgan.io.readers import read_volume

        # resample_z gives a source of uneven slices the same "source_slices" that the volume was read with.
        source_volume = read_volume(reference, resample_z=True)
        if source_volume.metadata.get("format") != "dicom":
            raise ValueError(f"The reference {reference} for {target} is not DICOM. Pass the source DICOM series.")
        if source_volume.shape == volume.shape and not np.allclose(source_volume.affine, volume.affine, atol=1e-3):
            logger.warning(
                "The affine of the volume written to %s differs from that of its reference %s. The derived series "
                "takes its geometry from the volume.",
                target,
                reference,
            )
        return _slices_from_metadata(source_volume.metadata, target)

    datasets = list(reference)
    if len(datasets) == 1:
        datasets = datasets * volume.shape[2]
    if len(datasets) != volume.shape[2]:
        raise ValueError(
            f"Got {len(datasets)} reference datasets for the {volume.shape[2]} slices written to {target}. Pass one "
            "dataset per slice in slice order, or one for all slices."
        )
    slices = []
    for dataset in datasets:
        references = []
        if "SOPInstanceUID" in dataset:
            references.append(
                _Reference(
                    sop_class_uid=str(dataset.get("SOPClassUID", "")),
                    sop_instance_uid=str(dataset.SOPInstanceUID),
                    series_instance_uid=str(dataset.get("SeriesInstanceUID", "")),
                    frame_number=None,
                )
            )
        slices.append(
            _SourceSlice(
                dataset=dataset,
                transfer_syntax=_transfer_syntax(dataset),
                references=references,
                slice_thickness=dataset.get("SliceThickness"),
            )
        )
    return slices


def _slices_from_metadata(metadata: dict[str, Any], target: Path) -> list[_SourceSlice]:
    files = metadata.get("files") or []
    if metadata.get("format") != "dicom" or not files:
        raise ValueError(
            f"Cannot write {target} as a derived DICOM series: the volume was not read from DICOM (format "
            f"{metadata.get('format') or 'unknown'}), so there are no source patient and study attributes to "
            "copy. Pass reference= with the source DICOM series, or write NIfTI instead."
        )
    frames = metadata.get("frames") or [None] * len(files)
    instance_uids = metadata.get("sop_instance_uids") or [""] * len(files)
    source_indexes = metadata.get("source_slices") or [[index] for index in range(len(files))]

    headers: dict[str, Dataset] = {}
    for path in dict.fromkeys(files):
        headers[path] = _read_header(path, target)

    slices = []
    for indexes in source_indexes:
        references = []
        for index in indexes:
            header = headers[files[index]]
            frame = frames[index]
            references.append(
                _Reference(
                    sop_class_uid=str(header.get("SOPClassUID", "")),
                    sop_instance_uid=instance_uids[index] or str(header.get("SOPInstanceUID", "")),
                    series_instance_uid=str(header.get("SeriesInstanceUID", "")),
                    frame_number=None if frame is None else frame + 1,
                )
            )
        header = headers[files[indexes[0]]]
        thickness = header.get("SliceThickness")
        if metadata.get("slice_thickness_override_mm") is not None:
            # The volume was resampled along k (super-resolution): the source's acquired thickness no longer
            # describes its slices.
            thickness = metadata["slice_thickness_override_mm"]
        slices.append(
            _SourceSlice(
                dataset=header,
                transfer_syntax=_transfer_syntax(header),
                references=references,
                slice_thickness=thickness if thickness not in (None, "") else metadata.get("slice_thickness"),
            )
        )
    return slices


def _read_header(path: str, target: Path) -> Dataset:
    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except (OSError, EOFError, ValueError, InvalidDicomError) as error:
        raise ValueError(
            f"Failed to read the source DICOM file {path}, which volume.metadata['files'] lists, to write {target}: "
            f"{error}. Pass reference= with the source series if it has moved."
        ) from error


def _transfer_syntax(dataset: Dataset) -> str:
    file_meta = getattr(dataset, "file_meta", None)
    uid = file_meta.get("TransferSyntaxUID") if file_meta is not None else None
    return str(uid) if uid is not None else ""


def _check_shape(volume: Volume, sources: list[_SourceSlice], target: Path) -> None:
    first = sources[0].dataset
    rows, columns = int(first.get("Rows") or 0), int(first.get("Columns") or 0)
    expected = (columns, rows, len(sources))
    if volume.shape != expected:
        raise ValueError(
            f"Cannot write {target} as a derived series of its DICOM source: the volume has shape {volume.shape} "
            f"(columns, rows, slices) but the source has {len(sources)} slices of {rows} x {columns} (Rows x "
            "Columns). A volume cropped or resampled after reading no longer matches its source slices. Write it "
            "as NIfTI instead."
        )


def _modality(volume: Volume, source: _SourceSlice) -> str:
    modality = str(source.dataset.get("Modality", ""))
    if modality not in _SOP_CLASSES:
        raise ValueError(
            f"The source series has Modality {modality!r}, but derived DICOM output supports CT and MR sources "
            "only. Write NIfTI instead."
        )
    if volume.modality and volume.modality != modality:
        raise ValueError(
            f"The volume has modality {volume.modality} but its DICOM source has Modality {modality}. Pass the "
            "source series that the volume was read from."
        )
    return modality


def _geometry(affine: np.ndarray, slices: int, target: Path) -> _Geometry:
    lps = LPS_TO_RAS @ affine
    along_row = lps[:3, 0]  # voxel i is the column index, so its axis runs along a row
    along_column = lps[:3, 1]
    column_spacing = float(np.linalg.norm(along_row))
    row_spacing = float(np.linalg.norm(along_column))
    row_cosine = along_row / column_spacing
    column_cosine = along_column / row_spacing
    if abs(row_cosine @ column_cosine) > _COSINE_TOLERANCE:
        raise ValueError(
            f"Cannot write {target} as DICOM: the affine's first two columns are not orthogonal (cosine "
            f"{row_cosine @ column_cosine:.3g}), and ImageOrientationPatient cannot store an in-plane shear. "
            "Write NIfTI instead."
        )
    normal = np.cross(row_cosine, column_cosine)
    normal /= np.linalg.norm(normal)
    step = lps[:3, 2]
    positions = lps[:3, 3] + np.outer(np.arange(slices), step)
    return _Geometry(
        orientation=np.concatenate([row_cosine, column_cosine]),
        pixel_spacing=(row_spacing, column_spacing),
        positions=positions,
        normal=normal,
        spacing_between_slices=float(abs(step @ normal)),
    )


def _series_number(requested: int | None, source: Dataset) -> int:
    if requested is None:
        source_number = source.get("SeriesNumber")
        number = SERIES_NUMBER_OFFSET + (int(source_number) if source_number not in (None, "") else 0)
    else:
        number = int(requested)
    if not 0 <= number <= _MAX_SERIES_NUMBER:
        raise ValueError(
            f"SeriesNumber {number} is outside 0 to {_MAX_SERIES_NUMBER}. Pass series_number= with a value in range."
        )
    return number


def _series_description(requested: str | None, source: Dataset, model: str) -> str:
    if requested is not None:
        _check_text(requested, "series_description", _MAX_LO_LENGTH)
        return requested
    from medgan import __version__

    suffix = f"medgan {__version__} {model or 'no model'}"[:_MAX_LO_LENGTH]
    # A series that medgan restored before ends in its own tag: drop it rather than cut it in the middle.
    # DerivationDescription still names the source series.
    source_description = _PREVIOUS_TAG.sub("", str(source.get("SeriesDescription", ""))).strip()
    room = _MAX_LO_LENGTH - len(suffix) - len(" []")
    if not source_description or room <= 0:
        return suffix
    return f"{source_description[:room].strip()} [{suffix}]"


def _derivation_description(requested: str | None, source: Dataset, model: str, interpolated: bool) -> str:
    if requested is not None:
        _check_text(requested, "derivation_description", _MAX_ST_LENGTH)
        return requested
    from medgan import __version__

    model_text = f"model {model}" if model else "no restoration model recorded"
    text = (
        f"Restored by medgan {__version__} ({model_text}) from series {source.get('SeriesInstanceUID', 'unknown')}"
    )
    source_description = str(source.get("SeriesDescription", "")).strip()
    if source_description:
        text += f" ({source_description})"
    text += "."
    if interpolated:
        text += " Before restoration the slices were resampled to uniform spacing by linear interpolation."
    return text[:_MAX_ST_LENGTH]


def _check_text(value: str, name: str, max_length: int) -> None:
    if len(value) > max_length:
        raise ValueError(f"{name} has {len(value)} characters, but at most {max_length} fit: {value!r}.")
    if "\\" in value or any(ord(character) < 32 for character in value):
        raise ValueError(f"{name} must not contain backslashes or control characters: {value!r}.")


def _slice_dataset(
    k: int,
    source: _SourceSlice,
    series: Dataset,
    geometry: _Geometry,
    pixels: np.ndarray,
    model: str,
    created: datetime,
) -> FileDataset:
    """Build the derived file for slice ``k`` from its source header, the series attributes and its pixels."""
    modality = str(series.Modality)
    file_meta = FileMetaDataset()
    file_meta.MediaStorageSOPClassUID = series.SOPClassUID
    file_meta.MediaStorageSOPInstanceUID = generate_uid()
    file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = FileDataset(FILE_NAME_FORMAT.format(k + 1), Dataset(), file_meta=file_meta, preamble=b"\0" * 128)

    copied = _COPIED_COMMON + (_COPIED_CT if modality == "CT" else _COPIED_MR)
    for keyword in copied:
        if keyword in source.dataset:
            element = source.dataset[keyword]
            dataset[element.tag] = copy.deepcopy(element)
    for keyword in _REQUIRED_EMPTY[modality]:
        if keyword not in dataset:
            setattr(dataset, keyword, None)
    if "Laterality" not in dataset and "BodyPartExamined" not in dataset:
        # Laterality is required for paired body parts. Without BodyPartExamined that is unknown, and an empty
        # value states exactly that.
        dataset.Laterality = None
    for element in series:
        dataset[element.tag] = copy.deepcopy(element)
    _mark_lossy_source(dataset, source.transfer_syntax)

    dataset.SOPInstanceUID = file_meta.MediaStorageSOPInstanceUID
    dataset.ImageType = _image_type(modality, source.dataset)
    dataset.InstanceNumber = k + 1
    _add_references(dataset, source.references)
    _add_contributing_equipment(dataset, model, created)

    position = geometry.positions[k]
    dataset.ImagePositionPatient = [_decimal(value) for value in position]
    dataset.ImageOrientationPatient = [_decimal(value) for value in geometry.orientation]
    dataset.PixelSpacing = [_decimal(value) for value in geometry.pixel_spacing]
    thickness = source.slice_thickness
    dataset.SliceThickness = None if thickness in (None, "") else _decimal(float(thickness))
    dataset.SpacingBetweenSlices = _decimal(geometry.spacing_between_slices)
    dataset.SliceLocation = _decimal(position @ geometry.normal)

    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = "MONOCHROME2"
    dataset.Rows, dataset.Columns = pixels.shape[1], pixels.shape[0]
    dataset.BitsAllocated = 16
    dataset.BitsStored = 16
    dataset.HighBit = 15
    dataset.PixelRepresentation = 1
    if modality == "CT":
        dataset.RescaleIntercept = "0"
        dataset.RescaleSlope = "1"
        dataset.RescaleType = "HU"
    # The volume is indexed (column, row), and DICOM stores pixels row by row.
    dataset.PixelData = np.ascontiguousarray(pixels.T, dtype="<i2").tobytes()
    return dataset


def _image_type(modality: str, source: Dataset) -> list[str]:
    """Return ImageType DERIVED\\SECONDARY with the value 3 that CT and MR images require, taken from the source."""
    source_values = list(source.get("ImageType") or [])
    value3 = source_values[2] if len(source_values) > 2 and source_values[2] else ""
    if modality == "CT" and value3 not in _CT_IMAGE_TYPE_VALUE3:
        value3 = "AXIAL"
    return ["DERIVED", "SECONDARY", value3 or "OTHER"]


def _mark_lossy_source(dataset: Dataset, transfer_syntax: str) -> None:
    """Set LossyImageCompression "01" when the source pixels were lossy-compressed and the source did not say so."""
    method = _LOSSY_METHODS.get(transfer_syntax)
    if method is None or dataset.get("LossyImageCompression") == "01":
        return
    dataset.LossyImageCompression = "01"
    if "LossyImageCompressionMethod" not in dataset:
        dataset.LossyImageCompressionMethod = method


def _add_references(dataset: Dataset, references: list[_Reference]) -> None:
    """Reference the source images in SourceImageSequence and their series in ReferencedSeriesSequence."""
    if not references:
        return
    items = []
    by_series: dict[str, list[Dataset]] = {}
    for reference in references:
        item = Dataset()
        item.ReferencedSOPClassUID = reference.sop_class_uid
        item.ReferencedSOPInstanceUID = reference.sop_instance_uid
        if reference.frame_number is not None:
            item.ReferencedFrameNumber = reference.frame_number
        items.append(item)
        instance = Dataset()
        instance.ReferencedSOPClassUID = reference.sop_class_uid
        instance.ReferencedSOPInstanceUID = reference.sop_instance_uid
        by_series.setdefault(reference.series_instance_uid, []).append(instance)
    dataset.SourceImageSequence = items

    # Common Instance Reference module: the series of every referenced instance, which shares this study.
    series_items = []
    for series_uid, instances in by_series.items():
        if not series_uid:
            continue
        series_item = Dataset()
        series_item.SeriesInstanceUID = series_uid
        series_item.ReferencedInstanceSequence = _unique_instances(instances)
        series_items.append(series_item)
    if series_items:
        dataset.ReferencedSeriesSequence = series_items


def _unique_instances(instances: list[Dataset]) -> list[Dataset]:
    # Two frames of one multi-frame source file are one instance.
    unique: dict[str, Dataset] = {}
    for instance in instances:
        unique.setdefault(str(instance.ReferencedSOPInstanceUID), instance)
    return list(unique.values())


def _add_contributing_equipment(dataset: Dataset, model: str, created: datetime) -> None:
    from medgan import __version__

    purpose = Dataset()
    purpose.CodeValue = codes.DCM.ModifyingEquipment.value
    purpose.CodingSchemeDesignator = codes.DCM.ModifyingEquipment.scheme_designator
    purpose.CodeMeaning = codes.DCM.ModifyingEquipment.meaning
    equipment = Dataset()
    equipment.PurposeOfReferenceCodeSequence = [purpose]
    equipment.Manufacturer = "medgan"
    if model:
        equipment.ManufacturerModelName = model[:_MAX_LO_LENGTH]
    equipment.SoftwareVersions = __version__
    equipment.ContributionDateTime = created.strftime("%Y%m%d%H%M%S.%f")
    equipment.ContributionDescription = "Restoration of the source images with a 3D generative adversarial network"
    dataset.ContributingEquipmentSequence = [equipment]


def _decimal(value: float) -> str:
    """Format a number as a DICOM decimal string (DS) of at most 16 characters."""
    # Adding 0.0 turns -0.0 into 0.0.
    return format_number_as_ds(float(value) + 0.0)
