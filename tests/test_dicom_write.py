"""Tests for medgan.io.dicom_write: derived DICOM series that read back with the same values and geometry."""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.uid import CTImageStorage, JPEGBaseline8Bit, MRImageStorage
from test_io import (
    AXIAL,
    LPS_TO_RAS,
    axial_positions,
    parsed,
    rotation,
    world,
    write_ct_series,
    write_enhanced_ct,
)

import medgan
from medgan.io import Volume, read_volume, write_volume
from medgan.io.dicom_write import SERIES_NUMBER_OFFSET, write_dicom_series

MODEL = "test-model"


def oblique_series(folder: Path, count: int = 4) -> dict:
    """Write a CT series with a rotated IOP, anisotropic pixels, shuffled names and mixed rescale values."""
    matrix = rotation(20, -15, 30)
    orientation = [*matrix[:, 0], *matrix[:, 1]]
    normal = np.cross(parsed(orientation)[:3], parsed(orientation)[3:])
    origin = np.array([12.5, -30.25, 101.0])
    offsets = [offset for offset in (3, 0, 2, 1, 5, 4) if offset < count]  # slice index along the normal
    positions = [origin + 1.75 * offset * normal for offset in offsets]
    return write_ct_series(folder, positions=positions, orientation=orientation, pixel_spacing=(0.9, 0.45))


def restored_volume(folder: Path) -> Volume:
    """Read a source series as the restorer returns it: same grid, with the model name in the metadata."""
    volume = read_volume(folder)
    volume.metadata["medgan_model"] = MODEL
    return volume


def headers(folder: Path) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(path) for path in sorted(folder.iterdir())]


def add_clinical_attributes(folder: Path) -> None:
    """Give every file of a synthetic series the patient, study and equipment attributes of a clinical CT."""
    for path in folder.iterdir():
        dataset = pydicom.dcmread(path)
        dataset.PatientName = "Doe^Jane"
        dataset.PatientBirthDate = "19700101"
        dataset.PatientSex = "F"
        dataset.StudyDate = "20240301"
        dataset.StudyTime = "101500"
        dataset.StudyID = "4711"
        dataset.AccessionNumber = "A0042"
        dataset.ReferringPhysicianName = "Smith^John"
        dataset.BodyPartExamined = "CHEST"
        dataset.PatientPosition = "HFS"
        dataset.Manufacturer = "Example Scanner Co"
        dataset.KVP = "120"
        dataset.AcquisitionNumber = 1
        dataset.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        dataset.WindowCenter = "40"
        dataset.WindowWidth = "400"
        dataset.PositionReferenceIndicator = ""
        dataset.save_as(path)


# ---------------------------------------------------------------------------------------------------------------
# Round trip


def test_round_trip_through_medgan_reader(tmp_path):
    oblique_series(tmp_path / "source")
    volume = restored_volume(tmp_path / "source")

    written = write_dicom_series(volume, tmp_path / "derived")
    result = read_volume(written)

    assert written == tmp_path / "derived"
    assert result.shape == volume.shape
    assert np.array_equal(result.array, np.rint(volume.array))
    np.testing.assert_allclose(result.affine, volume.affine, atol=1e-4)
    assert result.modality == "CT"
    assert result.metadata["rescale"] == [(1.0, 0.0)] * 4


def test_round_trip_through_simpleitk(tmp_path):
    oblique_series(tmp_path / "source")
    volume = restored_volume(tmp_path / "source")
    folder = write_dicom_series(volume, tmp_path / "derived")

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder)))
    reader.SetOutputPixelType(sitk.sitkFloat32)
    image = reader.Execute()

    lps = LPS_TO_RAS @ volume.affine[:3, :3]
    spacing = np.linalg.norm(lps, axis=0)
    np.testing.assert_allclose(image.GetOrigin(), LPS_TO_RAS @ volume.affine[:3, 3], atol=1e-4)
    np.testing.assert_allclose(image.GetSpacing(), spacing, atol=1e-4)
    np.testing.assert_allclose(np.array(image.GetDirection()).reshape(3, 3), lps / spacing, atol=1e-4)
    itk_array = sitk.GetArrayFromImage(image).transpose()
    assert np.array_equal(itk_array, np.rint(volume.array))


