"""Tests for the MONAI dictionary transforms in monai.transforms.Compose pipelines."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose

from medgan.transforms import (
    KSpaceTruncationMRId,
    LowDoseCT,
    LowDoseCTd,
    RandomKSpaceTruncationMRId,
    RandomLowDoseCTd,
    RandomRicianNoiseMRId,
    RandomThickSliceMRId,
    RicianNoiseMRId,
    ThickSliceMRI,
    ThickSliceMRId,
)


def ct_meta_tensor() -> MetaTensor:
    """A (1, 32, 28, 3) CT image in HU with axial slices along the last axis, 0.8 x 0.7 x 2.5 mm voxels."""
    x = (torch.arange(32) - 15.5)[:, None] * 0.8
    y = (torch.arange(28) - 13.5)[None, :] * 0.7
    slice_hu = torch.where(x**2 + y**2 < 9**2, 0.0, -1000.0)
    image = slice_hu[None, :, :, None].expand(1, 32, 28, 3).clone()
    affine = torch.diag(torch.tensor([0.8, 0.7, 2.5, 1.0], dtype=torch.float64))
    affine[:3, 3] = torch.tensor([-12.0, 9.0, 40.0], dtype=torch.float64)
    return MetaTensor(image, affine=affine)


def mr_meta_tensor() -> MetaTensor:
    generator = torch.Generator().manual_seed(0)
    image = 50 + 10 * torch.rand(1, 12, 10, 24, generator=generator)
    affine = torch.eye(4, dtype=torch.float64)
    affine[:3, 3] = torch.tensor([5.0, -3.0, 20.0], dtype=torch.float64)
    return MetaTensor(image, affine=affine)


def test_low_dose_compose_is_seeded():
    pipeline = Compose([RandomLowDoseCTd(["image"], (0.2, 0.4), n_views=60)])
    data = {"image": ct_meta_tensor(), "label": torch.zeros(1)}

    pipeline.set_random_state(3)
    first = pipeline(data)
    pipeline.set_random_state(3)
    again = pipeline(data)
    pipeline.set_random_state(4)
    other = pipeline(data)

    assert isinstance(first["image"], MetaTensor)
    assert first["image"].shape == data["image"].shape
    torch.testing.assert_close(first["image"].affine, data["image"].affine)
    assert torch.equal(first["image"], again["image"])
    assert not torch.equal(first["image"], other["image"])
    assert first["label"] is data["label"]
    params = first["image_degradation"]
    assert 0.2 <= params["dose_fraction"] <= 0.4
    assert params == again["image_degradation"]


def test_low_dose_dictionary_replays_array_transform():
    image = ct_meta_tensor()
    transform = LowDoseCTd(["image"], 0.25, n_views=60, seed=7)

    result = transform({"image": image})

    params = result["image_degradation"]
    # Axial slices along the last axis become (D, H, W) = (k, i, j) with (row_mm, col_mm) = (0.8, 0.7).
    hu = image.as_tensor()[0].permute(2, 0, 1)
    replay = LowDoseCT.from_params(params)(hu, (0.8, 0.7), torch.Generator().manual_seed(params["seed"]))
    torch.testing.assert_close(result["image"].as_tensor()[0], replay.permute(1, 2, 0))


def test_low_dose_dictionary_plain_tensor_needs_spacing():
    image = ct_meta_tensor().as_tensor()

    with pytest.raises(ValueError, match="spacing_mm"):
        LowDoseCTd(["image"], 0.5, n_views=30)({"image": image})
    result = LowDoseCTd(["image"], 0.5, n_views=30, spacing_mm=(0.8, 0.7, 2.5))({"image": image})
    assert result["image"].shape == image.shape
    with pytest.raises(ValueError, match="slice_axis"):
        LowDoseCTd(["image"], 0.5, slice_axis=3)


def test_mri_compose_updates_affine_and_is_seeded():
    pipeline = Compose(
        [
            RandomThickSliceMRId(["image"], (3.0, 5.0)),
            RandomKSpaceTruncationMRId(["image"], (0.5, 0.8)),
            RandomRicianNoiseMRId(["image"], (10.0, 30.0)),
        ]
    )
    data = {"image": mr_meta_tensor()}

    pipeline.set_random_state(11)
    first = pipeline(data)
    pipeline.set_random_state(11)
    again = pipeline(data)

    params = first["image_degradation"]
    assert set(params) == {"snr", "seed"}
    assert torch.equal(first["image"], again["image"])
    output = first["image"]
    assert isinstance(output, MetaTensor)
    # The thick-slice step shows in the affine's third column, and the k-space and noise steps keep it.
    assert 3.0 <= output.affine[2, 2].item() <= 5.0
    assert output.shape[-1] < data["image"].shape[-1]


def test_thick_slice_dictionary_matches_array_transform():
    image = mr_meta_tensor()
    expected = ThickSliceMRI(4.0, profile="gaussian")(image)

    result = ThickSliceMRId(["image"], 4.0, profile="gaussian")({"image": image})
    plain = ThickSliceMRId(["image"], 4.0, profile="gaussian", spacing_mm=(1.0, 1.0, 1.0))(
        {"image": image.as_tensor()}
    )

    torch.testing.assert_close(result["image"].as_tensor(), expected.as_tensor())
    np.testing.assert_allclose(result["image"].affine.numpy(), expected.affine.numpy())
    torch.testing.assert_close(plain["image"], expected.as_tensor())
    assert result["image_degradation"]["slice_thickness_mm"] == 4.0


def test_deterministic_mri_dictionaries():
    image = mr_meta_tensor()

    truncated = KSpaceTruncationMRId(["image"], 0.5, taper="hann")({"image": image})
    noisy = RicianNoiseMRId(["image"], 20.0, seed=3)({"image": image})
    noisy_again = RicianNoiseMRId(["image"], 20.0, seed=3)({"image": image})

    assert truncated["image"].shape == image.shape
    assert truncated["image_degradation"]["taper"] == "hann"
    assert torch.equal(noisy["image"], noisy_again["image"])
    assert not torch.equal(noisy["image"], image)


def test_missing_keys():
    transform = ThickSliceMRId(["image", "other"], 3.0, allow_missing_keys=True)

    result = transform({"image": mr_meta_tensor()})

    assert "other" not in result
    with pytest.raises(KeyError):
        ThickSliceMRId(["other"], 3.0)({"image": mr_meta_tensor()})
    with pytest.raises(ValueError, match="seed"):
        RicianNoiseMRId(["image"], 20.0, seed=-1)


def test_batched_meta_tensor_rejected():
    image = mr_meta_tensor()
    batch = MetaTensor(image.as_tensor()[None].expand(2, -1, -1, -1, -1), affine=image.affine[None].expand(2, 4, 4))

    with pytest.raises(ValueError, match="batch"):
        ThickSliceMRI(4.0)(batch)
