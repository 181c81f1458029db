"""Time medgan's low-dose CT simulation against scikit-image's radon/iradon on the same slices.

Both sides do the same work per axial slice. They forward project the attenuation over ``--views`` angles in
180 degrees (parallel beam, detector covering the slice diagonal) and draw Poisson counts at the reduced dose.
Then they reconstruct the noisy minus the clean line integrals by filtered back-projection (ramp filter,
linear interpolation).
medgan runs ``LowDoseCT`` on the whole stack at once. scikit-image runs slice by slice on
``--skimage-slices`` slices, and its time is scaled linearly to the full stack, because it has no batched
path and the full stack would take tens of minutes.

The phantom is synthetic and CT-like: an elliptical water body with fat, muscle, bone and lung regions that
shift slightly from slice to slice, in air, at 0.7 mm pixels.

scikit-image is a benchmark-only dependency: ``pip install scikit-image``.

``--forward-only`` times ``medgan.physics.forward_project`` alone instead, on one slice and on the whole stack.

Usage: python scripts/bench_simulation.py [--size 512] [--slices 64] [--views 720] [--skimage-slices 2]
       [--dose-fraction 0.25] [--threads N] [--geometry parallel|fan] [--forward-only]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import time

import numpy as np
import torch

from medgan.physics import MU_WATER_PER_MM, ParallelBeamGeometry, forward_project, hu_to_mu
from medgan.transforms import LowDoseCT

PIXEL_MM = 0.7
PHOTONS_PER_RAY = 1e5


def phantom_hu(size: int, n_slices: int) -> torch.Tensor:
    """Return a ``(n_slices, size, size)`` CT-like phantom in HU."""
    coordinates = (torch.arange(size, dtype=torch.float32) - (size - 1) / 2) / (size / 2)
    y = coordinates[:, None]
    x = coordinates[None, :]
    slices = []
    for index in range(n_slices):
        shift = 0.03 * math.sin(2 * math.pi * index / max(n_slices, 1))
        hu = torch.full((size, size), -1000.0)
        body = (x / 0.85) ** 2 + (y / 0.65) ** 2 <= 1
        hu[body] = -100.0
        muscle = (x / 0.78) ** 2 + (y / 0.58) ** 2 <= 1
        hu[muscle] = 40.0
        for centre_x in (-0.38, 0.38):
            lung = ((x - centre_x) / 0.25) ** 2 + ((y + shift) / 0.35) ** 2 <= 1
            hu[lung] = -850.0
        spine = (x**2 + (y - 0.42 + shift) ** 2) <= 0.08**2
        hu[spine] = 700.0
        cortex = ((x**2 + (y - 0.42 + shift) ** 2) <= 0.1**2) & ~spine
        hu[cortex] = 1200.0
        liver = ((x - 0.2) / 0.2) ** 2 + ((y + 0.25) / 0.15) ** 2 <= 1
        hu[liver] = 60.0
        slices.append(hu)
    return torch.stack(slices)


def time_medgan(hu: torch.Tensor, dose_fraction: float, n_views: int, geometry: str) -> float:
    transform = LowDoseCT(dose_fraction, n_views=n_views, photons_per_ray=PHOTONS_PER_RAY, geometry=geometry)
    start = time.perf_counter()
    low_hu = transform(hu, (PIXEL_MM, PIXEL_MM), generator=torch.Generator().manual_seed(0))
    elapsed = time.perf_counter() - start
    assert low_hu.shape == hu.shape
    return elapsed


def time_skimage(hu: torch.Tensor, dose_fraction: float, n_views: int) -> float:
    from skimage.transform import iradon, radon

    theta_deg = np.arange(n_views) * 180.0 / n_views
    generator = np.random.default_rng(0)
    start = time.perf_counter()
    for slice_hu in hu:
        mu_per_pixel = hu_to_mu(slice_hu.double(), MU_WATER_PER_MM).numpy() * PIXEL_MM
        clean = radon(mu_per_pixel, theta=theta_deg, circle=False)
        incident = PHOTONS_PER_RAY * dose_fraction
        counts = np.maximum(generator.poisson(incident * np.exp(-clean)), 1.0)
        noisy = -np.log(counts / incident)
        noise_mu = iradon(noisy - clean, theta=theta_deg, circle=False, filter_name="ramp",
                          interpolation="linear", output_size=slice_hu.shape[-1]) / PIXEL_MM
        assert noise_mu.shape == tuple(slice_hu.shape)
    return time.perf_counter() - start


def time_forward_projection(hu: torch.Tensor, n_views: int) -> tuple[float, float]:
    """Return the seconds ``forward_project`` takes for the first slice alone and for the whole stack."""
    geometry = ParallelBeamGeometry(tuple(hu.shape[-2:]), (PIXEL_MM, PIXEL_MM), n_views=n_views)
    mu = hu_to_mu(hu)
    start = time.perf_counter()
    forward_project(mu[:1], geometry)
    one_slice_s = time.perf_counter() - start
    start = time.perf_counter()
    forward_project(mu, geometry)
    return one_slice_s, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="Slice width and height in pixels.")
    parser.add_argument("--slices", type=int, default=64, help="Slices in the volume.")
    parser.add_argument("--views", type=int, default=720, help="Views over 180 degrees (parallel beam).")
    parser.add_argument("--skimage-slices", type=int, default=2, help="Slices timed with scikit-image.")
    parser.add_argument("--dose-fraction", type=float, default=0.25)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice).")
    parser.add_argument("--geometry", choices=["parallel", "fan"], default="parallel",
                        help="medgan geometry; fan uses twice the views over 360 degrees, skimage stays parallel.")
    parser.add_argument("--forward-only", action="store_true", help="Time forward_project alone, medgan only.")
    arguments = parser.parse_args()
    if arguments.threads is not None:
        torch.set_num_threads(arguments.threads)

    hu = phantom_hu(arguments.size, arguments.slices)
    if arguments.forward_only:
        one_slice_s, stack_s = time_forward_projection(hu, arguments.views)
        print(f"forward_project, {arguments.size} x {arguments.size}, {arguments.views} views, torch "
              f"{torch.__version__} with {torch.get_num_threads()} threads: {one_slice_s:.2f} s for one slice, "
              f"{stack_s:.1f} s for {arguments.slices} slices ({stack_s / arguments.slices:.2f} s per slice)")
        return
    medgan_views = arguments.views if arguments.geometry == "parallel" else 2 * arguments.views
    medgan_s = time_medgan(hu, arguments.dose_fraction, medgan_views, arguments.geometry)
    subset = hu[: arguments.skimage_slices]
    skimage_subset_s = time_skimage(subset, arguments.dose_fraction, arguments.views)
    skimage_s = skimage_subset_s * arguments.slices / arguments.skimage_slices

    import skimage

    print(f"volume: {arguments.slices} x {arguments.size} x {arguments.size}, {PIXEL_MM} mm pixels, "
          f"dose_fraction {arguments.dose_fraction}, {arguments.views} views over 180 degrees")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__} with {torch.get_num_threads()} threads, scikit-image {skimage.__version__}")
    print(f"medgan LowDoseCT ({arguments.geometry}, {medgan_views} views): {medgan_s:.1f} s for "
          f"{arguments.slices} slices ({medgan_s / arguments.slices:.2f} s per slice)")
    print(f"scikit-image radon + iradon: {skimage_subset_s:.1f} s for {arguments.skimage_slices} slices "
          f"({skimage_subset_s / arguments.skimage_slices:.2f} s per slice), {skimage_s:.0f} s scaled to "
          f"{arguments.slices} slices")
    print(f"ratio scikit-image / medgan: {skimage_s / medgan_s:.1f}")


if __name__ == "__main__":
    main()
