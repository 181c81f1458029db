"""MONAI transforms Restored / Restoredd: geometry, agreement with ``medgan infer``, input checks."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from monai.data import MetaTensor
from monai.data.utils import affine_to_spacing
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, SaveImaged

from medgan.cli.main import cli
from medgan.inference.grid import scaled_affine
from medgan.inference.restorer import Restorer, load_model
from medgan.models.card import ModelCard
from medgan.models.files import save_model
from medgan.networks import build_network
from medgan.transforms import Restored, Restoredd
from tests.conftest import oblique_affine

SHIPPED_CT = Path(str(files("medgan.data") / "ct_small_quarter_dose.nii.gz"))


@pytest.fixture(scope="module")
def ldct_restorer() -> Restorer:
    return load_model("ldct-default", device="cpu")


def tiny_sr_model(folder: Path) -> Path:
    """Write an untrained mdcsrn-3d model with output scale 4 along k, which is enough to check geometry."""
    torch.manual_seed(0)
    network = build_network("mdcsrn-3d", {"scale": [4, 1, 1], "growth_rate": 4, "n_blocks": 1, "n_units": 2, "channels": 8})
    card = ModelCard(task="mri-sr", network={"name": "mdcsrn-3d", "kwargs": {"scale": [4, 1, 1], "growth_rate": 4, "n_blocks": 1, "n_units": 2, "channels": 8}},
                     intensity={"offset": 0.0, "scale": 1.0, "unit": "a.u.", "reference_percentile": 99.5},
                     patch_size=(16, 16, 16), output_scale=(1, 1, 4), name="tiny-sr")
    return save_model(network, card, folder / "tiny-sr.safetensors")


def test_pipeline_matches_medgan_infer(tmp_path, ldct_restorer):
    result = CliRunner().invoke(cli, ["infer", str(SHIPPED_CT), "-o", str(tmp_path / "infer.nii.gz"),
                                      "--no-preview", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    pipeline = Compose([
        LoadImaged(keys="image", reader="NibabelReader"),
        EnsureChannelFirstd(keys="image"),
        Restoredd(keys="image", model=ldct_restorer),
        SaveImaged(keys="image", output_dir=str(tmp_path / "monai"), output_postfix="restored",
                   separate_folder=False, resample=False, output_dtype=np.float32, print_log=False),
    ])
    pipeline({"image": str(SHIPPED_CT)})

    medgan_image = nib.load(tmp_path / "infer.nii.gz")
    monai_image = nib.load(tmp_path / "monai" / "ct_small_quarter_dose_restored.nii.gz")
    source = nib.load(SHIPPED_CT)
    assert np.allclose(monai_image.affine, medgan_image.affine, atol=1e-6)
    assert np.allclose(monai_image.affine, source.affine, atol=1e-6)
    medgan_voxels = np.asarray(medgan_image.dataobj, dtype=np.float32).reshape(source.shape)
    monai_voxels = np.asarray(monai_image.dataobj, dtype=np.float32).reshape(source.shape)
    assert np.array_equal(monai_voxels, medgan_voxels)
    assert not np.allclose(monai_voxels, source.get_fdata(dtype=np.float32), atol=1.0)


def test_loaded_affine_is_nifti_ras(ldct_restorer):
    loaded = LoadImaged(keys="image", reader="NibabelReader")({"image": str(SHIPPED_CT)})["image"]
    image = EnsureChannelFirstd(keys="image")({"image": loaded})["image"]
    assert np.allclose(image.affine.numpy(), nib.load(SHIPPED_CT).affine, atol=1e-6)
    assert np.allclose(affine_to_spacing(image.affine, r=3).numpy(), nib.load(SHIPPED_CT).header.get_zooms(),
                       atol=1e-6)


def test_lps_affine_kept(ldct_restorer):
    affine_ras = oblique_affine()
    affine_lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine_ras
    values = np.random.default_rng(0).normal(0.0, 20.0, (1, 12, 10, 4)).astype(np.float32)
    image = MetaTensor(torch.from_numpy(values), affine=torch.as_tensor(affine_lps), meta={"space": "LPS"})
    restored = Restored(ldct_restorer)(image)
    assert isinstance(restored, MetaTensor)
    assert tuple(restored.shape) == (1, 12, 10, 4)
    assert np.allclose(restored.affine.numpy(), affine_lps)
    assert restored.meta["space"] == "LPS"


def test_super_resolution_affine(tmp_path):
    model_path = tiny_sr_model(tmp_path)
    affine = oblique_affine(spacing_mm=(1.0, 1.2, 4.0))
    values = np.random.default_rng(1).uniform(0.0, 100.0, (1, 9, 7, 3)).astype(np.float32)
    image = MetaTensor(torch.from_numpy(values), affine=torch.as_tensor(affine))
    restored = Restored(str(model_path), device="cpu")(image)
    assert tuple(restored.shape) == (1, 9, 7, 12)
    assert np.allclose(restored.affine.numpy(), scaled_affine(affine, (1, 1, 4)))
    assert np.allclose(affine_to_spacing(restored.affine, r=3).numpy(), (1.0, 1.2, 1.0))


def test_missing_keys(ldct_restorer):
    values = torch.zeros((1, 6, 6, 2))
    image = MetaTensor(values, affine=torch.eye(4))
    transform = Restoredd(keys=["image", "label"], model=ldct_restorer, allow_missing_keys=True)
    result = transform({"image": image})
    assert set(result) == {"image"}
    with pytest.raises(KeyError):
        Restoredd(keys=["image", "label"], model=ldct_restorer)({"image": image})


def test_rejects_bad_input(ldct_restorer):
    transform = Restored(ldct_restorer)
    with pytest.raises(TypeError, match="MetaTensor"):
        transform(torch.zeros((1, 6, 6, 2)))
    with pytest.raises(ValueError, match=r"\(1, X, Y, Z\)"):
        transform(MetaTensor(torch.zeros((2, 6, 6, 2)), affine=torch.eye(4)))
    with pytest.raises(TypeError, match="model must be"):
        Restored(3.5)
    with pytest.raises(ValueError, match="roi_size"):
        Restored(ldct_restorer, roi_size=(8, 8))
    with pytest.raises(ValueError, match="overlap"):
        Restored(ldct_restorer, overlap=1.5)
    with pytest.raises(FileNotFoundError, match="not found"):
        Restored("no-such-model")


def test_two_dimensional_image_rejected_with_hint():
    image = MetaTensor(torch.zeros(1, 20, 17), affine=torch.eye(4))
    with pytest.raises(ValueError, match=r"2D image \(1, 20, 17\).*unsqueeze\(-1\)"):
        Restored(model="ldct-default")(image)
