"""A scan-specific 2D refiner on top of a super-resolution network, learned from the scan's own in-plane axes.

SMORE (Zhao et al., IEEE Transactions on Medical Imaging) trains a 2D network on a thick-slice scan's in-plane
images, degraded along one in-plane axis like the slice axis, and applies it to the through-plane images. Here the
2D network does not start from an interpolation but from the shipped 3D network's output:

1. The 3D network super-resolves the scan along k: the prior, on the fine grid.
2. Each in-plane axis of the prior is degraded like k (`in_plane_pair`) and super-resolved again by the 3D network
   along that axis. The prior's k then has the fine spacing that the network's H and W axes have when it restores
   the scan, so the network gets the same kind of input in both passes.
3. A residual 2D CNN learns, on planes that hold the degraded axis and the other in-plane axis, to map the 3D
   network's output to the scan's own voxels.
4. At inference, `RefinedSuperResolution` runs the 3D network, then the 2D CNN on the (D, H) and the (D, W) planes
   of its output (D is the volume's slice axis k), and averages the two.

Only the 2D CNN is trained; the 3D network's weights are not changed.
"""

from __future__ import annotations

import copy
import logging
import time
from typing import Any

import numpy as np
import torch
from torch import nn

from medgan.adaptation.finetune import (
    _check_common,
    _check_sr_arguments,
    _positive_int,
    _positive_number,
    loss_curve_summary,
)
from medgan.adaptation.pairs import (
    FOREGROUND_LEVEL,
    FOREGROUND_MAX_DRAWS,
    FOREGROUND_MIN_FRACTION,
    IN_PLANE_AXES,
    in_plane_pair,
)
from medgan.inference.restorer import tensor_to_volume_array, volume_to_tensor
from medgan.inference.sliding_window import sliding_window_inference
from medgan.io.volume import Volume
from medgan.tasks import IntensityMapping

logger = logging.getLogger(__name__)

WINDOW = (48, 64, 64)
"""Sliding window (D, H, W), in input voxels, of the 3D network's passes over the scan and its in-plane pairs."""

OVERLAP = 0.3
"""Share of a window that its neighbours overlap: 19 voxels of 64, enough for mri-sr-default's receptive field."""

class PlaneRefiner(nn.Module):
    """Residual 2D CNN: ``layers`` 3x3 convolutions of ``channels`` channels with ReLU, edge-replicating padding.

    Maps ``(N, 1, A, B)`` planes to planes of the same shape: the input plus the predicted correction.
    """

    def __init__(self, layers: int = 8, channels: int = 64) -> None:
        super().__init__()
        layers = _positive_int("layers", layers)
        channels = _positive_int("channels", channels)
        if layers < 2:
            raise ValueError(f"layers must be at least 2, got {layers}.")
        body: list[nn.Module] = [nn.Conv2d(1, channels, 3, padding=1, padding_mode="replicate"), nn.ReLU()]
        for _ in range(layers - 2):
            body += [nn.Conv2d(channels, channels, 3, padding=1, padding_mode="replicate"), nn.ReLU()]
        body.append(nn.Conv2d(channels, 1, 3, padding=1, padding_mode="replicate"))
        self.body = nn.Sequential(*body)
        self.layers = layers
        self.channels = channels

    def forward(self, planes: torch.Tensor) -> torch.Tensor:
        return planes + self.body(planes)


class RefinedSuperResolution(nn.Module):
    """A super-resolution network followed by a `PlaneRefiner` on the (D, H) and (D, W) planes of its output.

    Maps ``(B, 1, D, H, W)`` to ``(B, 1, scale * D, H, W)`` like ``base``, whose ``output_scale`` it keeps.
    """

    def __init__(self, base: nn.Module, refiner: PlaneRefiner) -> None:
        super().__init__()
        self.base = base
        self.refiner = refiner
        self.output_scale = tuple(getattr(base, "output_scale", (1, 1, 1)))
        base_field = getattr(base, "receptive_field", None)
        if isinstance(base_field, int):
            # In output voxels along H and W, the refiner widens the base's field by one voxel per layer each side.
            self.receptive_field = base_field + 2 * refiner.layers

    def refine(self, fine: torch.Tensor) -> torch.Tensor:
        """Apply the refiner to the (D, H) planes and the (D, W) planes of ``fine`` and average the results."""
        b, c, d, h, w = fine.shape
        along_w = fine.permute(0, 4, 1, 2, 3).reshape(b * w, c, d, h)
        along_h = fine.permute(0, 3, 1, 2, 4).reshape(b * h, c, d, w)
        by_w = self.refiner(along_w).reshape(b, w, c, d, h).permute(0, 2, 3, 4, 1)
        by_h = self.refiner(along_h).reshape(b, h, c, d, w).permute(0, 2, 3, 1, 4)
        return (by_w + by_h) / 2.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.refine(self.base(x))


