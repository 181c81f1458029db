"""Low-dose noise for training patches, with each slice's clean sinogram computed once and cached.

A patch needs the noise of its own pixels only, but the noise of a projection-domain simulation depends on
every ray through the whole slice. Projecting a slice is the expensive part, so each slice is projected once;
each sample then draws fresh Poisson noise on the cached sinogram and back-projects it onto the patch's pixels
alone, which filtered back-projection allows because it is evaluated pixel by pixel.
"""

from __future__ import annotations

import torch

from medgan.config import DataConfig
from medgan.physics import (
    ParallelBeamGeometry,
    filtered_back_projection,
    forward_project,
    hu_to_mu,
    mu_delta_to_hu_delta,
    poisson_log_noise,
)


class SliceNoiseSimulator:
    """Projection-domain low-dose noise for the axial slices of one volume.

    Args:
        hu: ``(D, H, W)`` normal-dose volume in HU; slices are the D axis.
        pixel_spacing_mm: ``(row_mm, col_mm)`` of a slice (along H and W).
        data: the data config, which sets photons per ray, electronic noise and the number of views.
    """

    def __init__(self, hu: torch.Tensor, pixel_spacing_mm: tuple[float, float], data: DataConfig) -> None:
        if hu.ndim != 3:
            raise ValueError(f"hu must be a (D, H, W) tensor, got shape {tuple(hu.shape)}.")
        self.hu = hu
        self.data = data
        self.geometry = ParallelBeamGeometry(image_shape=(int(hu.shape[1]), int(hu.shape[2])),
                                             pixel_spacing_mm=tuple(float(s) for s in pixel_spacing_mm),
                                             n_views=data.n_views)
        self._sinograms: dict[int, torch.Tensor] = {}

    def clean_sinogram(self, index: int) -> torch.Tensor:
        """The noise-free line integrals of slice ``index``, ``(n_views, n_detectors)``, cached."""
        if index not in self._sinograms:
            mu = hu_to_mu(self.hu[index:index + 1].double())
            self._sinograms[index] = forward_project(mu, self.geometry)[0].float()
        return self._sinograms[index]

    def noise_hu(self, slices: range, roi: tuple[int, int, int, int], dose_fraction: float,
                 generator: torch.Generator) -> torch.Tensor:
        """Noise in HU that turns the normal-dose pixels of ``roi`` into a ``dose_fraction`` scan.

        Returns a ``(len(slices), h1 - h0, w1 - w0)`` float32 tensor: FBP of (noisy - clean) line integrals,
        so the image content itself never passes through the projector.
        """
        clean = torch.stack([self.clean_sinogram(i) for i in slices]).double()
        noisy = poisson_log_noise(clean, photons_per_ray=self.data.photons_per_ray, dose_fraction=dose_fraction,
                                  electronic_noise_std_photons=self.data.electronic_noise_std_photons,
                                  generator=generator)
        mu_noise = filtered_back_projection(noisy - clean, self.geometry, roi=roi)
        return mu_delta_to_hu_delta(mu_noise).float()
