"""Tests for medgan.io: NIfTI, NRRD, MetaImage and DICOM input/output with exact geometry."""

from __future__ import annotations

import gzip
import logging
import uuid
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    CTImageStorage,
    EnhancedCTImageStorage,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    generate_uid,
)

from medgan.io import Volume, VolumeReadError, atomic_output, read_volume, write_volume

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


# ---------------------------------------------------------------------------------------------------------------
# Helpers


def rotation(x_degrees: float, y_degrees: float, z_degrees: float) -> np.ndarray:
    x, y, z = np.radians([x_degrees, y_degrees, z_degrees])
    rx = np.array([[1, 0, 0], [0, np.cos(x), -np.sin(x)], [0, np.sin(x), np.cos(x)]])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rz = np.array([[np.cos(z), -np.sin(z), 0], [np.sin(z), np.cos(z), 0], [0, 0, 1]])
    return rz @ ry @ rx


def oblique_affine() -> np.ndarray:
    """A RAS affine with rotation, anisotropic spacing and a non-zero origin."""
    affine = np.eye(4)
    affine[:3, :3] = rotation(10, -25, 35) @ np.diag([0.7, 1.3, 2.9])
    affine[:3, 3] = [-100.25, 37.5, 12.125]
    return affine


def random_volume(shape=(7, 5, 3), affine=None, seed=0, **kwargs) -> Volume:
    rng = np.random.default_rng(seed)
    array = rng.normal(0, 500, size=shape).astype(np.float32)
    return Volume(array=array, affine=oblique_affine() if affine is None else affine, **kwargs)


def ds_string(value: float) -> str:
    """Format a number as a DICOM decimal string (at most 16 characters)."""
    text = f"{value:.10f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def ds_values(values) -> list[str]:
    return [ds_string(float(v)) for v in values]


def parsed(values) -> np.ndarray:
    """The numbers a reader gets back from ds_values."""
    return np.array([float(v) for v in ds_values(values)])


