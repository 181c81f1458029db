"""Tests for read_volume(..., resample_z=True): DICOM series with uneven slice gaps on a uniform grid."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from test_io import AXIAL, LPS_TO_RAS, axial_positions, parsed, rotation, world, write_ct_series

from medgan.io import VolumeReadError, read_volume, write_volume
from medgan.io.dicom_write import write_dicom_series


def test_missing_slice_rejected_with_hint(tmp_path):
    positions = axial_positions(5)
    del positions[2]
    write_ct_series(tmp_path, positions=positions, orientation=AXIAL)
    with pytest.raises(VolumeReadError, match="resample_z=True"):
        read_volume(tmp_path)


def test_missing_slice_resampled(tmp_path, caplog):
    positions = axial_positions(5)  # z = 40, 37.5, 35, 32.5, 30
    del positions[2]
    series = write_ct_series(tmp_path, positions=positions, orientation=AXIAL)

    with caplog.at_level(logging.WARNING, logger="medgan.io"):
        volume = read_volume(tmp_path, resample_z=True)

    assert volume.shape == (7, 5, 5)
    np.testing.assert_allclose(volume.spacing_mm, (0.6, 0.8, 2.5), atol=1e-9)
    # Sorted by z, the measured slices are the written ones in reverse order.
    measured = [series["hu"][index].T.astype(np.float32) for index in (3, 2, 1, 0)]
    for k, slice_hu in zip((0, 1, 3, 4), measured):
        assert np.array_equal(volume.array[:, :, k], slice_hu)
    expected_middle = ((measured[1].astype(np.float64) + measured[2]) / 2).astype(np.float32)
    np.testing.assert_allclose(volume.array[:, :, 2], expected_middle, rtol=0, atol=1e-4)

    np.testing.assert_allclose(world(volume.affine, (0, 0, 0)), LPS_TO_RAS @ positions[3], atol=1e-9)
    np.testing.assert_allclose(world(volume.affine, (0, 0, 4)), LPS_TO_RAS @ positions[0], atol=1e-9)
    assert volume.metadata["source_slices"] == [[0], [1], [1, 2], [2], [3]]
    assert len(volume.metadata["files"]) == 4

    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "4 slices became 5 slices 2.5 mm apart" in warnings[0]
    assert "1 slices were interpolated" in warnings[0]


def test_span_not_multiple_of_median_gap(tmp_path):
    offsets = [0.0, 2.0, 4.0, 7.0]  # gaps 2, 2, 3: median 2, span 7
    positions = [np.array([0.0, 0.0, offset]) for offset in offsets]
    write_ct_series(tmp_path, positions=positions, orientation=AXIAL)

    volume = read_volume(tmp_path, resample_z=True)

    # 7 / 2 = 3.5 rounds up to 4 gaps, so the spacing stretches to 7 / 4 mm and both end slices are kept.
    assert volume.shape[2] == 5
    assert volume.spacing_mm[2] == pytest.approx(1.75)
    np.testing.assert_allclose(world(volume.affine, (0, 0, 4)), [0.0, 0.0, 7.0], atol=1e-9)


def test_even_series_unchanged_by_resample_z(tmp_path, caplog):
    write_ct_series(tmp_path, positions=axial_positions(4), orientation=AXIAL)
    plain = read_volume(tmp_path)
    with caplog.at_level(logging.WARNING, logger="medgan.io"):
        resampled = read_volume(tmp_path, resample_z=True)
    assert caplog.records == []
    assert np.array_equal(resampled.array, plain.array)
    assert np.array_equal(resampled.affine, plain.affine)
    assert "source_slices" not in resampled.metadata


def test_oblique_tilted_series_resampled(tmp_path):
    matrix = rotation(10, 20, -30)
    orientation = [*matrix[:, 0], *matrix[:, 1]]
    row_cosine, column_cosine = parsed(orientation)[:3], parsed(orientation)[3:]
    normal = np.cross(row_cosine, column_cosine)
    # A stack tilted along the row direction with the third of six slices missing.
    positions = [np.array([4.0, -2.0, 9.0]) + s * (2.0 * normal + 0.5 * row_cosine) for s in (0, 1, 3, 4, 5)]
    write_ct_series(tmp_path, positions=positions, orientation=orientation)

    volume = read_volume(tmp_path, resample_z=True)

    assert volume.shape[2] == 6
    for k, source in ((0, 0), (1, 1), (3, 2), (4, 3), (5, 4)):
        np.testing.assert_allclose(
            world(volume.affine, (0, 0, k)), LPS_TO_RAS @ parsed(positions[source]), atol=1e-5
        )


def test_resampled_volume_written_as_dicom(tmp_path):
    positions = axial_positions(5)
    del positions[2]
    write_ct_series(tmp_path / "source", positions=positions, orientation=AXIAL)
    volume = read_volume(tmp_path / "source", resample_z=True)

    folder = write_dicom_series(volume, tmp_path / "derived")

    result = read_volume(folder)
    assert result.shape == volume.shape
    np.testing.assert_allclose(result.affine, volume.affine, atol=1e-4)
    assert np.array_equal(result.array, np.rint(volume.array))

    import pydicom

    middle = pydicom.dcmread(folder / "IM000003.dcm")
    assert len(middle.SourceImageSequence) == 2
    assert len(middle.ReferencedSeriesSequence[0].ReferencedInstanceSequence) == 2
    assert "interpolation" in middle.DerivationDescription
    assert len(pydicom.dcmread(folder / "IM000002.dcm").SourceImageSequence) == 1


def test_resample_z_rejected_for_nifti(tmp_path):
    write_ct_series(tmp_path / "ct", positions=axial_positions(2), orientation=AXIAL)
    path = write_volume(read_volume(tmp_path / "ct"), tmp_path / "volume.nii.gz")
    with pytest.raises(ValueError, match="resample_z applies only to DICOM"):
        read_volume(path, resample_z=True)
