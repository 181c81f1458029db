"""`Restorer`: a trained network with its task's pre- and post-processing, applied to whole volumes."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from medgan.inference.sliding_window import sliding_window_inference
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
        network: ``(B, C, D, H, W) -> (B, C, D, H, W)`` module in network units.
        card: the model card; its task and intensity mapping define pre- and post-processing.
        device: where the network runs (``"auto"``, ``"cpu"``, ``"cuda"``).
    """

    def __repr__(self) -> str:
        return (f"Restorer(model={self.card.name or 'unnamed'!r}, task={self.card.task!r}, "
                f"network={self.card.network['name']!r}, device={str(self.device)!r})")

    def default_roi(self) -> tuple[int, int, int]:
        """Return the default window: the training patch, grown to the receptive field along any shorter axis.

        A window thinner than the receptive field makes every output voxel depend on where the window edges fall.
        """
        field = _receptive_field(self.network) or 1
        return tuple(max(int(size), field) for size in self.card.patch_size)  # type: ignore[return-value]

    def _warn_implausible_values(self, volume: Volume) -> None:
        if self.intensity.unit != "HU" or volume.array.size < 100:
            return
        low = float(np.percentile(volume.array, 0.5))
        if low > -500.0:
            logger.warning("The volume's lowest values (0.5th percentile %.0f) are far above air (-1000 HU): check "
                           "that it contains HU, with the DICOM rescale slope and intercept applied.", low)

    def __init__(self, network: torch.nn.Module, card: ModelCard, device: str | torch.device = "auto") -> None:
        self.task = get_task(card.task)
        if tuple(card.output_scale) != (1, 1, 1):
            raise ValueError(
                f"Model output_scale {card.output_scale} is not supported by this medgan version; "
                "only same-grid restoration (1, 1, 1) is implemented."
            )
        self.device = resolve_device(device)
        self.network = network.to(self.device).eval()
        self.card = card
        self.intensity = IntensityMapping.from_dict(card.intensity)

    @classmethod
    def from_model(cls, name_or_path: str | Path, device: str | torch.device = "auto") -> "Restorer":
        """Load a shipped model by name (e.g. ``"ldct-default"``) or a ``.safetensors`` file with its card."""
        network, card = load_model_files(name_or_path, device="cpu")
        return cls(network, card, device=device)

    def restore(
        self,
        volume: Volume,
        *,
        roi_size: Sequence[int] | None = None,
        overlap: float = 0.25,
        batch_size: int = 1,
        progress: Callable[[int, int], None] | None = None,
        allow_modality_mismatch: bool = False,
    ) -> Volume:
        """Restore ``volume`` and return the result on the same grid with the same affine and metadata.

        Args:
            volume: input in physical units (HU for CT).
            roi_size: window ``(D, H, W)`` in voxels, with D along the volume's k axis; `default_roi` when
                ``None``.
            overlap: fraction of a window shared with its neighbours.
            batch_size: windows per network call.
            progress: called as ``progress(done_windows, total_windows)``.
            allow_modality_mismatch: restore a volume whose modality differs from the task's instead of raising.

        Raises:
            TypeError: if ``volume`` is not a `Volume`.
            ValueError: if the volume contains NaN or infinite values, or its modality differs from the task's.
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
        self._warn_implausible_values(volume)
        window = tuple(roi_size) if roi_size is not None else self.default_roi()
        field = _receptive_field(self.network)
        spatial = (volume.shape[2], volume.shape[1], volume.shape[0])
        if field is not None and any(w < min(field, s) for w, s in zip(window, spatial)):
            logger.warning("Window %s is smaller than the network's receptive field (%d voxels) along an axis where "
                           "the volume is larger, so results near window edges lack context; use a larger --roi.",
                           window, field)
        inputs = self.intensity.forward(volume_to_tensor(volume.array))
        outputs = sliding_window_inference(inputs, self.network, window, overlap=overlap, batch_size=batch_size,
                                           device=self.device, progress=progress)
        restored = self.intensity.inverse(outputs)
        result = volume.with_array(tensor_to_volume_array(restored))
        result.metadata["medgan_model"] = self.card.name or "unnamed"
        return result


def _receptive_field(network: torch.nn.Module) -> int | None:
    value = getattr(network, "receptive_field", None)
    return int(value) if isinstance(value, int) else None


def load_model(name_or_path: str | Path, device: str | torch.device = "auto") -> Restorer:
    """Load a model for restoration: a shipped name such as ``"ldct-default"`` or a ``.safetensors`` path."""
    return Restorer.from_model(name_or_path, device=device)
