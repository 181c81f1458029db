import pytest
import torch

from medgan.losses import (
    CompositeLoss,
    build_loss,
    content_loss,
    critic_loss,
    generator_adversarial_loss,
    gradient_penalty,
    loss_names,
    ssim3d,
)


class LinearCritic(torch.nn.Module):
    """D(x) = sum(w * x): its gradient is w everywhere, so the penalty is (||w|| - 1)^2 exactly."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(weight)

    def forward(self, x):
        return (x * self.weight).sum(dim=(1, 2, 3, 4))


def test_gradient_penalty_textbook_value():
    weight = torch.zeros(1, 1, 2, 3, 4)
    weight[0, 0, 0, 0, 0] = 3.0  # ||w|| = 3, so the penalty is (3 - 1)^2 = 4 for every mixing weight
    critic = LinearCritic(weight)
    real = torch.randn(5, 1, 2, 3, 4)
    fake = torch.randn(5, 1, 2, 3, 4)
    penalty = gradient_penalty(critic, real, fake, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(penalty)
    assert penalty.item() == pytest.approx(4.0, rel=1e-6)


def test_gradient_penalty_zero_for_unit_gradient():
    weight = torch.full((1, 1, 1, 2, 2), 0.5)  # ||w|| = sqrt(4 * 0.25) = 1
    penalty = gradient_penalty(LinearCritic(weight), torch.randn(3, 1, 1, 2, 2), torch.randn(3, 1, 1, 2, 2))
    assert penalty.item() == pytest.approx(0.0, abs=1e-10)


def test_gradient_penalty_ignores_condition_channels():
    weight = torch.zeros(1, 2, 1, 2, 2)
    weight[0, 0] = 10.0  # condition channel: not differentiated
    weight[0, 1, 0, 0, 0] = 2.0  # candidate channel: ||w|| = 2, penalty (2 - 1)^2 = 1
    critic = LinearCritic(weight)
    condition = torch.randn(4, 1, 1, 2, 2)
    penalty = gradient_penalty(critic, torch.randn(4, 1, 1, 2, 2), torch.randn(4, 1, 1, 2, 2), condition=condition)
    assert penalty.item() == pytest.approx(1.0, rel=1e-6)


def test_gradient_penalty_reaches_critic_weights():
    critic = LinearCritic(torch.full((1, 1, 1, 2, 2), 2.0))
    penalty = gradient_penalty(critic, torch.randn(2, 1, 1, 2, 2), torch.randn(2, 1, 1, 2, 2))
    penalty.backward()
    assert critic.weight.grad is not None
    assert critic.weight.grad.abs().sum() > 0


def test_gradient_penalty_float32_for_half_inputs():
    critic = LinearCritic(torch.full((1, 1, 1, 2, 2), 2.0))
    penalty = gradient_penalty(critic, torch.randn(2, 1, 1, 2, 2).bfloat16(), torch.randn(2, 1, 1, 2, 2).bfloat16())
    assert penalty.dtype == torch.float32


def test_gradient_penalty_rejects_shape_mismatch():
    critic = LinearCritic(torch.ones(1, 1, 1, 2, 2))
    with pytest.raises(ValueError, match="same shape"):
        gradient_penalty(critic, torch.randn(2, 1, 1, 2, 2), torch.randn(3, 1, 1, 2, 2))


def test_wasserstein_terms():
    real = torch.tensor([1.0, 3.0])
    fake = torch.tensor([-1.0, 0.0])
    assert critic_loss(real, fake).item() == pytest.approx(-0.5 - 2.0)
    assert generator_adversarial_loss(fake).item() == pytest.approx(0.5)


@pytest.mark.parametrize("kind", ["l1", "mse"])
def test_content_loss_zero_on_identical(kind):
    x = torch.randn(2, 1, 3, 5, 7)
    assert content_loss(x, x, kind).item() == 0.0
    assert content_loss(x, x + 1, kind).item() == pytest.approx(1.0)


def test_content_loss_rejects_unknown_kind_and_shapes():
    x = torch.randn(1, 1, 2, 2, 2)
    with pytest.raises(ValueError, match="ssim9"):
        content_loss(x, x, "ssim9")
    with pytest.raises(ValueError, match="same shape"):
        content_loss(x, torch.randn(1, 1, 2, 2, 3))


def test_build_loss_every_name_without_files():
    assert loss_names() == ["l1", "mse", "ssim3d", "perceptual-ae", "perceptual-vgg25d", "perceptual-medicalnet"]
    x = torch.randn(1, 1, 3, 5, 7)
    for name in ("l1", "mse", "ssim3d"):
        assert build_loss(name)(x, x).item() == pytest.approx(0.0, abs=1e-6), name


def test_build_loss_rejects_unknown_name_and_kwarg():
    with pytest.raises(ValueError, match="ssim9"):
        build_loss("ssim9")
    with pytest.raises(ValueError, match="data_rnage"):
        build_loss("ssim3d", data_rnage=2.0)


def test_composite_loss_weights_and_labels():
    generator = torch.Generator().manual_seed(0)
    prediction = torch.randn(2, 1, 3, 8, 8, generator=generator, requires_grad=True)
    target = torch.randn(2, 1, 3, 8, 8, generator=generator)
    composite = CompositeLoss([("l1", 2.0, {}), ("ssim3d", 0.5, {"data_range": 2.0}), ("l1", 0.0, {})])
    total, values = composite(prediction, target)
    l1 = torch.nn.functional.l1_loss(prediction, target)
    ssim_loss = 1 - ssim3d(prediction, target, data_range=2.0)
    assert list(values) == ["l1", "ssim3d", "l1_2"]
    assert values["l1"].item() == pytest.approx(l1.item())
    assert values["ssim3d"].item() == pytest.approx(ssim_loss.item())
    assert total.item() == pytest.approx(2.0 * l1.item() + 0.5 * ssim_loss.item(), rel=1e-6)
    total.backward()
    assert torch.isfinite(prediction.grad).all()


@pytest.mark.parametrize("weight", [-1.0, float("nan")])
def test_composite_loss_rejects_bad_weight(weight):
    with pytest.raises(ValueError, match=r"loss.terms\[1\] \(mse\): weight"):
        CompositeLoss([("l1", 1.0, {}), ("mse", weight, {})])


def test_composite_loss_names_failing_term():
    with pytest.raises(ValueError, match=r"loss.terms\[0\] \(ssim3d\).*sigma"):
        CompositeLoss([("ssim3d", 1.0, {"sigma": 0})])
