"""Property tests for the readers: DICOM header variations read back exactly, damaged files fail cleanly.

Hypothesis runs derandomized (a fixed seed per test), so CI runs the same examples every time.
"""

from __future__ import annotations

import gzip
import struct
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import format_number_as_ds
from test_io import AXIAL, rotation, write_ct_series, write_enhanced_ct

from medgan.io import Volume, VolumeReadError, read_volume, write_volume

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])
# The errors read_volume documents. VolumeReadError is a ValueError, and is listed to show the intent.
DOCUMENTED_ERRORS = (VolumeReadError, ValueError, FileNotFoundError)

HEADER_SETTINGS = settings(
    max_examples=100, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow]
)
CORRUPTION_SETTINGS = settings(
    max_examples=400, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow]
)


def ds(value: float) -> str:
    """Format a number as a DICOM decimal string of at most 16 characters."""
    return format_number_as_ds(float(value) + 0.0)


# ---------------------------------------------------------------------------------------------------------------
# DICOM header variations

slice_encodings = st.fixed_dictionaries(
    {
        "slope": st.one_of(
            st.sampled_from([1.0, 0.5, 2.0, 0.25, -1.0]),
            st.floats(0.001, 100.0).map(lambda value: float(ds(value))),
        ),
        "intercept": st.one_of(
            st.sampled_from([0.0, -1024.0, -1000.0, -8192.0]),
            st.floats(-5000.0, 5000.0).map(lambda value: float(ds(value))),
        ),
        "signed": st.booleans(),
        "bits_stored": st.sampled_from([8, 12, 16]),
    }
)


@st.composite
def ct_series(draw):
    count = draw(st.integers(1, 6))
    return {
        "count": count,
        "angles": draw(st.tuples(*[st.floats(-180.0, 180.0)] * 3)),
        "pixel_spacing": draw(st.tuples(st.floats(0.1, 5.0), st.floats(0.1, 5.0))),
        "gap": draw(st.floats(0.2, 10.0)),
        "slice_thickness": draw(st.floats(0.2, 10.0)),
        "origin": draw(st.tuples(*[st.floats(-500.0, 500.0)] * 3)),
        "rows": draw(st.integers(1, 6)),
        "columns": draw(st.integers(1, 6)),
        "write_order": draw(st.permutations(range(count))),
        "slices": draw(st.lists(slice_encodings, min_size=count, max_size=count)),
        "seed": draw(st.integers(0, 2**32 - 1)),
    }


