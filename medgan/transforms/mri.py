"""Low-resolution MRI transforms: thick slices, k-space truncation and Rician noise, plus seeded samplers.

Each transform accepts three kinds of input and returns the same kind:

- a ``medgan.io.Volume``: the array is ``(i, j, k)`` and the affine is updated when the grid changes;
- a MONAI ``MetaTensor`` ``(..., X, Y, Z)``: its affine is read for the voxel spacing and updated;
- a plain ``torch.Tensor`` ``(..., X, Y, Z)``: ``spacing_mm`` gives the voxel size along ``(X, Y, Z)``
  where a transform needs it, and no affine is tracked.

``slice_axis`` and ``axes`` index the three spatial axes (0 to 2): for a ``Volume``, 2 is ``k``. For a tensor
from ``medgan.inference.restorer.volume_to_tensor``, which is ``(B, C, k, j, i)``, ``k`` is axis 0.
"""

from __future__ import annotations

import logging
import math
import numbers
from typing import Any

import numpy as np
import torch

from medgan.io.volume import Volume
from medgan.physics.mri import (
    SLICE_PROFILES,
    add_rician_noise,
    low_resolution_affine,
    resample_to_input_grid,
    thick_slice_sampling,
    thick_slices,
    truncate_kspace,
    validate_thick_slice_arguments,
)

logger = logging.getLogger(__name__)

OUTPUT_GRIDS = ("low", "original")

# Metadata entries that describe the source grid slice by slice or repeat its affine. They are dropped when
# a transform changes the grid, because they would no longer match it. Writers use Volume.affine.
_GRID_METADATA_KEYS = ("qform", "sform", "source_slices", "frames")


def _is_meta_tensor(data: object) -> bool:
    try:
        from monai.data import MetaTensor
    except ImportError:  # pragma: no cover - monai is a dependency, kept optional here for clarity.
        return False
    return isinstance(data, MetaTensor)


def meta_tensor_affine(image: Any) -> np.ndarray:
    """Return the 4x4 affine, as float64 numpy, of a MONAI ``MetaTensor`` that contains one image.

    Raises:
        ValueError: for a batched ``MetaTensor``, whose affine is ``(B, 4, 4)``. Apply the transforms per
            image, before collation, as MONAI's dictionary transforms are.
    """
    affine = np.asarray(image.affine.detach().cpu().numpy(), dtype=np.float64)
    if affine.shape != (4, 4):
        raise ValueError(
            f"data must be one image, but its MetaTensor affine has shape {affine.shape} (a batch); apply the "
            "transform to each image before collating them."
        )
    return affine


def _split_input(data: object, spacing_mm: object) -> tuple[torch.Tensor, np.ndarray | None, tuple[float, ...] | None]:
    """Return ``(tensor, affine, spacing_mm)`` for a Volume, a MetaTensor or a tensor."""
    if isinstance(data, Volume):
        return torch.from_numpy(data.array), data.affine, data.spacing_mm
    if _is_meta_tensor(data):
        affine = meta_tensor_affine(data)
        spacing = tuple(float(value) for value in np.linalg.norm(affine[:3, :3], axis=0))
        return data.as_tensor(), affine, spacing
    if isinstance(data, torch.Tensor):
        if spacing_mm is None:
            return data, None, None
        if isinstance(spacing_mm, (str, bytes)) or not hasattr(spacing_mm, "__len__") or len(spacing_mm) != 3:
            raise ValueError(f"spacing_mm must be three voxel sizes in mm along (X, Y, Z), got {spacing_mm!r}.")
        spacing = tuple(float(value) for value in spacing_mm)
        if not all(math.isfinite(value) and value > 0 for value in spacing):
            raise ValueError(f"spacing_mm must be positive and finite, got {spacing_mm!r}.")
        return data, None, spacing
    raise ValueError(f"data must be a medgan Volume, a MONAI MetaTensor or a torch.Tensor, got {type(data).__name__}.")


def _rebuild(data: object, result: torch.Tensor, affine: np.ndarray | None, params: dict[str, Any], grid_changed: bool):
    """Return ``result`` as the same kind of object as ``data``, with ``affine`` where it tracks one."""
    if isinstance(data, Volume):
        metadata = dict(data.metadata)
        if grid_changed:
            for key in _GRID_METADATA_KEYS:
                metadata.pop(key, None)
        metadata["simulated"] = params
        return Volume(array=result.cpu().numpy(), affine=affine, modality=data.modality, metadata=metadata)
    if _is_meta_tensor(data):
        from monai.data import MetaTensor

        output = MetaTensor(result, meta=dict(data.meta))
        output.affine = torch.as_tensor(affine, dtype=torch.float64)
        return output
    return result