def training_precision(precision: str, device: torch.device) -> str:
    """Return ``"fp32"`` or ``"bf16"`` for the refiner's training on ``device``, resolving ``"auto"``.

    ``"auto"`` picks bf16 on CUDA devices that support it and on CPUs with AMX tiles. On a 2-core CPU with AMX, a
    refiner step with bf16 autocast and channels-last planes ran 3 times as fast as in float32. It picks fp32
    everywhere else.

    Raises:
        ValueError: if ``precision`` is not ``"auto"``, ``"fp32"`` or ``"bf16"``.
    """
    if precision not in ("auto", "fp32", "bf16"):
        raise ValueError(f"precision must be 'auto', 'fp32' or 'bf16', got {precision!r}.")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    # NOTE: torch has no public test for AMX tiles. Without this private helper, auto falls back to fp32.
    has_amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    if device.type == "cpu" and has_amx is not None and has_amx():
        return "bf16"
    return "fp32"


def _super_resolve(network: nn.Module, dhw: torch.Tensor, scale: int, device: torch.device) -> torch.Tensor:
    """Run ``network`` over a ``(D, H, W)`` tensor in network units; return ``(scale * D, H, W)`` on the host."""
    with torch.no_grad():
        output = sliding_window_inference(dhw[None, None], network, WINDOW, overlap=OVERLAP, device=device,
                                          output_scale=(scale, 1, 1))
    return output[0, 0].float()


def phase_pairs(network: nn.Module, prior: np.ndarray, spacing_mm: tuple[float, float, float], *, scale: int,
                device: torch.device) -> list[tuple[int, torch.Tensor, torch.Tensor]]:
    """Make the refiner's training pairs from ``prior``, the network's ``(i, j, k)`` output in network units.

    For each in-plane axis and each phase (the thick slices start 0 to ``scale - 1`` voxels into the axis, so
    each phase groups other voxels into thick slices), the axis is degraded like k (`in_plane_pair`) and
    super-resolved again by ``network``. Returns ``(phase, network output, target)`` triples, each volume with
    the degraded axis first. An axis too short for every phase gives fewer.
    """
    pairs = []
    for axis in IN_PLANE_AXES:
        for phase in range(max(1, min(scale, prior.shape[axis] - scale + 1))):
            shifted = prior[phase:] if axis == 0 else prior[:, phase:]
            pair = in_plane_pair(shifted, spacing_mm, axis, scale=scale, warn_profile_scaling=phase == 0)
            pairs.append((phase, _super_resolve(network, pair.coarse, scale, device), pair.fine))
    return pairs


