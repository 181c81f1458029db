"""`Restorer`: a trained network with its task's pre- and post-processing, applied to whole volumes."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from medgan.inference.grid import scaled_affine, scaled_metadata
from medgan.inference.performance import CompiledNetwork, check_precision, prefers_channels_last
from medgan.inference.sliding_window import context_window, sliding_window_inference
from medgan.io.volume import Volume
from medgan.models.card import ModelCard
from medgan.models.files import load_model_files
from medgan.tasks import IntensityMapping, get_task

logger = logging.getLogger(__name__)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Return the torch device for ``"auto"`` (CUDA when available, else CPU), ``"cpu"`` or ``"cuda[:N]"``.

    Raises:
        ValueError: if CUDA is requested but not available, or the name is not a device.
    """
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as error:
        raise ValueError(f"Invalid device {device!r}: {error}. Use auto, cpu or cuda.") from error
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"Device {device!r} was requested but CUDA is not available; use --device cpu or auto.")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(f"Device {device!r} does not exist: this machine has {torch.cuda.device_count()} "
                             "CUDA device(s).")
    elif resolved.type != "cpu":
        raise ValueError(f"Device {device!r} is not supported; use auto, cpu or cuda.")
    return resolved


def volume_to_tensor(array: np.ndarray) -> torch.Tensor:
    """Turn an ``(i, j, k)`` voxel array into a ``(1, 1, D, H, W)`` tensor with D = k, H = j, W = i."""
    return torch.from_numpy(np.ascontiguousarray(np.transpose(array, (2, 1, 0))))[None, None]


def tensor_to_volume_array(tensor: torch.Tensor) -> np.ndarray:
    """Inverse of :func:`volume_to_tensor` for a single-channel tensor."""
    return np.ascontiguousarray(np.transpose(tensor[0, 0].cpu().numpy(), (2, 1, 0)))


