"""Sliding-window inference over whole volumes, with Gaussian blending and a float64 stitching buffer.

A network that maps each ``(B, C, d, h, w)`` window to ``(B, C, d * sd, h * sh, w * sw)`` runs window by window
over a ``(1, C, D, H, W)`` volume, and the overlapping outputs are averaged into one
``(1, C, D * sd, H * sh, W * sw)`` result. ``(sd, sh, sw)`` is the ``output_scale``: ``(1, 1, 1)`` for
restoration on the input's grid, larger for super-resolution.
"""

from __future__ import annotations

import itertools
import logging
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from medgan.inference.performance import autocast_context, check_precision

logger = logging.getLogger(__name__)

AXIS_NAMES = ("D", "H", "W")
# Slices of the stitching buffer divided and converted to float32 per step, which bounds the temporaries.
_NORMALISE_SLICES = 8


def window_starts(size: int, window: int, overlap: float) -> list[int]:
    """Return window start indices that cover ``[0, size)`` with windows of ``window`` voxels.

    Consecutive windows overlap by at least ``overlap * window`` voxels because the step is rounded down, and
    the last window ends exactly at ``size``, so every voxel is covered at least once. A window at least as
    large as ``size`` gives the single start 0. MONAI's ``sliding_window_inference`` places its windows the
    same way (step ``int(window * (1 - overlap))``, last window aligned to the end).
    """
    if window >= size:
        return [0]
    # The small tolerance keeps an exact product such as 64 * 0.75 = 48 from rounding down to 47.
    step = max(1, math.floor(window * (1.0 - overlap) + 1e-9))
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


@dataclass(frozen=True)
class AxisTiling:
    """Window placement along one tensor axis.

    Args:
        size: voxels of the input along the axis.
        requested: window length that the caller asked for, in input voxels.
        window: window length used, in input voxels: ``requested`` shrunk to ``size`` when the axis is shorter.
        starts: window starts in input voxels.
        scale: output voxels per input voxel.
    """

    size: int
    requested: int
    window: int
    starts: tuple[int, ...]
    scale: int

    @property
    def shrunk(self) -> bool:
        return self.window < self.requested

    def source(self, start: int) -> slice:
        """Return the input slice of the window at ``start``."""
        return slice(start, start + self.window)

    def target(self, start: int) -> slice:
        """Return the output slice that the window at ``start`` covers."""
        return slice(start * self.scale, (start + self.window) * self.scale)

    def profile(self, start: int, blend: str) -> torch.Tensor:
        """Return the float64 blending profile of the window at ``start``, at output resolution."""
        length = self.window * self.scale
        if blend == "constant":
            return torch.ones(length, dtype=torch.float64)
        return gaussian_profile(length, flat_start=start == 0, flat_end=start + self.window == self.size)

    def weight_sum(self, blend: str) -> torch.Tensor:
        """Return the sum of every window's profile at each output voxel along the axis (float64)."""
        total = torch.zeros(self.size * self.scale, dtype=torch.float64)
        for start in self.starts:
            total[self.target(start)] += self.profile(start, blend)
        return total

    def min_overlap(self) -> int | None:
        """Return the smallest overlap in voxels between neighbouring windows, or None for a single window."""
        if len(self.starts) < 2:
            return None
        return min(self.window - (later - earlier) for earlier, later in zip(self.starts, self.starts[1:]))


def plan_tiling(spatial: Sequence[int], roi_size: Sequence[int], overlap: float,
                output_scale: Sequence[int]) -> tuple[AxisTiling, AxisTiling, AxisTiling]:
    """Place windows of ``roi_size`` along each axis of a volume of ``spatial`` voxels.

    Along an axis shorter than its window, the window shrinks to the axis: one window covers it, unpadded.
    """
    tilings = []
    for size, requested, scale in zip(spatial, roi_size, output_scale):
        window = min(requested, size)
        tilings.append(AxisTiling(size=size, requested=requested, window=window,
                                  starts=tuple(window_starts(size, window, overlap)), scale=scale))
    return tuple(tilings)  # type: ignore[return-value]


def context_window(patch_size: Sequence[int], receptive_field: int | None, overlap: float = 0.25) -> tuple[int, ...]:
    """Return a window at least ``patch_size`` whose ``overlap`` share covers the network's receptive field.

    Neighbouring windows then share ``receptive_field - 1`` voxels, so every voxel lies in some window together
    with its whole receptive field and the result does not depend on where window edges fall.
    """
    field = int(receptive_field or 1)
    context = math.ceil((field - 1) / overlap) if overlap > 0 else field
    return tuple(max(int(size), field, context) for size in patch_size)


