"""Validation of the low-dose CT simulation against theory, in parallel and fan beam.

- Noise variance scales as 1 / dose_fraction.
- The mean HU of water, fat-like and bone-like inserts is kept.
- The noise power spectrum (NPS) of FBP noise has the ramp shape of the reconstruction kernel, which white
  image-domain noise does not have.
- Inserting noise into a noisy full-dose scan gives the noise variance of a direct low-dose simulation.

The phantoms are 96 x 96 slices of 1 mm with a water cylinder of radius 38 mm in air. Views are fewer than the
defaults (120 parallel, 240 fan) to keep the file fast. The noise statistics do not depend on that choice
beyond the overall noise level.
"""

from __future__ import annotations

import pytest
import torch

from medgan.transforms import LowDoseCT

SHAPE = (96, 96)
SPACING_MM = (1.0, 1.0)
N_SLICES = 16
# The mean of a 7 mm ROI over 16 slices varies by about 1 HU between seeds at 10 % dose, so the mean-HU test
# averages twice as many slices.
N_SLICES_MEAN_TEST = 32
VIEWS = {"parallel": 120, "fan": 240}
DOSES = (1.0, 0.5, 0.25, 0.1)
CYLINDER_RADIUS_MM = 0.4 * 96
INSERT_RADIUS_MM = 9.0
INSERTS_HU = {"water": (0.0, (0.0, 0.0)), "fat": (-100.0, (0.0, 19.0)), "bone": (1000.0, (0.0, -19.0))}
NPS_ROI = (24, 72, 24, 72)


def coordinates_mm():
    height, width = SHAPE
    y = (torch.arange(height, dtype=torch.float64) - (height - 1) / 2)[:, None] * SPACING_MM[0]
    x = (torch.arange(width, dtype=torch.float64) - (width - 1) / 2)[None, :] * SPACING_MM[1]
    return y.expand(SHAPE), x.expand(SHAPE)


def cylinder_phantom(
    with_inserts: bool, n_slices: int = N_SLICES
) -> tuple[torch.Tensor, dict[str, tuple[torch.Tensor, float]]]:
    """Return ``(hu, rois)``: the phantom over ``n_slices`` slices and ``{name: (mask, true_hu)}``.

    Without inserts the only ROI is the central disk of half the cylinder radius, named "water".
    """
    y, x = coordinates_mm()
    hu = torch.full(SHAPE, -1000.0)
    hu[y**2 + x**2 <= CYLINDER_RADIUS_MM**2] = 0.0
    rois = {}
    if with_inserts:
        for name, (value_hu, (centre_y, centre_x)) in INSERTS_HU.items():
            distance_sq = (y - centre_y) ** 2 + (x - centre_x) ** 2
            hu[distance_sq <= INSERT_RADIUS_MM**2] = value_hu
            # Stay 2 mm inside the insert edge, where the noise-free image is exactly the insert's value.
            rois[name] = (distance_sq <= (INSERT_RADIUS_MM - 2) ** 2, value_hu)
    else:
        rois["water"] = (y**2 + x**2 <= (CYLINDER_RADIUS_MM / 2) ** 2, 0.0)
    return hu.expand(n_slices, *SHAPE).clone(), rois


def transform_for(geometry: str, dose_fraction: float, **kwargs) -> LowDoseCT:
    return LowDoseCT(dose_fraction, geometry=geometry, n_views=VIEWS[geometry], **kwargs)


@pytest.fixture(scope="module", params=["parallel", "fan"])
def uniform_scan(request):
    """``(geometry_name, hu, rois, clean_sinogram, scan_geometry)`` of the cylinder without inserts."""
    hu, rois = cylinder_phantom(with_inserts=False)
    sinogram, geometry = transform_for(request.param, 1.0).clean_sinogram(hu, SPACING_MM)
    return request.param, hu, rois, sinogram, geometry


def noise_variance(geometry_name, sinogram, geometry, mask, dose_fraction, seed, **kwargs):
    noise_hu = transform_for(geometry_name, dose_fraction, **kwargs).noise_hu_from_sinogram(
        sinogram, geometry, torch.Generator().manual_seed(seed)
    )
    return noise_hu[:, mask].var().item()


