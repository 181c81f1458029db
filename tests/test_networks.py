import pytest
import torch

from medgan.networks import build_network, network_names

ODD_SHAPES = [(1, 1, 1, 13, 11), (2, 1, 5, 9, 17), (1, 1, 7, 7, 7)]


@pytest.mark.parametrize("shape", ODD_SHAPES)
@pytest.mark.parametrize("name", ["red-cnn-3d", "identity"])
def test_generator_keeps_shape(name, shape):
    network = build_network(name, {})
    x = torch.randn(shape)
    assert network(x).shape == x.shape


def test_red_cnn_starts_as_identity():
    network = build_network("red-cnn-3d", {"channels": 8, "depth": 3})
    x = torch.randn(1, 1, 4, 10, 12)
    assert torch.equal(network(x), x)


def test_red_cnn_single_slice_equals_replicated_volume():
    torch.manual_seed(0)
    network = build_network("red-cnn-3d", {"channels": 8, "depth": 2})
    for parameter in network.parameters():
        torch.nn.init.normal_(parameter, std=0.1)
    one_slice = torch.randn(1, 1, 1, 12, 10)
    stacked = one_slice.expand(1, 1, 6, 12, 10).contiguous()
    single = network(one_slice)
    replicated = network(stacked)
    assert torch.allclose(replicated, single.expand_as(replicated), atol=1e-5)


@pytest.mark.parametrize("shape", [(2, 2, 1, 8, 8), (3, 2, 6, 17, 13)])
def test_critic_scores_each_sample(shape):
    critic = build_network("patch-critic-3d", {"in_channels": 2, "channels": 4, "n_layers": 2})
    assert critic(torch.randn(shape)).shape == (shape[0],)


def test_critic_has_no_batch_norm():
    critic = build_network("patch-critic-3d", {"in_channels": 2})
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in critic.modules())


def test_critic_samples_are_independent():
    critic = build_network("patch-critic-3d", {"in_channels": 1, "channels": 4, "n_layers": 2})
    batch = torch.randn(3, 1, 4, 16, 16)
    alone = critic(batch[:1])
    together = critic(batch)
    assert torch.allclose(alone, together[:1], atol=1e-6)


@pytest.mark.parametrize(
    "name, kwargs, word",
    [
        ("red-cnn-3d", {"channels": 0}, "channels"),
        ("red-cnn-3d", {"kernel_size": 4}, "kernel_size"),
        ("red-cnn-3d", {"in_channels": 1, "out_channels": 2}, "out_channels"),
        ("patch-critic-3d", {"normalization": "batch"}, "normalization"),
        ("red-cnn-3d", {"widht": 3}, "widht"),
    ],
)
def test_invalid_arguments_name_the_argument(name, kwargs, word):
    with pytest.raises(ValueError, match=word):
        build_network(name, kwargs)


def test_unknown_network_lists_registered():
    with pytest.raises(ValueError, match="red-cnn-3d"):
        build_network("unet-9000", {})
    assert "patch-critic-3d" in network_names()


def test_generator_rejects_4d_input():
    with pytest.raises(ValueError, match="B, C, D, H, W"):
        build_network("red-cnn-3d", {})(torch.randn(1, 8, 8, 8))
