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
)
from medgan.physics.fanbeam import (
    DEFAULT_FAN_VIEWS,
    DEFAULT_SOURCE_TO_DETECTOR_MM,
    DEFAULT_SOURCE_TO_ISOCENTER_MM,
    FanBeamGeometry,
)
from medgan.physics.noise import (
    bowtie_photon_fraction,
    insert_dose_reduction_noise,
    poisson_log_noise,
    validate_fraction_at_edge,
    validate_noise_parameters,
)

logger = logging.getLogger(__name__)

DEFAULT_PHOTONS_PER_RAY = 1e5
DEFAULT_ELECTRONIC_NOISE_STD_PHOTONS = 5.0
DEFAULT_PARALLEL_VIEWS = 720
GEOMETRIES = ("parallel", "fan")


def _validate_hu(hu: object) -> torch.Tensor:
    if not isinstance(hu, torch.Tensor):
        raise ValueError(f"hu must be a torch.Tensor, got {type(hu).__name__}.")
    if hu.ndim not in (3, 5):
        raise ValueError(f"hu must have shape (D, H, W) or (B, C, D, H, W), got {tuple(hu.shape)}.")
    return hu


class LowDoseCT:
    """Simulate a reduced-dose scan of a CT volume by adding reconstructed projection-domain noise.

    The output is ``low_hu = hu + 1000 / mu_water * FBP(noisy_sinogram - clean_sinogram)`` where
    ``clean_sinogram = forward_project(hu_to_mu(hu))`` is computed per axial slice. Only the reconstructed
    noise is added to the input. The image content and its mean HU are therefore kept, up to the small bias
    of the log of Poisson counts, and the discretisation error of projecting and reconstructing the object
    does not enter the output. ``noisy_sinogram`` depends on ``assume_noiseless_input``:

    - ``True`` (default): the input is treated as noise-free. ``poisson_log_noise`` draws the detector counts
      at ``dose_fraction`` of the full-dose photons, so the added noise is that of a whole
      ``dose_fraction`` scan, on top of whatever noise the input already has.
    - ``False``: the input is a real full-dose scan with its own noise. ``insert_dose_reduction_noise`` adds
      Gaussian noise of variance ``var(dose_fraction) - var(1)`` per ray, so the output has the noise
      variance of a ``dose_fraction`` scan. ``dose_fraction=1`` then returns the input unchanged.

    Args:
        dose_fraction: simulated dose relative to the input's dose, in ``(0, 1]``. Required.
        photons_per_ray: incident photons per detector ray at full dose (on the central ray when a bowtie is
            set). Default 1e5. This is an order-of-magnitude modelling assumption for clinical CT, not a
            calibrated scanner value.
        electronic_noise_std_photons: standard deviation of the additive Gaussian electronic noise, in photon
            counts. Default 5.0, a modelling assumption of the same kind.
        n_views: number of views, over 180 degrees for ``geometry="parallel"`` and over 360 degrees for
            ``"fan"``. ``None`` (default) gives 720 and 1440, a 0.25 degree step for both.
        filter_name: reconstruction filter, one of ``"ram-lak"`` (default), ``"shepp-logan"``, ``"hann"``
            and ``"cosine"`` (see ``filtered_back_projection``). A smoothing window lowers the noise and
            makes it coarser.
        mu_water_per_mm: attenuation of water in 1/mm for the HU conversion. Default 0.0193, water at
            70 keV from NIST XCOM (see ``medgan.physics.ct.MU_WATER_PER_MM``).
        geometry: ``"parallel"`` (default) or ``"fan"``, the equiangular full-scan fan beam of
            ``medgan.physics.fanbeam``.
        source_to_isocenter_mm: fan beam only. Default 595 mm, a modelling assumption.
        source_to_detector_mm: fan beam only. Default 1085.6 mm, a modelling assumption.
        detector_pixel_mm: fan beam only, arc length of a detector bin. ``None`` (default) matches the bin
            spacing at the isocentre to the smaller pixel spacing.
        bowtie_photons_fraction_at_edge: fraction of the central ray's photons that a ray grazing the edge of
            the field receives, in ``(0, 1]`` (see ``medgan.physics.noise.bowtie_photon_fraction``). Default 1,
            no bowtie.
        assume_noiseless_input: see above. Default ``True``.

    Call it as ``transform(hu, spacing_mm, generator=None, roi=None)``. ``hu`` has shape ``(D, H, W)`` or
    ``(B, C, D, H, W)``, where the slices are along D and each slice is the H x W plane. ``spacing_mm`` is
    ``(row_mm, col_mm)`` of that plane. The result is float32 low-dose HU of the same shape, or of shape
    ``(..., D, h1 - h0, w1 - w0)`` with ``roi=(h0, h1, w0, w1)``. The forward projection always covers the
    full slice. The output is deterministic for a given ``generator`` state. ``generator=None`` draws from
    torch's global generator.

    Note:
        This is a 2D approximation applied to each axial slice independently. It has no cone beam, no helical
        pitch and no polychromatic spectrum (so no beam hardening). The noise is therefore uncorrelated
        between slices and its texture only approximates a clinical scanner's.

    Warning:
        With ``assume_noiseless_input=True`` a normal-dose input keeps its own noise, so the result is noisier
        than a real scan at ``dose_fraction`` would be. Use ``assume_noiseless_input=False`` for real scans
        and ``True`` for noise-free phantoms.

    Raises:
        ValueError: if an argument is invalid. The message names the argument and the value received.
    """

    def __init__(
        self,
        dose_fraction: float,
        *,
        photons_per_ray: float = DEFAULT_PHOTONS_PER_RAY,
        electronic_noise_std_photons: float = DEFAULT_ELECTRONIC_NOISE_STD_PHOTONS,
        n_views: int | None = None,
        filter_name: str = "ram-lak",
        mu_water_per_mm: float = MU_WATER_PER_MM,
        geometry: str = "parallel",
        source_to_isocenter_mm: float = DEFAULT_SOURCE_TO_ISOCENTER_MM,
        source_to_detector_mm: float = DEFAULT_SOURCE_TO_DETECTOR_MM,
        detector_pixel_mm: float | None = None,
        bowtie_photons_fraction_at_edge: float = 1.0,
        assume_noiseless_input: bool = True,
    ) -> None:
        photons_per_ray, dose_fraction, electronic_noise_std_photons = validate_noise_parameters(
            photons_per_ray, dose_fraction, electronic_noise_std_photons
        )
        if geometry not in GEOMETRIES:
            raise ValueError(f"geometry must be one of {', '.join(GEOMETRIES)}, got {geometry!r}.")
        if n_views is None:
            n_views = DEFAULT_PARALLEL_VIEWS if geometry == "parallel" else DEFAULT_FAN_VIEWS
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
        if not isinstance(assume_noiseless_input, bool):
            raise ValueError(f"assume_noiseless_input must be True or False, got {assume_noiseless_input!r}.")

        self.dose_fraction = dose_fraction
        self.photons_per_ray = photons_per_ray
        self.electronic_noise_std_photons = electronic_noise_std_photons
        self.n_views = int(n_views)
        self.filter_name = filter_name
        self.mu_water_per_mm = float(mu_water_per_mm)
        self.geometry_type = geometry
        self.bowtie_photons_fraction_at_edge = validate_fraction_at_edge(bowtie_photons_fraction_at_edge)
        self.assume_noiseless_input = assume_noiseless_input
        if geometry == "fan":
            # A one-pixel slice checks the distances and the detector pixel now rather than at the first call.
            probe = FanBeamGeometry(
                (1, 1),
                (1.0, 1.0),
                n_views=1,
                source_to_isocenter_mm=source_to_isocenter_mm,
                source_to_detector_mm=source_to_detector_mm,
                detector_pixel_mm=detector_pixel_mm,
            )
            self.source_to_isocenter_mm = probe.source_to_isocenter_mm
            self.source_to_detector_mm = probe.source_to_detector_mm
            self.detector_pixel_mm = None if detector_pixel_mm is None else probe.detector_pixel_mm
        else:
            self.source_to_isocenter_mm = float(source_to_isocenter_mm)
            self.source_to_detector_mm = float(source_to_detector_mm)
            self.detector_pixel_mm = None if detector_pixel_mm is None else float(detector_pixel_mm)

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> LowDoseCT:
        """Build the transform from a ``params()`` or ``RandomLowDoseCT`` record, ignoring its ``"seed"``.

        Records written before the fan-beam options existed lack their keys and get the defaults.
        """
        return cls(
            params["dose_fraction"],
            photons_per_ray=params["photons_per_ray"],
            electronic_noise_std_photons=params["electronic_noise_std_photons"],
            n_views=params["n_views"],
            filter_name=params["filter_name"],
            mu_water_per_mm=params["mu_water_per_mm"],
            geometry=params.get("geometry", "parallel"),
            source_to_isocenter_mm=params.get("source_to_isocenter_mm", DEFAULT_SOURCE_TO_ISOCENTER_MM),
            source_to_detector_mm=params.get("source_to_detector_mm", DEFAULT_SOURCE_TO_DETECTOR_MM),
            detector_pixel_mm=params.get("detector_pixel_mm"),
            bowtie_photons_fraction_at_edge=params.get("bowtie_photons_fraction_at_edge", 1.0),
            assume_noiseless_input=params.get("assume_noiseless_input", True),
        )

    def params(self) -> dict[str, Any]:
        """Return the constructor arguments as a dict, with ``n_views`` resolved to its value."""
        return {
            "dose_fraction": self.dose_fraction,
            "photons_per_ray": self.photons_per_ray,
            "electronic_noise_std_photons": self.electronic_noise_std_photons,
            "n_views": self.n_views,
            "filter_name": self.filter_name,
            "mu_water_per_mm": self.mu_water_per_mm,
            "geometry": self.geometry_type,
            "source_to_isocenter_mm": self.source_to_isocenter_mm,
            "source_to_detector_mm": self.source_to_detector_mm,
            "detector_pixel_mm": self.detector_pixel_mm,
            "bowtie_photons_fraction_at_edge": self.bowtie_photons_fraction_at_edge,
            "assume_noiseless_input": self.assume_noiseless_input,
        }

    def __repr__(self) -> str:
        arguments = ", ".join(f"{key}={value!r}" for key, value in self.params().items())
        return f"{type(self).__name__}({arguments})"

    def geometry(
        self, image_shape: tuple[int, int], spacing_mm: tuple[float, float]
    ) -> ParallelBeamGeometry | FanBeamGeometry:
        """Return the scan geometry for slices of ``image_shape = (H, W)`` with ``spacing_mm = (row_mm, col_mm)``."""
        try:
            if self.geometry_type == "parallel":
                return ParallelBeamGeometry(tuple(image_shape), spacing_mm, n_views=self.n_views)
            return FanBeamGeometry(
                tuple(image_shape),
                spacing_mm,
                n_views=self.n_views,
                source_to_isocenter_mm=self.source_to_isocenter_mm,
                source_to_detector_mm=self.source_to_detector_mm,
                detector_pixel_mm=self.detector_pixel_mm,
            )
        except ValueError as error:
            message = (
                f"Cannot build the {self.geometry_type}-beam geometry for slices of shape {tuple(image_shape)} "
                f"with spacing_mm {spacing_mm!r}: {error}"
            )
            raise ValueError(message) from error

    def clean_sinogram(
        self, hu: torch.Tensor, spacing_mm: tuple[float, float]
    ) -> tuple[torch.Tensor, ParallelBeamGeometry | FanBeamGeometry]:
        """Forward-project every slice of ``hu`` and return ``(sinogram, geometry)``.

        ``hu`` has shape ``(..., H, W)`` and the float32 sinogram has shape ``(..., n_views, n_detectors)``.
        A dataset can cache both and pass them to ``noise_hu_from_sinogram``, which skips the forward
        projection, the most expensive step.
        """
        if not isinstance(hu, torch.Tensor) or hu.ndim < 2:
            raise ValueError(f"hu must be a torch.Tensor of shape (..., H, W), got {getattr(hu, 'shape', hu)!r}.")
        geometry = self.geometry(tuple(hu.shape[-2:]), spacing_mm)
        slices = hu.detach().to(torch.float32).reshape(-1, *geometry.image_shape)
        with torch.no_grad():
            sinogram = forward_project(hu_to_mu(slices, self.mu_water_per_mm), geometry)
        return sinogram.reshape(*hu.shape[:-2], geometry.n_views, geometry.n_detectors), geometry

    def detector_photon_fraction(
        self, geometry: ParallelBeamGeometry | FanBeamGeometry, device: torch.device
    ) -> torch.Tensor | None:
        """Return the ``(n_detectors,)`` bowtie photon fraction, or ``None`` without a bowtie."""
        if self.bowtie_photons_fraction_at_edge == 1.0:
            return None
        distances_mm = geometry.ray_distances_mm(device, torch.float32)
        return bowtie_photon_fraction(distances_mm, geometry.support_radius_mm, self.bowtie_photons_fraction_at_edge)

    def noisy_sinogram(
        self,
        clean_sinogram: torch.Tensor,
        geometry: ParallelBeamGeometry | FanBeamGeometry,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Return the low-dose line integrals for a float32 ``(N, n_views, n_detectors)`` clean sinogram."""
        noise_parameters = {
            "photons_per_ray": self.photons_per_ray,
            "dose_fraction": self.dose_fraction,
            "electronic_noise_std_photons": self.electronic_noise_std_photons,
            "generator": generator,
            "detector_photon_fraction": self.detector_photon_fraction(geometry, clean_sinogram.device),
        }
        if self.assume_noiseless_input:
            return poisson_log_noise(clean_sinogram, **noise_parameters)
        return insert_dose_reduction_noise(clean_sinogram, **noise_parameters)

    def noise_hu_from_sinogram(
        self,
        clean_sinogram: torch.Tensor,
        geometry: ParallelBeamGeometry | FanBeamGeometry,
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
            noisy = self.noisy_sinogram(sinogram, geometry, generator)
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
            "Simulated dose_fraction=%g (%s beam) on %d slices of shape %s.",
            self.dose_fraction,
            self.geometry_type,
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
        **kwargs: the other keyword arguments of ``LowDoseCT`` (``photons_per_ray``, ``geometry``,
            ``assume_noiseless_input`` and the rest), with the same defaults.

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
        geometry: ParallelBeamGeometry | FanBeamGeometry,
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
