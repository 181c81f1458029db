import numpy as np
import pytest
import torch

from medgan.inference.restorer import Restorer, tensor_to_volume_array, volume_to_tensor
from medgan.inference.sliding_window import sliding_window_inference, window_starts
from medgan.models import ModelCard
from medgan.networks import build_network
from medgan.tasks import get_task


def make_card(network_name="identity", kwargs=None, patch_size=(3, 8, 8)) -> ModelCard:
    return ModelCard(task="ldct", network={"name": network_name, "kwargs": kwargs or {}},
                     intensity=get_task("ldct").intensity.to_dict(), patch_size=patch_size)


@pytest.mark.parametrize(
    "size, window, overlap",
    [
        (10, 4, 0.25),  # last window aligned to the end
        (4, 8, 0.5),  # volume thinner than the window: one window
        (17, 5, 0.0),  # no overlap
        (1, 1, 0.9),  # single voxel
    ],
)
def test_window_starts_cover_every_voxel(size, window, overlap):
    starts = window_starts(size, window, overlap)
    covered = np.zeros(size, dtype=bool)
    for start in starts:
        covered[start:start + window] = True
    assert covered.all()
    assert starts[-1] + min(window, size) == size


def test_sliding_window_doubling_oracle():
    volume = torch.randn(1, 1, 9, 21, 14)
    output = sliding_window_inference(volume, lambda x: 2 * x, (4, 8, 6), overlap=0.5, batch_size=3)
    assert torch.allclose(output, 2 * volume, atol=1e-6)


def test_sliding_window_identity_is_exact():
    volume = torch.randn(1, 1, 7, 30, 25) * 1000
    output = sliding_window_inference(volume, lambda x: x, (3, 8, 8), overlap=0.4)
    assert torch.equal(output, volume)


def test_sliding_window_rejects_bad_arguments():
    volume = torch.zeros(1, 1, 4, 4, 4)
    with pytest.raises(ValueError, match="overlap"):
        sliding_window_inference(volume, lambda x: x, (2, 2, 2), overlap=1.0)
    with pytest.raises(ValueError, match="roi_size"):
        sliding_window_inference(volume, lambda x: x, (2, 0, 2))
    with pytest.raises(ValueError, match=r"\(1, C, D, H, W\)"):
        sliding_window_inference(torch.zeros(4, 4, 4), lambda x: x, (2, 2, 2))
    with pytest.raises(ValueError, match="shape"):
        sliding_window_inference(volume, lambda x: x[:, :, :1], (2, 2, 2))


def test_volume_tensor_layout_round_trip():
    array = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    tensor = volume_to_tensor(array)
    assert tensor.shape == (1, 1, 4, 3, 2)  # (B, C, D=k, H=j, W=i)
    assert tensor[0, 0, 3, 2, 1] == array[1, 2, 3]
    assert np.array_equal(tensor_to_volume_array(tensor), array)


def test_identity_restore_returns_input_exactly(ct_volume):
    restorer = Restorer(build_network("identity"), make_card(), device="cpu")
    restored = restorer.restore(ct_volume, roi_size=(2, 8, 8), overlap=0.5)
    assert np.array_equal(restored.array, ct_volume.array)
    assert np.array_equal(restored.affine, ct_volume.affine)
    assert restored.shape == ct_volume.shape
    assert restored.modality == "CT"


@pytest.mark.parametrize("shape", [(1, 1, 1), (9, 7, 1), (5, 6, 3)])
def test_restore_any_shape(shape, ct_volume):
    volume = ct_volume.with_array(np.zeros(ct_volume.shape, np.float32))
    volume = type(ct_volume)(array=np.random.default_rng(0).normal(size=shape), affine=ct_volume.affine)
    network = build_network("red-cnn-3d", {"channels": 4, "depth": 2})
    restored = Restorer(network, make_card("red-cnn-3d", {"channels": 4, "depth": 2}), device="cpu").restore(volume)
    assert restored.shape == shape
    assert np.allclose(restored.array, volume.array, atol=1e-4)  # the untrained network is the identity


def test_restore_rejects_nan(ct_volume):
    array = ct_volume.array.copy()
    array[1, 2, 3] = np.nan
    restorer = Restorer(build_network("identity"), make_card(), device="cpu")
    with pytest.raises(ValueError, match="1 NaN"):
        restorer.restore(ct_volume.with_array(array))


def test_resolve_device_rejects_missing_cuda():
    from medgan.inference.restorer import resolve_device

    assert resolve_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


def test_tiled_network_matches_whole_volume():
    torch.manual_seed(0)
    network = build_network("red-cnn-3d", {"channels": 4, "depth": 2})  # receptive field 9 voxels
    for parameter in network.parameters():
        torch.nn.init.normal_(parameter, std=0.2)
    volume = torch.randn(1, 1, 11, 40, 37)
    with torch.no_grad():
        whole = network(volume)
    tiled = sliding_window_inference(volume, network, (16, 24, 24), overlap=0.5)
    # Windows span D and overlap by more than the receptive field in H and W, so every voxel has a window where
    # its whole receptive field lies inside the window. Gaussian blending still gives edge-affected windows a few percent of the weight.
    assert (tiled - whole).abs().max() < 2e-2 * whole.abs().max()
    assert (tiled - whole).abs().mean() < 1e-3 * whole.abs().max()
