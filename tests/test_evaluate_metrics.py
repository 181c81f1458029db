"""Metrics, protocols, bootstrap, grid checks, baselines and the fidelity guardrail on tiny hand-checked cases."""

import importlib.util
import math

import numpy as np
import pytest
import torch

from medgan.evaluation.baselines import Baselines, choose_gaussian_sigma, interpolate_to_grid
from medgan.evaluation.bootstrap import bootstrap_mean
from medgan.evaluation.evaluator import region_statistics, score_candidate
from medgan.evaluation.fidelity import fidelity_report
from medgan.evaluation.geometry import GridMismatchError, check_same_grid, thick_slice_relation
from medgan.evaluation.metrics import mae, psnr, psnr_db, rmse, ssim_3d, ssim_slices, windowed
from medgan.evaluation.protocols import PROTOCOLS, get_protocol
from medgan.evaluation.regions import Region
from medgan.io.volume import Volume
from medgan.transforms.mri import ThickSliceMRI


def test_psnr_of_known_mse():
    reference = np.zeros((4, 4, 4))
    candidate = reference + 0.1
    # MSE 0.01 with data range 1: 10 log10(1 / 0.01) = 20 dB.
    assert psnr_db(reference, candidate, 1.0) == pytest.approx(20.0, abs=1e-9)
    assert psnr_db(reference, candidate, 2.0) == pytest.approx(20.0 + 20 * math.log10(2), abs=1e-9)
    assert psnr_db(reference, reference, 1.0) == math.inf


def test_psnr_over_mask_only():
    reference = np.zeros((3, 3, 3))
    candidate = reference.copy()
    candidate[0] = 5.0
    mask = np.zeros_like(reference, dtype=bool)
    mask[1:] = True
    assert psnr_db(reference, candidate, 1.0, mask) == math.inf
    with pytest.raises(ValueError, match="selects no voxel"):
        psnr_db(reference, candidate, 1.0, np.zeros_like(mask))


def test_rmse_and_mae_by_hand():
    reference = np.zeros((2, 2, 1))
    candidate = np.array([3.0, -4.0, 0.0, 0.0]).reshape(2, 2, 1)
    assert rmse(reference, candidate) == pytest.approx(math.sqrt((9 + 16) / 4))
    assert mae(reference, candidate) == pytest.approx(7 / 4)


def test_ssim_identical_is_one():
    values = np.random.default_rng(0).normal(0.5, 0.1, (13, 12, 12))
    assert ssim_3d(values, values, 1.0) == pytest.approx(1.0, abs=1e-12)


def test_ssim_constant_offset_by_hand():
    reference = np.full((12, 12, 12), 0.5)
    candidate = reference + 0.1
    c1 = (0.01 * 1.0) ** 2
    # Both variances and the covariance are 0, so only the luminance term remains.
    expected = (2 * 0.5 * 0.6 + c1) / (0.5**2 + 0.6**2 + c1)
    assert ssim_3d(reference, candidate, 1.0) == pytest.approx(expected, abs=1e-10)


def test_existing_slice_metrics_still_work():
    reference = torch.zeros(2, 12, 12)
    assert psnr(reference, reference + 0.1) == pytest.approx(20.0, abs=1e-5)
    assert ssim_slices(reference, reference) == pytest.approx(1.0)


@pytest.mark.parametrize("name, low, high", [("ldct-chest", -1350.0, 150.0), ("ldct-abdomen", -150.0, 250.0),
                                             ("ldct-head", 0.0, 80.0)])
def test_protocol_window_edges(name, low, high):
    protocol = get_protocol(name)
    assert protocol.window_hu == (low, high)
    values = np.array([low - 500.0, low, (low + high) / 2, high, high + 500.0])
    mapped = protocol.prepare(values).arrays[0]
    assert mapped.tolist() == [0.0, 0.0, 0.5, 1.0, 1.0]
    assert windowed(np.array([low, high]), (low, high)).tolist() == [0.0, 1.0]
    assert protocol.data_range == 1.0
    assert f"[{low:g}, {high:g}] HU" in protocol.summary()


def test_protocol_ct_hu_clips_to_12_bit_range():
    protocol = get_protocol("ct-hu")
    mapped = protocol.prepare(np.array([-3000.0, -1024.0, 40.0, 3071.0, 5000.0])).arrays[0]
    assert mapped.tolist() == [-1024.0, -1024.0, 40.0, 3071.0, 3071.0]
    assert protocol.data_range == 4095.0


