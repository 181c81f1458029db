"""Self-supervised fine-tuning of a network on the one scan it is about to restore.

Both functions return an adapted copy of the network and a JSON-compatible record, and leave the network
passed in untouched. Adaptation changes weights only: the volume's geometry and intensities are not modified,
and the caller restores the scan with the adapted copy as with any other network.
"""

from __future__ import annotations

import copy
import logging
import math
import numbers
import time
from typing import Any, Callable

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from medgan.adaptation.pairs import (
    IN_PLANE_AXES,
    SLICE_AXIS,
    CTNoisePatchSampler,
    InPlanePatchSampler,
    in_plane_pair,
)
from medgan.io.volume import Volume
from medgan.tasks import IntensityMapping, get_task
from medgan.transforms import LowDoseCT

logger = logging.getLogger(__name__)

LOSS_CURVE_POINTS = 10
"""The record summarises the loss curve as the mean loss over this many equal runs of steps."""

BatchSampler = Callable[[int, torch.Generator], tuple[torch.Tensor, torch.Tensor]]


def _positive_number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}.")
    return float(value)


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return int(value)


def _check_common(network: object, volume: object, minutes: object, seed: object, max_steps: object,
                  ema_decay: object) -> None:
    if not isinstance(network, torch.nn.Module):
        raise TypeError(f"network must be a torch.nn.Module, got {type(network).__name__}.")
    if not isinstance(volume, Volume):
        raise TypeError(f"volume must be a medgan Volume, got {type(volume).__name__}.")
    if not np.all(np.isfinite(volume.array)):
        raise ValueError("The volume contains NaN or infinite voxels. Replace them with finite values before adapting.")
    _positive_number("minutes", minutes)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}.")
    if max_steps is not None:
        _positive_int("max_steps", max_steps)
    if isinstance(ema_decay, bool) or not isinstance(ema_decay, numbers.Real) or not 0 <= ema_decay < 1:
        raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay!r}.")


def _check_sr_arguments(network: torch.nn.Module, task_intensity: object, slice_axis_scale: object) -> int:
    """Check the intensity mapping and the network's output scale of a super-resolution adaptation; return the scale."""
    if not isinstance(task_intensity, IntensityMapping):
        raise TypeError(f"task_intensity must be an IntensityMapping, got {type(task_intensity).__name__}; "
                        "pass medgan.tasks.get_task('mri-sr').intensity.")
    scale = _positive_int("slice_axis_scale", slice_axis_scale)
    output_scale = getattr(network, "output_scale", None)
    if output_scale is not None and tuple(output_scale) != (scale, 1, 1):
        raise ValueError(f"The network's output_scale is {tuple(output_scale)} in (D, H, W), but slice_axis_scale "
                         f"{scale} needs ({scale}, 1, 1).")
    return scale


def loss_curve_summary(losses: list[float], points: int = LOSS_CURVE_POINTS) -> dict[str, Any]:
    """Summarise per-step losses: first, last, minimum and the means of up to ``points`` equal runs of steps."""
    if not losses:
        return {"first": None, "last": None, "min": None, "means": []}
    runs = np.array_split(np.asarray(losses, dtype=np.float64), min(points, len(losses)))
    return {
        "first": float(losses[0]),
        "last": float(losses[-1]),
        "min": float(min(losses)),
        "means": [float(run.mean()) for run in runs],
    }