def _float_tensor(tensor: torch.Tensor) -> torch.Tensor:
    return tensor if tensor.is_floating_point() else tensor.to(torch.float32)


class ThickSliceMRI:
    """Simulate thick MR slices along one axis, on the low-resolution grid or back on the input grid.

    Each thick slice averages the input slices under its slice profile (see
    ``medgan.physics.mri.thick_slice_sampling``). Thick slices are ``slice_thickness_mm + slice_gap_mm``
    apart, and each one's centre is the weighted mean position of the input slices it averages.

    Args:
        slice_thickness_mm: thickness of the simulated slices in mm, ``> 0``.
        slice_axis: spatial axis across the slices, 0 to 2. Default 2 (``k`` of a ``Volume``).
        slice_gap_mm: gap between neighbouring slices in mm. Default 0. A negative gap, down to
            ``-slice_thickness_mm`` exclusive, makes overlapping slices.
        profile: ``"boxcar"`` (default) or ``"gaussian"``.
        profile_fwhm_mm: FWHM of the Gaussian profile in mm. ``None`` (default) uses the slice thickness.
        output_grid: ``"low"`` (default), one voxel per thick slice with the affine updated, or
            ``"original"``, the thick slices interpolated linearly back to the input slice positions.

    Call it as ``transform(data, spacing_mm=None)``. ``spacing_mm`` is needed only for a plain tensor.

    Raises:
        ValueError: if an argument is invalid. The message names it.
    """

    def __init__(
        self,
        slice_thickness_mm: float,
        *,
        slice_axis: int = 2,
        slice_gap_mm: float = 0.0,
        profile: str = "boxcar",
        profile_fwhm_mm: float | None = None,
        output_grid: str = "low",
    ) -> None:
        if output_grid not in OUTPUT_GRIDS:
            raise ValueError(f"output_grid must be one of {', '.join(OUTPUT_GRIDS)}, got {output_grid!r}.")
        if isinstance(slice_axis, bool) or not isinstance(slice_axis, numbers.Integral) or not 0 <= slice_axis <= 2:
            raise ValueError(f"slice_axis must be 0, 1 or 2, got {slice_axis!r}.")
        validate_thick_slice_arguments(slice_thickness_mm, slice_gap_mm, profile, profile_fwhm_mm)
        self.slice_thickness_mm = float(slice_thickness_mm)
        self.slice_axis = int(slice_axis)
        self.slice_gap_mm = float(slice_gap_mm)
        self.profile = profile
        self.profile_fwhm_mm = None if profile_fwhm_mm is None else float(profile_fwhm_mm)
        self.output_grid = output_grid

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> ThickSliceMRI:
        """Build the transform from a ``params()`` or ``RandomThickSliceMRI`` record."""
        return cls(
            params["slice_thickness_mm"],
            slice_axis=params["slice_axis"],
            slice_gap_mm=params["slice_gap_mm"],
            profile=params["profile"],
            profile_fwhm_mm=params["profile_fwhm_mm"],
            output_grid=params["output_grid"],
        )

    def params(self) -> dict[str, Any]:
        """Return the constructor arguments as a dict."""
        return {
            "slice_thickness_mm": self.slice_thickness_mm,
            "slice_axis": self.slice_axis,
            "slice_gap_mm": self.slice_gap_mm,
            "profile": self.profile,
            "profile_fwhm_mm": self.profile_fwhm_mm,
            "output_grid": self.output_grid,
        }

    def __repr__(self) -> str:
        arguments = ", ".join(f"{key}={value!r}" for key, value in self.params().items())
        return f"{type(self).__name__}({arguments})"

    def sampling(self, n_input: int, spacing_mm: float):
        """Return the ``ThickSliceSampling`` for ``n_input`` slices of ``spacing_mm`` along the slice axis."""
        return thick_slice_sampling(
            n_input,
            spacing_mm,
            self.slice_thickness_mm,
            slice_gap_mm=self.slice_gap_mm,
            profile=self.profile,
            profile_fwhm_mm=self.profile_fwhm_mm,
        )

    def output_affine(self, affine: np.ndarray, n_input: int) -> np.ndarray:
        """Return the affine of the output for an input with ``affine`` and ``n_input`` slices along the axis."""
        affine = np.asarray(affine, dtype=np.float64)
        if self.output_grid == "original":
            return affine.copy()
        spacing_mm = float(np.linalg.norm(affine[:3, self.slice_axis]))
        return low_resolution_affine(affine, self.sampling(n_input, spacing_mm), self.slice_axis)

    def __call__(self, data: Any, spacing_mm: tuple[float, float, float] | None = None) -> Any:
        tensor, affine, spacing = _split_input(data, spacing_mm)
        if spacing is None:
            raise ValueError("spacing_mm is required for a plain tensor: the voxel sizes in mm along (X, Y, Z).")
        tensor = _float_tensor(tensor)
        dim = tensor.ndim - 3 + self.slice_axis
        n_input = tensor.shape[dim]
        sampling = self.sampling(n_input, spacing[self.slice_axis])
        result = thick_slices(tensor, sampling, self.slice_axis)
        if self.output_grid == "original":
            result = resample_to_input_grid(result, sampling, self.slice_axis, n_input)
            new_affine = None if affine is None else affine.copy()
        else:
            new_affine = None if affine is None else low_resolution_affine(affine, sampling, self.slice_axis)
        logger.debug(
            "Thick slices: %d input slices of %g mm -> %d slices of %g mm (%s grid).",
            n_input,
            spacing[self.slice_axis],
            sampling.n_thick,
            self.slice_thickness_mm,
            self.output_grid,
        )
        return _rebuild(data, result, new_affine, self.params(), grid_changed=self.output_grid == "low")


