"""The Restorer with an output scale: grid, affine, physical extent, intensity mapping and metadata."""

import numpy as np
import pytest
import torch

from medgan.inference.grid import scaled_affine, scaled_metadata
from medgan.inference.restorer import Restorer
from medgan.io import Volume, read_volume, write_volume
from medgan.models import ModelCard
from medgan.tasks import get_task
from tests.conftest import oblique_affine


class NearestRepeatK(torch.nn.Module):
    """Repeat every slice 4 times along the tensor's D axis, the volume's k axis."""

    receptive_field = 1

    def forward(self, x):
        return torch.repeat_interleave(x, 4, dim=2)


def sr_card(output_scale=(1, 1, 4)):
    return ModelCard(task="mri-sr", network={"name": "nearest-repeat", "kwargs": {}},
                     intensity=get_task("mri-sr").intensity.to_dict(), patch_size=(3, 8, 8),
                     output_scale=output_scale, name="repeat-k4")


@pytest.fixture
def mr_volume():
    generator = np.random.default_rng(4)
    array = generator.uniform(50.0, 900.0, (9, 7, 5)).astype(np.float32)
    affine = oblique_affine(spacing_mm=(0.8, 0.9, 4.0))
    affine[:3, :3] = affine[:3, :3] @ np.array([[1, 0, 0], [0, np.cos(0.2), -np.sin(0.2)], [0, np.sin(0.2),
                                                                                             np.cos(0.2)]])
    metadata = {"format": "nifti", "qform_code": 1, "sform_code": 1, "qform": affine.tolist(),
                "sform": affine.tolist()}
    return Volume(array=array, affine=affine, modality="MR", metadata=metadata)


def test_k_upsampling_keeps_extent_and_slice_centres(mr_volume):
    restorer = Restorer(NearestRepeatK(), sr_card(), device="cpu")
    restored = restorer.restore(mr_volume, roi_size=(2, 4, 4), overlap=0.5)

    assert restored.shape == (9, 7, 20)
    assert restored.modality == "MR"
    spacing_in, spacing_out = mr_volume.spacing_mm, restored.spacing_mm
    assert np.allclose(spacing_out, (spacing_in[0], spacing_in[1], spacing_in[2] / 4))
    # The physical extent along k, n voxels of spacing s, is unchanged.
    assert np.isclose(restored.shape[2] * spacing_out[2], mr_volume.shape[2] * spacing_in[2])

    for m in range(restored.shape[2]):
        for i, j in ((0, 0), (8, 6), (3, 2)):
            centre_input = (m + 0.5) / 4 - 0.5
            expected = mr_volume.affine @ np.array([i, j, centre_input, 1.0])
            actual = restored.affine @ np.array([i, j, m, 1.0])
            assert np.allclose(actual, expected, atol=1e-9), f"output slice {m}, voxel ({i}, {j})"

    # The first and last output slices lie 3/8 of an input slice inside the first and last input slices.
    first = restored.affine @ np.array([0, 0, 0, 1.0])
    assert np.allclose(first, mr_volume.affine @ np.array([0, 0, -0.375, 1.0]))


def test_k_upsampling_maps_intensity_per_volume(mr_volume):
    restored = Restorer(NearestRepeatK(), sr_card(), device="cpu").restore(mr_volume, roi_size=(2, 4, 4))
    expected = np.repeat(mr_volume.array, 4, axis=2)
    # The percentile map divides and multiplies by the same scale, which is exact to float32 rounding.
    assert np.allclose(restored.array, expected, rtol=1e-6)
    doubled = Volume(array=2 * mr_volume.array, affine=mr_volume.affine, modality="MR")
    restored_doubled = Restorer(NearestRepeatK(), sr_card(), device="cpu").restore(doubled, roi_size=(2, 4, 4))
    assert np.allclose(restored_doubled.array, 2 * expected, rtol=1e-6)