def _fine_tune(
    network: torch.nn.Module,
    sample_batch: BatchSampler,
    *,
    minutes: float,
    max_steps: int | None,
    batch_size: int,
    learning_rate: float,
    ema_decay: float,
    seed: int,
    device: torch.device,
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Fine-tune a copy of ``network`` with L1 loss and Adam until the budget or ``max_steps`` is reached.

    The budget is checked before each step, so the first step always runs and the last may end past the
    budget by one step's time. Patches come from a generator seeded with ``seed``. Torch's global random state
    (dropout, for example) is seeded with it inside a forked state, so the caller's state is kept. On the CPU a
    run that stops by ``max_steps`` gives the same weights every time.
    """
    adapted = copy.deepcopy(network).to(device).train().requires_grad_(True)
    # The first update copies the weights, and later ones fold them in with weight 1 - ema_decay.
    ema = AveragedModel(adapted, multi_avg_fn=get_ema_multi_avg_fn(ema_decay), use_buffers=True)
    optimizer = torch.optim.Adam(adapted.parameters(), lr=learning_rate)
    generator = torch.Generator().manual_seed(seed)
    budget_s = minutes * 60.0
    losses: list[float] = []
    stopped_by = "time"
    start = time.monotonic()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        while True:
            if max_steps is not None and len(losses) >= max_steps:
                stopped_by = "max_steps"
                break
            if losses and time.monotonic() - start >= budget_s:
                break
            inputs, targets = sample_batch(batch_size, generator)
            inputs, targets = inputs.to(device), targets.to(device)
            outputs = adapted(inputs)
            if outputs.shape != targets.shape:
                raise ValueError(f"The network turned a {tuple(inputs.shape)} patch into {tuple(outputs.shape)}, "
                                 f"but the adaptation target is {tuple(targets.shape)}. Check that the network "
                                 "matches the task (its output scale along D).")
            loss = torch.nn.functional.l1_loss(outputs, targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            ema.update_parameters(adapted)
            losses.append(float(loss.detach()))
    elapsed_minutes = (time.monotonic() - start) / 60.0
    logger.info("Adaptation ran %d steps in %.2f minutes (stopped by %s); L1 loss %.4g -> %.4g.", len(losses),
                elapsed_minutes, stopped_by, losses[0], losses[-1])
    record = {
        "steps": len(losses),
        "minutes": elapsed_minutes,
        "budget_minutes": minutes,
        "max_steps": max_steps,
        "stopped_by": stopped_by,
        "seed": seed,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "optimizer": "adam",
        "loss": "l1",
        "ema_decay": ema_decay,
        "loss_curve": loss_curve_summary(losses),
        "device": str(device),
    }
    return ema.module.eval().requires_grad_(False), record


def adapt_super_resolution(
    network: torch.nn.Module,
    volume: Volume,
    *,
    task_intensity: IntensityMapping,
    slice_axis_scale: int = 4,
    minutes: float = 5.0,
    seed: int = 0,
    patch_size: tuple[int, int, int] = (8, 32, 32),
    batch_size: int = 4,
    learning_rate: float = 1e-4,
    max_steps: int | None = None,
    ema_decay: float = 0.99,
    slice_thickness_mm: float | None = None,
    slice_profile: str = "boxcar",
    profile_fwhm_mm: float | None = None,
    device: str | torch.device = "cpu",
    prior: np.ndarray | None = None,
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Fine-tune a copy of a super-resolution network on in-plane pairs made from the thick-slice scan itself.

    The network maps ``(B, 1, D, H, W)`` to ``(B, 1, slice_axis_scale * D, H, W)``, with the volume's slice
    axis k on D at inference. Each in-plane axis (i and j) is degraded like k (`in_plane_pair`) and placed on
    D, with the other in-plane axis on H and k on W. The copy learns to undo that degradation with L1 loss and
    Adam, on random patches with random flips, for ``minutes`` of wall-clock time or ``max_steps`` steps.

    Args:
        network: the super-resolution network; it is copied, never modified.
        volume: the thick-slice scan, slices along k, in its own units.
        task_intensity: the task's intensity mapping; ``for_volume`` sets the scale from this scan.
        slice_axis_scale: output voxels per input voxel along k, the network's factor along D.
        minutes: wall-clock budget.
        seed: seeds patch positions, flips and torch's random state during the run.
        patch_size: coarse input patch ``(D, H, W)``; the target is ``slice_axis_scale`` times longer along D.
            Sizes are clipped to the scan.
        batch_size: patches per step.
        learning_rate: Adam's step size.
        max_steps: stop after this many steps even within the budget; ``None`` for no limit.
        ema_decay: the returned weights are an exponential moving average of the steps' weights with this
            decay; 0 returns the last weights.
        slice_thickness_mm: thickness of the scan's slices; default: the slice spacing (contiguous slices).
        slice_profile: ``"boxcar"`` or ``"gaussian"``, the scan's slice profile.
        profile_fwhm_mm: FWHM of the Gaussian slice profile; default: the slice thickness.
        device: where to fine-tune. Runs are reproducible for a seed on the CPU only.
        prior: an estimate of the scan on the fine grid, ``(i, j, slice_axis_scale * k)`` in the scan's units,
            usually the network's own output. The in-plane pairs are then cut from it instead of the scan, so
            their W axis (k) has the fine spacing that the network's H and W axes have at inference; from the
            thick scan, W would be ``slice_axis_scale`` times coarser. Their D axis still contains the scan's
            own voxels as targets.

    Returns:
        ``(adapted, record)``: the adapted copy in eval mode, and a JSON-compatible record of the run (steps,
        minutes, loss curve summary, patch size, seed and the pair parameters).

    Raises:
        TypeError: if ``network`` or ``volume`` has the wrong type.
        ValueError: on an invalid argument, an image that cannot set the intensity scale, or a network whose
            output does not have the target's shape.
    """
    _check_common(network, volume, minutes, seed, max_steps, ema_decay)
    scale = _check_sr_arguments(network, task_intensity, slice_axis_scale)
    batch_size = _positive_int("batch_size", batch_size)
    learning_rate = _positive_number("learning_rate", learning_rate)

    intensity = task_intensity.for_volume(volume.array)
    source = volume.array
    if prior is not None:
        expected = (*volume.shape[:2], scale * volume.shape[2])
        if not isinstance(prior, np.ndarray) or prior.shape != expected:
            raise ValueError(f"prior must be an array of shape {expected} (the scan's fine grid), got "
                             f"{getattr(prior, 'shape', type(prior).__name__)}.")
        source = prior
    array = intensity.forward(source.astype(np.float32))
    pairs = [
        in_plane_pair(array, volume.spacing_mm, axis, scale=scale, slice_thickness_mm=slice_thickness_mm,
                      profile=slice_profile, profile_fwhm_mm=profile_fwhm_mm)
        for axis in IN_PLANE_AXES
    ]
    sampler = InPlanePatchSampler(pairs, scale, patch_size)
    logger.info("Adapting to %s: in-plane pairs %s, patch %s, budget %.2f minutes.", volume,
                [tuple(pair.coarse.shape) for pair in pairs], sampler.patch_size, minutes)
    adapted, record = _fine_tune(network, sampler, minutes=float(minutes), max_steps=max_steps,
                                 batch_size=batch_size, learning_rate=learning_rate, ema_decay=float(ema_decay),
                                 seed=int(seed), device=torch.device(device))
    record = {
        "method": "in-plane self-supervision (SMORE)",
        "pairs_from": "network output on the fine grid" if prior is not None else "thick-slice scan",
        **record,
        "patch_size": list(sampler.patch_size),
        "target_patch_size": [scale * sampler.patch_size[0], *sampler.patch_size[1:]],
        "slice_axis": SLICE_AXIS,
        "slice_axis_scale": scale,
        "slice_profile": slice_profile,
        "slice_thickness_mm": float(slice_thickness_mm if slice_thickness_mm is not None
                                    else volume.spacing_mm[SLICE_AXIS]),
        "intensity": intensity.to_dict(),
        "pairs": [pair.describe() for pair in pairs],
    }
    return adapted, record


def adapt_denoiser(
    network: torch.nn.Module,
    volume: Volume,
    *,
    minutes: float = 5.0,
    dose_fraction: float = 0.25,
    seed: int = 0,
    task_intensity: IntensityMapping | None = None,
    patch_size: tuple[int, int, int] = (8, 64, 64),
    batch_size: int = 2,
    learning_rate: float = 1e-5,
    max_steps: int | None = None,
    ema_decay: float = 0.99,
    simulator_kwargs: dict[str, Any] | None = None,
    device: str | torch.device = "cpu",
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Fine-tune a copy of a CT denoiser to remove extra simulated noise from the scan's own content.

    Each patch pair is (scan + noise, scan), where the noise is projection-domain noise that lowers the scan's
    dose to ``dose_fraction`` of its own (`LowDoseCT` with ``assume_noiseless_input=False``). The target
    keeps the scan's own noise, so this teaches the scan's anatomy and noise texture rather than a cleaner
    image. A small learning rate and a short budget keep the copy close to the shipped model.

    Args:
        network: the denoiser, ``(B, 1, D, H, W)`` to the same shape; it is copied, never modified.
        volume: the CT scan in HU, axial slices along k.
        minutes: wall-clock budget.
        dose_fraction: simulated dose relative to the scan's, in ``(0, 1)``.
        seed: seeds patch positions, noise, flips and torch's random state during the run.
        task_intensity: HU to network units; default: the ``ldct`` task's mapping.
        patch_size: ``(D, H, W)`` patch, D along k; sizes are clipped to the scan.
        batch_size: patches per step.
        learning_rate: Adam's step size.
        max_steps: stop after this many steps even within the budget; ``None`` for no limit.
        ema_decay: decay of the exponential moving average that is returned; 0 returns the last weights.
        simulator_kwargs: other `LowDoseCT` arguments (``photons_per_ray``, ``n_views``, ``geometry`` and so
            on); ``assume_noiseless_input`` is always ``False``.
        device: where to fine-tune. Runs are reproducible for a seed on the CPU only.

    Returns:
        ``(adapted, record)`` as for `adapt_super_resolution`, with the simulator's parameters in the record.

    Raises:
        TypeError: if ``network`` or ``volume`` has the wrong type.
        ValueError: on an invalid argument, a volume whose modality is not CT, or a network whose output shape
            differs from its input's.
    """
    _check_common(network, volume, minutes, seed, max_steps, ema_decay)
    if volume.modality not in ("CT", ""):
        raise ValueError(f"adapt_denoiser needs a CT volume in HU, got modality {volume.modality!r}.")
    if isinstance(dose_fraction, bool) or not isinstance(dose_fraction, numbers.Real) or not 0 < dose_fraction < 1:
        raise ValueError(f"dose_fraction must be in (0, 1) to add noise, got {dose_fraction!r}.")
    batch_size = _positive_int("batch_size", batch_size)
    learning_rate = _positive_number("learning_rate", learning_rate)
    kwargs = dict(simulator_kwargs or {})
    if "assume_noiseless_input" in kwargs or "dose_fraction" in kwargs:
        raise ValueError("simulator_kwargs must not set assume_noiseless_input or dose_fraction; pass "
                         "dose_fraction as its own argument.")
    simulator = LowDoseCT(float(dose_fraction), assume_noiseless_input=False, **kwargs)
    intensity = (task_intensity if task_intensity is not None else get_task("ldct").intensity).for_volume(
        volume.array)
    sampler = CTNoisePatchSampler.from_volume_array(volume.array, volume.spacing_mm, intensity=intensity,
                                                    simulator=simulator, patch_size=patch_size)
    logger.info("Adapting the denoiser to %s: dose fraction %g, patch %s, budget %.2f minutes.", volume,
                dose_fraction, sampler.patch_size, minutes)
    adapted, record = _fine_tune(network, sampler, minutes=float(minutes), max_steps=max_steps,
                                 batch_size=batch_size, learning_rate=learning_rate, ema_decay=float(ema_decay),
                                 seed=int(seed), device=torch.device(device))
    record = {
        "method": "extra projection-domain noise on the scan",
        **record,
        "patch_size": list(sampler.patch_size),
        "simulator": simulator.params(),
        "intensity": intensity.to_dict(),
    }
    return adapted, record
