"""The scan-specific 2D refiner of super-resolution (medgan.adaptation.refine)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medgan.adaptation.refine import PlaneRefiner, RefinedSuperResolution, refine_super_resolution, training_precision
from medgan.inference.grid import scaled_affine
from medgan.inference.restorer import Restorer
from medgan.models import ModelCard
from medgan.networks import build_network
from medgan.tasks import get_task
from tests.test_adaptation import TinySuperResolution, brain_like, same_state, state, thick_slice_volume

SMALL = dict(minutes=5.0, max_steps=2, layers=3, channels=4, crop=8, batch_size=2)


def test_refiner_is_residual_and_keeps_shape():
    refiner = PlaneRefiner(layers=3, channels=4)
    for parameter in refiner.body[-1].parameters():
        torch.nn.init.zeros_(parameter)
    planes = torch.rand(5, 1, 12, 7)

    assert torch.equal(refiner(planes), planes)


def test_refined_network_averages_both_plane_orientations():
    """A refiner that adds 1 on (D, H) planes and 1 on (D, W) planes adds 1 after averaging; shapes follow D."""
    refiner = PlaneRefiner(layers=2, channels=1)
    for parameter in refiner.parameters():
        torch.nn.init.zeros_(parameter)
    torch.nn.init.constant_(refiner.body[-1].bias, 1.0)
    base = TinySuperResolution()
    refined = RefinedSuperResolution(base, refiner)
    x = torch.rand(2, 1, 3, 5, 6)

    assert refined.output_scale == (4, 1, 1)
    assert torch.allclose(refined(x), base(x) + 1.0)


def test_refine_two_steps_leaves_network_untouched():
    volume = thick_slice_volume(brain_like())
    network = TinySuperResolution()
    before = state(network)

    refined, record = refine_super_resolution(network, volume, task_intensity=get_task("mri-sr").intensity, **SMALL)

    assert record["steps"] == 2
    assert record["stopped_by"] == "max_steps"
    assert record["refiner"] == {"layers": 3, "channels": 4}
    assert record["in_plane_pairs"] == 8
    assert record["precision"] in ("fp32", "bf16")
    json.dumps(record)
    assert same_state(state(network), before)
    assert isinstance(refined, RefinedSuperResolution) and not refined.training
    x = torch.rand(1, 1, 2, 6, 5)
    assert refined(x).shape == (1, 1, 8, 6, 5)


def test_refine_in_fp32_and_bf16():
    volume = thick_slice_volume(brain_like())
    for precision in ("fp32", "bf16"):
        refined, record = refine_super_resolution(TinySuperResolution(), volume, precision=precision,
                                                  task_intensity=get_task("mri-sr").intensity, **SMALL)

        assert record["precision"] == precision
        assert all(parameter.dtype == torch.float32 for parameter in refined.parameters())
        assert torch.isfinite(refined(torch.rand(1, 1, 2, 6, 5))).all()


def test_training_precision_choices():
    cpu = torch.device("cpu")

    assert training_precision("fp32", cpu) == "fp32"
    assert training_precision("bf16", cpu) == "bf16"
    assert training_precision("auto", cpu) in ("fp32", "bf16")
    with pytest.raises(ValueError, match="'fp16'"):
        training_precision("fp16", cpu)


def test_refine_small_unequal_in_plane_axes():
    """Planes of the two in-plane pairs (5 x 7 and 7 x 5 voxels) share one crop size in a batch."""
    volume = thick_slice_volume(brain_like(shape=(5, 7, 32)))
    refined, record = refine_super_resolution(TinySuperResolution(), volume,
                                              task_intensity=get_task("mri-sr").intensity,
                                              **{**SMALL, "batch_size": 8, "crop": 32})

    assert record["steps"] == 2
    assert refined(torch.rand(1, 1, 2, 5, 7)).shape == (1, 1, 8, 5, 7)


def test_refine_deterministic_for_seed():
    volume = thick_slice_volume(brain_like())
    network = TinySuperResolution()
    arguments = dict(task_intensity=get_task("mri-sr").intensity, **SMALL)
    first, _ = refine_super_resolution(network, volume, seed=3, **arguments)
    second, _ = refine_super_resolution(network, volume, seed=3, **arguments)
    other, _ = refine_super_resolution(network, volume, seed=4, **arguments)

    assert same_state(state(first.refiner), state(second.refiner))
    assert not same_state(state(first.refiner), state(other.refiner))


def test_refined_mdcsrn_restores_through_restorer():
    """The refined network runs in the Restorer (no channels-last for its 2D convolutions) on the fine grid."""
    kwargs = {"scale": [4, 1, 1], "channels": 4, "growth_rate": 2, "n_blocks": 1, "n_units": 1}
    network = build_network("mdcsrn-3d", kwargs)
    volume = thick_slice_volume(brain_like())
    refined, _ = refine_super_resolution(network, volume, task_intensity=get_task("mri-sr").intensity, **SMALL)
    card = ModelCard(task="mri-sr", network={"name": "mdcsrn-3d", "kwargs": kwargs},
                     intensity=get_task("mri-sr").intensity.to_dict(), patch_size=(8, 16, 16), output_scale=(1, 1, 4))

    restored = Restorer(refined, card, device="cpu").restore(volume)

    assert restored.shape == (*volume.shape[:2], 4 * volume.shape[2])
    assert np.isfinite(restored.array).all()
    np.testing.assert_allclose(restored.affine, scaled_affine(volume.affine, (1, 1, 4)))
    np.testing.assert_allclose(restored.spacing_mm, (*volume.spacing_mm[:2], volume.spacing_mm[2] / 4))


def test_refine_rejects_in_plane_axis_below_factor():
    volume = thick_slice_volume(brain_like(shape=(3, 7, 32)))
    with pytest.raises(ValueError, match="In-plane axis i has 3 voxels, fewer than the factor 4"):
        refine_super_resolution(TinySuperResolution(), volume, task_intensity=get_task("mri-sr").intensity, **SMALL)


@pytest.mark.parametrize("arguments, message", [
    ({"slice_axis_scale": 2}, r"output_scale is \(4, 1, 1\).*slice_axis_scale 2"),
    ({"layers": 1}, "layers must be at least 2"),
    ({"crop": 0}, "crop must be a positive integer"),
    ({"minutes": 0}, "minutes"),
])
def test_refine_rejects(arguments, message):
    volume = thick_slice_volume(brain_like())
    values = {**dict(task_intensity=get_task("mri-sr").intensity, **SMALL), **arguments}
    with pytest.raises(ValueError, match=message):
        refine_super_resolution(TinySuperResolution(), volume, **values)