class Restorer:
    """A network ready to restore volumes of its task.

    Args:
        network: module in network units mapping ``(B, C, d, h, w)`` to ``(B, C, d * sd, h * sh, w * sw)``,
            where ``(sd, sh, sw)`` is the card's ``output_scale`` in tensor order (k, j, i).
        card: the model card; its task, intensity mapping and output scale define pre- and post-processing.
        device: where the network runs (``"auto"``, ``"cpu"``, ``"cuda"``).
        compile: run the network through ``torch.compile``; when compiling fails, a warning is logged and the
            network runs uncompiled.
    """

    def __repr__(self) -> str:
        return (f"Restorer(model={self.card.name or 'unnamed'!r}, task={self.card.task!r}, "
                f"network={self.card.network['name']!r}, device={str(self.device)!r})")

    def default_roi(self) -> tuple[int, int, int]:
        """Return the default window: the training patch, grown so the default overlap covers the receptive field.

        With the default overlap of a quarter window, a window of ``4 * (receptive_field - 1)`` voxels shares
        ``receptive_field - 1`` voxels with its neighbour. Every voxel then lies in some window together with its
        whole receptive field and the result does not depend on where window edges fall. Axes of the volume
        that are shorter than the window get one window of the volume's size.
        """
        # The card's patch is the training target, on the output grid; the window is measured on the input grid.
        patch = [max(1, int(size) // int(scale)) for size, scale in zip(self.card.patch_size, self.output_scale_dhw)]
        return context_window(patch, _receptive_field(self.network))  # type: ignore[return-value]

    def _check_slice_ratio(self, volume: Volume) -> None:
        """Reject a thick-slice volume whose slice-to-pixel ratio is far from the model's factor along k.

        A model trained for 4x thicker slices upsamples every input 4x. A scan with 2x or 5x thicker slices would
        therefore come out on a grid that does not match its anatomy's resolution.
        """
        scale_i, scale_j, scale_k = self.output_scale_ijk
        if (scale_i, scale_j) != (1, 1) or scale_k == 1:
            return
        spacing_i, spacing_j, spacing_k = volume.spacing_mm
        ratio = spacing_k / min(spacing_i, spacing_j)
        thick_index = 0 if spacing_i >= spacing_j else 1
        thick_axis = "ij"[thick_index]
        # An in-plane axis is thick when it is coarse against the finer of the two other axes, the same test that
        # the ratio applies to k.
        other_spacing_mm = min(spacing for index, spacing in enumerate(volume.spacing_mm) if index != thick_index)
        if ratio < 0.75 * scale_k and volume.spacing_mm[thick_index] >= 0.75 * scale_k * other_spacing_mm:
            raise ValueError(
                f"Model {self.card.name or 'unnamed'!r} makes the slices along the volume's k axis thinner, but this "
                f"volume's thick axis is {thick_axis} (spacing {spacing_i:g} x {spacing_j:g} x {spacing_k:g} mm "
                f"along i, j, k). Reorder the voxel axes so that the thick one is last, for example with "
                f"nibabel's as_reoriented or numpy.moveaxis on the array together with the affine's columns; "
                "medgan never reorders axes by itself.")
        if not 0.75 * scale_k <= ratio <= 1.25 * scale_k:
            raise ValueError(
                f"Model {self.card.name or 'unnamed'!r} makes slices {scale_k}x thinner and expects slices about "
                f"{scale_k}x thicker than the in-plane pixels, but this volume's slices are {ratio:.2f}x "
                f"({spacing_k:g} mm against {min(spacing_i, spacing_j):g} mm). Train a model for that factor "
                f"(generator.kwargs.scale [{max(1, round(ratio))}, 1, 1] in configs/mri_sr.yaml), or resample "
                "the in-plane grid first.")
        if abs(ratio - scale_k) > 0.05 * scale_k:
            logger.warning("Model %r was trained for slices %dx thicker than the in-plane pixels, and this volume's "
                           "are %.2fx (%g mm against %g mm); the output slices are %g mm apart.",
                           self.card.name or "unnamed", scale_k, ratio, spacing_k, min(spacing_i, spacing_j),
                           spacing_k / scale_k)

    def _warn_implausible_values(self, volume: Volume) -> None:
        if self.intensity.unit != "HU" or volume.array.size < 100:
            return
        low = float(np.percentile(volume.array, 0.5))
        if low > -500.0:
            logger.warning("The volume's lowest values (0.5th percentile %.0f) are far above air (-1000 HU): check "
                           "that it contains HU, with the DICOM rescale slope and intercept applied. If it is not CT "
                           "(an MRI NIfTI file records no modality), use an MRI model, for example --task mri-sr.",
                           low)

    def __init__(self, network: torch.nn.Module, card: ModelCard, device: str | torch.device = "auto", *,
                 compile: bool = False) -> None:
        self.task = get_task(card.task)
        scale = tuple(card.output_scale)
        if len(scale) != 3 or any(isinstance(n, bool) or int(n) != n or n < 1 for n in scale):
            raise ValueError(f"Model output_scale must be three positive integers along (i, j, k), got {scale!r}.")
        self.output_scale_ijk: tuple[int, int, int] = tuple(int(n) for n in scale)  # type: ignore[assignment]
        self.device = resolve_device(device)
        self.network = network.to(self.device).eval()
        self.channels_last = prefers_channels_last(self.network, self.device)
        if self.channels_last:
            self.network = self.network.to(memory_format=torch.channels_last_3d)
        self.compiled = CompiledNetwork(self.network) if compile else None
        self.card = card
        self.intensity = IntensityMapping.from_dict(card.intensity)

    @classmethod
    def from_model(cls, name_or_path: str | Path, device: str | torch.device = "auto", *,
                   compile: bool = False) -> "Restorer":
        """Load a shipped model by name (e.g. ``"ldct-default"``) or a ``.safetensors`` file with its card."""
        network, card = load_model_files(name_or_path, device="cpu")
        return cls(network, card, device=device, compile=compile)

    @property
    def output_scale_dhw(self) -> tuple[int, int, int]:
        """Output voxels per input voxel along the tensor axes (D, H, W) = (k, j, i)."""
        scale_i, scale_j, scale_k = self.output_scale_ijk
        return scale_k, scale_j, scale_i

    def restore(
        self,
        volume: Volume,
        *,
        roi_size: Sequence[int] | None = None,
        overlap: float = 0.25,
        batch_size: int = 1,
        precision: str = "fp32",
        stitch_device: str | torch.device | None = None,
        progress: Callable[[int, int], None] | None = None,
        allow_modality_mismatch: bool = False,
        data_consistency: bool = True,
        strength: float = 1.0,
    ) -> Volume:
        """Restore ``volume`` and return the result in the same physical units, modality and metadata.

        With the card's ``output_scale`` of ``(1, 1, 1)`` the result has the input's grid and affine. A scale
        ``s`` along a voxel axis gives ``n * s`` voxels there over the same physical extent: the spacing is
        divided by ``s``, and output voxel ``m`` is centred at input voxel coordinate ``(m + 0.5) / s - 0.5``
        (see `medgan.inference.grid`). Source metadata that describes the input grid is adjusted or dropped.

        Args:
            volume: input in physical units (HU for CT).
            roi_size: window ``(D, H, W)`` in input voxels, with D along the volume's k axis; `default_roi` when
                ``None``.
            overlap: fraction of a window shared with its neighbours.
            batch_size: windows per network call.
            precision: ``"fp32"``, ``"bf16"`` or ``"fp16"`` (autocast of the network).
            stitch_device: where the output is accumulated: the host in float64 when ``None``, or an
                accelerator in float32.
            progress: called as ``progress(done_windows, total_windows)``.
            allow_modality_mismatch: restore a volume whose modality differs from the task's instead of raising.
            data_consistency: for super-resolution along k, shift each group of output slices so that their mean
                equals the input slice they came from (`enforce_thick_slice_consistency`). Ignored for models
                that keep the grid.
            strength: for models that keep the grid, the fraction of the model's change that is applied:
                ``input + strength * (restored - input)``, in ``[0, 1]``. 1 is the model's output; lower values
                keep part of the input's noise and texture, like the blending levels of clinical denoisers.
                Models with an output scale accept only 1.

        Raises:
            TypeError: if ``volume`` is not a `Volume`.
            ValueError: if the volume contains NaN or infinite values, its modality differs from the task's, the
                intensity mapping cannot be measured on it, or an argument is invalid.
        """
        if not isinstance(volume, Volume):
            raise TypeError(f"restore expects a medgan Volume, got {type(volume).__name__}; wrap arrays with "
                            "medgan.Volume(array, affine).")
        if not np.all(np.isfinite(volume.array)):
            count = int(np.size(volume.array) - np.count_nonzero(np.isfinite(volume.array)))
            raise ValueError(f"The volume contains {count} NaN or infinite voxel(s). Replace them with finite "
                             "values before restoring.")
        if self.task.modality and volume.modality and volume.modality != self.task.modality:
            if not allow_modality_mismatch:
                raise ValueError(f"The volume's modality is {volume.modality}, but model {self.card.name!r} restores "
                                 f"{self.task.modality}. Pass --ignore-modality (allow_modality_mismatch=True) to "
                                 "run it anyway.")
            logger.warning("Volume modality is %s but the model was trained for %s.", volume.modality,
                           self.task.modality)
        check_precision(precision)
        strength = check_strength(strength, self.output_scale_ijk)
        self._check_slice_ratio(volume)
        self._warn_implausible_values(volume)
        window = tuple(roi_size) if roi_size is not None else self.default_roi()
        # A map measured on this volume (MRI) or the fixed map (CT); the same map inverts the output.
        mapping = self.intensity.for_volume(volume.array)
        inputs = mapping.forward(volume_to_tensor(volume.array))
        compiled = self.compiled is not None and self.compiled.is_compiled
        outputs = sliding_window_inference(
            inputs, self.compiled or self.network, window, overlap=overlap, batch_size=batch_size,
            device=self.device, stitch_device=stitch_device, output_scale=self.output_scale_dhw,
            precision=precision, channels_last=self.channels_last, full_batches=compiled, progress=progress,
        )
        del inputs
        restored = mapping.inverse(outputs)
        del outputs  # the engine's result keeps the float64 stitching buffer's memory
        array = tensor_to_volume_array(restored)
        del restored
        scale_i, scale_j, scale_k = self.output_scale_ijk
        if data_consistency and (scale_i, scale_j) == (1, 1) and scale_k > 1:
            array = enforce_thick_slice_consistency(array, volume.array, scale_k)
        if strength != 1.0:
            array = (volume.array + strength * (array.astype(np.float64) - volume.array)).astype(array.dtype)
        metadata = scaled_metadata(volume.metadata, self.output_scale_ijk, volume.shape, volume.spacing_mm)
        # The DICOM writer puts this text into SeriesDescription and DerivationDescription of a derived series.
        metadata["medgan_model"] = self.card.name or "unnamed"
        if strength != 1.0:
            metadata["medgan_model"] += f" strength {strength:g}"
        return Volume(array=array, affine=scaled_affine(volume.affine, self.output_scale_ijk),
                      modality=volume.modality, metadata=metadata)


def check_strength(strength: object, output_scale_ijk: tuple[int, int, int]) -> float:
    """Return ``strength`` as a float after checking it is in ``[0, 1]`` and allowed for the output scale.

    Raises:
        ValueError: if it is not a number in ``[0, 1]``, or differs from 1 for a model with an output scale.
    """
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must be a number in [0, 1], got {strength!r}.")
    if strength != 1.0 and tuple(output_scale_ijk) != (1, 1, 1):
        raise ValueError(f"strength {strength} blends the output with the input voxel by voxel, which needs the "
                         f"same grid; this model's output scale is {tuple(output_scale_ijk)}. Use strength 1.")
    return float(strength)


def enforce_thick_slice_consistency(fine: np.ndarray, thick: np.ndarray, scale_k: int) -> np.ndarray:
    """Return ``fine`` shifted so that each run of ``scale_k`` slices along k averages to its thick slice.

    This is the boxcar slice model that mri-sr models are trained with: a thick slice is the mean of the thin
    slices it covers. The correction spreads each thick slice's residual evenly over its thin slices, so the
    output, degraded again, reproduces the measured input exactly while the network's detail within each group
    is kept.

    Raises:
        ValueError: if ``fine`` does not have ``scale_k`` slices per slice of ``thick``.
    """
    i, j, k = thick.shape
    if fine.shape != (i, j, k * scale_k):
        raise ValueError(f"Expected {scale_k} output slices per input slice, got shapes {fine.shape} and "
                         f"{thick.shape}.")
    means = fine.reshape(i, j, k, scale_k).mean(axis=-1, dtype=np.float64)
    residual = (thick.astype(np.float64) - means).astype(np.float32)
    # NOTE: one constant shift per run leaves a step between runs wherever the network's mean is off, visible
    # at the scalp of a 1 mm brain from 4 mm slices. A linearly interpolated correction with the same run means
    # avoids the steps but scored 0.02 to 0.08 dB lower PSNR on the two validation scans of mri-sr-default.
    return fine + np.repeat(residual, scale_k, axis=2)


def _receptive_field(network: torch.nn.Module) -> int | None:
    value = getattr(network, "receptive_field", None)
    return int(value) if isinstance(value, int) else None


def load_model(name_or_path: str | Path, device: str | torch.device = "auto", *, compile: bool = False) -> Restorer:
    """Load a model for restoration: a shipped name such as ``"ldct-default"`` or a ``.safetensors`` path."""
    return Restorer.from_model(name_or_path, device=device, compile=compile)