def test_k_upsampling_drops_input_grid_metadata(mr_volume):
    restored = Restorer(NearestRepeatK(), sr_card(), device="cpu").restore(mr_volume, roi_size=(2, 4, 4))
    assert "qform" not in restored.metadata
    assert "sform" not in restored.metadata
    assert restored.metadata["qform_code"] == 1
    assert restored.metadata["medgan_model"] == "repeat-k4"
    assert "qform" in mr_volume.metadata  # the input is left untouched


def test_k_upsampled_nifti_round_trip(tmp_path, mr_volume):
    restored = Restorer(NearestRepeatK(), sr_card(), device="cpu").restore(mr_volume, roi_size=(2, 4, 4))
    written = read_volume(write_volume(restored, tmp_path / "sr.nii.gz"))
    assert written.shape == (9, 7, 20)
    assert np.allclose(written.affine, restored.affine, atol=1e-5)


def test_scaled_affine_in_plane():
    affine = oblique_affine()
    result = scaled_affine(affine, (2, 3, 1))
    for index in ((0, 0, 0), (5, 7, 2)):
        centre = [(index[0] + 0.5) / 2 - 0.5, (index[1] + 0.5) / 3 - 0.5, index[2]]
        assert np.allclose(result @ [*index, 1.0], affine @ [*centre, 1.0])
    assert np.array_equal(scaled_affine(affine, (1, 1, 1)), affine)


def test_scaled_metadata_maps_dicom_source_slices():
    metadata = {"format": "dicom", "files": ["a", "b", "c"], "source_slices": [[0], [1], [1, 2]]}
    result = scaled_metadata(metadata, (1, 1, 2), (4, 4, 3))
    # Output slice m is centred at input slice (m + 0.5) / 2 - 0.5: -0.25, 0.25, 0.75, 1.25, 1.75, 2.25.
    assert result["source_slices"] == [[0], [0, 1], [0, 1], [1, 2], [1, 2], [1, 2]]
    assert metadata["source_slices"] == [[0], [1], [1, 2]]


def test_restorer_rejects_bad_output_scale():
    with pytest.raises(ValueError, match="output_scale"):
        Restorer(NearestRepeatK(), sr_card(output_scale=(1, 1, 0)), device="cpu")


def test_scaled_dicom_metadata_states_new_thickness():
    metadata = {"format": "dicom", "source_slices": [[0], [1], [2]]}
    result = scaled_metadata(metadata, (1, 1, 4), (4, 4, 3), (0.5, 0.5, 5.0))
    assert result["slice_thickness_override_mm"] == 1.25
    assert "slice_thickness_override_mm" not in scaled_metadata(metadata, (1, 1, 1), (4, 4, 3), (0.5, 0.5, 5.0))


def test_slice_ratio_far_from_factor_is_rejected(mr_volume):
    """A model for 4x thicker slices refuses a scan whose slices are only as thick as its pixels."""
    restorer = Restorer(NearestRepeatK(), sr_card(), device="cpu")
    isotropic = Volume(mr_volume.array, np.diag([1.0, 1.0, 1.0, 1.0]), "MR")
    with pytest.raises(ValueError, match="1.00x"):
        restorer.restore(isotropic)


def test_thick_slice_consistency_reproduces_input():
    from medgan.inference.restorer import enforce_thick_slice_consistency

    generator = np.random.default_rng(0)
    thick = generator.uniform(0.0, 100.0, (3, 2, 4)).astype(np.float32)
    fine = generator.uniform(0.0, 100.0, (3, 2, 16)).astype(np.float32)
    corrected = enforce_thick_slice_consistency(fine, thick, 4)
    np.testing.assert_allclose(corrected.reshape(3, 2, 4, 4).mean(axis=-1), thick, atol=1e-4)
    detail = corrected - np.repeat(corrected.reshape(3, 2, 4, 4).mean(axis=-1), 4, axis=2)
    original_detail = fine - np.repeat(fine.reshape(3, 2, 4, 4).mean(axis=-1), 4, axis=2)
    np.testing.assert_allclose(detail, original_detail, atol=1e-4)
    with pytest.raises(ValueError, match="4 output slices per input slice"):
        enforce_thick_slice_consistency(fine[:, :, :15], thick, 4)