def test_protocol_mri_brain_scale_and_mask():
    reference = np.arange(1, 201, dtype=np.float64).reshape(5, 5, 8)
    prepared = get_protocol("mri-brain").prepare(reference, 2 * reference)
    scale = np.percentile(reference, 99.5)
    assert prepared.scale == pytest.approx(scale)
    assert np.allclose(prepared.arrays[1], 2 * reference / scale)
    assert np.array_equal(prepared.mask, reference > 0.1 * scale)


def test_unknown_protocol_lists_names():
    with pytest.raises(ValueError, match="ldct-abdomen"):
        get_protocol("ldct-lung")
    assert set(PROTOCOLS) == {"ct-hu", "ldct-chest", "ldct-abdomen", "ldct-head", "mri-brain"}


def test_bias_and_noise_on_uniform_block():
    generator = np.random.default_rng(3)
    reference = np.full((6, 6, 4), 40.0)
    input_hu = reference + generator.normal(0, 20, reference.shape)
    candidate = 45.0 + (input_hu - 40.0) * 0.5
    region = Region(0, 6, 0, 6, 0, 4)
    (row,) = region_statistics(reference, candidate, [region], input_hu)
    assert row["bias_hu"] == pytest.approx(candidate.mean() - 40.0)
    assert row["noise_std_ratio"] == pytest.approx(0.5)
    assert row["input_std_hu"] == pytest.approx(input_hu.std())


def test_bootstrap_deterministic_with_seed():
    values = np.random.default_rng(5).normal(30.0, 2.0, 40)
    first = bootstrap_mean(values, seed=7)
    second = bootstrap_mean(values, seed=7)
    assert first == second
    assert first.mean == pytest.approx(np.mean(values))
    other = bootstrap_mean(values, seed=8)
    assert (other.low, other.high) != (first.low, first.high)
    # For 40 normal values the percentile interval is close to mean +/- 1.96 standard errors.
    half_width = 1.96 * values.std(ddof=0) / np.sqrt(values.size)
    assert first.low == pytest.approx(first.mean - half_width, abs=0.15 * half_width)
    assert first.high == pytest.approx(first.mean + half_width, abs=0.15 * half_width)


def test_bootstrap_one_case_has_no_interval():
    single = bootstrap_mean([31.0])
    assert single.low is None
    assert single.high is None
    assert "one case" in single.note
    assert "CI n/a" in single.format()


def test_grid_check_rejects_shape_and_affine(ct_volume):
    shifted = ct_volume.with_array(ct_volume.array)
    shifted.affine[0, 3] += 1e-3
    with pytest.raises(GridMismatchError, match="affines differ") as caught:
        check_same_grid(ct_volume, shifted, "reference", "candidate")
    assert "shape (23, 19, 5)" in str(caught.value)
    cropped = Volume(ct_volume.array[:, :, :4], ct_volume.affine)
    with pytest.raises(GridMismatchError, match="shapes differ"):
        check_same_grid(ct_volume, cropped, "reference", "candidate")
    nearly = ct_volume.with_array(ct_volume.array)
    nearly.affine[0, 3] += 5e-5
    check_same_grid(ct_volume, nearly, "reference", "candidate")


def _mr_reference(n_k=16):
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    affine[:3, 3] = (-5.0, 3.0, 20.0)
    k = np.arange(n_k, dtype=np.float32)
    array = np.broadcast_to(100.0 + 10.0 * k, (6, 5, n_k)).copy()
    return Volume(array, affine, modality="MR")


def test_bspline_baseline_puts_slice_centres_right():
    # With 3 output slices per thick slice, output voxel m = 3 n + 1 sits at input coordinate (m + 0.5) / 3 - 0.5
    # = n, the centre of thick slice n, where any interpolating spline returns that slice's value.
    generator = np.random.default_rng(2)
    reference = Volume(generator.normal(100, 20, (4, 3, 18)).astype(np.float32), np.diag([0.9, 0.9, 1.2, 1.0]))
    thick = ThickSliceMRI(3.6, slice_axis=2)(reference)
    assert thick.shape[2] == 6
    for order in (1, 3):
        upsampled = interpolate_to_grid(thick, reference.shape, reference.affine, order)
        assert upsampled.shape == reference.shape
        assert np.allclose(upsampled[:, :, 1::3], thick.array, atol=1e-4)
        assert not np.allclose(upsampled[:, :, 0::3], thick.array, atol=1e-2)


