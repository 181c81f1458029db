"""Adversarial (Wasserstein) and content losses; all take tensors only."""

from medgan.losses.adversarial import critic_loss, generator_adversarial_loss, gradient_penalty
from medgan.losses.content import content_loss

__all__ = ["critic_loss", "generator_adversarial_loss", "gradient_penalty", "content_loss"]
