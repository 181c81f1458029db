"""MONAI dictionary versions of the degradation transforms, for ``monai.transforms.Compose`` pipelines.

Each class applies its array transform to ``data[key]`` for every key in ``keys``. The images are MONAI's
channel-first ``(C, X, Y, Z)`` tensors or ``MetaTensor`` objects (``LoadImaged`` with
``ensure_channel_first=True`` gives ``(C, i, j, k)``). A ``MetaTensor``'s affine gives the voxel spacing and is
updated when the grid changes. A plain tensor needs ``spacing_mm`` (voxel sizes along ``X, Y, Z``) where the
transform uses it, and no affine is tracked.

Transforms that draw random numbers are ``monai.transforms.Randomizable``: each owns a CPU
``torch.Generator`` seeded with ``seed``, and ``set_random_state(seed)`` (which ``Compose.set_random_state``
calls) reseeds it. One call draws one set of parameters and one noise seed, shared by all keys, and stores
them in ``data[f"{key}_degradation"]``, so ``LowDoseCT.from_params`` and friends can replay the call.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Randomizable

from medgan.transforms.lowdose import LowDoseCT, RandomLowDoseCT
from medgan.transforms.mri import (
    KSpaceTruncationMRI,
    RandomKSpaceTruncationMRI,
    RandomRicianNoiseMRI,
    RandomThickSliceMRI,
    RicianNoiseMRI,
    ThickSliceMRI,
    meta_tensor_affine,
)

PARAMS_KEY_SUFFIX = "_degradation"


def _validate_spacing(spacing_mm: object) -> tuple[float, float, float] | None:
    if spacing_mm is None:
        return None
    if isinstance(spacing_mm, (str, bytes)) or not hasattr(spacing_mm, "__len__") or len(spacing_mm) != 3:
        raise ValueError(f"spacing_mm must be three voxel sizes in mm along (X, Y, Z), got {spacing_mm!r}.")
    values = tuple(float(value) for value in spacing_mm)
    if not all(math.isfinite(value) and value > 0 for value in values):
        raise ValueError(f"spacing_mm must be positive and finite, got {spacing_mm!r}.")
    return values  # type: ignore[return-value]


def _validate_seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}.")
    return int(seed)


def _image_spacing(image: object, spacing_mm: tuple[float, float, float] | None, key: Hashable) -> tuple[float, ...]:
    if isinstance(image, MetaTensor):
        affine = meta_tensor_affine(image)
        return tuple(float(value) for value in np.linalg.norm(affine[:3, :3], axis=0))
    if spacing_mm is None:
        raise ValueError(
            f"data[{key!r}] is a plain tensor, so its voxel spacing is unknown; pass spacing_mm=(x_mm, y_mm, z_mm) "
            "or load it as a MetaTensor."
        )
    return spacing_mm


class _SeededRandomizable(Randomizable):
    """A MONAI ``Randomizable`` whose draws come from its own CPU ``torch.Generator``.

    It has no ``__init__`` because ``MapTransform.__init__`` calls the next ``__init__`` in the MRO without
    arguments. Subclasses call ``_create_generator(seed)`` instead.
    """

    generator: torch.Generator

    def _create_generator(self, seed: int) -> None:
        self.generator = torch.Generator().manual_seed(_validate_seed(seed))

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> Randomizable:
        """Reseed the torch generator from ``seed``, or from a draw of ``state``, as MONAI's own transforms do."""
        super().set_random_state(seed=seed, state=state)
        if seed is not None:
            self.generator.manual_seed(int(seed))
        elif state is not None:
            self.generator.manual_seed(int(state.randint(2**31 - 1)))
        return self

    def randomize(self, data: Any = None) -> None:
        """Draw nothing: the subclasses draw their parameters in ``__call__`` from ``self.generator``."""


def _draw_seed(generator: torch.Generator) -> int:
    return int(torch.randint(0, 2**63 - 1, (), generator=generator).item())