class KSpaceTruncationMRI:
    """Lower the in-plane (or any axis') resolution by keeping only the centre of k-space.

    See ``medgan.physics.mri.truncate_kspace``. The output stays on the input grid (a zero-filled
    reconstruction), so the affine is unchanged.

    Args:
        keep_fraction: fraction of the k-space extent kept along each axis, in ``(0, 1]``, one value or one
            per axis.
        axes: spatial axes to truncate. Default ``(0, 1)``.
        taper: ``"none"`` (default), ``"hann"`` or ``"tukey"``.
        tukey_alpha: roll-off fraction of the Tukey taper, in ``(0, 1]``. Default 0.5.

    Raises:
        ValueError: if an argument is invalid. The message names it.
    """

    def __init__(
        self,
        keep_fraction: float | tuple[float, ...],
        *,
        axes: tuple[int, ...] = (0, 1),
        taper: str = "none",
        tukey_alpha: float = 0.5,
    ) -> None:
        # A small probe validates every argument now rather than at the first call.
        truncate_kspace(torch.zeros(2, 2, 2), keep_fraction, axes, taper=taper, tukey_alpha=tukey_alpha)
        self.keep_fraction = keep_fraction if isinstance(keep_fraction, numbers.Real) else tuple(keep_fraction)
        self.axes = (axes,) if isinstance(axes, numbers.Integral) else tuple(int(axis) for axis in axes)
        self.taper = taper
        self.tukey_alpha = float(tukey_alpha)

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> KSpaceTruncationMRI:
        """Build the transform from a ``params()`` or ``RandomKSpaceTruncationMRI`` record."""
        keep_fraction = params["keep_fraction"]
        if isinstance(keep_fraction, list):
            keep_fraction = tuple(keep_fraction)
        return cls(keep_fraction, axes=tuple(params["axes"]), taper=params["taper"], tukey_alpha=params["tukey_alpha"])

    def params(self) -> dict[str, Any]:
        """Return the constructor arguments as a dict."""
        return {
            "keep_fraction": self.keep_fraction,
            "axes": list(self.axes),
            "taper": self.taper,
            "tukey_alpha": self.tukey_alpha,
        }

    def __repr__(self) -> str:
        arguments = ", ".join(f"{key}={value!r}" for key, value in self.params().items())
        return f"{type(self).__name__}({arguments})"

    def __call__(self, data: Any, spacing_mm: tuple[float, float, float] | None = None) -> Any:
        tensor, affine, _ = _split_input(data, spacing_mm)
        result = truncate_kspace(
            _float_tensor(tensor), self.keep_fraction, self.axes, taper=self.taper, tukey_alpha=self.tukey_alpha
        )
        return _rebuild(data, result, affine, self.params(), grid_changed=False)


