"""Adversarial (Wasserstein) losses, and the generator's content, SSIM and perceptual losses by name.

`build_loss` builds any of `loss_names`; `CompositeLoss` sums weighted terms. Perceptual losses read their
frozen networks' weights from local files.
"""

from medgan.losses.adversarial import critic_loss, generator_adversarial_loss, gradient_penalty
from medgan.losses.composite import CompositeLoss, build_loss, loss_kwargs, loss_names
from medgan.losses.content import ContentLoss, content_loss
from medgan.losses.perceptual import AutoencoderPerceptualLoss, MedicalNetPerceptualLoss, VGG25DPerceptualLoss
from medgan.losses.ssim import SSIM3DLoss, ssim3d

__all__ = [
    "critic_loss", "generator_adversarial_loss", "gradient_penalty", "content_loss", "ContentLoss",
    "ssim3d", "SSIM3DLoss", "AutoencoderPerceptualLoss", "VGG25DPerceptualLoss", "MedicalNetPerceptualLoss",
    "CompositeLoss", "build_loss", "loss_kwargs", "loss_names",
]