def write_slice(path: Path, stored: np.ndarray, *, position, orientation, pixel_spacing, thickness, encoding,
                series_uid: str, study_uid: str) -> None:
    """Write one CT slice with the stored values, pixel representation and BitsStored of ``encoding``."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    dataset.SOPClassUID = CTImageStorage
    dataset.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    dataset.Modality = "CT"
    dataset.StudyInstanceUID = study_uid
    dataset.SeriesInstanceUID = series_uid
    dataset.ImagePositionPatient = position
    dataset.ImageOrientationPatient = orientation
    dataset.PixelSpacing = pixel_spacing
    dataset.SliceThickness = thickness
    dataset.RescaleSlope = ds(encoding["slope"])
    dataset.RescaleIntercept = ds(encoding["intercept"])
    dataset.Rows, dataset.Columns = stored.shape
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = "MONOCHROME2"
    dataset.BitsAllocated = 16
    dataset.BitsStored = encoding["bits_stored"]
    dataset.HighBit = encoding["bits_stored"] - 1
    dataset.PixelRepresentation = 1 if encoding["signed"] else 0
    dataset.PixelData = stored.astype(np.int16 if encoding["signed"] else np.uint16).tobytes()
    dataset.save_as(path, enforce_file_format=True)


def stored_range(encoding) -> tuple[int, int]:
    bits = encoding["bits_stored"]
    if encoding["signed"]:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


@HEADER_SETTINGS
@given(case=ct_series())
def test_dicom_header_variations_read_exactly(case):
    rng = np.random.default_rng(case["seed"])
    matrix = rotation(*case["angles"])
    orientation = [ds(value) for value in (*matrix[:, 0], *matrix[:, 1])]
    pixel_spacing = [ds(value) for value in case["pixel_spacing"]]
    thickness = ds(case["slice_thickness"])
    iop = np.array([float(value) for value in orientation])
    normal = np.cross(iop[:3], iop[3:])
    normal /= np.linalg.norm(normal)

    # Slice s lies s gaps along the normal. Files are written in a shuffled order under names that do not sort.
    positions, expected_hu = [], []
    series_uid, study_uid = generate_uid(), generate_uid()
    with tempfile.TemporaryDirectory() as folder:
        for s in range(case["count"]):
            encoding = case["slices"][s]
            low, high = stored_range(encoding)
            stored = rng.integers(low, high, size=(case["rows"], case["columns"]), endpoint=True)
            position = [ds(value) for value in np.array(case["origin"]) + s * case["gap"] * normal]
            positions.append(np.array([float(value) for value in position]))
            slope, intercept = float(ds(encoding["slope"])), float(ds(encoding["intercept"]))
            expected_hu.append((stored.astype(np.float64) * slope + intercept).astype(np.float32).T)
            name = f"{case['write_order'][s]:02d}-{rng.integers(1 << 30):x}"
            write_slice(Path(folder) / name, stored, position=position, orientation=orientation,
                        pixel_spacing=pixel_spacing, thickness=thickness, encoding=encoding,
                        series_uid=series_uid, study_uid=study_uid)

        volume = read_volume(folder)

    assert volume.shape == (case["columns"], case["rows"], case["count"])
    for k in range(case["count"]):
        assert np.array_equal(volume.array[:, :, k], expected_hu[k]), f"slice {k}"

    row_spacing, column_spacing = (float(value) for value in pixel_spacing)
    for k in range(case["count"]):
        for i in (0, case["columns"] - 1):
            for j in (0, case["rows"] - 1):
                lps = positions[k] + iop[:3] * column_spacing * i + iop[3:] * row_spacing * j
                voxel = volume.affine @ np.array([i, j, k, 1.0])
                np.testing.assert_allclose(voxel[:3], LPS_TO_RAS @ lps, atol=1e-5)
    if case["count"] == 1:
        assert volume.spacing_mm[2] == pytest.approx(float(thickness))


# ---------------------------------------------------------------------------------------------------------------
# Damaged files


@pytest.fixture(scope="module")
def intact_files(tmp_path_factory) -> dict[str, bytes]:
    """The bytes of one small valid file of each kind that the corruption tests damage."""
    folder = tmp_path_factory.mktemp("intact")
    rng = np.random.default_rng(3)
    affine = np.diag([0.7, 0.8, 2.5, 1.0])
    affine[:3, 3] = [-10.0, 20.0, 30.0]
    volume = Volume(array=rng.normal(0, 300, (6, 5, 3)).astype(np.float32), affine=affine, modality="CT")
    files = {}
    for suffix in (".nii", ".nii.gz"):
        files[suffix] = write_volume(volume, folder / f"volume{suffix}").read_bytes()
    series = write_ct_series(folder / "ct", positions=[np.array([0.0, 0.0, 2.0 * s]) for s in range(3)],
                             orientation=AXIAL, rows=4, columns=3)
    files[".dcm"] = (folder / "ct" / series["names"][0]).read_bytes()
    write_enhanced_ct(folder / "enhanced.dcm", rng.integers(-1000, 3000, size=(3, 4, 3)),
                      [np.array([1.0, 2.0, 2.0 * z]) for z in range(3)], AXIAL, (0.8, 0.6),
                      [(1.0, -1024.0), (0.5, -1000.0), (2.0, 0.0)])
    files["enhanced.dcm"] = (folder / "enhanced.dcm").read_bytes()
    files["series"] = b"".join((folder / "ct" / name).read_bytes() + b"\0SPLIT\0" for name in series["names"])
    return files


# A damage is a truncation at a fraction of the length, or up to eight bytes XORed with a non-zero mask at
# positions biased towards the header, where parsing decisions are made.
byte_positions = st.one_of(st.integers(0, 600), st.floats(0.0, 1.0))
damages = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0.0, 1.0)),
    st.tuples(st.just("flip"), st.lists(st.tuples(byte_positions, st.integers(1, 255)), min_size=1, max_size=8)),
    # For .nii.gz, damage the decompressed bytes and compress them again, so the gzip layer stays valid.
    st.tuples(st.just("flip inside gzip"),
              st.lists(st.tuples(byte_positions, st.integers(1, 255)), min_size=1, max_size=8)),
)


def damage(data: bytes, corruption) -> bytes:
    kind, detail = corruption
    if kind == "truncate":
        return data[: int(detail * len(data))]
    if kind == "flip inside gzip":
        return gzip.compress(damage(gzip.decompress(data), ("flip", detail)))
    damaged = bytearray(data)
    for position, mask in detail:
        offset = position if isinstance(position, int) else int(position * (len(damaged) - 1))
        damaged[offset % len(damaged)] ^= mask
    return bytes(damaged)


def read_quietly(path: Path):
    with warnings.catch_warnings():
        # pydicom and nibabel warn about invalid values before raising or repairing them.
        warnings.simplefilter("ignore")
        return read_volume(path)


@CORRUPTION_SETTINGS
@given(kind=st.sampled_from([".nii", ".nii.gz", ".dcm", "enhanced.dcm", "series"]), corruption=damages,
       damaged_slice=st.integers(0, 2))
def test_damaged_file_volume_or_documented_error(intact_files, kind, corruption, damaged_slice):
    if corruption[0] == "flip inside gzip" and kind != ".nii.gz":
        corruption = ("flip", corruption[1])
    with tempfile.TemporaryDirectory() as folder:
        if kind == "series":
            slices = intact_files["series"].split(b"\0SPLIT\0")[:3]
            for index, data in enumerate(slices):
                (Path(folder) / f"slice{index}").write_bytes(damage(data, corruption) if index == damaged_slice else data)
            path = Path(folder)
        else:
            path = Path(folder) / f"damaged{kind}"
            path.write_bytes(damage(intact_files[kind], corruption))

        try:
            volume = read_quietly(path)
        except DOCUMENTED_ERRORS:
            return
    assert isinstance(volume, Volume)
    assert np.all(np.isfinite(volume.array))


# ---------------------------------------------------------------------------------------------------------------
# Damage that the fuzzer found to escape as other exception types, pinned as plain tests


def nifti_with_header_bytes(tmp_path: Path, suffix: str, offset: int, value: bytes) -> Path:
    """Write a valid NIfTI-1 file, then overwrite the header bytes at ``offset`` (in the uncompressed data)."""
    volume = Volume(array=np.zeros((6, 5, 3), dtype=np.float32), affine=np.eye(4), modality="CT")
    path = write_volume(volume, tmp_path / f"volume{suffix}")
    data = bytearray(gzip.decompress(path.read_bytes()) if suffix == ".nii.gz" else path.read_bytes())
    data[offset:offset + len(value)] = value
    path.write_bytes(gzip.compress(bytes(data)) if suffix == ".nii.gz" else bytes(data))
    return path


def test_nifti_negative_dimension_rejected(tmp_path):
    path = nifti_with_header_bytes(tmp_path, ".nii", 42, struct.pack("<h", -32762))  # dim[1]
    with pytest.raises(VolumeReadError, match="sizes below 1"):
        read_volume(path)


def test_nifti_invalid_units_rejected(tmp_path):
    path = nifti_with_header_bytes(tmp_path, ".nii", 123, bytes([6]))  # xyzt_units
    with pytest.raises(VolumeReadError, match="invalid xyzt_units code 6"):
        read_volume(path)


def test_nifti_huge_shape_in_small_gzip_rejected(tmp_path):
    # 20000 x 20000 x 3 float32 voxels are 4.8 GB, far more than a small gzip file can expand to.
    path = nifti_with_header_bytes(tmp_path, ".nii.gz", 40, struct.pack("<4h", 3, 20000, 20000, 3))  # dim
    with pytest.raises(VolumeReadError, match="more than a"):
        read_volume(path)


def test_nifti_truncated_rejected(tmp_path):
    volume = Volume(array=np.zeros((6, 5, 3), dtype=np.float32), affine=np.eye(4), modality="CT")
    path = write_volume(volume, tmp_path / "volume.nii")
    path.write_bytes(path.read_bytes()[:400])
    with pytest.raises(VolumeReadError, match="truncated"):
        read_volume(path)


def test_dicom_unknown_vr_in_sequence_rejected(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "enhanced.dcm"
    write_enhanced_ct(path, rng.integers(0, 100, size=(2, 4, 3)), [np.array([0.0, 0.0, 2.0 * z]) for z in range(2)],
                      AXIAL, (0.8, 0.6), [(1.0, 0.0), (1.0, 0.0)])
    data = bytearray(path.read_bytes())
    # The explicit VR "SQ" of PixelValueTransformationSequence (0028,9145) becomes the undefined VR "RQ".
    tag = bytes.fromhex("28004591")
    position = data.index(tag) + 4
    assert data[position:position + 2] == b"SQ"
    data[position] = ord("R")
    path.write_bytes(bytes(data))
    with pytest.raises(VolumeReadError) as error:
        read_quietly(path)
    assert str(path) in str(error.value)