def test_linear_baseline_reproduces_ramp():
    reference = _mr_reference()
    thick = ThickSliceMRI(4.0, slice_axis=2)(reference)
    relation = thick_slice_relation(thick, reference)
    assert relation.slice_axis == 2
    assert relation.scale == pytest.approx(4.0)
    upsampled = interpolate_to_grid(thick, reference.shape, reference.affine, 1)
    coordinate = (np.arange(reference.shape[2]) + 0.5) / 4 - 0.5
    inside = (coordinate >= 0) & (coordinate <= thick.shape[2] - 1)
    # Thick slices of a ramp hold the ramp's value at their centres, so linear interpolation between the
    # centres restores it, and beyond the outer centres the edge value repeats.
    assert np.allclose(upsampled[2, 2, inside], reference.array[2, 2, inside], atol=1e-4)
    assert np.allclose(upsampled[2, 2, coordinate < 0], thick.array[2, 2, 0], atol=1e-4)


def test_thick_slice_relation_rejects_shifted_input():
    reference = _mr_reference()
    thick = ThickSliceMRI(4.0, slice_axis=2)(reference)
    thick.affine[2, 3] += 1.0
    with pytest.raises(GridMismatchError, match="reference.s thick slices along k"):
        thick_slice_relation(thick, reference)


def test_mri_data_consistency_of_reference_is_exact():
    reference = _mr_reference()
    thick = ThickSliceMRI(4.0, slice_axis=2)(reference)
    relation = thick_slice_relation(thick, reference)
    row = score_candidate(reference, reference.array, get_protocol("mri-brain"), input_volume=thick,
                          relation=relation)
    assert row["dc_rmse"] == pytest.approx(0.0, abs=1e-6)
    assert row["ssim"] == pytest.approx(1.0)


def test_gaussian_sigma_choice_prefers_smoothing_noise():
    generator = np.random.default_rng(0)
    reference = np.zeros((16, 16, 4))
    noisy = reference + generator.normal(0, 40, reference.shape)
    sigma, scores = choose_gaussian_sigma(noisy, reference, get_protocol("ldct-abdomen"), (0.5, 2.0))
    assert len(scores) == 4
    assert sigma[0] == 2.0
    assert max(score["psnr_db"] for score in scores) == next(s["psnr_db"] for s in scores
                                                           if tuple(s["sigma_voxels"]) == sigma)


def test_baselines_reject_wrong_modality():
    with pytest.raises(ValueError, match="do not apply to protocol mri-brain"):
        Baselines(("gaussian",), get_protocol("mri-brain"))


@pytest.mark.skipif(importlib.util.find_spec("bm3d") is None, reason="the bm3d package is not installed")
def test_bm3d_baseline_reduces_noise():
    generator = np.random.default_rng(1)
    reference = Volume(np.zeros((16, 16, 1), dtype=np.float32), np.eye(4))
    noisy = reference.with_array((generator.normal(0, 30, (16, 16, 1))).astype(np.float32))
    baselines = Baselines(("bm3d",), get_protocol("ct-hu"))
    result = baselines.apply("bm3d", "case", noisy, reference)
    assert result.std() < 0.5 * noisy.array.std()
    assert baselines.parameters["bm3d"]["per_case"]["case"]["sigma_psd_estimated"] > 10


def _soft_tissue_ct(shape=(24, 24, 3), noise_hu=15.0, seed=0):
    generator = np.random.default_rng(seed)
    array = np.full(shape, 40.0) + generator.normal(0, noise_hu, shape)
    return Volume(array.astype(np.float32), np.eye(4), modality="CT")


def test_fidelity_ct_flags_mean_shift():
    volume = _soft_tissue_ct()
    smooth = volume.with_array(np.full(volume.shape, 42.0, dtype=np.float32))
    report = fidelity_report(volume, smooth, "ldct")
    assert report["passed"], report["warnings"]
    assert len(report["figures"]["regions"]) >= 2
    shifted = volume.with_array(volume.array + 25.0)
    report = fidelity_report(volume, shifted, "ldct")
    assert not report["passed"]
    assert "moved by +25.0 HU" in report["warnings"][0]


def test_fidelity_ct_warns_without_regions():
    air = Volume(np.full((16, 16, 2), -1000.0, dtype=np.float32), np.eye(4))
    report = fidelity_report(air, air, "ldct")
    assert not report["passed"]
    assert "could not run" in report["warnings"][0]


def test_fidelity_sr_degrades_output_back():
    reference = _mr_reference()
    thick = ThickSliceMRI(4.0, slice_axis=2)(reference)
    report = fidelity_report(thick, reference, "mri-sr")
    assert report["passed"], report["warnings"]
    assert report["figures"]["relative_rmse"] == pytest.approx(0.0, abs=1e-6)
    wrong = reference.with_array(reference.array * 1.5)
    report = fidelity_report(thick, wrong, "mri-sr")
    assert not report["passed"]
    assert "relative RMSE" in report["warnings"][0]


def test_baselines_reject_unknown_name():
    with pytest.raises(ValueError, match="Unknown baseline foo"):
        Baselines(("foo",), get_protocol("ct-hu"))