def test_pixels_int16_with_rescale_identity(tmp_path):
    oblique_series(tmp_path / "source")
    volume = restored_volume(tmp_path / "source")
    volume = volume.with_array(volume.array + 0.4)
    folder = write_dicom_series(volume, tmp_path / "derived")

    for k, dataset in enumerate(headers(folder)):
        assert dataset.BitsAllocated == 16
        assert dataset.BitsStored == 16
        assert dataset.HighBit == 15
        assert dataset.PixelRepresentation == 1
        assert dataset.SamplesPerPixel == 1
        assert dataset.PhotometricInterpretation == "MONOCHROME2"
        assert float(dataset.RescaleSlope) == 1.0
        assert float(dataset.RescaleIntercept) == 0.0
        assert dataset.RescaleType == "HU"
        assert dataset.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert dataset.pixel_array.dtype == np.int16
        assert np.array_equal(dataset.pixel_array, np.rint(volume.array[:, :, k]).T)


# ---------------------------------------------------------------------------------------------------------------
# Attributes


def test_new_uids_same_study_and_patient(tmp_path):
    series = oblique_series(tmp_path / "source")
    source = headers(tmp_path / "source")
    volume = restored_volume(tmp_path / "source")
    derived = headers(write_dicom_series(volume, tmp_path / "derived"))

    source_instances = {str(dataset.SOPInstanceUID) for dataset in source}
    derived_instances = {str(dataset.SOPInstanceUID) for dataset in derived}
    assert len(derived_instances) == len(derived)
    assert not derived_instances & source_instances
    assert len({str(dataset.SeriesInstanceUID) for dataset in derived}) == 1
    assert derived[0].SeriesInstanceUID != series["series_uid"]
    for dataset in derived:
        assert dataset.StudyInstanceUID == source[0].StudyInstanceUID
        assert dataset.PatientID == "TEST-0001"
        assert dataset.FrameOfReferenceUID == source[0].FrameOfReferenceUID
        assert dataset.SOPClassUID == CTImageStorage
        assert dataset.file_meta.MediaStorageSOPInstanceUID == dataset.SOPInstanceUID
        assert dataset.Modality == "CT"


def test_derived_series_description(tmp_path):
    oblique_series(tmp_path / "source")
    volume = restored_volume(tmp_path / "source")
    derived = headers(write_dicom_series(volume, tmp_path / "derived"))

    first = derived[0]
    assert list(first.ImageType) == ["DERIVED", "SECONDARY", "AXIAL"]
    assert first.SeriesNumber == 3 + SERIES_NUMBER_OFFSET
    assert "synthetic CT" in first.SeriesDescription
    assert "medgan" in first.SeriesDescription
    assert MODEL in first.SeriesDescription
    assert medgan.__version__ in first.SeriesDescription
    assert "medgan" in first.DerivationDescription
    assert MODEL in first.DerivationDescription
    assert medgan.__version__ in first.DerivationDescription
    assert volume.metadata["series_instance_uid"] in first.DerivationDescription
    equipment = first.ContributingEquipmentSequence[0]
    assert equipment.Manufacturer == "medgan"
    assert equipment.SoftwareVersions == medgan.__version__


def test_restored_twice_keeps_one_tag(tmp_path):
    oblique_series(tmp_path / "source")
    first_folder = write_dicom_series(restored_volume(tmp_path / "source"), tmp_path / "derived")
    second = headers(write_dicom_series(restored_volume(first_folder), tmp_path / "derived_again"))[0]

    assert second.SeriesDescription.count("[medgan") == 1
    assert second.SeriesDescription.startswith("synthetic CT")
    assert second.SeriesDescription.endswith(f"{MODEL}]")


def test_custom_descriptions_and_number(tmp_path):
    oblique_series(tmp_path / "source", count=2)
    volume = restored_volume(tmp_path / "source")
    folder = write_dicom_series(
        volume,
        tmp_path / "derived",
        series_description="Denoised",
        derivation_description="Denoised for a reader study",
        series_number=77,
    )
    first = headers(folder)[0]
    assert first.SeriesDescription == "Denoised"
    assert first.DerivationDescription == "Denoised for a reader study"
    assert first.SeriesNumber == 77


def test_long_series_description_rejected(tmp_path):
    oblique_series(tmp_path / "source", count=2)
    volume = restored_volume(tmp_path / "source")
    with pytest.raises(ValueError, match="at most 64"):
        write_dicom_series(volume, tmp_path / "derived", series_description="x" * 65)
    assert not (tmp_path / "derived").exists()