class _PlaneSampler:
    """Draw ``(input, target)`` batches of ``(B, 1, crop, crop)`` planes from (network output, scan) volumes.

    Each volume pair is ``(A, B, C)`` with the degraded axis on A; a plane is a random index along C, cropped at a
    random position and flipped at random along both axes. A plane whose target is mostly background is redrawn up
    to ``FOREGROUND_MAX_DRAWS`` times.
    """

    def __init__(self, pairs: list[tuple[torch.Tensor, torch.Tensor]], crop: int) -> None:
        self.pairs = pairs
        # One crop size for every pair, so that planes from pairs of different shapes stack into one batch.
        self.rows = min(crop, *(int(inputs.shape[0]) for inputs, _ in pairs))
        self.cols = min(crop, *(int(inputs.shape[1]) for inputs, _ in pairs))

    def _draw(self, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        def randint(high: int) -> int:
            return int(torch.randint(high, (), generator=generator).item())

        inputs, targets = self.pairs[randint(len(self.pairs))]
        rows, cols = self.rows, self.cols
        r0, c0, index = randint(inputs.shape[0] - rows + 1), randint(inputs.shape[1] - cols + 1), randint(
            inputs.shape[2])
        return inputs[r0:r0 + rows, c0:c0 + cols, index], targets[r0:r0 + rows, c0:c0 + cols, index]

    def __call__(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        inputs, targets = [], []
        for _ in range(batch_size):
            for _ in range(FOREGROUND_MAX_DRAWS):
                plane_in, plane_target = self._draw(generator)
                if (plane_target > FOREGROUND_LEVEL).float().mean().item() >= FOREGROUND_MIN_FRACTION:
                    break
            for dim in (0, 1):
                if torch.rand((), generator=generator).item() < 0.5:
                    plane_in, plane_target = plane_in.flip(dim), plane_target.flip(dim)
            inputs.append(plane_in)
            targets.append(plane_target)
        return torch.stack(inputs)[:, None], torch.stack(targets)[:, None]


def refine_super_resolution(
    network: torch.nn.Module,
    volume: Volume,
    *,
    task_intensity: IntensityMapping,
    slice_axis_scale: int = 4,
    minutes: float = 10.0,
    seed: int = 0,
    layers: int = 8,
    channels: int = 64,
    crop: int = 32,
    batch_size: int = 16,
    learning_rate: float = 1e-3,
    max_steps: int | None = None,
    device: str | torch.device = "cpu",
    precision: str = "auto",
) -> tuple[RefinedSuperResolution, dict[str, Any]]:
    """Learn a `PlaneRefiner` for ``network`` from the thick-slice ``volume`` itself (see the module docstring).

    The budget ``minutes`` covers everything: the 3D network's passes and the refiner's training, which
    stops when the budget or ``max_steps`` is reached (after at least one step). The refiner trains with L1 loss
    and Adam on random crops of ``crop`` x ``crop`` pixels, from every phase of the in-plane thick slices (see
    ``in_plane_pair``), so the 3D network makes ``1 + 2 * slice_axis_scale`` passes in all.

    Args:
        network: the super-resolution network, ``(B, 1, D, H, W)`` to ``(B, 1, slice_axis_scale * D, H, W)``;
            it is copied, never modified.
        volume: the thick-slice scan, slices along k, in its own units.
        task_intensity: the task's intensity mapping; ``for_volume`` sets the scale from this scan.
        slice_axis_scale: output voxels per input voxel along k.
        minutes: wall-clock budget of the whole adaptation.
        seed: seeds the refiner's initial weights, the crops and the flips.
        layers, channels: size of the refiner.
        crop, batch_size, learning_rate: training settings of the refiner.
        max_steps: stop after this many steps even within the budget; ``None`` for no limit.
        device: where to run. Runs are reproducible for a seed on the CPU only when they stop by ``max_steps``.
        precision: arithmetic of the refiner's training steps: ``"fp32"``, ``"bf16"`` (autocast, weights stay
            float32), or ``"auto"`` for bf16 where the hardware has fast bf16 matrix units (see
            `training_precision`) and fp32 elsewhere. It does not change the precision of restoration.

    Returns:
        ``(refined, record)``: the network followed by the trained refiner, in eval mode, and a JSON-compatible
        record of the run.

    Raises:
        TypeError: if ``network`` or ``volume`` has the wrong type.
        ValueError: on an invalid argument, or a network whose output scale is not ``(slice_axis_scale, 1, 1)``.
    """
    start = time.monotonic()
    _check_common(network, volume, minutes, seed, max_steps, 0.0)
    scale = _check_sr_arguments(network, task_intensity, slice_axis_scale)
    crop = _positive_int("crop", crop)
    batch_size = _positive_int("batch_size", batch_size)
    learning_rate = _positive_number("learning_rate", learning_rate)
    device = torch.device(device)
    precision = training_precision(precision, device)
    base = copy.deepcopy(network).to(device).eval().requires_grad_(False)

    intensity = task_intensity.for_volume(volume.array)
    inputs = intensity.forward(volume_to_tensor(volume.array.astype(np.float32)))[0, 0]
    prior = tensor_to_volume_array(_super_resolve(base, inputs, scale, device)[None, None])
    volume_pairs = [(inputs, targets) for _, inputs, targets in
                    phase_pairs(base, prior, volume.spacing_mm, scale=scale, device=device)]
    prepare_minutes = (time.monotonic() - start) / 60.0
    logger.info("Refiner pairs ready after %.2f minutes: %s", prepare_minutes,
                [tuple(fine.shape) for _, fine in volume_pairs])

    generator = torch.Generator().manual_seed(int(seed))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        refiner = PlaneRefiner(layers, channels).to(device, memory_format=torch.channels_last).train()
    sampler = _PlaneSampler(volume_pairs, crop)
    optimizer = torch.optim.Adam(refiner.parameters(), lr=learning_rate)
    budget_s = float(minutes) * 60.0
    losses: list[float] = []
    stopped_by = "time"
    while True:
        if max_steps is not None and len(losses) >= max_steps:
            stopped_by = "max_steps"
            break
        if losses and time.monotonic() - start >= budget_s:
            break
        planes, targets = sampler(batch_size, generator)
        planes = planes.to(device, memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            outputs = refiner(planes)
        loss = torch.nn.functional.l1_loss(outputs.float(), targets.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    elapsed_minutes = (time.monotonic() - start) / 60.0
    logger.info("Refiner trained %d steps; %.2f minutes in all (stopped by %s); L1 loss %.4g -> %.4g.",
                len(losses), elapsed_minutes, stopped_by, losses[0], losses[-1])
    refiner = refiner.to(memory_format=torch.contiguous_format).eval().requires_grad_(False)
    refined = RefinedSuperResolution(base, refiner).eval()
    record = {
        "method": "2D refiner learned from the scan's in-plane axes (SMORE) on the network's output",
        "steps": len(losses),
        "minutes": elapsed_minutes,
        "prepare_minutes": prepare_minutes,
        "budget_minutes": float(minutes),
        "max_steps": max_steps,
        "stopped_by": stopped_by,
        "seed": int(seed),
        "refiner": {"layers": refiner.layers, "channels": refiner.channels},
        "crop": crop,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "optimizer": "adam",
        "precision": precision,
        "in_plane_pairs": len(volume_pairs),
        "loss": "l1",
        "loss_curve": loss_curve_summary(losses),
        "slice_axis_scale": scale,
        "intensity": intensity.to_dict(),
        "device": str(device),
    }
    return refined, record
