"""GAN training: patch sampling, the trainer, checkpoints."""

from medgan.training.setup import build_trainer
from medgan.training.trainer import GANTrainer, ValidationCase

__all__ = ["GANTrainer", "ValidationCase", "build_trainer"]