def test_slices_follow_the_affine(tmp_path):
    oblique_series(tmp_path / "source")
    source_by_position = {
        tuple(np.round([float(v) for v in dataset.ImagePositionPatient], 3)): dataset
        for dataset in headers(tmp_path / "source")
    }
    volume = restored_volume(tmp_path / "source")
    folder = write_dicom_series(volume, tmp_path / "derived")

    for k, path in enumerate(sorted(folder.iterdir())):
        dataset = pydicom.dcmread(path)
        assert path.name == f"IM{k + 1:06d}.dcm"
        assert dataset.InstanceNumber == k + 1
        position = np.array([float(v) for v in dataset.ImagePositionPatient])
        np.testing.assert_allclose(LPS_TO_RAS @ position, world(volume.affine, (0, 0, k)), atol=1e-4)
        np.testing.assert_allclose([float(v) for v in dataset.PixelSpacing], [0.9, 0.45], atol=1e-9)
        assert float(dataset.SliceThickness) == 2.5
        assert float(dataset.SpacingBetweenSlices) == pytest.approx(1.75, abs=1e-6)
        # The derived slice references the source instance at the same position.
        source = source_by_position[tuple(np.round(position, 3))]
        assert dataset.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
        assert dataset.SourceImageSequence[0].ReferencedSOPClassUID == CTImageStorage
        referenced_series = dataset.ReferencedSeriesSequence[0]
        assert referenced_series.SeriesInstanceUID == source.SeriesInstanceUID
        assert referenced_series.ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID


def test_clinical_attributes_copied(tmp_path):
    oblique_series(tmp_path / "source", count=2)
    add_clinical_attributes(tmp_path / "source")
    volume = restored_volume(tmp_path / "source")
    first = headers(write_dicom_series(volume, tmp_path / "derived"))[0]

    assert first.PatientName == "Doe^Jane"
    assert first.PatientBirthDate == "19700101"
    assert first.PatientSex == "F"
    assert first.StudyDate == "20240301"
    assert first.StudyTime == "101500"
    assert first.StudyID == "4711"
    assert first.AccessionNumber == "A0042"
    assert first.ReferringPhysicianName == "Smith^John"
    assert first.Manufacturer == "Example Scanner Co"
    assert float(first.KVP) == 120.0
    assert float(first.WindowCenter) == 40.0
    assert float(first.WindowWidth) == 400.0
    assert "Laterality" not in first


def test_type2_attributes_present_when_source_lacks_them(tmp_path):
    oblique_series(tmp_path / "source", count=2)
    volume = restored_volume(tmp_path / "source")
    first = headers(write_dicom_series(volume, tmp_path / "derived"))[0]
    for keyword in ("PatientName", "PatientBirthDate", "StudyDate", "AccessionNumber", "KVP", "Laterality"):
        assert keyword in first, keyword
        assert first[keyword].is_empty, keyword


# ---------------------------------------------------------------------------------------------------------------
# Values out of range, overwriting and failures


def test_clipped_voxels_counted_in_warning(tmp_path, caplog):
    oblique_series(tmp_path / "source", count=2)
    volume = restored_volume(tmp_path / "source")
    array = volume.array.copy()
    array[0, 0, 0] = 40000.0
    array[1, 0, 0] = -50000.0
    array[2, 0, 1] = 32767.4  # rounds into range
    volume = volume.with_array(array)

    with caplog.at_level(logging.WARNING, logger="medgan.io"):
        folder = write_dicom_series(volume, tmp_path / "derived")

    warnings = [record for record in caplog.records if "clipped" in record.getMessage()]
    assert len(warnings) == 1
    assert f"clipped 2 of {array.size} voxels" in warnings[0].getMessage()
    result = read_volume(folder)
    assert result.array[0, 0, 0] == 32767
    assert result.array[1, 0, 0] == -32768
    assert result.array[2, 0, 1] == 32767


def test_refuses_existing_folder(tmp_path):
    oblique_series(tmp_path / "source", count=2)
    volume = restored_volume(tmp_path / "source")
    target = tmp_path / "derived"
    target.mkdir()
    (target / "keep.txt").write_text("precious")

    with pytest.raises(FileExistsError, match="overwrite"):
        write_dicom_series(volume, target)
    assert [path.name for path in target.iterdir()] == ["keep.txt"]

    write_dicom_series(volume, target, overwrite=True)
    assert sorted(path.name for path in target.iterdir()) == ["IM000001.dcm", "IM000002.dcm"]


