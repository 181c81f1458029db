"""Shared fixtures: small odd-sized volumes with non-identity affines."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medgan.io.volume import Volume
from medgan.models import ModelCard, save_model
from medgan.networks import build_network
from medgan.tasks import get_task


def oblique_affine(spacing_mm=(0.7, 0.9, 2.5), origin_mm=(-40.0, 25.0, 110.0), angle_rad=0.3) -> np.ndarray:
    """A voxel-to-RAS affine with a rotation about the k axis, anisotropic spacing and a non-zero origin."""
    cos, sin = np.cos(angle_rad), np.sin(angle_rad)
    rotation = np.array([[cos, -sin, 0.0], [sin, cos, 0.0], [0.0, 0.0, 1.0]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag(spacing_mm)
    affine[:3, 3] = origin_mm
    return affine


@pytest.fixture
def ct_volume() -> Volume:
    """A 23 x 19 x 5 CT-like volume in HU: a water disk with a bone insert in air, plus noise."""
    generator = np.random.default_rng(7)
    i, j = np.meshgrid(np.arange(23) - 11.0, np.arange(19) - 9.0, indexing="ij")
    slice_hu = np.where(i**2 + j**2 < 64, 0.0, -1000.0)
    slice_hu[(i - 2) ** 2 + (j + 1) ** 2 < 4] = 900.0
    array = np.repeat(slice_hu[:, :, None], 5, axis=2) + generator.normal(0, 20, (23, 19, 5))
    return Volume(array=array.astype(np.float32), affine=oblique_affine(), modality="CT")


@pytest.fixture
def torch_generator() -> torch.Generator:
    return torch.Generator().manual_seed(1234)


@pytest.fixture
def identity_model(tmp_path):
    """Return an ldct model file whose network is the identity, so outputs equal inputs."""
    card = ModelCard(task="ldct", network={"name": "identity", "kwargs": {}},
                     intensity=get_task("ldct").intensity.to_dict(), patch_size=(2, 8, 8), name="identity")
    return save_model(build_network("identity"), card, tmp_path / "identity.safetensors")
