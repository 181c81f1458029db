"""Low-dose CT simulation by noise insertion in the projection domain."""

from __future__ import annotations

import logging
import math
import numbers
from typing import Any

import torch

from medgan.physics.ct import (
    FILTER_NAMES,
    MU_WATER_PER_MM,
    ParallelBeamGeometry,
    filtered_back_projection,
    forward_project,
    hu_to_mu,
    mu_delta_to_hu_delta,
    poisson_log_noise,
    validate_noise_parameters,
)

logger = logging.getLogger(__name__)

DEFAULT_PHOTONS_PER_RAY = 1e5
DEFAULT_ELECTRONIC_NOISE_STD_PHOTONS = 5.0


def _validate_hu(hu: object) -> torch.Tensor:
    if not isinstance(hu, torch.Tensor):
        raise ValueError(f"hu must be a torch.Tensor, got {type(hu).__name__}.")
    if hu.ndim not in (3, 5):
        raise ValueError(f"hu must have shape (D, H, W) or (B, C, D, H, W), got {tuple(hu.shape)}.")
    return hu


class LowDoseCT:
    """Simulate a reduced-dose scan of a CT volume by adding reconstructed projection-domain noise.

    The output is ``low_hu = hu + 1000 / mu_water * FBP(noisy_sinogram - clean_sinogram)`` where
    ``clean_sinogram = forward_project(hu_to_mu(hu))`` is computed per axial slice and
    ``noisy_sinogram = poisson_log_noise(clean_sinogram, ...)`` draws the detector counts at
    ``dose_fraction`` of the full-dose photons. Only the reconstructed noise is added to the input. The image
    content and its mean HU are therefore kept, up to the small bias of the log of Poisson counts. The
    discretisation error of projecting and reconstructing the object does not enter the output.

    Args:
        dose_fraction: simulated dose relative to the input's dose, in ``(0, 1]``. Required.
        photons_per_ray: incident photons per detector ray at full dose. Default 1e5. This is an
            order-of-magnitude modelling assumption for clinical CT before the bowtie filter, not a
            calibrated scanner value.
        electronic_noise_std_photons: standard deviation of the additive Gaussian electronic noise, in photon
            counts. Default 5.0, a modelling assumption of the same kind.
        n_views: number of view angles over 180 degrees. Default 720.
        filter_name: reconstruction filter, one of ``"ram-lak"`` (default), ``"shepp-logan"``, ``"hann"``
            and ``"cosine"`` (see ``filtered_back_projection``). A smoothing window lowers the noise and
            makes it coarser.
        mu_water_per_mm: attenuation of water in 1/mm for the HU conversion. Default 0.0193, water at
            70 keV from NIST XCOM (see ``medgan.physics.ct.MU_WATER_PER_MM``).

    Call it as ``transform(hu, spacing_mm, generator=None, roi=None)``. ``hu`` has shape ``(D, H, W)`` or
    ``(B, C, D, H, W)``, where the slices are along D and each slice is the H x W plane. ``spacing_mm`` is
    ``(row_mm, col_mm)`` of that plane. The result is float32 low-dose HU of the same shape, or of shape
    ``(..., D, h1 - h0, w1 - w0)`` with ``roi=(h0, h1, w0, w1)``. The forward projection always covers the
    full slice. The output is deterministic for a given ``generator`` state. ``generator=None`` draws from
    torch's global generator.

    Note:
        This is a 2D parallel-beam approximation applied to each axial slice independently. It has no fan or
        cone beam, no bowtie filter and no polychromatic spectrum (so no beam hardening). The noise is
        therefore uncorrelated between slices and its texture only approximates a clinical scanner's.

    Warning:
        A normal-dose input already contains noise. The output noise variance is the input's variance plus
        the simulated variance, so the result is noisier than a real scan at ``dose_fraction`` would be. The
        added variance corresponds to ``photons_per_ray * dose_fraction`` photons per ray.

    Raises:
        ValueError: if an argument is invalid. The message names the argument and the value received.
    """

    def __init__(
        self,
        dose_fraction: float,
        *,
        photons_per_ray: float = DEFAULT_PHOTONS_PER_RAY,
        electronic_noise_std_photons: float = DEFAULT_ELECTRONIC_NOISE_STD_PHOTONS,
        n_views: int = 720,
        filter_name: str = "ram-lak",
        mu_water_per_mm: float = MU_WATER_PER_MM,
    ) -> None:
        photons_per_ray, dose_fraction, electronic_noise_std_photons = validate_noise_parameters(
            photons_per_ray, dose_fraction, electronic_noise_std_photons
        )
        if isinstance(n_views, bool) or not isinstance(n_views, numbers.Integral) or n_views <= 0:
            raise ValueError(f"n_views must be a positive integer, got {n_views!r}.")
        if filter_name not in FILTER_NAMES:
            raise ValueError(f"filter_name must be one of {', '.join(FILTER_NAMES)}, got {filter_name!r}.")
        if (
            isinstance(mu_water_per_mm, bool)
            or not isinstance(mu_water_per_mm, numbers.Real)
            or not math.isfinite(mu_water_per_mm)
            or mu_water_per_mm <= 0
        ):
            raise ValueError(f"mu_water_per_mm must be a positive finite number, got {mu_water_per_mm!r}.")

        self.dose_fraction = dose_fraction
        self.photons_per_ray = photons_per_ray
        self.electronic_noise_std_photons = electronic_noise_std_photons
        self.n_views = int(n_views)
        self.filter_name = filter_name
        self.mu_water_per_mm = float(mu_water_per_mm)

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> LowDoseCT:
        """Build the transform from a ``RandomLowDoseCT`` parameter record, ignoring its ``"seed"``."""
        return cls(
            params["dose_fraction"],
            photons_per_ray=params["photons_per_ray"],
            electronic_noise_std_photons=params["electronic_noise_std_photons"],
            n_views=params["n_views"],
            filter_name=params["filter_name"],
            mu_water_per_mm=params["mu_water_per_mm"],
        )

    def params(self) -> dict[str, Any]:
        """Return the constructor arguments as a dict."""
        return {
            "dose_fraction": self.dose_fraction,
            "photons_per_ray": self.photons_per_ray,
            "electronic_noise_std_photons": self.electronic_noise_std_photons,
            "n_views": self.n_views,
            "filter_name": self.filter_name,
            "mu_water_per_mm": self.mu_water_per_mm,
        }

    def __repr__(self) -> str:
        arguments = ", ".join(f"{key}={value!r}" for key, value in self.params().items())
        return f"{type(self).__name__}({arguments})"

    def geometry(self, image_shape: tuple[int, int], spacing_mm: tuple[float, float]) -> ParallelBeamGeometry:
        """Return the scan geometry for slices of ``image_shape = (H, W)`` with ``spacing_mm = (row_mm, col_mm)``."""
        try:
            return ParallelBeamGeometry(tuple(image_shape), spacing_mm, n_views=self.n_views)
        except ValueError as error:
            message = f"Invalid spacing_mm {spacing_mm!r} or slice shape {tuple(image_shape)}: {error}"
            raise ValueError(message) from error

    def clean_sinogram(
        self, hu: torch.Tensor, spacing_mm: tuple[float, float]
    ) -> tuple[torch.Tensor, ParallelBeamGeometry]:
        """Forward-project every slice of ``hu`` and return ``(sinogram, geometry)``.

        ``hu`` has shape ``(..., H, W)`` and the float32 sinogram has shape ``(..., n_views, n_detectors)``.
        A dataset can cache both and pass them to ``noise_hu_from_sinogram``, which skips the forward
        projection, the most expensive step.
        """
        if not isinstance(hu, torch.Tensor) or hu.ndim < 2:
            raise ValueError(f"hu must be a torch.Tensor of shape (..., H, W), got {getattr(hu, 'shape', hu)!r}.")
        geometry = self.geometry(tuple(hu.shape[-2:]), spacing_mm)
        slices = hu.detach().to(torch.float32).reshape(-1, *geometry.image_shape)
        sinogram = forward_project(hu_to_mu(slices, self.mu_water_per_mm), geometry)
        return sinogram.reshape(*hu.shape[:-2], geometry.n_views, geometry.n_detectors), geometry

    def noise_hu_from_sinogram(
        self,
        clean_sinogram: torch.Tensor,
        geometry: ParallelBeamGeometry,
        generator: torch.Generator | None = None,
        roi: tuple[int, int, int, int] | None = None,
    ) -> torch.Tensor:
        """Draw the low-dose noise for a clean sinogram and return it reconstructed, in HU.

        ``clean_sinogram`` has shape ``(..., n_views, n_detectors)`` as returned by ``clean_sinogram``. The
        float32 result has shape ``(..., h, w)``, the ROI size or the full slice. Add it to the matching
        crop of the input HU to get the low-dose image.
        """
        if not isinstance(clean_sinogram, torch.Tensor) or clean_sinogram.ndim < 2:
            raise ValueError(
                "clean_sinogram must be a torch.Tensor of shape (..., n_views, n_detectors), "
                f"got {getattr(clean_sinogram, 'shape', clean_sinogram)!r}."
            )
        h0, h1, w0, w1 = geometry.validate_roi(roi)
        sinogram = clean_sinogram.detach().to(torch.float32).reshape(-1, *clean_sinogram.shape[-2:])
        with torch.no_grad():
            noisy = poisson_log_noise(
                sinogram,
                photons_per_ray=self.photons_per_ray,
                dose_fraction=self.dose_fraction,
                electronic_noise_std_photons=self.electronic_noise_std_photons,
                generator=generator,
            )
            # FBP is linear, so reconstructing the sinogram difference gives exactly the noise image.
            noise_mu = filtered_back_projection(
                noisy - sinogram, geometry, filter_name=self.filter_name, roi=(h0, h1, w0, w1)
            )
        noise_hu = mu_delta_to_hu_delta(noise_mu, self.mu_water_per_mm)
        return noise_hu.reshape(*clean_sinogram.shape[:-2], h1 - h0, w1 - w0)

    def __call__(
        self,
        hu: torch.Tensor,
        spacing_mm: tuple[float, float],
        generator: torch.Generator | None = None,
        roi: tuple[int, int, int, int] | None = None,
    ) -> torch.Tensor:
        """Return the simulated low-dose HU as float32. The class docstring describes the arguments."""
        hu = _validate_hu(hu)
        sinogram, geometry = self.clean_sinogram(hu, spacing_mm)
        h0, h1, w0, w1 = geometry.validate_roi(roi)
        noise_hu = self.noise_hu_from_sinogram(sinogram, geometry, generator, (h0, h1, w0, w1))
        logger.debug(
            "Simulated dose_fraction=%g on %d slices of shape %s.",
            self.dose_fraction,
            sinogram[..., 0, 0].numel(),
            geometry.image_shape,
        )
        return hu[..., h0:h1, w0:w1].to(torch.float32) + noise_hu


