"""MONAI transforms that restore images with a medgan model: ``Restored`` (array) and ``Restoredd`` (dictionary).

Both take the channel-first ``MetaTensor`` that MONAI's ``LoadImage`` + ``EnsureChannelFirst`` produce, shape
``(1, X, Y, Z)`` with X, Y, Z the file's voxel axes (i, j, k), and return a ``MetaTensor`` in the same physical
units (HU for CT). The result is computed by `medgan.inference.restorer.Restorer.restore`, the same code as
``medgan infer``, so voxels and affine equal what ``medgan infer`` writes for the same file. A model with an
output scale (super-resolution) returns more voxels over the same extent, and the affine follows
`medgan.inference.grid.scaled_affine`.

MONAI stores the affine in the space named by ``meta["space"]``: RAS (MONAI's default, and what the
``NibabelReader`` returns, the NIfTI affine) or LPS (ITK's convention when ``affine_lps_to_ras=False``).
medgan's `Volume` affine is RAS, so an LPS affine is converted on the way in and back on the way out.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from monai.utils import MetaKeys, SpaceKeys, TransformBackends

from medgan.inference.restorer import Restorer, load_model
from medgan.io.volume import Volume

logger = logging.getLogger(__name__)

# Flips x and y: converts an affine between RAS and LPS world coordinates (its own inverse).
_RAS_LPS_FLIP = np.diag([-1.0, -1.0, 1.0, 1.0])


def resolve_restorer(model: str | Path | Restorer, device: str | torch.device = "auto") -> Restorer:
    """Return ``model`` when it is a `Restorer`, else load the shipped model name or ``.safetensors`` path.

    Raises:
        TypeError: if ``model`` is neither a `Restorer`, a string nor a path.
        FileNotFoundError, ValueError: from `medgan.inference.restorer.load_model` for a missing or invalid model.
    """
    if isinstance(model, Restorer):
        return model
    if isinstance(model, (str, Path)):
        return load_model(model, device=device)
    raise TypeError(f"model must be a shipped model name, a path to a .safetensors model file or a medgan "
                    f"Restorer, got {type(model).__name__} ({model!r}).")


def _is_lps(image: MetaTensor) -> bool:
    space = image.meta.get(MetaKeys.SPACE, SpaceKeys.RAS)
    return str(space).upper() == str(SpaceKeys.LPS).upper()


class Restored(Transform):
    """Restore a channel-first ``(1, X, Y, Z)`` ``MetaTensor`` with a medgan model.

    Args:
        model: a shipped model name (``"ldct-default"``), a path to a ``.safetensors`` model file with its JSON
            card beside it, or a loaded `Restorer`.
        roi_size: sliding window ``(D, H, W)`` in input voxels, with D along the image's Z (k) axis, as
            ``medgan infer --roi``. ``None`` uses the model's default window.
        overlap: fraction of a window shared with its neighbours, in ``[0, 0.95]``.
        batch_size: windows per network call.
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"``.
        device: where the network runs when ``model`` is loaded here (``"auto"``, ``"cpu"``, ``"cuda[:N]"``).
        allow_modality_mismatch: restore an image whose ``meta["modality"]`` differs from the model's task.
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, model: str | Path | Restorer, roi_size: Sequence[int] | None = None, overlap: float = 0.25,
                 batch_size: int = 1, precision: str = "fp32", device: str | torch.device = "auto",
                 allow_modality_mismatch: bool = False) -> None:
        if roi_size is not None:
            if isinstance(roi_size, (str, bytes)) or len(roi_size) != 3 or not all(
                    isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n >= 1 for n in roi_size):
                raise ValueError(f"roi_size must be three positive integers (D, H, W) or None, got {roi_size!r}.")
            roi_size = tuple(int(n) for n in roi_size)
        if isinstance(overlap, bool) or not isinstance(overlap, (int, float)) or not 0 <= overlap <= 0.95:
            raise ValueError(f"overlap must be a number in [0, 0.95], got {overlap!r}.")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
        self.restorer = resolve_restorer(model, device=device)
        self.roi_size = roi_size
        self.overlap = float(overlap)
        self.batch_size = batch_size
        self.precision = precision
        self.allow_modality_mismatch = allow_modality_mismatch

    def __call__(self, img: MetaTensor) -> MetaTensor:
        """Restore ``img`` and return a new ``MetaTensor`` with the output grid's affine.

        Raises:
            TypeError: if ``img`` is not a ``MetaTensor``, because without its affine the output geometry
                cannot be set.
            ValueError: if ``img`` is not ``(1, X, Y, Z)``, or from `Restorer.restore` (non-finite values,
                modality mismatch).
        """
        if not isinstance(img, MetaTensor):
            raise TypeError(f"Restored expects a monai.data.MetaTensor with its affine, got {type(img).__name__}. "
                            "Load images with LoadImage(d) (track_meta on) or wrap the array as "
                            "MetaTensor(array, affine=affine).")
        if img.ndim == 3 and img.shape[0] == 1:
            raise ValueError(f"Restored expects a 3D channel-first image of shape (1, X, Y, Z), got the 2D image "
                             f"{tuple(img.shape)}. Add a slice axis first, for example with img.unsqueeze(-1).")
        if img.ndim != 4 or img.shape[0] != 1:
            raise ValueError(f"Restored expects a channel-first image of shape (1, X, Y, Z), got "
                             f"{tuple(img.shape)}. Add EnsureChannelFirst(d) after LoadImage(d); medgan "
                             "models take one channel.")
        lps = _is_lps(img)
        affine = np.asarray(img.affine.detach().cpu().numpy(), dtype=np.float64)
        affine_ras = _RAS_LPS_FLIP @ affine if lps else affine
        array = np.asarray(img[0].detach().cpu().numpy(), dtype=np.float32)
        modality = str(img.meta.get("modality", "") or "")
        volume = Volume(array=array, affine=affine_ras, modality=modality)

        restored = self.restorer.restore(volume, roi_size=self.roi_size, overlap=self.overlap,
                                         batch_size=self.batch_size, precision=self.precision,
                                         allow_modality_mismatch=self.allow_modality_mismatch)

        output_affine = _RAS_LPS_FLIP @ restored.affine if lps else restored.affine
        meta = dict(img.meta)
        meta.pop(MetaKeys.AFFINE, None)
        output = MetaTensor(torch.from_numpy(restored.array[None]), affine=torch.as_tensor(output_affine),
                            meta=meta)
        if restored.shape != volume.shape:
            logger.debug("Restored %s voxels to %s with affine\n%s", volume.shape, restored.shape, output_affine)
        return output


class Restoredd(MapTransform):
    """Dictionary version of `Restored`: restore ``data[key]`` in place for every key in ``keys``.

    Args:
        keys: keys of the images to restore.
        model: shipped model name, ``.safetensors`` path or `Restorer`; loaded once and shared by all keys.
        allow_missing_keys: skip keys that are missing from the data instead of raising ``KeyError``.
        roi_size, overlap, batch_size, precision, device, allow_modality_mismatch: as in `Restored`.
    """

    backend = Restored.backend

    def __init__(self, keys: KeysCollection, model: str | Path | Restorer, allow_missing_keys: bool = False,
                 roi_size: Sequence[int] | None = None, overlap: float = 0.25, batch_size: int = 1,
                 precision: str = "fp32", device: str | torch.device = "auto",
                 allow_modality_mismatch: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.restore = Restored(model, roi_size=roi_size, overlap=overlap, batch_size=batch_size,
                                precision=precision, device=device,
                                allow_modality_mismatch=allow_modality_mismatch)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        result = dict(data)
        for key in self.key_iterator(result):
            result[key] = self.restore(result[key])
        return result
