"""Self-supervised pretraining of the `perceptual-ae` loss network on the user's own high-quality volumes.

The autoencoder learns to reconstruct random patches (L1 loss, network units) of the config's training
volumes: the high-quality side only, so no labels or low-quality data are needed. The result is a
``.safetensors`` file and a JSON card beside it that the ``perceptual-ae`` loss reads.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from medgan import __version__
from medgan.config import Config
from medgan.inference.restorer import volume_to_tensor
from medgan.io.atomic import atomic_output
from medgan.losses.feature_networks import PerceptualAutoencoder3D
from medgan.losses.perceptual import AUTOENCODER_FORMAT
from medgan.losses.weights import sha256_of_file
from medgan.tasks import get_task
from medgan.training.setup import list_training_entries

logger = logging.getLogger(__name__)

# final_loss in the card is the mean reconstruction loss of this many last steps (fewer in shorter runs).
FINAL_LOSS_STEPS = 10


def load_high_quality_volumes(config: Config) -> tuple[list[torch.Tensor], list[str]]:
    """Read the high-quality training volumes of ``config.data`` as ``(D, H, W)`` tensors in network units.

    Returns the tensors and the volumes' source names. Each volume is mapped with the task's intensity mapping
    (per volume for tasks with a percentile-based scale, such as mri-sr).

    Raises:
        FileNotFoundError, ValueError: from listing or reading the volumes.
    """
    intensity = get_task(config.task).intensity
    volumes, names = [], []
    # NOTE: patients that data.validation_fraction later holds out for the GAN's validation are included here.
    for entry in list_training_entries(config.data):
        volume = entry.high.read()
        array = volume_to_tensor(volume.array)[0, 0].float()
        volumes.append(intensity.for_volume(array).forward(array).float())
        names.append(str(entry.high))
    if not volumes:
        raise ValueError("The config's data section lists no training volumes to pretrain on.")
    return volumes, names


def sample_patches(volumes: list[torch.Tensor], patch_size: list[int], batch_size: int, flips: bool,
                   generator: torch.Generator) -> torch.Tensor:
    """Draw ``batch_size`` random ``(1, D, H, W)`` patches, stacked as ``(B, 1, D, H, W)``.

    Volumes are picked with probability proportional to their voxel count. A volume smaller than the patch
    along an axis gives its full extent there, and the batch is cropped to the smallest patch drawn.
    """
    voxels = torch.tensor([float(v.numel()) for v in volumes])
    patches = []
    for _ in range(batch_size):
        volume = volumes[int(torch.multinomial(voxels / voxels.sum(), 1, generator=generator).item())]
        size = [min(p, s) for p, s in zip(patch_size, volume.shape)]
        start = [int(torch.randint(s - p + 1, (), generator=generator).item()) for s, p in zip(volume.shape, size)]
        patch = volume[start[0]:start[0] + size[0], start[1]:start[1] + size[1], start[2]:start[2] + size[2]]
        if flips:
            for axis in range(3):
                if torch.rand((), generator=generator).item() < 0.5:
                    patch = patch.flip(axis)
        patches.append(patch)
    common = [min(p.shape[axis] for p in patches) for axis in range(3)]
    return torch.stack([p[:common[0], :common[1], :common[2]][None] for p in patches])


def pretrain_perceptual_autoencoder(
    config: Config,
    out_path: str | Path,
    *,
    steps: int,
    batch_size: int = 4,
    learning_rate: float = 1.0e-3,
    channels: list[int] | tuple[int, ...] = (16, 32, 64),
    device: torch.device | str = "cpu",
    overwrite: bool = False,
    on_step: Callable[[int, float], None] | None = None,
) -> dict[str, Any]:
    """Train a `PerceptualAutoencoder3D` on random patches of the config's volumes and write it with its card.

    Patches have ``config.data.patch_size`` and ``config.data.flips``; ``config.seed`` seeds the patches and
    the initial weights. The weights go to ``out_path`` (``.safetensors``) and the card, a JSON object with the
    architecture kwargs, the weights' SHA-256, the step count and the final loss, to the same path with
    ``.json``. Both are written atomically.

    Args:
        config: a validated config; its ``data`` section lists the volumes.
        out_path: the ``.safetensors`` file to write.
        steps: optimizer steps (Adam, L1 reconstruction loss in network units).
        batch_size: patches per step.
        learning_rate: Adam learning rate.
        channels: feature channels per encoder level.
        device: where the network trains.
        overwrite: replace existing output files.
        on_step: called with ``(step, loss)`` after each step.

    Returns:
        The card as written.

    Raises:
        ValueError: for a bad output suffix or argument.
        FileExistsError: if an output exists and ``overwrite`` is false.
        FileNotFoundError: if a volume or the output folder is missing.
    """
    out_path = Path(out_path)
    card_path = out_path.with_suffix(".json")
    if out_path.suffix != ".safetensors":
        raise ValueError(f"The output path must end in .safetensors, got {str(out_path)!r}.")
    for name, value in (("steps", steps), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    if not learning_rate > 0:
        raise ValueError(f"learning_rate must be positive, got {learning_rate!r}.")
    if not overwrite:
        for existing in (out_path, card_path):
            if existing.exists():
                raise FileExistsError(f"{existing} already exists; pass --overwrite (overwrite=True) to replace it.")
    if not out_path.parent.is_dir():
        raise FileNotFoundError(f"Output folder {out_path.parent} not found; create it first.")

    device = torch.device(device)
    volumes, names = load_high_quality_volumes(config)
    torch.manual_seed(config.seed)
    network = PerceptualAutoencoder3D(in_channels=1, channels=list(channels)).to(device)
    optimizer = torch.optim.Adam(network.parameters(), lr=learning_rate)
    generator = torch.Generator().manual_seed(config.seed + 3)
    logger.info("Pretraining the perceptual autoencoder %s on %d volume(s) for %d steps, device %s",
                network.architecture_kwargs(), len(volumes), steps, device)

    network.train()
    losses: list[float] = []
    started = time.perf_counter()
    for step in range(1, steps + 1):
        batch = sample_patches(volumes, config.data.patch_size, batch_size, config.data.flips, generator).to(device)
        optimizer.zero_grad(set_to_none=True)
        loss = F.l1_loss(network(batch), batch)
        if not torch.isfinite(loss):
            raise ValueError(f"The reconstruction loss became {loss.item()} at step {step}; lower the learning rate.")
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if step % 100 == 0 or step == steps:
            logger.info("pretrain-perceptual step %d/%d: L1 %.5f", step, steps, losses[-1])
        if on_step is not None:
            on_step(step, losses[-1])
    final_losses = losses[-FINAL_LOSS_STEPS:]

    tensors = {key: value.detach().cpu().contiguous() for key, value in network.state_dict().items()}
    card: dict[str, Any] = {
        "format": AUTOENCODER_FORMAT,
        "architecture": "perceptual-autoencoder-3d",
        "architecture_kwargs": network.architecture_kwargs(),
        "sha256": "",
        "steps": steps,
        "final_loss": sum(final_losses) / len(final_losses),
        "final_loss_definition": f"mean L1 reconstruction loss in network units over the last {len(final_losses)} "
                                 "steps",
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "patch_size": list(config.data.patch_size),
        "task": config.task,
        "intensity": get_task(config.task).intensity.to_dict(),
        "training_volumes": names,
        "seed": config.seed,
        "seconds": round(time.perf_counter() - started, 3),
        "medgan_version": __version__,
    }
    with atomic_output(out_path, overwrite=overwrite) as temporary:
        save_file(tensors, str(temporary), metadata={"format": AUTOENCODER_FORMAT})
        card["sha256"] = sha256_of_file(Path(temporary))
    with atomic_output(card_path, overwrite=overwrite) as temporary:
        Path(temporary).write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    logger.info("Wrote %s and its card %s (final L1 %.5f)", out_path, card_path, card["final_loss"])
    return card