class RandomLowDoseCT:
    """Apply ``LowDoseCT`` with a dose fraction drawn uniformly from ``dose_fraction_range``.

    Each call draws, from the ``generator`` passed in, first the dose fraction and then a 63-bit ``seed``.
    The noise comes from a new generator seeded with ``seed`` on the input's device, never from torch's
    global generator. The call returns ``(low_hu, params)``, where ``params`` contains every ``LowDoseCT``
    argument plus ``"seed"``. ``LowDoseCT.from_params(params)`` called with
    ``torch.Generator(device=hu.device).manual_seed(params["seed"])`` reproduces the output exactly on the
    same device type.

    Args:
        dose_fraction_range: ``(low, high)`` with ``0 < low <= high <= 1``. Default ``(0.1, 0.5)``.
        **kwargs: the keyword arguments of ``LowDoseCT`` (``photons_per_ray``,
            ``electronic_noise_std_photons``, ``n_views``, ``filter_name``, ``mu_water_per_mm``) with the
            same defaults.

    Raises:
        ValueError: if an argument is invalid. The message names the argument and the value received.
    """

    def __init__(self, dose_fraction_range: tuple[float, float] = (0.1, 0.5), **kwargs: Any) -> None:
        if isinstance(dose_fraction_range, (str, bytes)) or not hasattr(dose_fraction_range, "__len__"):
            raise ValueError(f"dose_fraction_range must be a pair (low, high), got {dose_fraction_range!r}.")
        if len(dose_fraction_range) != 2:
            raise ValueError(f"dose_fraction_range must be a pair (low, high), got {dose_fraction_range!r}.")
        low, high = dose_fraction_range
        if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in (low, high)):
            raise ValueError(f"dose_fraction_range must contain numbers, got {dose_fraction_range!r}.")
        if not 0 < low <= high <= 1:
            raise ValueError(f"dose_fraction_range must satisfy 0 < low <= high <= 1, got {dose_fraction_range!r}.")
        # Building a transform at the upper bound validates the other arguments now rather than at the first call.
        self._base_transform = LowDoseCT(float(high), **kwargs)
        self.dose_fraction_range = (float(low), float(high))

    def __repr__(self) -> str:
        arguments = ", ".join(
            f"{key}={value!r}" for key, value in self._base_transform.params().items() if key != "dose_fraction"
        )
        return f"{type(self).__name__}(dose_fraction_range={self.dose_fraction_range!r}, {arguments})"

    def sample_params(self, generator: torch.Generator) -> dict[str, Any]:
        """Draw a dose fraction and a noise seed from ``generator`` and return the full parameter record."""
        if not isinstance(generator, torch.Generator):
            raise ValueError(
                f"generator must be a torch.Generator, got {type(generator).__name__}; "
                "pass one explicitly, for example torch.Generator().manual_seed(0)."
            )
        low, high = self.dose_fraction_range
        uniform = torch.rand((), generator=generator, dtype=torch.float64, device=generator.device).item()
        seed = int(torch.randint(0, 2**63 - 1, (), generator=generator, device=generator.device).item())
        params = self._base_transform.params()
        params["dose_fraction"] = low + (high - low) * uniform
        params["seed"] = seed
        return params

    def noise_hu_from_sinogram(
        self,
        clean_sinogram: torch.Tensor,
        geometry: ParallelBeamGeometry,
        generator: torch.Generator,
        roi: tuple[int, int, int, int] | None = None,
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        """Draw parameters from ``generator`` and return ``(noise_hu, params)`` for a cached clean sinogram.

        See ``LowDoseCT.noise_hu_from_sinogram`` for shapes.
        """
        params = self.sample_params(generator)
        noise_generator = torch.Generator(device=clean_sinogram.device).manual_seed(params["seed"])
        transform = LowDoseCT.from_params(params)
        return transform.noise_hu_from_sinogram(clean_sinogram, geometry, noise_generator, roi), params

    def __call__(
        self,
        hu: torch.Tensor,
        spacing_mm: tuple[float, float],
        generator: torch.Generator,
        roi: tuple[int, int, int, int] | None = None,
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        """Return ``(low_hu, params)``. ``generator`` is required and only draws the parameters."""
        hu = _validate_hu(hu)
        params = self.sample_params(generator)
        noise_generator = torch.Generator(device=hu.device).manual_seed(params["seed"])
        low_hu = LowDoseCT.from_params(params)(hu, spacing_mm, noise_generator, roi)
        return low_hu, params
