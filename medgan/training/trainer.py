"""`GANTrainer`: paired 3D Wasserstein GAN training with gradient penalty and a content loss."""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from medgan.config import Config
from medgan.evaluation.metrics import HU_WINDOW_WIDE, psnr, ssim_slices, windowed
from medgan.inference.sliding_window import context_window, sliding_window_inference
from medgan.losses import CompositeLoss, critic_loss, generator_adversarial_loss, gradient_penalty
from medgan.networks.critics import critic_input
from medgan.tasks import IntensityMapping
from medgan.training import distributed
from medgan.training.checkpoints import capture_rng_state, load_checkpoint, restore_rng_state, save_checkpoint
from medgan.training.ema import ModelEMA
from medgan.training.run_log import RunLog

logger = logging.getLogger(__name__)

LOG_COLUMNS = [
    "step", "phase", "critic_loss", "wasserstein_distance", "gradient_penalty", "generator_adversarial_loss",
    "content_loss", "generator_loss", "lr_generator", "val_psnr_db", "val_ssim", "seconds", "patches_per_second",
]

_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class ValidationCase:
    """A whole validation volume: ``low`` and ``high`` as ``(1, 1, D, H, W)`` tensors in network units."""

    name: str
    low: torch.Tensor
    high: torch.Tensor


def _cosine_factor(total_steps: int) -> Callable[[int], float]:
    return lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))


