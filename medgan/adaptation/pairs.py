"""Training pairs that a single scan provides for its own adaptation.

Super-resolution follows SMORE (Zhao et al., IEEE Transactions on Medical Imaging): a thick-slice MRI scan is
fine in-plane and coarse across slices. Degrading an in-plane axis with the slice axis's profile and factor gives a
(coarse, fine) pair along that axis, and permuting it into the network's scaled axis D gives a pair of the
same kind as the real problem.

Denoising: extra projection-domain noise added to a CT scan's own slices gives a (noisier, scan) pair.
"""

from __future__ import annotations

import logging
import math
import numbers
from dataclasses import dataclass

import numpy as np
import torch

from medgan.inference.restorer import volume_to_tensor
from medgan.physics.mri import thick_slice_sampling, thick_slices
from medgan.tasks import IntensityMapping
from medgan.transforms import LowDoseCT

logger = logging.getLogger(__name__)

SLICE_AXIS = 2
"""The volume axis across the thick slices. ``Restorer`` puts the volume's k axis on the network's D axis."""

IN_PLANE_AXES = (0, 1)

FOREGROUND_LEVEL = 0.1
"""A super-resolution patch counts as foreground where its target exceeds this value in network units (for
``mri-sr``, 10 % of the scan's 99.5th percentile)."""

FOREGROUND_MIN_FRACTION = 0.1
"""A patch is redrawn (up to ``FOREGROUND_MAX_DRAWS`` times) while less than this fraction of it is foreground."""

FOREGROUND_MAX_DRAWS = 5

_SCALE_TOLERANCE = 0.05


@dataclass(frozen=True)
class InPlanePair:
    """One in-plane axis of a scan, degraded like its slice axis, laid out as ``(D, H, W)`` tensors.

    D is the degraded in-plane axis, H the other in-plane axis and W the slice axis of the volume.

    Attributes:
        axis: the degraded volume axis (0 for i, 1 for j).
        coarse: ``(n_coarse, H, W)`` float32 network input, the in-plane axis averaged into thick slices.
        fine: ``(scale * n_coarse, H, W)`` float32 target, the scan's own voxels under those thick slices.
        thickness_mm: thickness of the in-plane profile in mm.
        gap_mm: gap between in-plane thick slices in mm.
        profile_fwhm_mm: FWHM of the Gaussian in-plane profile in mm, ``None`` for the boxcar.
        first_fine_index: index along ``axis`` of the first voxel in ``fine``.
    """

    axis: int
    coarse: torch.Tensor
    fine: torch.Tensor
    thickness_mm: float
    gap_mm: float
    profile_fwhm_mm: float | None
    first_fine_index: int

    def describe(self) -> dict[str, object]:
        """Return the pair's parameters as JSON-compatible values."""
        return {
            "axis": self.axis,
            "coarse_shape": list(self.coarse.shape),
            "fine_shape": list(self.fine.shape),
            "thickness_mm": self.thickness_mm,
            "gap_mm": self.gap_mm,
            "profile_fwhm_mm": self.profile_fwhm_mm,
            "first_fine_index": self.first_fine_index,
        }


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return int(value)


def _patch_size(value: object) -> tuple[int, int, int]:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != 3:
        raise ValueError(f"patch_size must be three positive integers (D, H, W), got {value!r}.")
    return tuple(_positive_int("patch_size", size) for size in value)  # type: ignore[return-value]