def write_ct_slice(
    path: Path,
    stored: np.ndarray,
    *,
    position,
    orientation,
    pixel_spacing,
    slope: float,
    intercept: float,
    signed: bool,
    series_uid: str,
    study_uid: str,
    instance_number: int,
    series_number: int = 3,
    description: str = "synthetic CT",
    slice_thickness: float = 2.5,
) -> None:
    """Write one uncompressed CT Image Storage file with the given stored pixel values (rows, columns)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)

    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    ds.PatientID = "TEST-0001"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = "1.2.826.0.1.3680043.8.498.1"
    ds.SeriesNumber = series_number
    ds.SeriesDescription = description
    ds.InstanceNumber = instance_number

    ds.ImagePositionPatient = ds_values(position)
    ds.ImageOrientationPatient = ds_values(orientation)
    ds.PixelSpacing = ds_values(pixel_spacing)
    ds.SliceThickness = ds_string(slice_thickness)
    ds.RescaleSlope = ds_string(slope)
    ds.RescaleIntercept = ds_string(intercept)
    ds.RescaleType = "HU"

    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1 if signed else 0
    ds.PixelData = stored.astype(np.int16 if signed else np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)


def random_name(rng: np.random.Generator) -> str:
    """A random file name, with or without the .dcm suffix, so that nothing can be ordered by name."""
    name = uuid.UUID(bytes=rng.bytes(16)).hex
    return name + ".dcm" if rng.random() < 0.5 else name


def write_ct_series(
    folder: Path,
    *,
    positions: list[np.ndarray],
    orientation,
    pixel_spacing=(0.8, 0.6),
    rows: int = 5,
    columns: int = 7,
    rescales=None,
    seed: int = 0,
    series_uid: str | None = None,
    **kwargs,
) -> dict:
    """Write a CT series with shuffled file names and InstanceNumbers.

    Returns the series UID and, per slice in the order of ``positions``, the file name and the HU values
    (rows, columns) that the stored pixels and rescale parameters encode.
    """
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    study_uid = kwargs.pop("study_uid", generate_uid())
    count = len(positions)
    if rescales is None:
        rescales = [(1.0, -1024.0) if index % 2 == 0 else (0.5, -1000.0) for index in range(count)]
    instance_numbers = rng.permutation(count) + 1
    names, hu_slices = [], []
    for index, position in enumerate(positions):
        slope, intercept = rescales[index]
        signed = index % 3 != 1  # a mix of int16 and uint16 slices
        low = -1500 if signed else 0
        stored = rng.integers(low, 4000, size=(rows, columns))
        name = random_name(rng)
        write_ct_slice(
            folder / name,
            stored,
            position=position,
            orientation=orientation,
            pixel_spacing=pixel_spacing,
            slope=slope,
            intercept=intercept,
            signed=signed,
            series_uid=series_uid,
            study_uid=study_uid,
            instance_number=int(instance_numbers[index]),
            **kwargs,
        )
        names.append(name)
        hu_slices.append(stored * slope + intercept)
    return {"series_uid": series_uid, "names": names, "hu": hu_slices}


def expected_world_ras(position, orientation, pixel_spacing, i: int, j: int) -> np.ndarray:
    """Map pixel (column i, row j) of a slice to RAS with the Image Plane equation of DICOM PS3.3 C.7.6.2.1.1.

    P = S + X * delta_i * i + Y * delta_j * j, where X is the row direction cosine (first three IOP values),
    Y the column direction cosine, delta_i the column spacing PixelSpacing[1] and delta_j the row spacing
    PixelSpacing[0]. The result is in LPS, so x and y are negated for RAS.
    """
    position = parsed(position)
    orientation = parsed(orientation)
    row_spacing, column_spacing = parsed(pixel_spacing)
    lps = position + orientation[:3] * column_spacing * i + orientation[3:] * row_spacing * j
    return LPS_TO_RAS @ lps


def world(affine: np.ndarray, index) -> np.ndarray:
    return (affine @ np.array([*index, 1.0]))[:3]


def assert_geometry_matches_slices(volume: Volume, positions, orientation, pixel_spacing, order):
    """Check every voxel centre of the volume against the DICOM position of the slice it came from."""
    for k, source_index in enumerate(order):
        for i in range(volume.shape[0]):
            for j in range(volume.shape[1]):
                expected = expected_world_ras(positions[source_index], orientation, pixel_spacing, i, j)
                np.testing.assert_allclose(world(volume.affine, (i, j, k)), expected, atol=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# atomic_output


def test_atomic_output_temp_name_hidden_same_folder(tmp_path):
    target = tmp_path / "out.nii.gz"
    with atomic_output(target, overwrite=False) as temporary:
        assert temporary.parent == tmp_path
        assert temporary.name.startswith(".tmp-")
        assert temporary.name.endswith("-out.nii.gz")
        temporary.write_bytes(b"data")
        assert not target.exists()
    assert target.read_bytes() == b"data"
    assert [path.name for path in tmp_path.iterdir()] == ["out.nii.gz"]


def test_atomic_output_error_leaves_nothing(tmp_path):
    target = tmp_path / "out.nii"
    with pytest.raises(RuntimeError, match="writer failed"):
        with atomic_output(target, overwrite=False) as temporary:
            temporary.write_bytes(b"partial")
            raise RuntimeError("writer failed")
    assert list(tmp_path.iterdir()) == []


def test_atomic_output_error_keeps_existing_file(tmp_path):
    target = tmp_path / "out.nii"
    target.write_bytes(b"original")
    with pytest.raises(RuntimeError):
        with atomic_output(target, overwrite=True) as temporary:
            temporary.write_bytes(b"partial")
            raise RuntimeError("writer failed")
    assert target.read_bytes() == b"original"
    assert [path.name for path in tmp_path.iterdir()] == ["out.nii"]


def test_atomic_output_rejects_existing_without_overwrite(tmp_path):
    target = tmp_path / "out.nii"
    target.write_bytes(b"original")
    with pytest.raises(FileExistsError) as error:
        with atomic_output(target, overwrite=False):
            pytest.fail("the block must not run")
    assert str(target) in str(error.value)
    assert "--overwrite" in str(error.value)
    assert "overwrite=True" in str(error.value)
    assert target.read_bytes() == b"original"


def test_atomic_output_directory_replaces_existing(tmp_path):
    target = tmp_path / "series"
    target.mkdir()
    (target / "old.dcm").write_bytes(b"old")
    with atomic_output(target, overwrite=True, directory=True) as temporary:
        assert temporary.is_dir()
        assert temporary.name.startswith(".tmp-")
        (temporary / "new.dcm").write_bytes(b"new")
    assert sorted(path.name for path in target.iterdir()) == ["new.dcm"]
    assert [path.name for path in tmp_path.iterdir()] == ["series"]


def test_atomic_output_directory_error_removes_temp(tmp_path):
    target = tmp_path / "series"
    with pytest.raises(RuntimeError):
        with atomic_output(target, overwrite=False, directory=True) as temporary:
            (temporary / "slice.dcm").write_bytes(b"partial")
            raise RuntimeError("writer failed")
    assert list(tmp_path.iterdir()) == []


def test_atomic_output_file_permissions_follow_umask(tmp_path):
    target = tmp_path / "out.nii"
    with atomic_output(target, overwrite=False) as temporary:
        temporary.write_bytes(b"data")
    reference = tmp_path / "reference"
    reference.write_bytes(b"data")
    assert target.stat().st_mode & 0o777 == reference.stat().st_mode & 0o777


# ---------------------------------------------------------------------------------------------------------------
# NIfTI


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_nifti_round_trip_exact(tmp_path, suffix):
    volume = random_volume()
    path = write_volume(volume, tmp_path / f"out{suffix}")
    result = read_volume(path)

    assert result.array.dtype == np.float32
    assert np.array_equal(result.array, volume.array)
    np.testing.assert_allclose(result.affine, volume.affine, rtol=1e-6, atol=1e-5)
    assert result.metadata["format"] == "nifti"
    assert result.metadata["qform_code"] == 1
    assert result.metadata["sform_code"] == 1
    assert result.metadata["xyzt_units"] == ("mm", "sec")
    assert result.metadata["source_dtype"] == "float32"
    assert result.metadata["scl_slope"] == 1.0
    assert result.metadata["scl_inter"] == 0.0


def test_nifti_gz_is_compressed(tmp_path):
    path = write_volume(random_volume(), tmp_path / "out.nii.gz")
    with gzip.open(path, "rb") as file:
        assert len(file.read(348)) == 348


def test_nifti_preserves_xform_codes(tmp_path):
    affine = oblique_affine()
    image = nib.Nifti1Image(random_volume().array, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=2)
    source = tmp_path / "source.nii.gz"
    nib.save(image, source)

    volume = read_volume(source)
    assert volume.metadata["qform_code"] == 1
    assert volume.metadata["sform_code"] == 2
    np.testing.assert_allclose(np.array(volume.metadata["sform"]), affine, rtol=1e-6, atol=1e-5)

    output = write_volume(volume.with_array(volume.array * 2), tmp_path / "output.nii")
    header = nib.load(output).header
    assert int(header["qform_code"]) == 1
    assert int(header["sform_code"]) == 2
    assert header.get_xyzt_units() == ("mm", "sec")
    np.testing.assert_allclose(header.get_sform(), affine, rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(header.get_qform(), affine, rtol=1e-5, atol=1e-4)


def test_nifti_sform_only_source_keeps_exact_sform(tmp_path):
    volume = random_volume(metadata={"qform_code": 0, "sform_code": 2})
    header = nib.load(write_volume(volume, tmp_path / "out.nii")).header
    assert int(header["qform_code"]) == 0
    assert int(header["sform_code"]) == 2


def test_nifti_int16_rounds_and_clips(tmp_path, caplog):
    array = np.zeros((7, 5, 3), dtype=np.float32)
    array[0, 0, 0] = 1.4
    array[1, 0, 0] = 1.6
    array[2, 0, 0] = -2.6
    array[3, 0, 0] = 40000.0
    array[4, 0, 0] = -40000.0
    volume = Volume(array=array, affine=oblique_affine())
    with caplog.at_level(logging.WARNING, logger="medgan.io"):
        path = write_volume(volume, tmp_path / "out.nii.gz", dtype="int16")
    assert "clipped 2 of 105 voxels" in caplog.text

    image = nib.load(path)
    assert image.get_data_dtype() == np.int16
    stored = np.asanyarray(image.dataobj.get_unscaled())
    assert stored[0, 0, 0] == 1
    assert stored[1, 0, 0] == 2
    assert stored[2, 0, 0] == -3
    assert stored[3, 0, 0] == 32767
    assert stored[4, 0, 0] == -32768
    with gzip.open(path, "rb") as file:
        raw = nib.Nifti1Header.from_fileobj(file)
    assert float(raw["scl_slope"]) == 1.0 or np.isnan(raw["scl_slope"])
    assert float(raw["scl_inter"]) == 0.0 or np.isnan(raw["scl_inter"])
    assert np.array_equal(read_volume(path).array, stored.astype(np.float32))


def test_nifti_shear_sets_qform_code_zero(tmp_path, caplog):
    affine = oblique_affine()
    affine[0, 1] += 0.4
    volume = random_volume(affine=affine)
    with caplog.at_level(logging.WARNING, logger="medgan.io"):
        path = write_volume(volume, tmp_path / "sheared.nii")
    assert "shear" in caplog.text
    header = nib.load(path).header
    assert int(header["qform_code"]) == 0
    assert int(header["sform_code"]) == 1
    np.testing.assert_allclose(read_volume(path).affine, affine, rtol=1e-6, atol=1e-5)


def test_nifti_scaled_int16_source_applies_slope(tmp_path):
    stored = np.arange(105, dtype=np.int16).reshape(7, 5, 3)
    image = nib.Nifti1Image(stored, oblique_affine())
    image.header.set_data_dtype(np.int16)
    image.header.set_slope_inter(0.5, -10.0)
    path = tmp_path / "scaled.nii"
    nib.save(image, path)

    volume = read_volume(path)
    assert np.array_equal(volume.array, stored.astype(np.float32) * 0.5 - 10.0)
    assert volume.metadata["scl_slope"] == 0.5
    assert volume.metadata["scl_inter"] == -10.0
    assert volume.metadata["source_dtype"] == "int16"


def test_nifti_2d_promoted_to_3d(tmp_path):
    path = tmp_path / "plane.nii"
    nib.save(nib.Nifti1Image(np.ones((7, 5), dtype=np.float32), np.eye(4)), path)
    assert read_volume(path).shape == (7, 5, 1)


def test_nifti_4d_singleton_squeezed(tmp_path):
    path = tmp_path / "single_time_point.nii"
    nib.save(nib.Nifti1Image(np.ones((7, 5, 3, 1), dtype=np.float32), np.eye(4)), path)
    assert read_volume(path).shape == (7, 5, 3)


def test_nifti_4d_rejected(tmp_path):
    path = tmp_path / "time_series.nii"
    nib.save(nib.Nifti1Image(np.ones((7, 5, 3, 2), dtype=np.float32), np.eye(4)), path)
    with pytest.raises(VolumeReadError, match="dimension 4"):
        read_volume(path)


def test_nifti_nan_rejected(tmp_path):
    array = np.ones((7, 5, 3), dtype=np.float32)
    array[1, 2, 0] = np.nan
    array[3, 1, 2] = np.inf
    path = tmp_path / "holes.nii.gz"
    nib.save(nib.Nifti1Image(array, np.eye(4)), path)
    with pytest.raises(VolumeReadError) as error:
        read_volume(path)
    assert "2 NaN or infinite voxels" in str(error.value)
    assert str(path) in str(error.value)


def test_nifti_meter_units_converted_to_mm(tmp_path):
    affine = np.diag([0.001, 0.002, 0.003, 1.0])
    image = nib.Nifti1Image(np.ones((7, 5, 3), dtype=np.float32), affine)
    image.header.set_xyzt_units("meter", "sec")
    path = tmp_path / "meters.nii"
    nib.save(image, path)
    volume = read_volume(path)
    np.testing.assert_allclose(volume.spacing_mm, (1.0, 2.0, 3.0), rtol=1e-6)
    assert volume.metadata["xyzt_units"] == ("meter", "sec")


def test_write_rejects_nonfinite(tmp_path):
    volume = random_volume()
    volume.array[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        write_volume(volume, tmp_path / "out.nii")
    assert list(tmp_path.iterdir()) == []


def test_write_rejects_unknown_dtype(tmp_path):
    with pytest.raises(ValueError, match="float32, int16"):
        write_volume(random_volume(), tmp_path / "out.nii", dtype="uint8")


def test_write_refuses_overwrite(tmp_path):
    path = write_volume(random_volume(seed=1), tmp_path / "out.nii.gz")
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="--overwrite"):
        write_volume(random_volume(seed=2), path)
    assert path.read_bytes() == before
    assert [entry.name for entry in tmp_path.iterdir()] == ["out.nii.gz"]

    write_volume(random_volume(seed=2), path, overwrite=True)
    assert np.array_equal(read_volume(path).array, random_volume(seed=2).array)
    assert [entry.name for entry in tmp_path.iterdir()] == ["out.nii.gz"]


# ---------------------------------------------------------------------------------------------------------------
# NRRD and MetaImage


@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])
def test_itk_round_trip(tmp_path, suffix):
    volume = random_volume()
    path = write_volume(volume, tmp_path / f"out{suffix}")
    result = read_volume(path)
    assert np.array_equal(result.array, volume.array)
    np.testing.assert_allclose(result.affine, volume.affine, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])
def test_itk_output_matches_simpleitk_geometry(tmp_path, suffix):
    volume = random_volume()
    path = write_volume(volume, tmp_path / f"out{suffix}")
    image = sitk.ReadImage(str(path))
    array = sitk.GetArrayFromImage(image)
    for index in [(0, 0, 0), (6, 0, 0), (0, 4, 0), (0, 0, 2), (6, 4, 2), (3, 1, 2)]:
        lps = np.array(image.TransformIndexToPhysicalPoint(index))
        np.testing.assert_allclose(LPS_TO_RAS @ lps, world(volume.affine, index), atol=1e-9)
        i, j, k = index
        assert array[k, j, i] == volume.array[i, j, k]


def test_itk_int16_output(tmp_path):
    volume = random_volume()
    path = write_volume(volume, tmp_path / "out.nrrd", dtype="int16")
    assert sitk.ReadImage(str(path)).GetPixelIDTypeAsString() == "16-bit signed integer"
    assert np.array_equal(read_volume(path).array, np.rint(volume.array))


# ---------------------------------------------------------------------------------------------------------------
# Format dispatch and errors


def test_read_missing_path(tmp_path):
    missing = tmp_path / "nowhere.nii.gz"
    with pytest.raises(FileNotFoundError, match="nowhere.nii.gz"):
        read_volume(missing)


def test_read_unknown_suffix(tmp_path):
    path = tmp_path / "volume.xyz"
    path.write_bytes(b"not an image")
    with pytest.raises(VolumeReadError) as error:
        read_volume(path)
    assert ".xyz" in str(error.value)
    assert ".nii.gz" in str(error.value)


def test_write_unknown_suffix(tmp_path):
    with pytest.raises(ValueError) as error:
        write_volume(random_volume(), tmp_path / "out.png")
    assert ".png" in str(error.value)
    assert ".nrrd" in str(error.value)
    assert list(tmp_path.iterdir()) == []


def test_read_folder_without_dicom(tmp_path):
    (tmp_path / "notes.txt").write_text("no images here")
    (tmp_path / "study").mkdir()
    with pytest.raises(VolumeReadError) as error:
        read_volume(tmp_path)
    assert "No DICOM image files" in str(error.value)
    assert "study" in str(error.value)


def test_series_uid_rejected_for_nifti(tmp_path):
    path = write_volume(random_volume(), tmp_path / "out.nii")
    with pytest.raises(ValueError, match="series_uid"):
        read_volume(path, series_uid="1.2.3")


# ---------------------------------------------------------------------------------------------------------------
# DICOM series

AXIAL = [1, 0, 0, 0, 1, 0]


def axial_positions(count=4, gap=2.5):
    """Positions along the normal (0, 0, 1) with descending z, as written."""
    return [np.array([-80.5, -120.25, 40.0 - gap * s]) for s in range(count)]


def test_dicom_axial_series(tmp_path):
    positions = axial_positions()
    series = write_ct_series(tmp_path / "ct", positions=positions, orientation=AXIAL)
    (tmp_path / "ct" / "README.txt").write_text("not DICOM")

    volume = read_volume(tmp_path / "ct")

    assert volume.shape == (7, 5, 4)
    assert volume.modality == "CT"
    # Sorted by position along the normal, so k = 0 is the lowest z, which was written last.
    order = [3, 2, 1, 0]
    for k, source_index in enumerate(order):
        assert np.array_equal(volume.array[:, :, k], series["hu"][source_index].T.astype(np.float32))

    expected = np.array(
        [
            [-0.6, 0.0, 0.0, 80.5],
            [0.0, -0.8, 0.0, 120.25],
            [0.0, 0.0, 2.5, 32.5],
            [0.0, 0.0, 0.0, 1.0],
        ]
    )
    np.testing.assert_allclose(volume.affine, expected, atol=1e-9)
    np.testing.assert_allclose(world(volume.affine, (0, 0, 0)), LPS_TO_RAS @ positions[3], atol=1e-9)
    assert_geometry_matches_slices(volume, positions, AXIAL, (0.8, 0.6), order)

    metadata = volume.metadata
    assert metadata["format"] == "dicom"
    assert metadata["series_instance_uid"] == series["series_uid"]
    assert metadata["modality"] == "CT"
    assert metadata["patient_id"] == "TEST-0001"
    assert metadata["series_description"] == "synthetic CT"
    assert metadata["transfer_syntax"] == ExplicitVRLittleEndian
    assert metadata["files"] == [str(tmp_path / "ct" / series["names"][index]) for index in order]
    assert metadata["rescale"] == [(1.0, -1024.0) if index % 2 == 0 else (0.5, -1000.0) for index in order]


def test_dicom_oblique_series(tmp_path):
    matrix = rotation(20, -15, 30)
    orientation = [*matrix[:, 0], *matrix[:, 1]]
    row_cosine, column_cosine = parsed(orientation)[:3], parsed(orientation)[3:]
    normal = np.cross(row_cosine, column_cosine)
    origin = np.array([12.5, -30.25, 101.0])
    offsets = [3.0, 0.0, 2.0, 1.0]  # slice index along the normal, in the order written
    positions = [origin + 1.75 * offset * normal for offset in offsets]
    series = write_ct_series(tmp_path / "ct", positions=positions, orientation=orientation, pixel_spacing=(0.9, 0.45))

    volume = read_volume(tmp_path / "ct")

    order = [1, 3, 2, 0]
    for k, source_index in enumerate(order):
        assert np.array_equal(volume.array[:, :, k], series["hu"][source_index].T.astype(np.float32))
    np.testing.assert_allclose(volume.spacing_mm, (0.45, 0.9, 1.75), atol=1e-6)
    np.testing.assert_allclose(world(volume.affine, (0, 0, 0)), LPS_TO_RAS @ parsed(positions[1]), atol=1e-6)
    assert_geometry_matches_slices(volume, positions, orientation, (0.9, 0.45), order)


def test_dicom_series_matches_simpleitk(tmp_path):
    matrix = rotation(0, 25, -40)
    orientation = [*matrix[:, 0], *matrix[:, 1]]
    normal = np.cross(parsed(orientation)[:3], parsed(orientation)[3:])
    positions = [np.array([5.0, 7.5, -20.0]) + 2.0 * s * normal for s in (2, 0, 1)]
    folder = tmp_path / "ct"
    write_ct_series(folder, positions=positions, orientation=orientation)

    volume = read_volume(folder)

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder)))
    reader.SetOutputPixelType(sitk.sitkFloat32)
    image = reader.Execute()
    itk_array = sitk.GetArrayFromImage(image)
    inverse = np.linalg.inv(volume.affine)
    for index in [(0, 0, 0), (6, 0, 0), (0, 4, 0), (0, 0, 2), (6, 4, 2), (2, 3, 1)]:
        lps = np.array(image.TransformIndexToPhysicalPoint(index))
        ours = (inverse @ np.array([*(LPS_TO_RAS @ lps), 1.0]))[:3]
        np.testing.assert_allclose(ours, np.round(ours), atol=1e-5)
        i, j, k = (int(value) for value in np.round(ours))
        assert volume.array[i, j, k] == itk_array[index[2], index[1], index[0]]


def test_dicom_gantry_tilt_gives_sheared_affine(tmp_path, caplog):
    positions = [np.array([0.0, 3.0 * s, -2.0 * s]) for s in range(4)]
    with caplog.at_level(logging.WARNING, logger="medgan.io"):
        write_ct_series(tmp_path / "ct", positions=positions, orientation=AXIAL)
        volume = read_volume(tmp_path / "ct")
    assert "gantry tilt" in caplog.text
    assert_geometry_matches_slices(volume, positions, AXIAL, (0.8, 0.6), [3, 2, 1, 0])


def test_dicom_scattered_positions_rejected(tmp_path):
    positions = [np.array([0.0, 0.0, 0.0]), np.array([3.0, 0.0, 2.0]), np.array([0.0, 0.0, 4.0])]
    write_ct_series(tmp_path, positions=positions, orientation=AXIAL)
    with pytest.raises(VolumeReadError, match="straight line"):
        read_volume(tmp_path)


def test_dicom_to_nifti_keeps_geometry(tmp_path):
    matrix = rotation(5, 10, -20)
    orientation = [*matrix[:, 0], *matrix[:, 1]]
    normal = np.cross(parsed(orientation)[:3], parsed(orientation)[3:])
    positions = [np.array([-3.0, 4.0, 5.0]) + 1.5 * s * normal for s in (1, 0, 2)]
    write_ct_series(tmp_path / "ct", positions=positions, orientation=orientation)
    volume = read_volume(tmp_path / "ct")

    result = read_volume(write_volume(volume, tmp_path / "ct.nii.gz"))

    assert np.array_equal(result.array, volume.array)
    np.testing.assert_allclose(result.affine, volume.affine, rtol=1e-6, atol=1e-5)
    assert result.metadata["qform_code"] == 1
    assert result.metadata["sform_code"] == 1


def test_dicom_two_series_rejected(tmp_path):
    first = write_ct_series(tmp_path, positions=axial_positions(3), orientation=AXIAL, seed=1)
    second = write_ct_series(
        tmp_path, positions=axial_positions(5), orientation=AXIAL, seed=2, series_number=4, description="second"
    )
    with pytest.raises(VolumeReadError) as error:
        read_volume(tmp_path)
    message = str(error.value)
    assert first["series_uid"] in message
    assert second["series_uid"] in message
    assert "series_uid" in message
    assert "5 slices of 5 x 7" in message

    volume = read_volume(tmp_path, series_uid=second["series_uid"])
    assert volume.shape == (7, 5, 5)
    assert volume.metadata["series_instance_uid"] == second["series_uid"]


def test_dicom_unknown_series_uid(tmp_path):
    write_ct_series(tmp_path, positions=axial_positions(3), orientation=AXIAL)
    with pytest.raises(VolumeReadError, match="not found"):
        read_volume(tmp_path, series_uid="1.2.3.4")


def test_dicom_missing_slice_rejected(tmp_path):
    positions = axial_positions(5)
    del positions[2]
    write_ct_series(tmp_path, positions=positions, orientation=AXIAL)
    with pytest.raises(VolumeReadError) as error:
        read_volume(tmp_path)
    assert "spacing" in str(error.value)
    assert "2.5 mm (x2)" in str(error.value)
    assert "5 mm (x1)" in str(error.value)


def test_dicom_duplicate_position_rejected(tmp_path):
    positions = axial_positions(3)
    positions.append(positions[1].copy())
    series = write_ct_series(tmp_path, positions=positions, orientation=AXIAL)
    with pytest.raises(VolumeReadError) as error:
        read_volume(tmp_path)
    assert "duplicate" in str(error.value)
    assert series["names"][1] in str(error.value)
    assert series["names"][3] in str(error.value)


def test_dicom_mismatched_orientation_rejected(tmp_path):
    write_ct_series(tmp_path, positions=axial_positions(2), orientation=AXIAL, series_uid="1.2.3.9")
    coronal = [1, 0, 0, 0, 0, -1]
    write_ct_series(tmp_path, positions=[np.array([0, 0, 90.0])], orientation=coronal, series_uid="1.2.3.9")
    with pytest.raises(VolumeReadError, match="ImageOrientationPatient"):
        read_volume(tmp_path)


def test_dicom_missing_position_names_file_and_tag(tmp_path):
    series = write_ct_series(tmp_path, positions=axial_positions(2), orientation=AXIAL)
    path = tmp_path / series["names"][0]
    dataset = pydicom.dcmread(path)
    del dataset.ImagePositionPatient
    dataset.save_as(path)
    with pytest.raises(VolumeReadError) as error:
        read_volume(tmp_path)
    assert str(path) in str(error.value)
    assert "ImagePositionPatient" in str(error.value)


def test_dicom_single_file_one_slice(tmp_path):
    series = write_ct_series(tmp_path, positions=axial_positions(1), orientation=AXIAL, slice_thickness=3.0)
    volume = read_volume(tmp_path / series["names"][0])
    assert volume.shape == (7, 5, 1)
    assert np.array_equal(volume.array[:, :, 0], series["hu"][0].T.astype(np.float32))
    np.testing.assert_allclose(volume.spacing_mm, (0.6, 0.8, 3.0))


def test_dicom_file_without_suffix_detected_by_preamble(tmp_path):
    series = write_ct_series(tmp_path / "ct", positions=axial_positions(1), orientation=AXIAL)
    path = tmp_path / "IM0001"
    (tmp_path / "ct" / series["names"][0]).rename(path)
    volume = read_volume(path)
    assert volume.shape == (7, 5, 1)
    assert volume.metadata["files"] == [str(path)]


def test_dicom_series_skips_empty_and_hidden_files(tmp_path):
    write_ct_series(tmp_path, positions=axial_positions(3), orientation=AXIAL)
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    assert read_volume(tmp_path).shape == (7, 5, 3)


def test_dicom_series_recursive(tmp_path):
    from medgan.io.dicom import read_dicom_series

    write_ct_series(tmp_path / "patient" / "series", positions=axial_positions(3), orientation=AXIAL)
    with pytest.raises(VolumeReadError, match="subfolders"):
        read_dicom_series(tmp_path / "patient")
    assert read_dicom_series(tmp_path / "patient", recursive=True).shape == (7, 5, 3)


def test_dicom_real_ct_small():
    path = pydicom.data.get_testdata_file("CT_small.dcm")
    dataset = pydicom.dcmread(path)
    expected = dataset.pixel_array.astype(np.float64) * float(dataset.RescaleSlope) + float(dataset.RescaleIntercept)

    volume = read_volume(path)

    assert volume.shape == (dataset.Columns, dataset.Rows, 1)
    assert volume.modality == "CT"
    assert np.array_equal(volume.array[:, :, 0], expected.T.astype(np.float32))
    assert volume.array.min() == expected.min()
    assert volume.array.max() == expected.max()
    position = np.array([float(v) for v in dataset.ImagePositionPatient])
    np.testing.assert_allclose(world(volume.affine, (0, 0, 0)), LPS_TO_RAS @ position, atol=1e-9)


def test_dicom_multiframe_without_functional_groups_rejected():
    path = pydicom.data.get_testdata_file("rtdose.dcm")
    with pytest.raises(VolumeReadError) as error:
        read_volume(path)
    assert "not supported" in str(error.value)
    assert "rtdose.dcm" in str(error.value)


def test_dicom_undecodable_pixel_data(tmp_path):
    series = write_ct_series(tmp_path, positions=axial_positions(1), orientation=AXIAL)
    path = tmp_path / series["names"][0]
    dataset = pydicom.dcmread(path)
    dataset.file_meta.TransferSyntaxUID = JPEG2000Lossless
    dataset.PixelData = encapsulate([b"\x00" * 64])
    dataset["PixelData"].VR = "OB"
    dataset.save_as(path, enforce_file_format=True)
    with pytest.raises(VolumeReadError) as error:
        read_volume(path)
    assert "JPEG 2000" in str(error.value)
    assert str(path) in str(error.value)
    assert "pip install pylibjpeg" in str(error.value)


def write_enhanced_ct(path: Path, frames: np.ndarray, positions, orientation, pixel_spacing, rescales) -> None:
    """Write an Enhanced CT Image Storage file with per-frame positions and rescale values."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = EnhancedCTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = EnhancedCTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.NumberOfFrames = len(frames)
    ds.Rows, ds.Columns = frames.shape[1:]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1

    shared = Dataset()
    orientation_item = Dataset()
    orientation_item.ImageOrientationPatient = ds_values(orientation)
    shared.PlaneOrientationSequence = [orientation_item]
    measures = Dataset()
    measures.PixelSpacing = ds_values(pixel_spacing)
    measures.SliceThickness = "2"
    shared.PixelMeasuresSequence = [measures]
    ds.SharedFunctionalGroupsSequence = [shared]

    per_frame = []
    for position, (slope, intercept) in zip(positions, rescales):
        item = Dataset()
        position_item = Dataset()
        position_item.ImagePositionPatient = ds_values(position)
        item.PlanePositionSequence = [position_item]
        transformation = Dataset()
        transformation.RescaleSlope = ds_string(slope)
        transformation.RescaleIntercept = ds_string(intercept)
        item.PixelValueTransformationSequence = [transformation]
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = per_frame
    ds.PixelData = frames.astype(np.int16).tobytes()
    ds.save_as(path, enforce_file_format=True)


def test_dicom_enhanced_multiframe(tmp_path):
    rng = np.random.default_rng(5)
    frames = rng.integers(-1000, 3000, size=(3, 5, 7))
    positions = [np.array([1.0, 2.0, 10.0 + 2.0 * z]) for z in (2, 0, 1)]
    rescales = [(1.0, -1024.0), (0.5, -1000.0), (2.0, 0.0)]
    path = tmp_path / "enhanced.dcm"
    write_enhanced_ct(path, frames, positions, AXIAL, (0.8, 0.6), rescales)

    volume = read_volume(path)

    order = [1, 2, 0]
    for k, frame in enumerate(order):
        slope, intercept = rescales[frame]
        assert np.array_equal(volume.array[:, :, k], (frames[frame] * slope + intercept).T.astype(np.float32))
    assert volume.metadata["frames"] == order
    assert_geometry_matches_slices(volume, positions, AXIAL, (0.8, 0.6), order)