class RicianNoiseMRI:
    """Add Rician noise at a given SNR (mean foreground signal / sigma, see ``add_rician_noise``).

    Args:
        snr: signal-to-noise ratio, ``> 0``.

    Call it as ``transform(data, spacing_mm=None, generator=None)``. The noise comes from ``generator``
    (torch's global generator when ``None``).

    Raises:
        ValueError: if ``snr`` is invalid.
    """

    def __init__(self, snr: float) -> None:
        if isinstance(snr, bool) or not isinstance(snr, numbers.Real) or not math.isfinite(snr) or snr <= 0:
            raise ValueError(f"snr must be a positive finite number, got {snr!r}.")
        self.snr = float(snr)

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> RicianNoiseMRI:
        """Build the transform from a ``params()`` or ``RandomRicianNoiseMRI`` record, ignoring ``"seed"``."""
        return cls(params["snr"])

    def params(self) -> dict[str, Any]:
        """Return the constructor arguments as a dict."""
        return {"snr": self.snr}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(snr={self.snr!r})"

    def __call__(
        self,
        data: Any,
        spacing_mm: tuple[float, float, float] | None = None,
        generator: torch.Generator | None = None,
    ) -> Any:
        tensor, affine, _ = _split_input(data, spacing_mm)
        result = add_rician_noise(_float_tensor(tensor), self.snr, generator=generator)
        return _rebuild(data, result, affine, self.params(), grid_changed=False)


def validate_range(
    name: str, value: object, lower: float, upper: float, *, open_lower: bool = True
) -> tuple[float, float]:
    """Return ``value`` as a ``(low, high)`` pair of floats with ``lower < low <= high <= upper``.

    With ``open_lower=False`` the lower bound may be reached (``lower <= low``).

    Raises:
        ValueError: naming ``name`` and the rule, if ``value`` is not such a pair.
    """
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != 2:
        raise ValueError(f"{name} must be a pair (low, high), got {value!r}.")
    low, high = value
    if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) for v in (low, high)):
        raise ValueError(f"{name} must contain finite numbers, got {value!r}.")
    lower_ok = lower < low if open_lower else lower <= low
    if not (lower_ok and low <= high <= upper):
        rule = "<" if open_lower else "<="
        raise ValueError(f"{name} must satisfy {lower} {rule} low <= high <= {upper}, got {value!r}.")
    return float(low), float(high)


def _require_generator(generator: object) -> torch.Generator:
    if not isinstance(generator, torch.Generator):
        raise ValueError(
            f"generator must be a torch.Generator, got {type(generator).__name__}; "
            "pass one explicitly, for example torch.Generator().manual_seed(0)."
        )
    return generator


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    value = torch.rand((), generator=generator, dtype=torch.float64, device=generator.device).item()
    return low + (high - low) * value


def _draw_seed(generator: torch.Generator) -> int:
    return int(torch.randint(0, 2**63 - 1, (), generator=generator, device=generator.device).item())