def in_plane_pair(
    array: np.ndarray | torch.Tensor,
    spacing_mm: tuple[float, float, float],
    axis: int,
    *,
    scale: int,
    slice_thickness_mm: float | None = None,
    profile: str = "boxcar",
    profile_fwhm_mm: float | None = None,
    warn_profile_scaling: bool = True,
) -> InPlanePair:
    """Degrade in-plane ``axis`` of an ``(i, j, k)`` array the way its slice axis k was degraded.

    The slice axis has slices ``spacing_mm[2]`` apart, each ``slice_thickness_mm`` thick (default: the
    spacing, so contiguous) with ``profile``. The in-plane profile is that profile scaled by
    ``scale * spacing_mm[axis] / spacing_mm[2]``, so that one in-plane thick slice spans ``scale`` voxels, the
    network's factor, exactly as one real slice spans ``scale`` output voxels. The thick slices are made by
    ``medgan.physics.mri.thick_slices``. The target of thick slice ``m`` is the ``scale`` voxels centred on it,
    so the pair follows the output grid convention of a super-resolution network: output voxel ``scale * m +
    r`` sits at ``centre_m + (r - (scale - 1) / 2) * spacing``. A warning is logged when the profile is scaled
    to a width other than the slice spacing, unless ``warn_profile_scaling`` is false.

    Raises:
        ValueError: if an argument is invalid, if the thick-slice centres do not fall on that output grid (an odd
            gap in in-plane voxels), or if the axis is too short for one thick slice.
    """
    if axis not in IN_PLANE_AXES:
        raise ValueError(f"axis must be an in-plane axis, 0 (i) or 1 (j), got {axis!r}.")
    scale = _positive_int("scale", scale)
    tensor = torch.as_tensor(np.asarray(array, dtype=np.float32) if not isinstance(array, torch.Tensor) else array)
    if tensor.ndim != 3:
        raise ValueError(f"array must be 3D (i, j, k), got shape {tuple(tensor.shape)}.")
    tensor = tensor.to(torch.float32)
    in_plane_mm = float(spacing_mm[axis])
    slice_spacing_mm = float(spacing_mm[SLICE_AXIS])
    if slice_thickness_mm is None:
        slice_thickness_mm = slice_spacing_mm
    if slice_thickness_mm <= 0 or not math.isfinite(slice_thickness_mm):
        raise ValueError(f"slice_thickness_mm must be a positive finite number, got {slice_thickness_mm!r}.")

    ratio = scale * in_plane_mm / slice_spacing_mm
    if warn_profile_scaling and abs(ratio - 1) > _SCALE_TOLERANCE:
        logger.warning("Slices are %.3g mm apart but %d voxels of %.3g mm along in-plane axis %s span %.3g mm; "
                       "the profile along %s is scaled to %d voxels, the network's factor.", slice_spacing_mm,
                       scale, in_plane_mm, "ij"[axis], scale * in_plane_mm, "ij"[axis], scale)
    thickness_mm = slice_thickness_mm * ratio
    gap_mm = (slice_spacing_mm - slice_thickness_mm) * ratio
    fwhm_mm = None if profile_fwhm_mm is None else profile_fwhm_mm * ratio
    if profile == "gaussian" and fwhm_mm is None:
        fwhm_mm = thickness_mm

    n_fine = int(tensor.shape[axis])
    if n_fine < scale:
        raise ValueError(f"In-plane axis {'ij'[axis]} has {n_fine} voxels, fewer than the factor {scale}; adapting "
                         f"needs at least {scale} voxels along each in-plane axis.")
    sampling = thick_slice_sampling(n_fine, in_plane_mm, thickness_mm, slice_gap_mm=gap_mm, profile=profile,
                                    profile_fwhm_mm=fwhm_mm)
    # Thick slice m covers fine voxels offset + scale * m + r, r = 0 .. scale - 1, centred on its centre.
    offset = sampling.first_centre_index - (scale - 1) / 2
    if abs(offset - round(offset)) > 1e-6 or abs(sampling.step_index - scale) > 1e-6:
        raise ValueError(f"The in-plane thick slices (centre {sampling.first_centre_index:g}, step "
                         f"{sampling.step_index:g} voxels) do not fall on the output grid of factor {scale}. Use a "
                         "slice_thickness_mm that leaves a gap (slice spacing minus thickness) of an even number "
                         "of output voxels, or none.")
    offset = int(round(offset))
    first = max(0, math.ceil(-offset / scale))
    last = min(sampling.n_thick, (n_fine - offset) // scale)
    if last <= first:
        raise ValueError(f"Axis {axis} has {n_fine} voxels, too few for one thick slice of {scale} voxels.")

    coarse = thick_slices(tensor, sampling, axis).narrow(axis, first, last - first)
    fine = tensor.narrow(axis, offset + scale * first, scale * (last - first))
    other = IN_PLANE_AXES[1 - axis]
    order = (axis, other, SLICE_AXIS)
    return InPlanePair(
        axis=axis,
        coarse=coarse.permute(order).contiguous(),
        fine=fine.permute(order).contiguous(),
        thickness_mm=float(thickness_mm),
        gap_mm=float(gap_mm),
        profile_fwhm_mm=None if fwhm_mm is None or profile == "boxcar" else float(fwhm_mm),
        first_fine_index=offset + scale * first,
    )


def _randint(generator: torch.Generator, high: int) -> int:
    return int(torch.randint(high, (), generator=generator).item())


def _flip(tensors: list[torch.Tensor], generator: torch.Generator) -> list[torch.Tensor]:
    for dim in range(3):
        if torch.rand((), generator=generator).item() < 0.5:
            tensors = [tensor.flip(dim) for tensor in tensors]
    return tensors


class InPlanePatchSampler:
    """Draw ``(coarse, fine)`` batches, ``(B, 1, D, H, W)`` and ``(B, 1, scale * D, H, W)``, from in-plane pairs.

    Each patch picks one of the pairs at random, a random position, and random flips along D, H and W (a flip
    along D keeps the pairing because each thick slice's fine voxels are flipped with it). A patch is redrawn
    up to ``FOREGROUND_MAX_DRAWS`` times while its target is mostly background.

    Args:
        pairs: in-plane pairs of one scan in network units, all with the same ``scale``.
        scale: fine voxels per coarse voxel along D.
        patch_size: ``(D, H, W)`` of the coarse patch; each size is clipped to the smallest pair.
        flips: draw random flips.
    """

    def __init__(self, pairs: list[InPlanePair], scale: int, patch_size: tuple[int, int, int],
                 flips: bool = True) -> None:
        if not pairs:
            raise ValueError("InPlanePatchSampler needs at least one in-plane pair.")
        self.pairs = pairs
        self.scale = _positive_int("scale", scale)
        requested = _patch_size(patch_size)
        smallest = [min(int(pair.coarse.shape[dim]) for pair in pairs) for dim in range(3)]
        self.patch_size = tuple(min(size, limit) for size, limit in zip(requested, smallest))
        if self.patch_size != requested:
            logger.info("Adaptation patch %s clipped to %s, the scan's extent.", requested, self.patch_size)
        self.flips = flips

    def _draw(self, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        pair = self.pairs[_randint(generator, len(self.pairs))]
        pd, ph, pw = self.patch_size
        d0 = _randint(generator, pair.coarse.shape[0] - pd + 1)
        h0 = _randint(generator, pair.coarse.shape[1] - ph + 1)
        w0 = _randint(generator, pair.coarse.shape[2] - pw + 1)
        coarse = pair.coarse[d0:d0 + pd, h0:h0 + ph, w0:w0 + pw]
        fine = pair.fine[self.scale * d0:self.scale * (d0 + pd), h0:h0 + ph, w0:w0 + pw]
        return coarse, fine

    def sample_pair(self, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw one ``(coarse, fine)`` pair of ``(1, D, H, W)`` patches."""
        for _ in range(FOREGROUND_MAX_DRAWS):
            coarse, fine = self._draw(generator)
            if (fine > FOREGROUND_LEVEL).float().mean().item() >= FOREGROUND_MIN_FRACTION:
                break
        if self.flips:
            coarse, fine = _flip([coarse, fine], generator)
        return coarse[None], fine[None]

    def __call__(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        pairs = [self.sample_pair(generator) for _ in range(batch_size)]
        return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])


class CTNoisePatchSampler:
    """Draw ``(noisier, scan)`` batches of ``(B, 1, D, H, W)`` patches from one CT scan, in network units.

    The noisier patch is the scan plus projection-domain noise that lowers its dose to ``dose_fraction`` of
    the scan's own (``LowDoseCT`` with ``assume_noiseless_input=False``). Each slice is forward-projected
    once, on first use. The noise of each sample is drawn on the cached sinograms and reconstructed onto the
    patch's pixels only.

    Args:
        hu: ``(D, H, W)`` scan in HU, slices along D.
        pixel_spacing_mm: ``(row_mm, col_mm)`` of a slice (along H and W).
        intensity: map from HU to network units.
        simulator: the ``LowDoseCT`` that draws the noise.
        patch_size: ``(D, H, W)``, each size clipped to the scan.
        flips: draw random flips.
    """

    def __init__(self, hu: torch.Tensor, pixel_spacing_mm: tuple[float, float], intensity: IntensityMapping,
                 simulator: LowDoseCT, patch_size: tuple[int, int, int], flips: bool = True) -> None:
        if not isinstance(hu, torch.Tensor) or hu.ndim != 3:
            raise ValueError(f"hu must be a (D, H, W) tensor, got {getattr(hu, 'shape', hu)!r}.")
        self.hu = hu.to(torch.float32)
        self.pixel_spacing_mm = (float(pixel_spacing_mm[0]), float(pixel_spacing_mm[1]))
        self.intensity = intensity
        self.simulator = simulator
        self.geometry = simulator.geometry((int(hu.shape[1]), int(hu.shape[2])), self.pixel_spacing_mm)
        self.patch_size = tuple(min(size, int(limit)) for size, limit in zip(_patch_size(patch_size), hu.shape))
        self.flips = flips
        self._sinograms: dict[int, torch.Tensor] = {}

    @classmethod
    def from_volume_array(cls, array: np.ndarray, spacing_mm: tuple[float, float, float], **kwargs):
        """Build the sampler for an ``(i, j, k)`` array; the slices are along k, as in ``Restorer``."""
        hu = volume_to_tensor(np.asarray(array, dtype=np.float32))[0, 0]
        return cls(hu, (spacing_mm[1], spacing_mm[0]), **kwargs)

    def clean_sinogram(self, index: int) -> torch.Tensor:
        """Return the line integrals of slice ``index``, computed on first use."""
        if index not in self._sinograms:
            sinogram, _ = self.simulator.clean_sinogram(self.hu[index], self.pixel_spacing_mm)
            self._sinograms[index] = sinogram
        return self._sinograms[index]

    def sample_pair(self, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw one ``(noisier, scan)`` pair of ``(1, D, H, W)`` patches."""
        pd, ph, pw = self.patch_size
        d0 = _randint(generator, self.hu.shape[0] - pd + 1)
        h0 = _randint(generator, self.hu.shape[1] - ph + 1)
        w0 = _randint(generator, self.hu.shape[2] - pw + 1)
        clean = torch.stack([self.clean_sinogram(index) for index in range(d0, d0 + pd)])
        noise_hu = self.simulator.noise_hu_from_sinogram(clean, self.geometry, generator, (h0, h0 + ph, w0, w0 + pw))
        scan = self.hu[d0:d0 + pd, h0:h0 + ph, w0:w0 + pw]
        noisier = scan + noise_hu
        if self.flips:
            noisier, scan = _flip([noisier, scan], generator)
        return self.intensity.forward(noisier)[None].float(), self.intensity.forward(scan)[None].float()

    def __call__(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        pairs = [self.sample_pair(generator) for _ in range(batch_size)]
        return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])
