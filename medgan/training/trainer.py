"""`GANTrainer`: paired 3D Wasserstein GAN training with gradient penalty and a content loss."""

from __future__ import annotations

import csv
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from medgan.config import Config
from medgan.evaluation.metrics import HU_WINDOW_WIDE, psnr, ssim_slices, windowed
from medgan.inference.sliding_window import sliding_window_inference
from medgan.losses import content_loss, critic_loss, generator_adversarial_loss, gradient_penalty
from medgan.tasks import IntensityMapping
from medgan.training.checkpoints import capture_rng_state, load_checkpoint, restore_rng_state, save_checkpoint

logger = logging.getLogger(__name__)

LOG_COLUMNS = [
    "step", "phase", "critic_loss", "wasserstein_distance", "gradient_penalty", "generator_adversarial_loss",
    "content_loss", "generator_loss", "val_psnr_db", "val_ssim", "seconds",
]


@dataclass
class ValidationCase:
    """A whole validation volume: ``low`` and ``high`` as ``(1, 1, D, H, W)`` tensors in network units."""

    name: str
    low: torch.Tensor
    high: torch.Tensor


class GANTrainer:
    """Train a generator against a conditional critic.

    Each step after warm-up runs ``n_critic`` critic updates and one generator update (Gulrajani et al.,
    "Improved Training of Wasserstein GANs", NeurIPS 2017):

    1. Critic step, repeated ``n_critic`` times on fresh batches: gradients are zeroed inside the loop, the
       generator's output is detached, and the loss is ``D(low, fake) - D(low, high) + lambda * GP``.
    2. Generator step with the critic frozen (``requires_grad`` off): the loss is
       ``adversarial_weight * -D(low, G(low)) + content_weight * content(G(low), high)``.

    During the first ``warmup_steps`` steps only the content loss trains the generator, which gives the critic
    a sensible generator to judge. The critic is conditional: it scores the channel concatenation of the
    low-quality input and a candidate, so it judges restoration rather than realism alone.

    Args:
        config: the validated configuration.
        generator, critic: the two networks.
        sample_batch: callable ``(batch_size, generator) -> (low, high)`` returning ``(B, 1, D, H, W)`` tensors in
            network units.
        validation: whole volumes scored every ``validate_every`` steps.
        intensity: mapping from network units back to physical units for validation metrics.
        run_dir: folder for the CSV log and checkpoints.
        device: torch device for both networks.
    """

    def __init__(
        self,
        config: Config,
        generator: torch.nn.Module,
        critic: torch.nn.Module,
        sample_batch: Callable[[int, torch.Generator], tuple[torch.Tensor, torch.Tensor]],
        validation: list[ValidationCase],
        intensity: IntensityMapping,
        run_dir: Path,
        device: torch.device,
    ) -> None:
        self.config = config
        self.device = device
        self.generator = generator.to(device)
        self.critic = critic.to(device)
        self.sample_batch = sample_batch
        self.validation = validation
        self.intensity = intensity
        self.run_dir = Path(run_dir)
        train = config.train
        self.optimizer_generator = torch.optim.Adam(self.generator.parameters(), lr=train.lr_generator,
                                                    betas=tuple(train.betas))
        self.optimizer_critic = torch.optim.Adam(self.critic.parameters(), lr=train.lr_critic,
                                                 betas=tuple(train.betas))
        self.data_generator = torch.Generator().manual_seed(config.seed)
        self.step = 0
        self.log_path = self.run_dir / "log.csv"

    # Checkpoints -----------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "generator": self.generator.state_dict(),
            "critic": self.critic.state_dict(),
            "optimizer_generator": self.optimizer_generator.state_dict(),
            "optimizer_critic": self.optimizer_critic.state_dict(),
            "rng": capture_rng_state(self.data_generator),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.load_state_dict(state["generator"])
        self.critic.load_state_dict(state["critic"])
        self.optimizer_generator.load_state_dict(state["optimizer_generator"])
        self.optimizer_critic.load_state_dict(state["optimizer_critic"])
        restore_rng_state(state["rng"], self.data_generator)
        self.step = int(state["step"])

    def resume(self, run_dir: Path) -> None:
        """Continue from the latest checkpoint of ``run_dir``."""
        self.load_state_dict(load_checkpoint(run_dir))
        logger.info("Resumed from %s at step %d", run_dir, self.step)

    # Steps -----------------------------------------------------------------------------------------------

    def _batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        low, high = self.sample_batch(self.config.train.batch_size, self.data_generator)
        return low.to(self.device), high.to(self.device)

    def critic_step(self) -> dict[str, float]:
        """One critic update on a fresh batch; returns its loss terms."""
        low, high = self._batch()
        self.optimizer_critic.zero_grad(set_to_none=True)
        with torch.no_grad():
            fake = self.generator(low)
        score_real = self.critic(torch.cat([low, high], dim=1))
        score_fake = self.critic(torch.cat([low, fake], dim=1))
        wasserstein = critic_loss(score_real, score_fake)
        penalty = gradient_penalty(self.critic, high, fake, condition=low, generator=self.data_generator)
        loss = wasserstein + self.config.loss.gradient_penalty_weight * penalty
        loss.backward()
        self.optimizer_critic.step()
        return {"critic_loss": loss.item(), "wasserstein_distance": -wasserstein.item(),
                "gradient_penalty": penalty.item()}

    def generator_step(self, adversarial: bool) -> dict[str, float]:
        """One generator update; the critic is frozen and only scores when ``adversarial`` is true."""
        low, high = self._batch()
        self.optimizer_generator.zero_grad(set_to_none=True)
        fake = self.generator(low)
        content = content_loss(fake, high, self.config.loss.content)
        loss = self.config.loss.content_weight * content
        terms = {"content_loss": content.item()}
        if adversarial:
            self.critic.requires_grad_(False)
            try:
                adversarial_loss = generator_adversarial_loss(self.critic(torch.cat([low, fake], dim=1)))
            finally:
                self.critic.requires_grad_(True)
            loss = loss + self.config.loss.adversarial_weight * adversarial_loss
            terms["generator_adversarial_loss"] = adversarial_loss.item()
        loss.backward()
        self.optimizer_generator.step()
        terms["generator_loss"] = loss.item()
        return terms

    def train_step(self) -> dict[str, Any]:
        """Run one full step: critic updates (after warm-up) and one generator update."""
        adversarial = self.step >= self.config.train.warmup_steps and self.config.loss.adversarial_weight > 0
        record: dict[str, Any] = {"phase": "adversarial" if adversarial else "warmup"}
        if adversarial:
            critic_terms = [self.critic_step() for _ in range(self.config.train.n_critic)]
            for key in critic_terms[0]:
                record[key] = sum(t[key] for t in critic_terms) / len(critic_terms)
        record.update(self.generator_step(adversarial))
        self.step += 1
        record["step"] = self.step
        return record

    # Validation ------------------------------------------------------------------------------------------

    def validate(self) -> dict[str, float]:
        """PSNR and SSIM in the ``HU_WINDOW_WIDE`` window over the validation volumes, averaged over cases."""
        if not self.validation:
            return {}
        self.generator.eval()
        psnrs, ssims = [], []
        patch = tuple(self.config.data.patch_size)
        for case in self.validation:
            restored = sliding_window_inference(case.low, self.generator, patch, overlap=0.25,
                                                batch_size=1, device=self.device)
            reference = windowed(self.intensity.inverse(case.high[0, 0].double()), HU_WINDOW_WIDE)
            candidate = windowed(self.intensity.inverse(restored[0, 0].double()), HU_WINDOW_WIDE)
            psnrs.append(psnr(reference, candidate))
            ssims.append(ssim_slices(reference, candidate))
        self.generator.train()
        return {"val_psnr_db": sum(psnrs) / len(psnrs), "val_ssim": sum(ssims) / len(ssims)}

    # Loop ------------------------------------------------------------------------------------------------

    def _write_log_row(self, record: dict[str, Any]) -> None:
        new_file = not self.log_path.exists()
        with open(self.log_path, "a", newline="", encoding="utf-8") as stream:
            writer = csv.DictWriter(stream, fieldnames=LOG_COLUMNS, extrasaction="ignore")
            if new_file:
                writer.writeheader()
            writer.writerow({key: (f"{value:.6g}" if isinstance(value, float) else value)
                             for key, value in record.items()})

    def fit(self, on_step: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Train until ``train.steps``, logging every step to ``log.csv`` and checkpointing on schedule.

        Returns the last step's record (with validation metrics when the last step validated).
        """
        self.run_dir.mkdir(parents=True, exist_ok=True)
        train = self.config.train
        self.generator.train()
        self.critic.train()
        record: dict[str, Any] = {}
        started = time.perf_counter()
        while self.step < train.steps:
            record = self.train_step()
            if self.step % train.validate_every == 0 or self.step == train.steps:
                record.update(self.validate())
            record["seconds"] = time.perf_counter() - started
            self._write_log_row(record)
            if self.step % train.checkpoint_every == 0 or self.step == train.steps:
                save_checkpoint(self.run_dir, self.state_dict(), self.step)
            if on_step is not None:
                on_step(record)
        return record