class _LowDoseCTBase(MapTransform, _SeededRandomizable):
    def __init__(
        self,
        keys: KeysCollection,
        slice_axis: int,
        spacing_mm: tuple[float, float, float] | None,
        seed: int,
        allow_missing_keys: bool,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self._create_generator(seed)
        if isinstance(slice_axis, bool) or not isinstance(slice_axis, numbers.Integral) or not 0 <= slice_axis <= 2:
            raise ValueError(f"slice_axis must be 0, 1 or 2 (a spatial axis of (C, X, Y, Z)), got {slice_axis!r}.")
        self.slice_axis = int(slice_axis)
        self.spacing_mm = _validate_spacing(spacing_mm)

    def _apply(self, image: torch.Tensor, key: Hashable, params: dict[str, Any]) -> torch.Tensor:
        """Simulate ``params`` on ``image`` ``(..., X, Y, Z)`` with axial slices across ``slice_axis``."""
        spacing = _image_spacing(image, self.spacing_mm, key)
        in_plane = [axis for axis in range(3) if axis != self.slice_axis]
        tensor = image.as_tensor() if isinstance(image, MetaTensor) else image
        dim = tensor.ndim - 3 + self.slice_axis
        # Slices first, then the two in-plane axes in their original order: (..., D, H, W).
        moved = tensor.movedim(dim, -3)
        height, width = moved.shape[-2:]
        hu = moved.reshape(-1, height, width)
        noise_generator = torch.Generator(device=tensor.device).manual_seed(params["seed"])
        low_hu = LowDoseCT.from_params(params)(hu, (spacing[in_plane[0]], spacing[in_plane[1]]), noise_generator)
        result = low_hu.reshape(moved.shape).movedim(-3, dim)
        if isinstance(image, MetaTensor):
            output = MetaTensor(result, meta=dict(image.meta))
            output.affine = image.affine.clone()
            return output
        return result

    def _apply_all(self, data: Mapping[Hashable, Any], params: dict[str, Any]) -> dict[Hashable, Any]:
        result = dict(data)
        for key in self.key_iterator(result):
            result[key] = self._apply(result[key], key, params)
            result[f"{key}{PARAMS_KEY_SUFFIX}"] = dict(params)
        return result


class LowDoseCTd(_LowDoseCTBase):
    """Dictionary version of ``LowDoseCT``, with the noise seed drawn from the transform's own generator.

    Args:
        keys: keys of the CT images in HU.
        dose_fraction: simulated dose fraction, in ``(0, 1]``.
        slice_axis: spatial axis across the axial slices, 0 to 2. Default 2 (``k`` of a NIfTI).
        spacing_mm: voxel sizes along ``(X, Y, Z)`` for plain tensors. Ignored for a ``MetaTensor``.
        seed: seed of the generator that draws each call's noise seed. Default 0.
        allow_missing_keys: skip missing keys instead of raising ``KeyError``.
        **kwargs: the keyword arguments of ``LowDoseCT``.
    """

    def __init__(
        self,
        keys: KeysCollection,
        dose_fraction: float,
        *,
        slice_axis: int = 2,
        spacing_mm: tuple[float, float, float] | None = None,
        seed: int = 0,
        allow_missing_keys: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(keys, slice_axis, spacing_mm, seed, allow_missing_keys)
        self.transform = LowDoseCT(dose_fraction, **kwargs)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        params = self.transform.params()
        params["seed"] = _draw_seed(self.generator)
        return self._apply_all(data, params)


class RandomLowDoseCTd(_LowDoseCTBase):
    """Dictionary version of ``RandomLowDoseCT``: a dose fraction and a noise seed drawn per call.

    Args:
        keys, slice_axis, spacing_mm, seed, allow_missing_keys: as for ``LowDoseCTd``.
        dose_fraction_range: ``(low, high)`` with ``0 < low <= high <= 1``. Default ``(0.1, 0.5)``.
        **kwargs: the other keyword arguments of ``LowDoseCT``.
    """

    def __init__(
        self,
        keys: KeysCollection,
        dose_fraction_range: tuple[float, float] = (0.1, 0.5),
        *,
        slice_axis: int = 2,
        spacing_mm: tuple[float, float, float] | None = None,
        seed: int = 0,
        allow_missing_keys: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(keys, slice_axis, spacing_mm, seed, allow_missing_keys)
        self.sampler = RandomLowDoseCT(dose_fraction_range, **kwargs)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        return self._apply_all(data, self.sampler.sample_params(self.generator))


class _MRIMapTransform(MapTransform):
    def __init__(
        self, keys: KeysCollection, spacing_mm: tuple[float, float, float] | None, allow_missing_keys: bool
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.spacing_mm = _validate_spacing(spacing_mm)

    def _apply_all(self, data: Mapping[Hashable, Any], apply, params: dict[str, Any]) -> dict[Hashable, Any]:
        result = dict(data)
        for key in self.key_iterator(result):
            image = result[key]
            spacing = None if isinstance(image, MetaTensor) else self.spacing_mm
            result[key] = apply(image, spacing)
            result[f"{key}{PARAMS_KEY_SUFFIX}"] = dict(params)
        return result


class ThickSliceMRId(_MRIMapTransform):
    """Dictionary version of ``ThickSliceMRI``; ``spacing_mm`` is needed only for plain tensors.

    The other arguments are those of ``ThickSliceMRI``. ``slice_axis`` indexes the spatial axes of
    ``(C, X, Y, Z)``, so the default 2 is ``k`` of a NIfTI loaded by MONAI.
    """

    def __init__(
        self,
        keys: KeysCollection,
        slice_thickness_mm: float,
        *,
        spacing_mm: tuple[float, float, float] | None = None,
        allow_missing_keys: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(keys, spacing_mm, allow_missing_keys)
        self.transform = ThickSliceMRI(slice_thickness_mm, **kwargs)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        return self._apply_all(data, self.transform, self.transform.params())


class KSpaceTruncationMRId(_MRIMapTransform):
    """Dictionary version of ``KSpaceTruncationMRI``, with its arguments."""

    def __init__(
        self,
        keys: KeysCollection,
        keep_fraction: float | tuple[float, ...],
        *,
        allow_missing_keys: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(keys, None, allow_missing_keys)
        self.transform = KSpaceTruncationMRI(keep_fraction, **kwargs)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        return self._apply_all(data, self.transform, self.transform.params())


class RicianNoiseMRId(_MRIMapTransform, _SeededRandomizable):
    """Dictionary version of ``RicianNoiseMRI``, with the noise seed drawn from its own generator."""

    def __init__(self, keys: KeysCollection, snr: float, *, seed: int = 0, allow_missing_keys: bool = False) -> None:
        _MRIMapTransform.__init__(self, keys, None, allow_missing_keys)
        self._create_generator(seed)
        self.transform = RicianNoiseMRI(snr)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        params = {**self.transform.params(), "seed": _draw_seed(self.generator)}
        return self._apply_all(data, _seeded_rician(self.transform, params["seed"]), params)


def _seeded_rician(transform: RicianNoiseMRI, seed: int):
    def apply(image: Any, spacing_mm: Any) -> Any:
        device = image.device if isinstance(image, torch.Tensor) else torch.device("cpu")
        return transform(image, spacing_mm, torch.Generator(device=device).manual_seed(seed))

    return apply


class RandomThickSliceMRId(_MRIMapTransform, _SeededRandomizable):
    """Dictionary version of ``RandomThickSliceMRI``: one draw per call, shared by all keys.

    The arguments are those of ``RandomThickSliceMRI`` plus ``keys``, ``spacing_mm`` (plain tensors only),
    ``seed`` and ``allow_missing_keys``.
    """

    def __init__(
        self,
        keys: KeysCollection,
        slice_thickness_mm_range: tuple[float, float] = (2.0, 6.0),
        *,
        spacing_mm: tuple[float, float, float] | None = None,
        seed: int = 0,
        allow_missing_keys: bool = False,
        **kwargs: Any,
    ) -> None:
        _MRIMapTransform.__init__(self, keys, spacing_mm, allow_missing_keys)
        self._create_generator(seed)
        self.sampler = RandomThickSliceMRI(slice_thickness_mm_range, **kwargs)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        params = self.sampler.sample_params(self.generator)
        return self._apply_all(data, ThickSliceMRI.from_params(params), params)


class RandomKSpaceTruncationMRId(_MRIMapTransform, _SeededRandomizable):
    """Dictionary version of ``RandomKSpaceTruncationMRI``: one draw per call, shared by all keys."""

    def __init__(
        self,
        keys: KeysCollection,
        keep_fraction_range: tuple[float, float] = (0.25, 0.75),
        *,
        seed: int = 0,
        allow_missing_keys: bool = False,
        **kwargs: Any,
    ) -> None:
        _MRIMapTransform.__init__(self, keys, None, allow_missing_keys)
        self._create_generator(seed)
        self.sampler = RandomKSpaceTruncationMRI(keep_fraction_range, **kwargs)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        params = self.sampler.sample_params(self.generator)
        return self._apply_all(data, KSpaceTruncationMRI.from_params(params), params)


class RandomRicianNoiseMRId(_MRIMapTransform, _SeededRandomizable):
    """Dictionary version of ``RandomRicianNoiseMRI``: one SNR and noise seed per call, shared by all keys."""

    def __init__(
        self,
        keys: KeysCollection,
        snr_range: tuple[float, float] = (5.0, 40.0),
        *,
        seed: int = 0,
        allow_missing_keys: bool = False,
    ) -> None:
        _MRIMapTransform.__init__(self, keys, None, allow_missing_keys)
        self._create_generator(seed)
        self.sampler = RandomRicianNoiseMRI(snr_range)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        params = self.sampler.sample_params(self.generator)
        return self._apply_all(data, _seeded_rician(RicianNoiseMRI.from_params(params), params["seed"]), params)
