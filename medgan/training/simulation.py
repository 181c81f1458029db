"""Low-dose noise for training patches, with each slice's clean sinogram computed once and cached.

A patch needs the noise of its own pixels only, but the noise of a projection-domain simulation depends on
every ray through the whole slice. Projecting a slice is the expensive part, so each slice is projected once.
Each sample then draws fresh Poisson noise on the cached sinogram and back-projects it onto the patch's pixels
alone. Filtered back-projection allows this because it is evaluated pixel by pixel.
"""

from __future__ import annotations

import torch

from medgan.config import DataConfig
from medgan.physics import filtered_back_projection, mu_delta_to_hu_delta
from medgan.transforms import LowDoseCT


class SliceNoiseSimulator:
    """Projection-domain low-dose noise for the axial slices of one volume, drawn by `LowDoseCT`.

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
        self.pixel_spacing_mm = tuple(float(s) for s in pixel_spacing_mm)
        self.geometry = self._transform(1.0).geometry((int(hu.shape[1]), int(hu.shape[2])), self.pixel_spacing_mm)
        self._sinograms: dict[int, torch.Tensor] = {}

    def _transform(self, dose_fraction: float) -> LowDoseCT:
        return LowDoseCT(dose_fraction, photons_per_ray=self.data.photons_per_ray,
                         electronic_noise_std_photons=self.data.electronic_noise_std_photons,
                         n_views=self.data.n_views)

    def clean_sinogram(self, index: int) -> torch.Tensor:
        """Return the noise-free line integrals of slice ``index``, ``(n_views, n_detectors)``, computed once."""
        if index not in self._sinograms:
            sinogram, _ = self._transform(1.0).clean_sinogram(self.hu[index], self.pixel_spacing_mm)
            self._sinograms[index] = sinogram
        return self._sinograms[index]

    def noise_hu(self, slices: range, roi: tuple[int, int, int, int], dose_fraction: float,
                 generator: torch.Generator) -> torch.Tensor:
        """Return the noise in HU that turns the normal-dose pixels of ``roi`` into a ``dose_fraction`` scan.

        The result is a ``(len(slices), h1 - h0, w1 - w0)`` float32 tensor: FBP of (noisy - clean) line
        integrals, so the image content itself never passes through the projector.
        """
        clean = torch.stack([self.clean_sinogram(i) for i in slices])
        return self._transform(dose_fraction).noise_hu_from_sinogram(clean, self.geometry, generator, roi)


class NoiseBank:
    """Precomputed low-dose noise images for fast patch sampling, in a Gaussian approximation of the physics.

    The log-transformed measurement of a ray with expected full-dose counts ``N = photons_per_ray * exp(-p)``
    has, to second order, variance ``1 / (d N) + sigma_e^2 / (d N)^2`` at dose fraction ``d``, with
    ``sigma_e`` the electronic noise in photons. The first (quantum) term scales as ``1 / d`` and the second as
    ``1 / d^2``. So for every slice the bank stores ``size`` FBP noise images of each term at ``d = 1``, and a
    sample at dose ``d`` is ``quantum / sqrt(d) + electronic / d`` with one stored realization of each. This costs
    one back-projection per stored image instead of one per sample.

    Warning:
        The Gaussian approximation drops the Poisson skew and the clipping of photon-starved rays, which
        matter only where fewer than about 20 photons reach the detector. Use ``simulation: exact`` (the
        `SliceNoiseSimulator`) to check a trained model against the full model.

    Args:
        simulator: the exact simulator of the volume, whose cached sinograms and geometry are reused.
        size: stored realizations per slice and term.
        generator: random generator for the stored realizations.
    """

    def __init__(self, simulator: SliceNoiseSimulator, size: int, generator: torch.Generator) -> None:
        if size < 1:
            raise ValueError(f"size must be a positive integer, got {size}.")
        self.simulator = simulator
        self.size = size
        data = simulator.data
        n_slices = simulator.hu.shape[0]
        quantum, electronic = [], []
        for index in range(n_slices):
            clean = simulator.clean_sinogram(index).double()
            counts = data.photons_per_ray * torch.exp(-clean)
            quantum_std = counts.rsqrt()
            electronic_std = data.electronic_noise_std_photons / counts
            shape = (size, *clean.shape)
            quantum_sinograms = torch.randn(shape, generator=generator, dtype=torch.float64) * quantum_std
            electronic_sinograms = torch.randn(shape, generator=generator, dtype=torch.float64) * electronic_std
            both = filtered_back_projection(torch.cat([quantum_sinograms, electronic_sinograms]), simulator.geometry)
            both = mu_delta_to_hu_delta(both).float()
            quantum.append(both[:size])
            electronic.append(both[size:])
        # (D, size, H, W) each
        self.quantum = torch.stack(quantum)
        self.electronic = torch.stack(electronic)

    def noise_hu(self, slices: range, roi: tuple[int, int, int, int], dose_fraction: float,
                 generator: torch.Generator) -> torch.Tensor:
        """Noise in HU for ``slices`` and ``roi`` at ``dose_fraction``; see the class docstring for the model."""
        h0, h1, w0, w1 = roi
        picks = torch.randint(self.size, (len(slices), 2), generator=generator)
        parts = []
        for row, index in enumerate(slices):
            quantum = self.quantum[index, picks[row, 0], h0:h1, w0:w1]
            electronic = self.electronic[index, picks[row, 1], h0:h1, w0:w1]
            parts.append(quantum / dose_fraction**0.5 + electronic / dose_fraction)
        return torch.stack(parts)
