"""Self-supervised adaptation: in-plane pairs, super-resolution fine-tuning and the CT denoiser variant."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from torch import nn

from medgan.adaptation import (
    InPlanePatchSampler,
    adapt_denoiser,
    adapt_super_resolution,
    in_plane_pair,
    loss_curve_summary,
)
from medgan.io.volume import Volume
from medgan.tasks import get_task
from medgan.transforms import ThickSliceMRI


class TinySuperResolution(nn.Module):
    """Repeat each voxel ``scale`` times along D and add a learned 3x3x3 correction."""

    def __init__(self, scale: int = 4) -> None:
        super().__init__()
        self.output_scale = (scale, 1, 1)
        self.conv = nn.Conv3d(1, 1, 3, padding=1, padding_mode="replicate")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fine = x.repeat_interleave(self.output_scale[0], dim=2)
        return fine + self.conv(fine)


class TinyDenoiser(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(1, 1, 3, padding=1, padding_mode="replicate")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x)


def thick_slice_volume(fine: np.ndarray, spacing_mm=(1.0, 1.0, 1.0), thickness_mm=4.0) -> Volume:
    """Degrade axis k of a fine ``(i, j, k)`` array with `ThickSliceMRI` and return the thick-slice volume."""
    affine = np.diag([*spacing_mm, 1.0])
    affine[:3, 3] = (-10.0, 5.0, 30.0)
    transform = ThickSliceMRI(thickness_mm, slice_axis=2)
    thick = transform(torch.from_numpy(fine), spacing_mm=spacing_mm)
    new_affine = transform.output_affine(affine, fine.shape[2])
    return Volume(array=thick.numpy(), affine=new_affine, modality="MR")


def brain_like(shape=(24, 20, 32), seed=0) -> np.ndarray:
    """A smooth positive blob with texture, so most patches are foreground."""
    generator = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    radius = np.sqrt(sum(g**2 for g in grids))
    texture = generator.normal(0, 0.05, shape)
    return (np.clip(1.2 - radius, 0, None) * (1 + np.sin(6 * grids[0]) * 0.2) + texture).astype(np.float32)


def state(network: nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in network.state_dict().items()}


def same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)


def test_in_plane_ramp_averaged_like_slices():
    i_ramp = np.broadcast_to(np.arange(16, dtype=np.float32)[:, None, None], (16, 6, 20)).copy()
    thick = thick_slice_volume(i_ramp)
    assert thick.shape == (16, 6, 5)
    assert thick.spacing_mm == pytest.approx((1.0, 1.0, 4.0))

    pair = in_plane_pair(thick.array, thick.spacing_mm, 0, scale=4)

    # D is the degraded axis i, H the other in-plane axis j, W the slice axis k.
    assert tuple(pair.coarse.shape) == (4, 6, 5)
    assert tuple(pair.fine.shape) == (16, 6, 5)
    assert pair.first_fine_index == 0
    expected = torch.tensor([1.5, 5.5, 9.5, 13.5])
    assert torch.allclose(pair.coarse[:, 0, 0], expected, atol=1e-6)

    # The slice axis k of a ramp along k, degraded by ThickSliceMRI, gives the same thick-slice values.
    k_ramp = np.broadcast_to(np.arange(16, dtype=np.float32)[None, None, :], (3, 2, 16)).copy()
    slices = thick_slice_volume(k_ramp).array[0, 0, :]
    assert np.allclose(slices, expected.numpy(), atol=1e-6)
    assert torch.equal(pair.fine[:, 0, 0], torch.arange(16, dtype=torch.float32))


def test_in_plane_pair_matches_slice_degradation():
    fine = brain_like((16, 12, 8))
    pair = in_plane_pair(fine, (1.0, 1.0, 4.0), 1, scale=4)
    by_slice_transform = ThickSliceMRI(4.0, slice_axis=1)(torch.from_numpy(fine), spacing_mm=(1.0, 1.0, 1.0))

    assert tuple(pair.coarse.shape) == (3, 16, 8)
    assert torch.allclose(pair.coarse, by_slice_transform.permute(1, 0, 2), atol=1e-6)
    assert torch.equal(pair.fine, torch.from_numpy(fine).permute(1, 0, 2))


def test_in_plane_pair_scales_profile_to_spacing():
    fine = brain_like((16, 12, 6))
    pair = in_plane_pair(fine, (0.5, 0.5, 2.0), 0, scale=4)
    assert pair.thickness_mm == pytest.approx(2.0)
    assert pair.gap_mm == pytest.approx(0.0)
    reference = in_plane_pair(fine, (1.0, 1.0, 4.0), 0, scale=4)
    assert torch.allclose(pair.coarse, reference.coarse, atol=1e-6)


def test_in_plane_pair_gaussian_offset():
    fine = brain_like((40, 6, 6))
    pair = in_plane_pair(fine, (1.0, 1.0, 4.0), 0, scale=4, profile="gaussian")
    # The truncated Gaussian reaches 1.5 FWHM = 6 mm each side, so thick slice 0 is centred on voxel 5.5.
    assert pair.first_fine_index == 4
    assert tuple(pair.fine.shape) == (4 * pair.coarse.shape[0], 6, 6)
    assert pair.profile_fwhm_mm == pytest.approx(4.0)


def test_in_plane_pair_with_slice_gap():
    ramp = np.broadcast_to(np.arange(16, dtype=np.float32)[:, None, None], (16, 4, 4)).copy()
    # 2 mm slices every 4 mm: thick slice m averages voxels 4m .. 4m + 1, centred on 4m + 0.5, and its
    # four output voxels are 4m - 1 .. 4m + 2, so slice 0 has no complete target and is dropped.
    pair = in_plane_pair(ramp, (1.0, 1.0, 4.0), 0, scale=4, slice_thickness_mm=2.0)
    assert pair.thickness_mm == pytest.approx(2.0)
    assert pair.gap_mm == pytest.approx(2.0)
    assert pair.first_fine_index == 3
    assert torch.allclose(pair.coarse[:, 0, 0], torch.tensor([4.5, 8.5, 12.5]), atol=1e-6)
    assert torch.equal(pair.fine[:4, 0, 0], torch.tensor([3.0, 4.0, 5.0, 6.0]))


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"axis": 2}, "in-plane axis"),
        ({"scale": 0}, "scale"),
        ({"slice_thickness_mm": -1.0}, "slice_thickness_mm"),
        ({"slice_thickness_mm": 3.0}, "output grid"),
        ({"profile": "triangle"}, "profile"),
    ],
)
def test_in_plane_pair_rejects(arguments, message):
    values = {"axis": 0, "scale": 4}
    values.update(arguments)
    axis = values.pop("axis")
    with pytest.raises(ValueError, match=message):
        in_plane_pair(brain_like((16, 6, 6)), (1.0, 1.0, 4.0), axis, **values)


def test_sampler_pairs_flipped_consistently():
    fine = brain_like((16, 12, 6))
    pair = in_plane_pair(fine, (1.0, 1.0, 4.0), 0, scale=4)
    sampler = InPlanePatchSampler([pair], 4, (2, 8, 4))
    generator = torch.Generator().manual_seed(3)
    for _ in range(10):
        coarse, target = sampler(2, generator)
        assert tuple(coarse.shape) == (2, 1, 2, 8, 4)
        assert tuple(target.shape) == (2, 1, 8, 8, 4)
        # Each coarse voxel is the mean of its 4 target voxels, whatever the flips.
        means = target.reshape(2, 1, 2, 4, 8, 4).mean(dim=3)
        assert torch.allclose(coarse, means, atol=1e-5)


def test_sampler_clips_patch_to_scan():
    pair = in_plane_pair(brain_like((8, 10, 3)), (1.0, 1.0, 4.0), 0, scale=4)
    sampler = InPlanePatchSampler([pair], 4, (8, 32, 32))
    assert sampler.patch_size == (2, 10, 3)


def test_adapt_sr_three_steps():
    volume = thick_slice_volume(brain_like())
    network = TinySuperResolution()
    before = state(network)

    adapted, record = adapt_super_resolution(network, volume, task_intensity=get_task("mri-sr").intensity,
                                             minutes=5.0, max_steps=3, patch_size=(2, 8, 4), batch_size=2)

    assert record["steps"] == 3
    assert record["stopped_by"] == "max_steps"
    assert record["patch_size"] == [2, 8, 4]
    assert record["target_patch_size"] == [8, 8, 4]
    assert record["seed"] == 0
    assert len(record["loss_curve"]["means"]) == 3
    json.dumps(record)
    assert same_state(state(network), before)
    assert not same_state(state(adapted), before)
    assert adapted is not network
    assert not adapted.training


def test_adapt_sr_prior_pairs_fine_k():
    """With a prior on the fine grid, the in-plane pairs take its k axis: 4 times longer, not the thick one."""
    volume = thick_slice_volume(brain_like())
    fine_shape = (*volume.shape[:2], 4 * volume.shape[2])
    prior = np.repeat(volume.array, 4, axis=2)
    arguments = dict(task_intensity=get_task("mri-sr").intensity, minutes=5.0, max_steps=1, patch_size=(2, 8, 4),
                     batch_size=1)

    _, record = adapt_super_resolution(TinySuperResolution(), volume, prior=prior, **arguments)
    _, plain = adapt_super_resolution(TinySuperResolution(), volume, **arguments)

    assert record["pairs_from"] == "network output on the fine grid"
    assert plain["pairs_from"] == "thick-slice scan"
    assert [pair["coarse_shape"][2] for pair in record["pairs"]] == [fine_shape[2]] * 2
    assert [pair["coarse_shape"][2] for pair in plain["pairs"]] == [volume.shape[2]] * 2
    with pytest.raises(ValueError, match=r"prior must be an array of shape \(.*\) \(the scan's fine grid\)"):
        adapt_super_resolution(TinySuperResolution(), volume, prior=volume.array, **arguments)


def test_adapt_sr_deterministic_for_seed():
    volume = thick_slice_volume(brain_like())
    network = TinySuperResolution()
    arguments = {"task_intensity": get_task("mri-sr").intensity, "max_steps": 3, "patch_size": (2, 8, 4),
                 "batch_size": 2}

    first, first_record = adapt_super_resolution(network, volume, seed=5, **arguments)
    second, second_record = adapt_super_resolution(network, volume, seed=5, **arguments)
    other, _ = adapt_super_resolution(network, volume, seed=6, **arguments)

    assert same_state(state(first), state(second))
    assert first_record["loss_curve"] == second_record["loss_curve"]
    assert not same_state(state(first), state(other))


def test_adapt_sr_respects_time_budget():
    volume = thick_slice_volume(brain_like())
    _, record = adapt_super_resolution(TinySuperResolution(), volume, task_intensity=get_task("mri-sr").intensity,
                                       minutes=1e-6, patch_size=(2, 8, 4), batch_size=1)
    assert record["stopped_by"] == "time"
    assert record["steps"] == 1
    assert record["minutes"] < 0.05


def test_adapt_sr_with_mdcsrn():
    from medgan.networks import build_network

    network = build_network("mdcsrn-3d", {"scale": [4, 1, 1], "growth_rate": 2, "n_blocks": 1, "n_units": 1,
                                          "channels": 4})
    volume = thick_slice_volume(brain_like())
    adapted, record = adapt_super_resolution(network, volume, task_intensity=get_task("mri-sr").intensity,
                                             max_steps=2, patch_size=(2, 8, 4), batch_size=1)
    assert record["steps"] == 2
    assert not same_state(state(adapted), state(network))


def test_adapt_sr_rejects_wrong_network():
    volume = thick_slice_volume(brain_like())
    with pytest.raises(ValueError, match="output_scale"):
        adapt_super_resolution(TinySuperResolution(scale=2), volume, task_intensity=get_task("mri-sr").intensity,
                               max_steps=1)
    with pytest.raises(ValueError, match="adaptation target"):
        adapt_super_resolution(TinyDenoiser(), volume, task_intensity=get_task("mri-sr").intensity, max_steps=1,
                               patch_size=(2, 8, 4))


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"minutes": 0}, "minutes"),
        ({"seed": -1}, "seed"),
        ({"max_steps": 0}, "max_steps"),
        ({"ema_decay": 1.0}, "ema_decay"),
        ({"batch_size": 0}, "batch_size"),
        ({"slice_axis_scale": 0}, "slice_axis_scale"),
    ],
)
def test_adapt_sr_rejects_arguments(arguments, message):
    volume = thick_slice_volume(brain_like((16, 8, 8)))
    values = {"task_intensity": get_task("mri-sr").intensity, "max_steps": 1}
    values.update(arguments)
    with pytest.raises(ValueError, match=message):
        adapt_super_resolution(TinySuperResolution(), volume, **values)


def test_adapt_denoiser_two_steps(ct_volume):
    network = TinyDenoiser()
    before = state(network)
    original_array = ct_volume.array.copy()
    original_affine = ct_volume.affine.copy()

    adapted, record = adapt_denoiser(network, ct_volume, minutes=5.0, max_steps=2, patch_size=(2, 12, 12),
                                     batch_size=1, learning_rate=1e-3, simulator_kwargs={"n_views": 36})

    assert record["steps"] == 2
    assert record["patch_size"] == [2, 12, 12]
    assert record["simulator"]["assume_noiseless_input"] is False
    assert record["simulator"]["dose_fraction"] == 0.25
    json.dumps(record)
    assert same_state(state(network), before)
    assert not same_state(state(adapted), before)
    assert np.array_equal(ct_volume.array, original_array)
    assert np.array_equal(ct_volume.affine, original_affine)


def test_adapt_denoiser_rejects(ct_volume):
    with pytest.raises(ValueError, match="dose_fraction"):
        adapt_denoiser(TinyDenoiser(), ct_volume, dose_fraction=1.0, max_steps=1)
    with pytest.raises(ValueError, match="assume_noiseless_input"):
        adapt_denoiser(TinyDenoiser(), ct_volume, max_steps=1, simulator_kwargs={"assume_noiseless_input": True})
    mr = copy.deepcopy(ct_volume)
    mr.modality = "MR"
    with pytest.raises(ValueError, match="CT"):
        adapt_denoiser(TinyDenoiser(), mr, max_steps=1)
    with pytest.raises(TypeError, match="Volume"):
        adapt_denoiser(TinyDenoiser(), ct_volume.array, max_steps=1)


def test_loss_curve_summary():
    summary = loss_curve_summary([4.0, 3.0, 2.0, 1.0], points=2)
    assert summary["first"] == 4.0
    assert summary["last"] == 1.0
    assert summary["min"] == 1.0
    assert summary["means"] == [3.5, 1.5]
    assert loss_curve_summary([])["means"] == []