def test_error_mid_write_leaves_no_folder(tmp_path, monkeypatch):
    import medgan.io.dicom_write as dicom_write

    oblique_series(tmp_path / "source")
    volume = restored_volume(tmp_path / "source")
    original = dicom_write._slice_dataset

    def fail_on_third_slice(k, *arguments):
        if k == 2:
            raise RuntimeError("disk full")
        return original(k, *arguments)

    monkeypatch.setattr(dicom_write, "_slice_dataset", fail_on_third_slice)
    (tmp_path / "out").mkdir()
    with pytest.raises(RuntimeError, match="disk full"):
        write_dicom_series(volume, tmp_path / "out" / "derived")
    assert list((tmp_path / "out").iterdir()) == []


# ---------------------------------------------------------------------------------------------------------------
# Sources and references


def test_volume_without_dicom_source_rejected(tmp_path):
    oblique_series(tmp_path / "source", count=2)
    nifti = read_volume(write_volume(read_volume(tmp_path / "source"), tmp_path / "volume.nii.gz"))
    with pytest.raises(ValueError) as error:
        write_dicom_series(nifti, tmp_path / "derived")
    assert "reference" in str(error.value)
    assert "nifti" in str(error.value)
    assert not (tmp_path / "derived").exists()


def test_reference_folder_for_nifti_volume(tmp_path):
    series = oblique_series(tmp_path / "source", count=3)
    nifti = read_volume(write_volume(read_volume(tmp_path / "source"), tmp_path / "volume.nii.gz"))

    folder = write_dicom_series(nifti, tmp_path / "derived", reference=tmp_path / "source")

    result = read_volume(folder)
    assert np.array_equal(result.array, np.rint(nifti.array))
    np.testing.assert_allclose(result.affine, nifti.affine, atol=1e-4)
    first = headers(folder)[0]
    assert first.ReferencedSeriesSequence[0].SeriesInstanceUID == series["series_uid"]
    assert "no restoration model recorded" in first.DerivationDescription


def test_reference_single_dataset_for_all_slices(tmp_path):
    oblique_series(tmp_path / "source", count=3)
    template = headers(tmp_path / "source")[0]
    nifti = read_volume(write_volume(read_volume(tmp_path / "source"), tmp_path / "volume.nii.gz"))

    derived = headers(write_dicom_series(nifti, tmp_path / "derived", reference=[template]))

    assert len(derived) == 3
    for dataset in derived:
        assert dataset.StudyInstanceUID == template.StudyInstanceUID
        assert dataset.SourceImageSequence[0].ReferencedSOPInstanceUID == template.SOPInstanceUID


def test_reference_dataset_count_mismatch_rejected(tmp_path):
    oblique_series(tmp_path / "source", count=3)
    datasets = headers(tmp_path / "source")[:2]
    volume = restored_volume(tmp_path / "source")
    with pytest.raises(ValueError, match="2 reference datasets for the 3 slices"):
        write_dicom_series(volume, tmp_path / "derived", reference=datasets)


def test_cropped_volume_rejected(tmp_path):
    oblique_series(tmp_path / "source")
    volume = restored_volume(tmp_path / "source")
    cropped = Volume(array=volume.array[:, :, :2], affine=volume.affine, modality="CT", metadata=volume.metadata)
    with pytest.raises(ValueError) as error:
        write_dicom_series(cropped, tmp_path / "derived")
    assert "(7, 5, 2)" in str(error.value)
    assert "4 slices of 5 x 7" in str(error.value)
    assert not (tmp_path / "derived").exists()


def test_in_plane_shear_rejected(tmp_path):
    oblique_series(tmp_path / "source", count=2)
    volume = restored_volume(tmp_path / "source")
    affine = volume.affine.copy()
    affine[:3, 1] += 0.2 * affine[:3, 0]
    sheared = Volume(array=volume.array, affine=affine, modality="CT", metadata=volume.metadata)
    with pytest.raises(ValueError, match="in-plane shear"):
        write_dicom_series(sheared, tmp_path / "derived")