def test_noise_variance_scales_inverse_dose(uniform_scan):
    geometry_name, _, rois, sinogram, geometry = uniform_scan
    mask = rois["water"][0]

    variances = {
        dose: noise_variance(geometry_name, sinogram, geometry, mask, dose, seed=20 + index)
        for index, dose in enumerate(DOSES)
    }

    assert variances[1.0] > 1.0
    for dose in DOSES[1:]:
        ratio = variances[dose] / variances[1.0]
        # The electronic noise adds sigma_e^2 / (d lambda)^2, which is about 0.1 % of the variance here.
        message = f"variance ratio {ratio:.3f} at dose_fraction {dose}, expected {1 / dose:.3f}"
        assert abs(ratio * dose - 1) < 0.1, message


@pytest.mark.parametrize("geometry_name", ["parallel", "fan"])
def test_mean_hu_kept_in_inserts(geometry_name):
    hu, rois = cylinder_phantom(with_inserts=True, n_slices=N_SLICES_MEAN_TEST)
    base = transform_for(geometry_name, 1.0)
    sinogram, geometry = base.clean_sinogram(hu, SPACING_MM)

    for index, dose in enumerate(DOSES):
        noise_hu = transform_for(geometry_name, dose).noise_hu_from_sinogram(
            sinogram, geometry, torch.Generator().manual_seed(40 + index)
        )
        low_hu = hu + noise_hu
        for name, (mask, true_hu) in rois.items():
            shift_hu = low_hu[:, mask].mean().item() - true_hu
            assert abs(shift_hu) < 2.0, f"{name} mean shifted by {shift_hu:.2f} HU at dose_fraction {dose}"