def sliding_window_inference(
    volume: torch.Tensor,
    network: Callable[[torch.Tensor], torch.Tensor],
    roi_size: Sequence[int],
    *,
    overlap: float = 0.25,
    batch_size: int = 1,
    blend: str = "gaussian",
    device: torch.device | str | None = None,
    stitch_device: torch.device | str | None = None,
    output_scale: Sequence[int] = (1, 1, 1),
    precision: str = "fp32",
    channels_last: bool = False,
    full_batches: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Run ``network`` over a ``(1, C, D, H, W)`` volume window by window and blend the results.

    Windows have ``roi_size`` voxels, except along an axis shorter than the window: there the window shrinks to
    the axis, without padding, and an INFO log line names the axis. medgan's networks are fully convolutional
    and pad each convolution with replicated edge values, so a shrunk window gives exactly the output of one
    pass over the whole axis. Padding the input instead would differ, because replicating the input's edge is
    not the same as replicating each layer's edge. A network that needs a fixed input size must get a volume at
    least as large as ``roi_size``. Overlapping outputs are averaged with Gaussian (or constant) weights
    that sum to one at every output voxel. The Gaussian profile of each axis stays at 1 on the side where a
    window touches the volume's border.

    The stitching buffer lives on ``stitch_device``: float64 on the host, so an identity network returns its
    input bit for bit, and float32 on an accelerator. On the host the float32 result reuses the buffer's memory,
    so the engine's peak memory is the input plus 8 bytes per output voxel and channel, plus the windows. The
    result's storage therefore stays as large as the float64 buffer until the caller drops or copies it. Windows
    are processed in a fixed order, so repeated runs on the same device give identical results.

    A warning is logged when the windows cannot give every voxel its whole context: a window smaller than
    ``network.receptive_field`` (an ``int`` attribute, when the network has one), or an overlap smaller than
    the receptive field minus one voxel, along an axis with more than one window.

    Args:
        volume: ``(1, C, D, H, W)`` floating-point input in network units, on any device.
        network: callable mapping ``(B, C, d, h, w)`` to ``(B, C, d * sd, h * sh, w * sw)``.
        roi_size: window size ``(D, H, W)`` in input voxels, shrunk along any shorter axis of the volume.
        overlap: fraction of a window shared with its neighbour along each axis, in ``[0, 1)``.
        batch_size: windows per network call.
        blend: ``"gaussian"`` or ``"constant"``.
        device: where the network runs; the volume's device when ``None``.
        stitch_device: where the output is accumulated; the host when ``None``.
        output_scale: ``(sd, sh, sw)``, output voxels per input voxel along D, H and W, positive integers.
        precision: ``"fp32"``, or ``"bf16"`` / ``"fp16"`` to run the network under autocast.
        channels_last: allocate the windows in ``torch.channels_last_3d`` memory format (see
            `medgan.inference.performance.prefers_channels_last`).
        full_batches: always call the network with ``batch_size`` windows (the last batch repeats unused
            slots), which keeps a compiled network at one input shape.
        progress: called as ``progress(done_windows, total_windows)`` after each batch.

    Returns:
        ``(1, C, D * sd, H * sh, W * sw)`` float32 tensor on ``stitch_device``.

    Raises:
        ValueError: for a tensor that is not 5D with a batch of one or not floating point, a bad ``roi_size``,
            ``overlap``, ``batch_size``, ``blend``, ``output_scale`` or ``precision``, or a network output whose
            shape is not the window's shape times ``output_scale``.
    """
    scale = _check_arguments(volume, roi_size, overlap, batch_size, blend, output_scale, precision)
    run_device = torch.device(device) if device is not None else volume.device
    stitch = torch.device(stitch_device) if stitch_device is not None else torch.device("cpu")
    spatial = tuple(int(n) for n in volume.shape[2:])
    tilings = plan_tiling(spatial, tuple(int(n) for n in roi_size), overlap, scale)
    window = tuple(tiling.window for tiling in tilings)
    _log_shrunk_axes(tilings)
    _warn_small_context(tilings, getattr(network, "receptive_field", None))

    corners = list(itertools.product(*(tiling.starts for tiling in tilings)))
    channels = int(volume.shape[1])
    buffer_dtype = torch.float64 if stitch.type == "cpu" else torch.float32
    output = torch.zeros((channels, *(n * s for n, s in zip(spatial, scale))), dtype=buffer_dtype, device=stitch)
    logger.debug("Sliding window: volume %s, window %s, output scale %s, %d windows, batch %d", spatial, window,
                 scale, len(corners), batch_size)

    batches = _WindowBatches(volume, tilings, batch_size, run_device, stitch, channels_last)
    expected_window = tuple(w * s for w, s in zip(window, scale))
    profiles_hw: dict[tuple[int, int], torch.Tensor] = {}
    for first in range(0, len(corners), batch_size):
        batch_corners = corners[first:first + batch_size]
        patches = batches.fill(batch_corners)
        inputs = patches if full_batches else patches[:len(batch_corners)]
        with torch.no_grad(), autocast_context(precision, run_device):
            predictions = network(inputs)
        if tuple(predictions.shape) != (inputs.shape[0], channels, *expected_window):
            raise ValueError(
                f"The network returned shape {tuple(predictions.shape)} for windows of shape {tuple(inputs.shape)}; "
                f"with output_scale {scale} this engine needs {(inputs.shape[0], channels, *expected_window)}."
            )
        predictions = batches.to_stitch_device(predictions.detach()[:len(batch_corners)])
        for prediction, corner in zip(predictions, batch_corners):
            _accumulate(output, prediction, corner, tilings, blend, profiles_hw)
        if progress is not None:
            progress(min(first + batch_size, len(corners)), len(corners))

    return _normalise(output, tilings, blend).unsqueeze(0)


def _check_arguments(volume: torch.Tensor, roi_size: Sequence[int], overlap: float, batch_size: int, blend: str,
                     output_scale: Sequence[int], precision: str) -> tuple[int, int, int]:
    """Validate the engine's arguments and return ``output_scale`` as a tuple of ints."""
    if volume.ndim != 5 or volume.shape[0] != 1:
        raise ValueError(f"volume must have shape (1, C, D, H, W), got {tuple(volume.shape)}.")
    if not volume.is_floating_point():
        raise ValueError(f"volume must be a floating-point tensor, got dtype {volume.dtype}; convert it with "
                         ".float() first.")
    if len(roi_size) != 3 or any(_not_positive_int(n) for n in roi_size):
        raise ValueError(f"roi_size must be three positive integers (D, H, W), got {tuple(roi_size)}.")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}.")
    if _not_positive_int(batch_size):
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}.")
    if blend not in ("gaussian", "constant"):
        raise ValueError(f"blend must be 'gaussian' or 'constant', got {blend!r}.")
    if len(output_scale) != 3 or any(_not_positive_int(n) for n in output_scale):
        raise ValueError(f"output_scale must be three positive integers (D, H, W), got {tuple(output_scale)}.")
    check_precision(precision)
    return tuple(int(n) for n in output_scale)  # type: ignore[return-value]


