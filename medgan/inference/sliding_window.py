"""Sliding-window inference over whole volumes, with Gaussian blending and a float64 stitching buffer."""

from __future__ import annotations

import itertools
import logging
from typing import Callable, Sequence

import numpy as np
import torch

logger = logging.getLogger(__name__)


def window_starts(size: int, window: int, overlap: float) -> list[int]:
    """Return window start indices that cover ``[0, size)`` with windows of ``window`` voxels.

    Consecutive windows overlap by at least ``overlap * window`` voxels, and the last window ends exactly at
    ``size``, so every voxel is covered at least once.
    """
    if window >= size:
        return [0]
    step = max(1, int(round(window * (1.0 - overlap))))
    starts = list(range(0, size - window + 1, step))
    if starts[-1] != size - window:
        starts.append(size - window)
    return starts


def gaussian_profile(length: int, sigma_fraction: float = 0.125, flat_start: bool = False,
                     flat_end: bool = False) -> torch.Tensor:
    """Return a 1D Gaussian blending profile peaking at 1 in the window's centre, with a floor of 1e-3.

    ``flat_start`` / ``flat_end`` hold the profile at 1 on the side where the window touches the volume's border.
    There the window edge is the volume edge, which every window pads the same way, so it is no reason to trust
    the window less. The floor keeps every weight positive, so the normalisation never divides by zero.
    """
    positions = torch.arange(length, dtype=torch.float64) - (length - 1) / 2.0
    sigma = max(sigma_fraction * length, 0.5)
    profile = torch.exp(-0.5 * (positions / sigma) ** 2)
    profile = (profile / profile.max()).clamp_min(1e-3)
    if flat_start:
        profile[positions <= 0] = 1.0
    if flat_end:
        profile[positions >= 0] = 1.0
    return profile


def blending_weights(corner: Sequence[int], window: Sequence[int], spatial: Sequence[int],
                     blend: str) -> torch.Tensor:
    """Return the separable weights of the window starting at ``corner``.

    Gaussian weights are the product of per-axis profiles, so a voxel near the border along one axis still
    prefers, along the other axes, the window in which it lies far from the edges.
    """
    if blend == "constant":
        return torch.ones(tuple(window), dtype=torch.float64)
    weights = torch.ones((), dtype=torch.float64)
    for start, length, size in zip(corner, window, spatial):
        profile = gaussian_profile(length, flat_start=start == 0, flat_end=start + length == size)
        weights = weights.unsqueeze(-1) * profile
    return weights


def sliding_window_inference(
    volume: torch.Tensor,
    network: Callable[[torch.Tensor], torch.Tensor],
    roi_size: Sequence[int],
    *,
    overlap: float = 0.25,
    batch_size: int = 1,
    blend: str = "gaussian",
    device: torch.device | str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Run ``network`` over a ``(1, C, D, H, W)`` volume window by window and blend the results.

    Windows are ``roi_size`` voxels, shrunk to the volume's size along any shorter axis: the networks medgan
    ships are fully convolutional with replicated-edge padding, so a thin input needs no padding at all.
    Overlapping outputs are averaged with Gaussian (or constant) weights that sum to one at every voxel. The
    stitching buffer is float64 on the host, so host memory, not accelerator memory, grows with the volume, and
    an identity network returns its input bit for bit.

    Args:
        volume: ``(1, C, D, H, W)`` input in network units, on any device.
        network: callable mapping ``(B, C, d, h, w)`` to a tensor of the same shape.
        roi_size: window size ``(D, H, W)`` in voxels.
        overlap: fraction of a window shared with its neighbour along each axis, in ``[0, 1)``.
        batch_size: windows per network call.
        blend: ``"gaussian"`` or ``"constant"``.
        device: where the network runs; the volume's device when ``None``.
        progress: called as ``progress(done_windows, total_windows)`` after each batch.

    Returns:
        ``(1, C, D, H, W)`` float32 tensor on the host.

    Raises:
        ValueError: for a tensor that is not 5D with a batch of one, a bad ``roi_size``, ``overlap`` or ``blend``,
            or a network output whose shape differs from its input's.
    """
    if volume.ndim != 5 or volume.shape[0] != 1:
        raise ValueError(f"volume must have shape (1, C, D, H, W), got {tuple(volume.shape)}.")
    if len(roi_size) != 3 or any(int(n) < 1 for n in roi_size):
        raise ValueError(f"roi_size must be three positive integers (D, H, W), got {tuple(roi_size)}.")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}.")
    if blend not in ("gaussian", "constant"):
        raise ValueError(f"blend must be 'gaussian' or 'constant', got {blend!r}.")

    run_device = torch.device(device) if device is not None else volume.device
    spatial = tuple(int(n) for n in volume.shape[2:])
    window = tuple(min(int(r), s) for r, s in zip(roi_size, spatial))
    starts = [window_starts(s, w, overlap) for s, w in zip(spatial, window)]
    corners = list(itertools.product(*starts))

    channels = volume.shape[1]
    output = torch.zeros((channels, *spatial), dtype=torch.float64)
    weight_sum = torch.zeros(spatial, dtype=torch.float64)
    logger.debug("Sliding window: volume %s, window %s, %d windows", spatial, window, len(corners))

    for first in range(0, len(corners), batch_size):
        batch_corners = corners[first:first + batch_size]
        patches = torch.cat(
            [volume[:, :, d:d + window[0], h:h + window[1], w:w + window[2]] for d, h, w in batch_corners]
        ).to(run_device)
        with torch.no_grad():
            predictions = network(patches)
        if predictions.shape != patches.shape:
            raise ValueError(
                f"The network returned shape {tuple(predictions.shape)} for windows of shape "
                f"{tuple(patches.shape)}; this engine needs outputs of the input's shape."
            )
        predictions = predictions.detach().to("cpu", torch.float64)
        for prediction, (d, h, w) in zip(predictions, batch_corners):
            region = (slice(d, d + window[0]), slice(h, h + window[1]), slice(w, w + window[2]))
            weights = blending_weights((d, h, w), window, spatial, blend)
            output[(slice(None), *region)] += prediction * weights
            weight_sum[region] += weights
        if progress is not None:
            progress(min(first + batch_size, len(corners)), len(corners))

    return (output / weight_sum).to(torch.float32).unsqueeze(0)
