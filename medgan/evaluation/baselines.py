"""Classical baselines that a restoration model must beat, each producing a volume on the reference grid.

Denoising (CT): a Gaussian filter whose sigma is tuned on a validation case, non-local means
(``skimage.restoration.denoise_nl_means``), and BM3D / BM4D from the ``bm3d`` / ``bm4d`` packages when they are
installed. Super-resolution (MR): linear and cubic B-spline interpolation of the thick-slice input onto the
reference grid.
"""

from __future__ import annotations

import importlib.util
import itertools
import logging
from dataclasses import dataclass, field

import numpy as np

from medgan.evaluation.metrics import psnr_db
from medgan.evaluation.protocols import Protocol
from medgan.io.volume import Volume

logger = logging.getLogger(__name__)

CT_BASELINES = ("gaussian", "nlm", "bm3d", "bm4d")
MR_BASELINES = ("linear", "bspline")

GAUSSIAN_SIGMAS_VOXELS = (0.5, 0.75, 1.0, 1.5, 2.0, 3.0)
"""Sigmas tried for the Gaussian baseline, in voxels, each in-plane only and in 3D."""

NLM_PATCH_SIZE = 5
NLM_PATCH_DISTANCE = 6
NLM_H_PER_SIGMA = 0.8
"""NLM filter strength ``h`` as a multiple of the estimated noise sigma, as in scikit-image's NLM example for
``fast_mode=True``."""


def baselines_for(protocol: Protocol) -> tuple[str, ...]:
    """Return the baseline names that apply to ``protocol``'s modality."""
    return CT_BASELINES if protocol.is_ct else MR_BASELINES


def gaussian_filter_volume(array: np.ndarray, sigma_voxels: tuple[float, float, float]) -> np.ndarray:
    """Smooth an ``(i, j, k)`` array with a Gaussian of ``sigma_voxels`` per axis; edges repeat the nearest voxel."""
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(np.asarray(array, dtype=np.float64), sigma=sigma_voxels, mode="nearest")


def choose_gaussian_sigma(input_hu: np.ndarray, reference_hu: np.ndarray, protocol: Protocol,
                          sigmas_voxels: tuple[float, ...] = GAUSSIAN_SIGMAS_VOXELS
                          ) -> tuple[tuple[float, float, float], list[dict]]:
    """Return the Gaussian sigma ``(i, j, k)`` in voxels with the highest PSNR under ``protocol``, and every score.

    Each sigma is tried in-plane only ``(s, s, 0)`` and in 3D ``(s, s, s)``.
    """
    if not sigmas_voxels or any(not s > 0 for s in sigmas_voxels):
        raise ValueError(f"sigmas_voxels must be positive numbers, got {sigmas_voxels!r}.")
    scores = []
    for sigma, three_d in itertools.product(sigmas_voxels, (False, True)):
        sigma_voxels = (float(sigma), float(sigma), float(sigma) if three_d else 0.0)
        smoothed = gaussian_filter_volume(input_hu, sigma_voxels)
        prepared = protocol.prepare(reference_hu, smoothed)
        score = psnr_db(prepared.arrays[0], prepared.arrays[1], protocol.data_range, prepared.mask)
        scores.append({"sigma_voxels": list(sigma_voxels), "psnr_db": score})
    best = max(scores, key=lambda item: item["psnr_db"])
    return tuple(best["sigma_voxels"]), scores  # type: ignore[return-value]


def estimate_noise_sigma(array: np.ndarray) -> float:
    """Estimate the Gaussian noise sigma of an ``(i, j, k)`` array, in its units.

    scikit-image's wavelet estimator runs on each slice along ``k`` and the median is returned. Run on the
    whole volume, it underestimates the noise of volumes with few slices (by about a third for 3 slices).
    """
    from skimage.restoration import estimate_sigma

    values = np.asarray(array, dtype=np.float64)
    return float(np.median([estimate_sigma(values[:, :, k]) for k in range(values.shape[2])]))


def nlm_denoise(array: np.ndarray, mode: str = "2d") -> tuple[np.ndarray, dict]:
    """Denoise with non-local means and return the result and its parameters.

    ``mode="2d"`` filters each slice along ``k`` on its own and ``"3d"`` filters the volume with 3D patches. The
    noise sigma is estimated once per volume (`estimate_noise_sigma`), and ``h = 0.8 sigma``.
    """
    from skimage.restoration import denoise_nl_means

    if mode not in ("2d", "3d"):
        raise ValueError(f"mode must be '2d' or '3d', got {mode!r}.")
    values = np.asarray(array, dtype=np.float64)
    sigma = estimate_noise_sigma(values)
    parameters = {"mode": mode, "patch_size": NLM_PATCH_SIZE, "patch_distance": NLM_PATCH_DISTANCE,
                  "sigma_estimated": sigma, "h": NLM_H_PER_SIGMA * sigma, "fast_mode": True}
    if sigma <= 0:
        logger.info("NLM: the estimated noise sigma is 0, so the input is returned unchanged.")
        return values.copy(), parameters
    options = dict(patch_size=NLM_PATCH_SIZE, patch_distance=NLM_PATCH_DISTANCE, h=NLM_H_PER_SIGMA * sigma,
                   sigma=sigma, fast_mode=True)
    if mode == "3d":
        return denoise_nl_means(values, **options), parameters
    result = np.empty_like(values)
    for k in range(values.shape[2]):
        result[:, :, k] = denoise_nl_means(values[:, :, k], **options)
    return result, parameters