class RandomThickSliceMRI:
    """Apply ``ThickSliceMRI`` with a thickness, gap and profile drawn from configured ranges.

    Each call draws, from the ``generator`` passed in, the slice thickness (uniform in
    ``slice_thickness_mm_range``), then the gap (uniform in ``slice_gap_mm_range``), then the profile
    (uniform over ``profiles``). It returns ``(output, params)``, and ``ThickSliceMRI.from_params(params)``
    reproduces the output exactly. The Gaussian profile's FWHM is the drawn thickness.

    Args:
        slice_thickness_mm_range: ``(low, high)`` in mm, ``0 < low <= high``. Default ``(2.0, 6.0)``.
        slice_gap_mm_range: ``(low, high)`` in mm, ``0 <= low <= high``. Default ``(0.0, 0.0)``.
        profiles: profiles to choose from. Default ``("boxcar", "gaussian")``.
        slice_axis: spatial axis across the slices. Default 2.
        output_grid: ``"low"`` (default) or ``"original"``.

    Raises:
        ValueError: if an argument is invalid. The message names it.
    """

    def __init__(
        self,
        slice_thickness_mm_range: tuple[float, float] = (2.0, 6.0),
        *,
        slice_gap_mm_range: tuple[float, float] = (0.0, 0.0),
        profiles: tuple[str, ...] = SLICE_PROFILES,
        slice_axis: int = 2,
        output_grid: str = "low",
    ) -> None:
        self.slice_thickness_mm_range = validate_range(
            "slice_thickness_mm_range", slice_thickness_mm_range, 0, math.inf
        )
        self.slice_gap_mm_range = validate_range(
            "slice_gap_mm_range", slice_gap_mm_range, 0, math.inf, open_lower=False
        )
        if isinstance(profiles, str) or not profiles or any(profile not in SLICE_PROFILES for profile in profiles):
            raise ValueError(f"profiles must be a non-empty sequence of {', '.join(SLICE_PROFILES)}, got {profiles!r}.")
        self.profiles = tuple(profiles)
        # Building a transform at the upper bounds validates the other arguments now.
        ThickSliceMRI(self.slice_thickness_mm_range[1], slice_axis=slice_axis, output_grid=output_grid)
        self.slice_axis = int(slice_axis)
        self.output_grid = output_grid

    def sample_params(self, generator: torch.Generator) -> dict[str, Any]:
        """Draw the thickness, gap and profile from ``generator`` and return the full parameter record."""
        generator = _require_generator(generator)
        thickness_mm = _uniform(generator, *self.slice_thickness_mm_range)
        gap_mm = _uniform(generator, *self.slice_gap_mm_range)
        choice = torch.randint(len(self.profiles), (), generator=generator, device=generator.device)
        profile = self.profiles[int(choice.item())]
        return {
            "slice_thickness_mm": thickness_mm,
            "slice_axis": self.slice_axis,
            "slice_gap_mm": gap_mm,
            "profile": profile,
            "profile_fwhm_mm": thickness_mm if profile == "gaussian" else None,
            "output_grid": self.output_grid,
        }

    def __call__(
        self, data: Any, generator: torch.Generator, spacing_mm: tuple[float, float, float] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """Return ``(output, params)``. ``generator`` is required."""
        params = self.sample_params(generator)
        return ThickSliceMRI.from_params(params)(data, spacing_mm), params


class RandomKSpaceTruncationMRI:
    """Apply ``KSpaceTruncationMRI`` with ``keep_fraction`` drawn uniformly from ``keep_fraction_range``.

    One fraction is drawn per call and used for every axis in ``axes``. The call returns ``(output, params)``.

    Args:
        keep_fraction_range: ``(low, high)`` with ``0 < low <= high <= 1``. Default ``(0.25, 0.75)``.
        axes, taper, tukey_alpha: as for ``KSpaceTruncationMRI``.
    """

    def __init__(
        self,
        keep_fraction_range: tuple[float, float] = (0.25, 0.75),
        *,
        axes: tuple[int, ...] = (0, 1),
        taper: str = "none",
        tukey_alpha: float = 0.5,
    ) -> None:
        self.keep_fraction_range = validate_range("keep_fraction_range", keep_fraction_range, 0, 1)
        self._base_transform = KSpaceTruncationMRI(
            self.keep_fraction_range[1], axes=axes, taper=taper, tukey_alpha=tukey_alpha
        )

    def sample_params(self, generator: torch.Generator) -> dict[str, Any]:
        """Draw ``keep_fraction`` from ``generator`` and return the full parameter record."""
        generator = _require_generator(generator)
        params = self._base_transform.params()
        params["keep_fraction"] = _uniform(generator, *self.keep_fraction_range)
        return params

    def __call__(
        self, data: Any, generator: torch.Generator, spacing_mm: tuple[float, float, float] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """Return ``(output, params)``. ``generator`` is required."""
        params = self.sample_params(generator)
        return KSpaceTruncationMRI.from_params(params)(data, spacing_mm), params


class RandomRicianNoiseMRI:
    """Apply ``RicianNoiseMRI`` with an SNR drawn uniformly from ``snr_range``.

    Each call draws, from the ``generator`` passed in, the SNR and then a 63-bit ``seed``. The noise comes from
    a new generator seeded with ``seed`` on the input's device. The call returns ``(output, params)``, and
    ``RicianNoiseMRI.from_params(params)`` with ``torch.Generator(device=...).manual_seed(params["seed"])``
    reproduces the output exactly on the same device type.

    Args:
        snr_range: ``(low, high)`` with ``0 < low <= high``. Default ``(5.0, 40.0)``.
    """

    def __init__(self, snr_range: tuple[float, float] = (5.0, 40.0)) -> None:
        self.snr_range = validate_range("snr_range", snr_range, 0, math.inf)

    def sample_params(self, generator: torch.Generator) -> dict[str, Any]:
        """Draw the SNR and a noise seed from ``generator`` and return the parameter record."""
        generator = _require_generator(generator)
        snr = _uniform(generator, *self.snr_range)
        return {"snr": snr, "seed": _draw_seed(generator)}

    def __call__(
        self, data: Any, generator: torch.Generator, spacing_mm: tuple[float, float, float] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """Return ``(output, params)``. ``generator`` is required and only draws the parameters."""
        params = self.sample_params(generator)
        tensor, _, _ = _split_input(data, spacing_mm)
        noise_generator = torch.Generator(device=tensor.device).manual_seed(params["seed"])
        return RicianNoiseMRI.from_params(params)(data, spacing_mm, noise_generator), params