def radial_noise_power_spectrum(noise: torch.Tensor, pixel_mm: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(frequencies, nps)``: the radially averaged 2D NPS of square ROIs ``(N, n, n)``.

    ``NPS(f) = pixel_mm^2 / n^2 * |FFT(roi - mean(roi))|^2``, averaged over the N ROIs and over rings of
    width 1 / (n pixel_mm) cycles/mm centred on the multiples of that width, from 0 to the Nyquist frequency.
    """
    size = noise.shape[-1]
    centred = noise.double() - noise.double().mean(dim=(-2, -1), keepdim=True)
    power = torch.fft.fft2(centred).abs() ** 2 * pixel_mm**2 / size**2
    power = power.mean(dim=0)
    frequency = torch.fft.fftfreq(size, d=pixel_mm, dtype=torch.float64)
    radial = torch.sqrt(frequency[:, None] ** 2 + frequency[None, :] ** 2)
    step = 1 / (size * pixel_mm)
    ring = torch.round(radial / step).long()
    n_rings = size // 2 + 1
    nps = torch.stack([power[ring == index].mean() for index in range(n_rings)])
    return torch.arange(n_rings, dtype=torch.float64) * step, nps


def has_ramp_shape(frequencies: torch.Tensor, nps: torch.Tensor) -> bool:
    """Return whether an NPS rises from near zero at low frequency to a peak away from DC.

    The criterion has three parts. The first ring above DC has less than half the peak. The lowest tenth of
    the band (DC excluded) averages less than 60 % of the peak. The peak lies above 15 % of the Nyquist
    frequency, where a Hann-windowed ramp peaks near 30 %. White noise has about 90 % of its peak in both low-frequency
    measures. DC itself is zero for every ROI with its mean removed, so it is left out.
    """
    above_dc = nps[1:]
    peak = above_dc.max()
    nyquist = frequencies[-1]
    low_band = frequencies[1:] <= 0.1 * nyquist + 1e-12
    peak_frequency = frequencies[1:][above_dc.argmax()]
    return bool(
        above_dc[0] < 0.5 * peak
        and above_dc[low_band].mean() < 0.6 * peak
        and peak_frequency > 0.15 * nyquist
    )


def nps_of_simulated_noise(uniform_scan, filter_name):
    geometry_name, _, _, sinogram, geometry = uniform_scan
    h0, h1, w0, w1 = NPS_ROI
    noise_hu = transform_for(geometry_name, 0.5, filter_name=filter_name).noise_hu_from_sinogram(
        sinogram, geometry, torch.Generator().manual_seed(3), roi=NPS_ROI
    )
    assert noise_hu.shape[-2:] == (h1 - h0, w1 - w0)
    return radial_noise_power_spectrum(noise_hu, SPACING_MM[0])


@pytest.mark.parametrize("filter_name", ["ram-lak", "hann"])
def test_nps_has_ramp_shape(uniform_scan, filter_name):
    frequencies, nps = nps_of_simulated_noise(uniform_scan, filter_name)

    assert has_ramp_shape(frequencies, nps), f"NPS / peak: {(nps / nps.max()).tolist()}"


def test_white_noise_nps_fails_ramp_criterion():
    h0, h1, w0, w1 = NPS_ROI
    white_hu = 20 * torch.randn(N_SLICES, h1 - h0, w1 - w0, generator=torch.Generator().manual_seed(8))

    frequencies, nps = radial_noise_power_spectrum(white_hu, SPACING_MM[0])

    assert not has_ramp_shape(frequencies, nps)
    # White noise has a flat NPS at the variance times the pixel area.
    assert abs(nps[1:].mean().item() / 400 - 1) < 0.05


def test_nps_follows_kernel_window(uniform_scan):
    frequencies, ramp_nps = nps_of_simulated_noise(uniform_scan, "ram-lak")
    _, hann_nps = nps_of_simulated_noise(uniform_scan, "hann")
    nyquist = frequencies[-1]
    high_band = frequencies >= 0.8 * nyquist

    ramp_peak_frequency = frequencies[1:][ramp_nps[1:].argmax()]
    hann_peak_frequency = frequencies[1:][hann_nps[1:].argmax()]
    # The Hann window falls to zero at the Nyquist frequency, the plain ramp does not.
    assert hann_peak_frequency < ramp_peak_frequency
    assert hann_nps[high_band].mean() < 0.1 * hann_nps.max()
    assert ramp_nps[high_band].mean() > 0.4 * ramp_nps.max()


@pytest.mark.parametrize("geometry_name", ["parallel", "fan"])
def test_insertion_matches_direct_low_dose(geometry_name):
    hu, rois = cylinder_phantom(with_inserts=False)
    mask = rois["water"][0]
    clean_sinogram, geometry = transform_for(geometry_name, 1.0).clean_sinogram(hu, SPACING_MM)
    full_dose_hu = hu + transform_for(geometry_name, 1.0).noise_hu_from_sinogram(
        clean_sinogram, geometry, torch.Generator().manual_seed(1)
    )
    full_dose_variance = full_dose_hu[:, mask].var().item()
    # Insertion projects the noisy full-dose scan, as it would a real one.
    noisy_sinogram, _ = transform_for(geometry_name, 1.0).clean_sinogram(full_dose_hu, SPACING_MM)

    for index, dose in enumerate((0.5, 0.25, 0.1)):
        direct_hu = hu + transform_for(geometry_name, dose).noise_hu_from_sinogram(
            clean_sinogram, geometry, torch.Generator().manual_seed(10 + index)
        )
        inserted_hu = full_dose_hu + transform_for(
            geometry_name, dose, assume_noiseless_input=False
        ).noise_hu_from_sinogram(noisy_sinogram, geometry, torch.Generator().manual_seed(20 + index))

        direct_variance = direct_hu[:, mask].var().item()
        inserted_variance = inserted_hu[:, mask].var().item()
        ratio = inserted_variance / direct_variance
        assert abs(ratio - 1) < 0.1, f"inserted / direct variance {ratio:.3f} at dose_fraction {dose}"
        # Treating the noisy scan as noise-free would overshoot by the full-dose variance.
        assert inserted_variance < direct_variance + 0.5 * full_dose_variance