def bm3d_denoise(array: np.ndarray) -> tuple[np.ndarray, dict]:
    """Denoise each slice along ``k`` with BM3D (``bm3d`` package) at the estimated noise sigma."""
    import bm3d

    values = np.asarray(array, dtype=np.float64)
    sigma = estimate_noise_sigma(values)
    result = np.empty_like(values)
    for k in range(values.shape[2]):
        result[:, :, k] = bm3d.bm3d(values[:, :, k], sigma_psd=sigma)
    return result, {"sigma_psd_estimated": sigma, "profile": "np", "per_slice_axis": "k"}


def bm4d_denoise(array: np.ndarray) -> tuple[np.ndarray, dict]:
    """Denoise the volume with BM4D (``bm4d`` package) at the estimated noise sigma."""
    import bm4d

    values = np.asarray(array, dtype=np.float64)
    sigma = estimate_noise_sigma(values)
    return np.asarray(bm4d.bm4d(values, sigma_psd=sigma), dtype=np.float64), {"sigma_psd_estimated": sigma,
                                                                              "profile": "np"}


def interpolate_to_grid(low_resolution: Volume, shape: tuple[int, int, int], affine: np.ndarray,
                        order: int) -> np.ndarray:
    """Interpolate ``low_resolution`` onto the grid ``(shape, affine)`` with a B-spline of ``order`` (1 or 3).

    Output voxel ``m`` is sampled at the input voxel coordinate ``inv(A_input) @ A_output @ m``, so voxel
    centres follow both affines. For thick slices made from the output grid (``ThickSliceMRI``, ``s`` output
    slices per thick slice) that is input coordinate ``(m + 0.5) / s - 0.5`` along the slice axis. Points beyond
    the first or last input voxel centre take the nearest edge value.
    """
    from scipy.ndimage import affine_transform

    if order not in (1, 3):
        raise ValueError(f"order must be 1 (linear) or 3 (cubic B-spline), got {order!r}.")
    mapping = np.linalg.inv(low_resolution.affine) @ np.asarray(affine, dtype=np.float64)
    matrix = mapping[:3, :3]
    if np.allclose(matrix, np.diag(np.diag(matrix)), atol=1e-9):
        # A diagonal matrix lets scipy take the fast axis-by-axis path.
        matrix = np.diag(matrix)
    return affine_transform(np.asarray(low_resolution.array, dtype=np.float64), matrix, offset=mapping[:3, 3],
                            output_shape=tuple(shape), order=order, mode="nearest", prefilter=order > 1)


@dataclass
class Baselines:
    """The requested baselines of one evaluation, their tuned parameters and those skipped.

    Call `fit` once on the validation case before `apply`.
    """

    names: tuple[str, ...]
    protocol: Protocol
    parameters: dict[str, dict] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        allowed = baselines_for(self.protocol)
        unknown = [name for name in self.names if name not in CT_BASELINES + MR_BASELINES]
        if unknown:
            raise ValueError(f"Unknown baseline {', '.join(unknown)}; medgan has {', '.join(CT_BASELINES)} for CT "
                             f"and {', '.join(MR_BASELINES)} for MRI.")
        mismatched = [name for name in self.names if name not in allowed]
        if mismatched:
            raise ValueError(f"Baselines {', '.join(mismatched)} do not apply to protocol {self.protocol.name}; "
                             f"choose from {', '.join(allowed)}.")
        available = []
        for name in self.names:
            if name in ("bm3d", "bm4d") and importlib.util.find_spec(name) is None:
                reason = f"the {name} package is not installed (pip install {name})"
                logger.warning("Skipping the %s baseline: %s.", name, reason)
                self.skipped[name] = reason
                continue
            available.append(name)
        self.names = tuple(available)

    def fit(self, case_id: str, input_volume: Volume, reference: Volume) -> None:
        """Tune the parameters that need a validation case (the Gaussian sigma) on ``case_id``."""
        if "gaussian" not in self.names:
            return
        sigma, scores = choose_gaussian_sigma(input_volume.array, reference.array, self.protocol)
        self.parameters["gaussian"] = {"sigma_voxels": list(sigma), "validation_case": case_id,
                                       "selection": f"highest PSNR under protocol {self.protocol.name}",
                                       "grid": scores}
        logger.info("Gaussian baseline: sigma %s voxels chosen on case %s.", sigma, case_id)

    def apply(self, name: str, case_id: str, input_volume: Volume, reference: Volume) -> np.ndarray:
        """Return baseline ``name`` applied to ``input_volume``, on the reference grid, in physical units."""
        if name == "gaussian":
            if "gaussian" not in self.parameters:
                raise RuntimeError("The Gaussian baseline is not fitted; call fit() on a validation case first.")
            return gaussian_filter_volume(input_volume.array, tuple(self.parameters["gaussian"]["sigma_voxels"]))
        if name in ("linear", "bspline"):
            order = 1 if name == "linear" else 3
            self.parameters[name] = {"order": order, "function": "scipy.ndimage.affine_transform",
                                     "centre_convention": "output voxel m at input coordinate (m + 0.5) / s - 0.5",
                                     "edges": "nearest"}
            return interpolate_to_grid(input_volume, reference.shape, reference.affine, order)
        denoisers = {"nlm": nlm_denoise, "bm3d": bm3d_denoise, "bm4d": bm4d_denoise}
        result, parameters = denoisers[name](input_volume.array)
        # The estimated sigma differs per case, so every case's parameters are kept.
        self.parameters.setdefault(name, {"per_case": {}})["per_case"][case_id] = parameters
        return result