def _not_positive_int(value: object) -> bool:
    if isinstance(value, bool):
        return True
    try:
        return int(value) != value or int(value) < 1  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return True


def _log_shrunk_axes(tilings: Sequence[AxisTiling]) -> None:
    for name, tiling in zip(AXIS_NAMES, tilings):
        if tiling.shrunk:
            logger.debug("Axis %s has %d voxels, fewer than the requested window of %d: the window shrinks to %d "
                         "voxels there, without padding.", name, tiling.size, tiling.requested, tiling.window)


def _warn_small_context(tilings: Sequence[AxisTiling], receptive_field: object) -> None:
    """Warn when some voxels have no window that contains their whole receptive field.

    Across the boundary between two windows that overlap by ``v`` voxels, every voxel has one window in which
    ``(field - 1) / 2`` voxels on each side are inside the window when ``v >= field - 1``.
    """
    if not isinstance(receptive_field, int) or isinstance(receptive_field, bool) or receptive_field <= 1:
        return
    for name, tiling in zip(AXIS_NAMES, tilings):
        overlap = tiling.min_overlap()
        if overlap is None:
            continue
        if tiling.window < receptive_field:
            logger.warning("The window has %d voxels along axis %s, fewer than the network's receptive field of %d "
                           "voxels, so every output voxel there lacks context. Use a larger window (--roi).",
                           tiling.window, name, receptive_field)
        elif overlap < receptive_field - 1:
            logger.warning("Windows overlap by %d voxels along axis %s, fewer than the %d that the network's "
                           "receptive field of %d voxels needs, so voxels near window edges lack context. Use a "
                           "larger --overlap or window.", overlap, name, receptive_field - 1, receptive_field)