def test_lossy_source_marked_lossy(tmp_path):
    oblique_series(tmp_path / "source", count=1)
    template = headers(tmp_path / "source")[0]
    template.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    volume = read_volume(tmp_path / "source")
    first = headers(write_dicom_series(volume, tmp_path / "derived", reference=[template]))[0]
    assert first.LossyImageCompression == "01"
    assert first.LossyImageCompressionMethod == "ISO_10918_1"
    assert first.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian


def test_gantry_tilt_round_trip(tmp_path):
    positions = [np.array([0.0, 3.0 * s, -2.0 * s]) for s in range(4)]
    write_ct_series(tmp_path / "source", positions=positions, orientation=AXIAL)
    volume = restored_volume(tmp_path / "source")
    result = read_volume(write_dicom_series(volume, tmp_path / "derived"))
    np.testing.assert_allclose(result.affine, volume.affine, atol=1e-4)
    assert np.array_equal(result.array, np.rint(volume.array))


def test_enhanced_multiframe_source(tmp_path):
    rng = np.random.default_rng(5)
    frames = rng.integers(-1000, 3000, size=(3, 5, 7))
    positions = [np.array([1.0, 2.0, 10.0 + 2.0 * z]) for z in (2, 0, 1)]
    source = tmp_path / "enhanced.dcm"
    write_enhanced_ct(source, frames, positions, AXIAL, (0.8, 0.6), [(1.0, -1024.0), (0.5, -1000.0), (2.0, 0.0)])
    volume = read_volume(source)

    folder = write_dicom_series(volume, tmp_path / "derived")

    result = read_volume(folder)
    assert np.array_equal(result.array, np.rint(volume.array))
    np.testing.assert_allclose(result.affine, volume.affine, atol=1e-4)
    derived = headers(folder)
    assert [dataset.SourceImageSequence[0].ReferencedFrameNumber for dataset in derived] == [2, 3, 1]
    assert float(derived[0].SliceThickness) == 2.0


def test_mr_source_written_as_mr(tmp_path):
    (tmp_path / "source").mkdir()
    pydicom.dcmread(pydicom.data.get_testdata_file("MR_small.dcm")).save_as(tmp_path / "source" / "mr.dcm")
    volume = read_volume(tmp_path / "source")

    folder = write_dicom_series(volume, tmp_path / "derived")

    first = headers(folder)[0]
    assert first.SOPClassUID == MRImageStorage
    assert first.Modality == "MR"
    assert "RescaleSlope" not in first
    assert first.ImageType[:2] == ["DERIVED", "SECONDARY"]
    result = read_volume(folder)
    assert np.array_equal(result.array, np.rint(volume.array))
    np.testing.assert_allclose(result.affine, volume.affine, atol=1e-4)


def test_write_volume_dicom_format(tmp_path):
    oblique_series(tmp_path / "source", count=2)
    volume = restored_volume(tmp_path / "source")

    folder = write_volume(volume, tmp_path / "derived", format="dicom")

    assert sorted(path.name for path in folder.iterdir()) == ["IM000001.dcm", "IM000002.dcm"]
    with pytest.raises(ValueError, match="always int16"):
        write_volume(volume, tmp_path / "other", format="dicom", dtype="float32")
    with pytest.raises(ValueError, match="nrrd suffix"):
        write_volume(volume, tmp_path / "volume.nii.gz", format="nrrd")


# ---------------------------------------------------------------------------------------------------------------
# Conformance with dciodvfy (dicom3tools)


@pytest.mark.skipif(
    shutil.which("dciodvfy") is None,
    reason="dciodvfy is not on PATH; install dicom3tools (apt-get install dicom3tools) to run this check",
)
@pytest.mark.parametrize("source_kind", ["synthetic", "clinical attributes", "pydicom CT_small"])
def test_dciodvfy_reports_no_errors(tmp_path, source_kind):
    source = tmp_path / "source"
    if source_kind == "pydicom CT_small":
        source.mkdir()
        pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm")).save_as(source / "ct.dcm")
    else:
        write_ct_series(source, positions=axial_positions(3), orientation=AXIAL)
        if source_kind == "clinical attributes":
            add_clinical_attributes(source)
    folder = write_dicom_series(restored_volume(source), tmp_path / "derived")

    for path in sorted(folder.iterdir()):
        result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
        lines = (result.stdout + result.stderr).splitlines()
        errors = [line for line in lines if line.startswith("Error")]
        assert errors == [], "\n".join(lines)
