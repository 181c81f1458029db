import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from medgan.losses import SSIM3DLoss, build_loss, ssim3d

C1 = (0.01 * 1.0) ** 2
C2 = (0.03 * 1.0) ** 2


def test_ssim_loss_zero_for_identical():
    x = torch.randn(2, 1, 5, 12, 13, generator=torch.Generator().manual_seed(0))
    assert SSIM3DLoss()(x, x).item() == pytest.approx(0.0, abs=1e-6)


def test_ssim_constant_volumes_by_hand():
    # Constant volumes have zero variances and covariance, so SSIM = (2 a b + C1) / (a^2 + b^2 + C1) * C2 / C2.
    a, b = 0.2, 0.5
    expected = (2 * a * b + C1) / (a * a + b * b + C1)
    x = torch.full((1, 1, 6, 7, 8), a)
    y = torch.full((1, 1, 6, 7, 8), b)
    assert ssim3d(x, y).item() == pytest.approx(expected, rel=1e-5)
    assert build_loss("ssim3d")(x, y).item() == pytest.approx(1 - expected, rel=1e-4)


def test_ssim_window_of_one_voxel_by_hand():
    # A one-voxel window makes each local mean the voxel value and every local variance zero.
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(1, 1, 3, 4, 5, generator=generator, dtype=torch.float64)
    y = torch.rand(1, 1, 3, 4, 5, generator=generator, dtype=torch.float64)
    a, b = x.numpy(), y.numpy()
    expected = np.mean((2 * a * b + C1) / (a * a + b * b + C1))
    assert ssim3d(x, y, window_size=1).item() == pytest.approx(expected, rel=1e-5)


def test_ssim_matches_scikit_image():
    rng = np.random.default_rng(2)
    a = rng.random((13, 12, 15))
    b = a + 0.2 * rng.standard_normal(a.shape)
    expected = structural_similarity(a, b, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                     use_sample_covariance=False)
    assert ssim3d(torch.tensor(a)[None, None], torch.tensor(b)[None, None]).item() == pytest.approx(expected, rel=1e-5)


def test_ssim_data_range_scales_constants():
    # Scaling the data and the data range together leaves SSIM unchanged.
    generator = torch.Generator().manual_seed(3)
    x = torch.rand(1, 1, 4, 9, 9, generator=generator)
    y = torch.rand(1, 1, 4, 9, 9, generator=generator)
    assert ssim3d(1024 * x, 1024 * y, data_range=1024.0).item() == pytest.approx(ssim3d(x, y).item(), rel=1e-4)


def test_ssim_loss_thin_patch_gradient():
    generator = torch.Generator().manual_seed(4)
    prediction = torch.randn(2, 1, 1, 6, 16, generator=generator, requires_grad=True)
    target = torch.randn(2, 1, 1, 6, 16, generator=generator)
    loss = SSIM3DLoss()(prediction, target)
    loss.backward()
    assert torch.isfinite(loss)
    assert 0 < loss.item() <= 2
    assert torch.isfinite(prediction.grad).all()
    assert prediction.grad.abs().sum() > 0


def test_ssim_float32_under_bfloat16_inputs():
    x = torch.randn(1, 1, 4, 8, 8).bfloat16()
    assert ssim3d(x, x + 0.1).dtype == torch.float32


@pytest.mark.parametrize("kwargs, word", [({"data_range": 0}, "data_range"), ({"sigma": -1.0}, "sigma"),
                                           ({"window_size": 0}, "window_size")])
def test_ssim_rejects_invalid_arguments(kwargs, word):
    with pytest.raises(ValueError, match=word):
        SSIM3DLoss(**kwargs)


def test_ssim_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="same shape"):
        ssim3d(torch.zeros(1, 1, 4, 4, 4), torch.zeros(1, 1, 4, 4, 5))
    with pytest.raises(ValueError, match="D, H, W"):
        ssim3d(torch.zeros(1, 4, 4, 4), torch.zeros(1, 4, 4, 4))
