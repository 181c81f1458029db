"""patch-critic-3d with spectral normalisation, and the conditional critic's input."""

import pytest
import torch
import torch.nn.functional as F

from medgan.losses import gradient_penalty
from medgan.networks import build_network, critic_input, interpolate_to_grid

SMALL_CRITIC = {"in_channels": 2, "channels": 4, "n_layers": 2}


def critic_convolutions(critic: torch.nn.Module) -> list[torch.nn.Conv3d]:
    return [module for module in critic.modules() if isinstance(module, torch.nn.Conv3d)]


@pytest.mark.parametrize("normalization", ["layer", "none"])
def test_spectral_norm_critic_scores_each_sample(normalization):
    critic = build_network("patch-critic-3d", {**SMALL_CRITIC, "spectral_norm": True,
                                               "normalization": normalization})
    scores = critic(torch.randn(3, 2, 5, 9, 7))
    assert scores.shape == (3,)
    assert torch.isfinite(scores).all()


def test_spectral_norm_bounds_each_convolution():
    torch.manual_seed(0)
    critic = build_network("patch-critic-3d", {**SMALL_CRITIC, "spectral_norm": True})
    critic.train()
    assert critic(torch.randn(1, 2, 4, 4, 4)).shape == (1,)
    convolutions = critic_convolutions(critic)
    assert len(convolutions) == 4
    for conv in convolutions:
        # In training mode, each read of the weight runs one power iteration, as a forward pass does.
        with torch.no_grad():
            for _ in range(50):
                conv.weight
        matrix = conv.weight.reshape(conv.out_channels, -1)
        largest = torch.linalg.matrix_norm(matrix, ord=2)
        assert abs(largest.item() - 1.0) < 1e-3
        original = conv.parametrizations.weight.original.reshape(conv.out_channels, -1)
        assert abs(torch.linalg.matrix_norm(original, ord=2).item() - 1.0) > 1e-2


def test_critic_without_spectral_norm_keeps_plain_weights():
    critic = build_network("patch-critic-3d", SMALL_CRITIC)
    assert all("parametrizations" not in key for key in critic.state_dict())
    assert not any(torch.nn.utils.parametrize.is_parametrized(conv) for conv in critic_convolutions(critic))


def test_spectral_norm_critic_supports_gradient_penalty():
    critic = build_network("patch-critic-3d", {**SMALL_CRITIC, "spectral_norm": True})
    low, real, fake = torch.randn(3, 2, 1, 4, 6, 6).unbind(0)
    score_real = critic(critic_input(low, real))
    score_fake = critic(critic_input(low, fake))
    penalty = gradient_penalty(critic, real, fake, condition=low)
    loss = score_fake.mean() - score_real.mean() + 10.0 * penalty
    loss.backward()
    for name, parameter in critic.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name


def test_spectral_norm_critic_has_no_batch_norm():
    critic = build_network("patch-critic-3d", {**SMALL_CRITIC, "spectral_norm": True})
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in critic.modules())


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_spectral_norm_must_be_bool(value):
    with pytest.raises(ValueError, match="spectral_norm"):
        build_network("patch-critic-3d", {"spectral_norm": value})


def test_critic_rejects_wrong_channel_count():
    critic = build_network("patch-critic-3d", SMALL_CRITIC)
    with pytest.raises(ValueError, match="in_channels"):
        critic(torch.randn(1, 1, 4, 4, 4))


def test_critic_input_on_same_grid_concatenates():
    low = torch.randn(2, 1, 3, 5, 7)
    candidate = torch.randn(2, 1, 3, 5, 7)
    joined = critic_input(low, candidate)
    assert torch.equal(joined, torch.cat([low, candidate], dim=1))


def test_critic_input_brings_low_onto_fine_grid():
    low = torch.randn(2, 1, 3, 5, 7)
    candidate = torch.randn(2, 1, 12, 5, 7)
    joined = critic_input(low, candidate)
    assert joined.shape == (2, 2, 12, 5, 7)
    expected_low = F.interpolate(low, size=(12, 5, 7), mode="trilinear", align_corners=False)
    assert torch.equal(joined[:, :1], expected_low)
    assert torch.equal(joined[:, 1:], candidate)


def test_critic_input_feeds_sr_critic():
    critic = build_network("patch-critic-3d", {"in_channels": 3, "channels": 4, "n_layers": 2})
    low = torch.randn(2, 2, 2, 6, 6)
    candidate = torch.randn(2, 1, 8, 6, 6)
    assert critic(critic_input(low, candidate)).shape == (2,)


def test_interpolate_to_grid_keeps_matching_tensor():
    low = torch.randn(1, 1, 4, 4, 4)
    assert interpolate_to_grid(low, torch.randn(1, 3, 4, 4, 4)) is low


def test_critic_input_rejects_mismatched_batches():
    with pytest.raises(ValueError, match="batch size"):
        critic_input(torch.randn(2, 1, 3, 4, 4), torch.randn(3, 1, 3, 4, 4))


@pytest.mark.parametrize("argument", ["low", "candidate"])
def test_critic_input_rejects_non_5d(argument):
    tensors = {"low": torch.randn(1, 1, 3, 4, 4), "candidate": torch.randn(1, 1, 3, 4, 4)}
    tensors[argument] = torch.randn(1, 3, 4, 4)
    with pytest.raises(ValueError, match=argument):
        critic_input(tensors["low"], tensors["candidate"])