class GANTrainer:
    """Train a generator against a conditional critic.

    Each step after warm-up runs ``n_critic`` critic updates and one generator update (Gulrajani et al.,
    "Improved Training of Wasserstein GANs", NeurIPS 2017):

    1. Critic step, repeated ``n_critic`` times on fresh batches: gradients are zeroed inside the loop, the
       generator's output is detached, and the loss is ``D(low, fake) - D(low, high) + lambda * GP``. The
       penalty runs in float32 outside autocast and differentiates the critic's raw scores, so a loss scaler
       never touches it.
    2. Generator step with the critic frozen (``requires_grad`` off): the loss is
       ``adversarial_weight * -D(low, G(low)) + content(G(low), high)``, where ``content`` is the weighted sum
       of the config's loss terms (`LossConfig.resolved_terms`: L1, MSE, SSIM or perceptual losses).

    During the first ``warmup_steps`` steps only the content loss trains the generator, which gives the critic
    a sensible generator to judge. The critic is conditional: it scores the channel concatenation of the
    low-quality input and a candidate, so it judges restoration rather than realism alone. An exponential
    moving average of the generator (``train.ema_decay``) is what validation scores and export writes.

    Under ``torchrun`` every rank draws its own patches, and gradients are averaged over ranks before each
    optimizer step (see `medgan.training.distributed`). Rank 0 alone validates, logs and writes checkpoints.

    Args:
        config: the validated configuration.
        generator, critic: the two networks.
        sample_batch: callable ``(batch_size, generator) -> (low, high)`` returning ``(B, 1, D, H, W)`` tensors in
            network units.
        validation: whole volumes scored every ``validate_every`` steps.
        intensity: mapping from network units back to physical units for validation metrics.
        run_dir: folder for the CSV log, previews and checkpoints.
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
        distributed.broadcast_parameters(self.generator)
        distributed.broadcast_parameters(self.critic)
        self.sample_batch = sample_batch
        self.validation = validation
        self.intensity = intensity
        self.run_dir = Path(run_dir)
        self.is_main = distributed.rank() == 0
        train = config.train
        self.optimizer_generator = torch.optim.Adam(self.generator.parameters(), lr=train.lr_generator,
                                                    betas=tuple(train.betas))
        self.optimizer_critic = torch.optim.Adam(self.critic.parameters(), lr=train.lr_critic,
                                                 betas=tuple(train.betas))
        # The learning rates are a function of the step alone, so a resumed run needs no scheduler state.
        self.lr_factor = _cosine_factor(train.steps) if train.lr_schedule == "cosine" else (lambda step: 1.0)
        use_scaler = train.precision == "fp16"
        self.scaler_generator = torch.amp.GradScaler(device.type, enabled=use_scaler)
        self.scaler_critic = torch.amp.GradScaler(device.type, enabled=use_scaler)
        self.ema = ModelEMA(self.generator, train.ema_decay)
        # The generator's non-adversarial loss; any perceptual networks in it are frozen and move to the device.
        self.content_criterion = CompositeLoss(
            (term.name, term.weight, term.kwargs) for term in config.loss.resolved_terms()).to(device)
        # Ranks draw different patches from generators seeded apart.
        self.data_generator = torch.Generator().manual_seed(config.seed + 1000 * distributed.rank())
        self.step = 0
        self.log_path = self.run_dir / "log.csv"
        # Output voxels per input voxel along (D, H, W): (1, 1, 1) for same-grid restoration.
        self.output_scale = tuple(int(n) for n in getattr(generator, "output_scale", (1, 1, 1)))
        # The patient split of `medgan.training.split`, written to the run folder when training starts.
        self.split = None
        # Middle slices (input, output, target) of the first validation case at the last validation.
        self.last_preview: list | None = None

    # Checkpoints -----------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "generator": self.generator.state_dict(),
            "critic": self.critic.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer_generator": self.optimizer_generator.state_dict(),
            "optimizer_critic": self.optimizer_critic.state_dict(),
            "scaler_generator": self.scaler_generator.state_dict(),
            "scaler_critic": self.scaler_critic.state_dict(),
            "rng": capture_rng_state(self.data_generator),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.load_state_dict(state["generator"])
        self.critic.load_state_dict(state["critic"])
        self.optimizer_generator.load_state_dict(state["optimizer_generator"])
        self.optimizer_critic.load_state_dict(state["optimizer_critic"])
        # Checkpoints of medgan 0.1.0 before the EMA, schedules and scalers existed lack these keys.
        self.ema.load_state_dict(state.get("ema", state["generator"]))
        for key in ("scaler_generator", "scaler_critic"):
            if key in state and state[key]:
                getattr(self, key).load_state_dict(state[key])
        restore_rng_state(state["rng"], self.data_generator)
        self.step = int(state["step"])

    def resume(self, run_dir: Path) -> None:
        """Continue from the latest checkpoint of ``run_dir``."""
        self.load_state_dict(load_checkpoint(run_dir))
        logger.info("Resumed from %s at step %d", run_dir, self.step)

    # Steps -----------------------------------------------------------------------------------------------

    def _autocast(self) -> contextlib.AbstractContextManager:
        precision = self.config.train.precision
        if precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=_AUTOCAST_DTYPES[precision])

    def _batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        low, high = self.sample_batch(self.config.train.batch_size, self.data_generator)
        return low.to(self.device), high.to(self.device)

    def _apply(self, loss: torch.Tensor, module: torch.nn.Module, optimizer: torch.optim.Optimizer,
               scaler: torch.amp.GradScaler) -> None:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        distributed.average_gradients(module)
        scaler.step(optimizer)
        scaler.update()

    def critic_step(self) -> dict[str, float]:
        """Run one critic update on a fresh batch and return its loss terms."""
        low, high = self._batch()
        self.optimizer_critic.zero_grad(set_to_none=True)
        with torch.no_grad(), self._autocast():
            fake = self.generator(low)
        fake = fake.float()
        with self._autocast():
            score_real = self.critic(critic_input(low, high))
            score_fake = self.critic(critic_input(low, fake))
        wasserstein = critic_loss(score_real, score_fake)
        # The penalty differentiates with respect to the candidate only; critic_input brings the low input onto
        # the candidate's grid when an SR generator's output is finer.
        penalty = gradient_penalty(lambda candidate: self.critic(critic_input(low.float(), candidate)), high, fake,
                                   generator=self.data_generator)
        loss = wasserstein + self.config.loss.gradient_penalty_weight * penalty
        self._apply(loss, self.critic, self.optimizer_critic, self.scaler_critic)
        return {"critic_loss": loss.item(), "wasserstein_distance": -wasserstein.item(),
                "gradient_penalty": penalty.item()}

    def generator_step(self, adversarial: bool) -> dict[str, float]:
        """Run one generator update; the critic is frozen and only scores when ``adversarial`` is true."""
        low, high = self._batch()
        self.optimizer_generator.zero_grad(set_to_none=True)
        with self._autocast():
            fake = self.generator(low)
        # content_loss is the weighted total of the terms, and loss_<name> is each term before weighting.
        content, term_values = self.content_criterion(fake, high)
        loss = content
        terms = {"content_loss": content.item()}
        terms.update({f"loss_{label}": value.item() for label, value in term_values.items()})
        if adversarial:
            self.critic.requires_grad_(False)
            try:
                with self._autocast():
                    score = self.critic(critic_input(low, fake))
                adversarial_loss = generator_adversarial_loss(score)
            finally:
                self.critic.requires_grad_(True)
            loss = loss + self.config.loss.adversarial_weight * adversarial_loss
            terms["generator_adversarial_loss"] = adversarial_loss.item()
        self._apply(loss, self.generator, self.optimizer_generator, self.scaler_generator)
        self.ema.update(self.generator, self.step)
        terms["generator_loss"] = loss.item()
        return terms

    def train_step(self) -> dict[str, Any]:
        """Run one full step: critic updates (after warm-up) and one generator update."""
        factor = self.lr_factor(self.step)
        for optimizer, base in ((self.optimizer_generator, self.config.train.lr_generator),
                                (self.optimizer_critic, self.config.train.lr_critic)):
            for group in optimizer.param_groups:
                group["lr"] = base * factor
        adversarial = self.step >= self.config.train.warmup_steps and self.config.loss.adversarial_weight > 0
        record: dict[str, Any] = {"phase": "adversarial" if adversarial else "warmup"}
        if adversarial:
            critic_terms = [self.critic_step() for _ in range(self.config.train.n_critic)]
            for key in critic_terms[0]:
                record[key] = sum(t[key] for t in critic_terms) / len(critic_terms)
        record.update(self.generator_step(adversarial))
        record["lr_generator"] = self.optimizer_generator.param_groups[0]["lr"]
        self.step += 1
        record["step"] = self.step
        for key, value in list(record.items()):
            if isinstance(value, float) and key != "lr_generator":
                record[key] = distributed.average_scalar(value, self.device)
        return record

    # Validation ------------------------------------------------------------------------------------------

    def validate(self) -> dict[str, float]:
        """Score the EMA generator on the validation volumes, PSNR and SSIM as case means.

        A fixed intensity mapping (CT) is scored in physical units through ``HU_WINDOW_WIDE``. A per-volume
        mapping (MRI) is scored in network units, where 1 is the volume's reference percentile, clipped to
        ``[0, 1]``. A super-resolution generator's output is compared with the high-resolution reference on its
        finer grid.
        """
        if not self.validation:
            return {}
        network = self.ema.average
        psnrs, ssims = [], []
        # The window is the training patch measured on the input grid, grown to give the receptive field context.
        patch = tuple(size // factor for size, factor in zip(self.config.data.patch_size, self.output_scale))
        window = context_window(patch, getattr(self.generator, "receptive_field", None))
        scale_options = {} if self.output_scale == (1, 1, 1) else {"output_scale": self.output_scale}
        for index, case in enumerate(self.validation):
            restored = sliding_window_inference(case.low, network, window, overlap=0.25, batch_size=1,
                                                device=self.device, **scale_options)
            reference = self._metric_units(case.high[0, 0])
            candidate = self._metric_units(restored[0, 0])
            psnrs.append(psnr(reference, candidate))
            ssims.append(ssim_slices(reference, candidate))
            if index == 0:
                self.last_preview = self._preview_slices(case, restored)
                if self.config.train.preview_every and self.step % self.config.train.preview_every == 0:
                    self._save_preview(case, restored)
        return {"val_psnr_db": sum(psnrs) / len(psnrs), "val_ssim": sum(ssims) / len(ssims)}

    def _metric_units(self, network_values: torch.Tensor) -> torch.Tensor:
        if self.intensity.reference_percentile is not None:
            return windowed(network_values.double(), (0.0, 1.0))
        return windowed(self.intensity.inverse(network_values.double()), HU_WINDOW_WIDE)

    def _preview_slices(self, case: ValidationCase, restored: torch.Tensor) -> list:
        """Return the middle axial slice of input, output and target, in physical units for a fixed mapping."""
        tensors = (case.low, restored, case.high)
        slices = [t[0, 0, t.shape[2] // 2].double() for t in tensors]
        if self.intensity.reference_percentile is None:
            slices = [self.intensity.inverse(s) for s in slices]
        return [s.numpy() for s in slices]

    def _preview_window(self) -> tuple[float, float]:
        return (0.0, 1.0) if self.intensity.reference_percentile is not None else HU_WINDOW_WIDE

    def _save_preview(self, case: ValidationCase, restored: torch.Tensor) -> None:
        from medgan.evaluation.figures import save_validation_preview

        slices = self._preview_slices(case, restored)
        path = self.run_dir / "previews" / f"step-{self.step:07d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        if self.intensity.reference_percentile is not None:
            if slices[0].shape != slices[1].shape:
                return  # NOTE: the PNG tiles need one shape; SR previews go to TensorBoard only.
            save_validation_preview(*slices, path, window=(0.0, 1.0), difference_range=0.1)
        else:
            save_validation_preview(*slices, path)

    # Loop ------------------------------------------------------------------------------------------------

    def fit(self, on_step: Callable[[dict[str, Any]], None] | None = None,
            until_step: int | None = None) -> dict[str, Any]:
        """Train until ``train.steps``, logging every step and checkpointing on schedule.

        Each step goes to ``log.csv``, to TensorBoard when enabled and available, and every ``train.log_every``
        steps to one progress line (see `medgan.training.run_log`). The patient split, when there is one, is
        written to ``split.json`` first.

        ``until_step`` stops earlier, after writing a checkpoint, as an interrupted run would; the schedules still
        follow ``train.steps``. Returns the last step's record (with validation metrics when it validated).
        """
        train = self.config.train
        run_log = None
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            if self.split is not None:
                self.split.write(self.run_dir)
            run_log = RunLog(self.run_dir, LOG_COLUMNS, train.steps, train.log_every, train.tensorboard)
        try:
            return self._fit_loop(run_log, on_step, until_step)
        finally:
            if run_log is not None:
                run_log.close()

    def _fit_loop(self, run_log: RunLog | None, on_step: Callable[[dict[str, Any]], None] | None,
                  until_step: int | None) -> dict[str, Any]:
        train = self.config.train
        self.generator.train()
        self.critic.train()
        record: dict[str, Any] = {}
        started = time.perf_counter()
        patches_per_step = train.batch_size * distributed.world_size()
        last_step = train.steps if until_step is None else min(until_step, train.steps)
        while self.step < last_step:
            step_started = time.perf_counter()
            record = self.train_step()
            n_batches = 1 + (train.n_critic if record["phase"] == "adversarial" else 0)
            record["patches_per_second"] = n_batches * patches_per_step / (time.perf_counter() - step_started)
            if run_log is not None:
                validated = self.step % train.validate_every == 0 or self.step == train.steps
                if validated:
                    record.update(self.validate())
                record["seconds"] = time.perf_counter() - started
                run_log.write(record, n_batches * patches_per_step)
                if validated and self.last_preview is not None:
                    run_log.add_preview(self.last_preview, self.step, self._preview_window())
                    run_log.flush()
                if self.step % train.checkpoint_every == 0 or self.step == last_step:
                    save_checkpoint(self.run_dir, self.state_dict(), self.step)
                if on_step is not None:
                    on_step(record)
        return record
