"""Wasserstein critic and generator terms with the gradient penalty of WGAN-GP."""

from __future__ import annotations

from typing import Callable

import torch


def critic_loss(score_real: torch.Tensor, score_fake: torch.Tensor) -> torch.Tensor:
    """Return the critic's Wasserstein loss ``mean(D(fake)) - mean(D(real))`` (lower is better for the critic)."""
    return score_fake.float().mean() - score_real.float().mean()


def generator_adversarial_loss(score_fake: torch.Tensor) -> torch.Tensor:
    """Return the generator's Wasserstein loss ``-mean(D(fake))``."""
    return -score_fake.float().mean()


def gradient_penalty(
    critic: Callable[[torch.Tensor], torch.Tensor],
    real: torch.Tensor,
    fake: torch.Tensor,
    *,
    condition: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Compute the WGAN-GP penalty ``mean((||grad_x D(x_hat)||_2 - 1)^2)`` in float32.

    ``x_hat = eps * real + (1 - eps) * fake`` with one ``eps ~ U[0, 1]`` per sample, drawn from ``generator``
    (Gulrajani et al., "Improved Training of Wasserstein GANs", NeurIPS 2017). The norm is taken over all of a
    sample's channels and voxels. The interpolation and the critic call run in float32 with autocast disabled,
    so the penalty's gradients never pass through a loss scaler or a reduced-precision cast.

    Args:
        critic: module mapping ``(B, C, D, H, W)`` to ``(B,)`` scores.
        real, fake: ``(B, C, D, H, W)`` tensors of the same shape; ``fake`` should be detached.
        condition: optional ``(B, C', D, H, W)`` input concatenated on the channel axis before the critic, for a
            conditional critic; it is not interpolated.
        generator: random generator for ``eps``; the global one when ``None``.

    Raises:
        ValueError: if ``real`` and ``fake`` differ in shape or are not 5D.
    """
    if real.shape != fake.shape:
        raise ValueError(f"real and fake must have the same shape, got {tuple(real.shape)} and {tuple(fake.shape)}.")
    if real.ndim != 5:
        raise ValueError(f"Expected (B, C, D, H, W) tensors, got shape {tuple(real.shape)}.")
    batch = real.shape[0]
    device_type = real.device.type
    with torch.autocast(device_type=device_type, enabled=False):
        eps = torch.rand((batch, 1, 1, 1, 1), generator=generator, device="cpu").to(real.device)
        mixed = (eps * real.detach().float() + (1.0 - eps) * fake.detach().float()).requires_grad_(True)
        critic_input = mixed if condition is None else torch.cat([condition.detach().float(), mixed], dim=1)
        scores = critic(critic_input)
        (grad,) = torch.autograd.grad(scores.sum(), mixed, create_graph=True)
        norms = grad.reshape(batch, -1).norm(2, dim=1)
        return ((norms - 1.0) ** 2).mean()