class _WindowBatches:
    """Preallocated window batch on the network's device, filled by copying slices of the volume.

    When the volume is on the host and the network on CUDA, windows are first gathered in a pinned host buffer
    and copied with ``non_blocking=True``. Outputs come back through a pinned buffer the same way.
    """

    def __init__(self, volume: torch.Tensor, tilings: Sequence[AxisTiling], batch_size: int,
                 run_device: torch.device, stitch_device: torch.device, channels_last: bool) -> None:
        self.volume = volume
        self.tilings = tilings
        self.run_device = run_device
        self.stitch_device = stitch_device
        shape = (batch_size, int(volume.shape[1]), *(tiling.window for tiling in tilings))
        memory_format = torch.channels_last_3d if channels_last else torch.contiguous_format
        self.batch = torch.empty(shape, dtype=volume.dtype, device=run_device, memory_format=memory_format).zero_()
        # NOTE: the pinned-memory and non-blocking path needs CUDA and has not been run by the tests.
        self.pinned = run_device.type == "cuda" and volume.device.type == "cpu"
        self.staging = torch.zeros(shape, dtype=volume.dtype, pin_memory=True) if self.pinned else self.batch
        self.copied: torch.cuda.Event | None = None

    def fill(self, corners: Sequence[tuple[int, int, int]]) -> torch.Tensor:
        """Copy the windows at ``corners`` into the batch and return the whole batch tensor."""
        if self.copied is not None:
            # The previous non-blocking copy must finish reading the staging buffer before it is overwritten.
            self.copied.synchronize()
        for slot, corner in zip(self.staging, corners):
            region = tuple(tiling.source(start) for tiling, start in zip(self.tilings, corner))
            slot.copy_(self.volume[(0, slice(None), *region)])
        if self.pinned:
            self.batch.copy_(self.staging, non_blocking=True)
            self.copied = torch.cuda.Event()
            self.copied.record()
        return self.batch

    def to_stitch_device(self, predictions: torch.Tensor) -> torch.Tensor:
        """Move network outputs to the stitching device, through pinned memory when they come from CUDA."""
        if predictions.device == self.stitch_device:
            return predictions
        if predictions.device.type == "cuda" and self.stitch_device.type == "cpu":
            host = torch.empty(predictions.shape, dtype=predictions.dtype, pin_memory=True)
            host.copy_(predictions, non_blocking=True)
            torch.cuda.current_stream(predictions.device).synchronize()
            return host
        return predictions.to(self.stitch_device)


def _accumulate(output: torch.Tensor, prediction: torch.Tensor, corner: Sequence[int],
                tilings: Sequence[AxisTiling], blend: str, profiles_hw: dict[tuple[int, int], torch.Tensor]) -> None:
    """Add one window's output, weighted by its blending profile, to ``output``."""
    values = prediction.to(output.dtype)
    target = output[(slice(None), *(tiling.target(start) for tiling, start in zip(tilings, corner)))]
    if blend == "constant":
        target.add_(values)
        return
    # The 3D weight is the outer product of per-axis profiles, and the H x W plane is cached per window position.
    key = (corner[1], corner[2])
    plane = profiles_hw.get(key)
    if plane is None:
        plane = torch.outer(tilings[1].profile(corner[1], blend), tilings[2].profile(corner[2], blend))
        profiles_hw[key] = plane = plane.to(device=output.device, dtype=output.dtype)
    depth = tilings[0].profile(corner[0], blend).to(device=output.device, dtype=output.dtype)
    target.addcmul_(values, depth[:, None, None] * plane)


def _normalise(output: torch.Tensor, tilings: Sequence[AxisTiling], blend: str) -> torch.Tensor:
    """Divide the accumulated output by the summed weights and return it as float32.

    The windows form a grid and each window's weight is a product of per-axis profiles, so the summed weight
    is the outer product of the per-axis sums and never needs a volume-sized buffer of its own.
    """
    sums = [tiling.weight_sum(blend).to(device=output.device, dtype=output.dtype) for tiling in tilings]
    plane = torch.outer(sums[1], sums[2])
    channels, depth = output.shape[0], output.shape[1]
    if output.dtype == torch.float32:
        for first in range(0, depth, _NORMALISE_SLICES):
            last = min(first + _NORMALISE_SLICES, depth)
            output[:, first:last].div_(sums[0][first:last, None, None] * plane)
        return output

    # Convert float64 to float32 inside the same storage. Element n of the float32 result occupies the bytes of
    # float64 element n / 2, which was read in this or an earlier step, so no value is overwritten before use.
    flat64 = output.view(-1)
    flat32 = flat64.view(torch.float32)
    plane_voxels = plane.numel()
    for channel in range(channels):
        for first in range(0, depth, _NORMALISE_SLICES):
            last = min(first + _NORMALISE_SLICES, depth)
            values = (output[channel, first:last] / (sums[0][first:last, None, None] * plane)).to(torch.float32)
            start = (channel * depth + first) * plane_voxels
            flat32[start:start + values.numel()].copy_(values.view(-1))
    return flat32[:output.numel()].view(output.shape)
