"""Super-resolution training pairs: high-resolution MRI patches degraded to thick slices on the fly.

Tensors are ``(D, H, W) = (k, j, i)``, so a task's output scale ``(si, sj, sk)`` along the volume axes is the
factor ``(sk, sj, si)`` along the tensor axes. The thick slices come from `medgan.physics.mri`: each thick slice
averages ``factor`` input slices under the slice profile, so a patch of ``n * factor`` slices gives exactly ``n``
thick slices on the grid that the network's output upsamples back onto.
"""

from __future__ import annotations

import logging

import torch

from medgan.config import DataConfig
from medgan.inference.restorer import volume_to_tensor
from medgan.io import Volume
from medgan.physics.mri import (
    foreground_mean,
    thick_slice_sampling,
    thick_slices,
    validate_thick_slice_arguments,
)
from medgan.tasks import Task
from medgan.training.trainer import ValidationCase

logger = logging.getLogger(__name__)


def tensor_factors(task: Task) -> tuple[int, int, int]:
    """Return the task's output scale along the tensor axes ``(D, H, W)``."""
    scale_i, scale_j, scale_k = task.output_scale
    return (scale_k, scale_j, scale_i)


class ThickSliceDegradation:
    """Thick slices of ``factor`` input slices along tensor axis 0, on the grid of whole groups of ``factor``.

    The boxcar profile averages each group of ``factor`` slices. The Gaussian profile (FWHM = slice thickness)
    reaches 1.5 FWHM each side of a slice centre, so it needs ``margin`` extra input slices before and after the
    patch. With that context its thick-slice centres fall on the same grid as the boxcar's.

    Args:
        factor: input slices per thick slice.
        spacing_mm: input slice spacing in mm; the thick slices are ``factor * spacing_mm`` thick.
        profile: ``"boxcar"`` or ``"gaussian"``.
    """

    def __init__(self, factor: int, spacing_mm: float, profile: str) -> None:
        self.factor = int(factor)
        self.spacing_mm = float(spacing_mm)
        self.profile = profile
        thickness_mm = self.factor * self.spacing_mm
        _, _, _, half_support_mm = validate_thick_slice_arguments(thickness_mm, 0.0, profile, None)
        margin = (half_support_mm - thickness_mm / 2) / self.spacing_mm
        self.margin = int(round(margin))
        if abs(margin - self.margin) > 1e-6:
            raise ValueError(f"Profile {profile!r} needs {margin:g} context slices, not a whole number; use boxcar.")
        self._samplings: dict[int, object] = {}

    def __call__(self, extended: torch.Tensor) -> torch.Tensor:
        """Degrade a ``(D + 2 margin, H, W)`` region to ``D / factor`` thick slices."""
        n_input = int(extended.shape[0])
        if n_input not in self._samplings:
            self._samplings[n_input] = thick_slice_sampling(n_input, self.spacing_mm, self.factor * self.spacing_mm,
                                                            profile=self.profile)
        low = thick_slices(extended, self._samplings[n_input], axis=0)
        expected = (n_input - 2 * self.margin) // self.factor
        if low.shape[0] != expected:
            raise RuntimeError(f"Thick-slice sampling gave {low.shape[0]} slices for {n_input} input slices, expected "
                               f"{expected}.")
        return low


class ThickSlicePatchSampler:
    """Draw batches of ``(low, high)`` super-resolution patches in network units.

    ``high`` is ``(B, 1, D, H, W)`` with ``D`` a multiple of the factor, cut from a high-resolution volume;
    ``low`` is ``(B, 1, D / factor, H, W)``, its thick slices, with Rician noise when ``data.rician_snr_range``
    is set. Each volume is mapped to network units by ``task.intensity.for_volume(volume)``, measured once on
    the whole volume so that every patch of one scan shares one scale. The noise's sigma is the volume's mean
    foreground signal divided by the drawn SNR.

    Args:
        data: the data section of the config.
        task: the task, for its output scale and intensity mapping.
        volumes: high-resolution volumes.
    """

    def __init__(self, data: DataConfig, task: Task, volumes: list[Volume]) -> None:
        if not volumes:
            raise ValueError("ThickSlicePatchSampler needs at least one volume.")
        factors = tensor_factors(task)
        if factors[1:] != (1, 1):
            raise ValueError(f"Task {task.name!r} scales along more than the slice axis ({task.output_scale}); "
                             "only thick-slice degradation along k is implemented.")
        self.data = data
        self.factor = factors[0]
        self.volumes = [volume_to_tensor(v.array)[0, 0].float() for v in volumes]
        self.mappings = [task.intensity.for_volume(v) for v in self.volumes]
        self.degradations = [ThickSliceDegradation(self.factor, v.spacing_mm[2], data.slice_profile) for v in volumes]
        self.signals = [float(foreground_mean(v)) if data.rician_snr_range else 0.0 for v in self.volumes]
        margin = self.degradations[0].margin
        for volume, tensor in zip(volumes, self.volumes):
            if tensor.shape[0] < self.factor + 2 * margin:
                raise ValueError(f"A training volume has {tensor.shape[0]} slices along k, fewer than the "
                                 f"{self.factor + 2 * margin} that one thick slice with profile "
                                 f"{data.slice_profile!r} needs ({volume!r}).")
        voxels = torch.tensor([float(t.numel()) for t in self.volumes])
        self.volume_weights = voxels / voxels.sum()

    def _patch_depth(self, index: int) -> int:
        margin = self.degradations[index].margin
        available = (self.volumes[index].shape[0] - 2 * margin) // self.factor * self.factor
        return min(self.data.patch_size[0], available)

    def sample_pair(self, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw one ``(low, high)`` pair of ``(1, D / factor, H, W)`` and ``(1, D, H, W)`` patches."""
        index = int(torch.multinomial(self.volume_weights, 1, generator=generator).item())
        volume = self.volumes[index]
        margin = self.degradations[index].margin
        depth = self._patch_depth(index)
        height, width = (min(p, s) for p, s in zip(self.data.patch_size[1:], volume.shape[1:]))
        d0 = margin + int(torch.randint(volume.shape[0] - 2 * margin - depth + 1, (), generator=generator))
        h0 = int(torch.randint(volume.shape[1] - height + 1, (), generator=generator))
        w0 = int(torch.randint(volume.shape[2] - width + 1, (), generator=generator))
        extended = volume[d0 - margin:d0 + depth + margin, h0:h0 + height, w0:w0 + width]
        low = self.degradations[index](extended)
        high = extended[margin:margin + depth]
        if self.data.rician_snr_range:
            snr = self.data.rician_snr_range[0] + (self.data.rician_snr_range[1] - self.data.rician_snr_range[0]) * \
                float(torch.rand((), generator=generator))
            low = rician(low, self.signals[index] / snr, generator)
        if self.data.flips:
            # Flipping after degrading is exact: the thick-slice grid is symmetric within the patch.
            for axis in range(3):
                if torch.rand((), generator=generator).item() < 0.5:
                    high = high.flip(axis)
                    low = low.flip(axis)
        mapping = self.mappings[index]
        return mapping.forward(low)[None].float(), mapping.forward(high)[None].float()

    def __call__(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        pairs = [self.sample_pair(generator) for _ in range(batch_size)]
        shapes = {tuple(high.shape) for _, high in pairs}
        if len(shapes) > 1:
            # Volumes smaller than the patch give smaller patches; crop the batch to the common size.
            _, depth, height, width = (min(s[axis] for s in shapes) for axis in range(4))
            pairs = [(low[:, :depth // self.factor, :height, :width], high[:, :depth, :height, :width])
                     for low, high in pairs]
        return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])


def rician(image: torch.Tensor, sigma: float, generator: torch.Generator) -> torch.Tensor:
    """Return ``sqrt((image + sigma n1)^2 + (sigma n2)^2)``, the Rician model of `medgan.physics.mri`.

    `medgan.physics.mri.add_rician_noise` derives sigma from the image it is given. A patch is too small for a
    stable foreground mean, so the sampler passes the whole volume's sigma here instead.
    """
    real = torch.randn(image.shape, generator=generator, dtype=image.dtype)
    imaginary = torch.randn(image.shape, generator=generator, dtype=image.dtype)
    return torch.sqrt((image + sigma * real) ** 2 + (sigma * imaginary) ** 2)


def build_sr_validation_cases(data: DataConfig, task: Task, volumes: list[tuple[str, Volume]],
                              seed: int) -> list[ValidationCase]:
    """Degrade whole validation volumes once: thick slices, then Rician noise at ``data.validation_rician_snr``.

    The high-resolution reference is cropped along k to the slices that whole thick slices cover, so the
    network's output grid matches it voxel for voxel. Both sides use the volume's own intensity mapping.
    """
    factor = tensor_factors(task)[0]
    generator = torch.Generator().manual_seed(seed)
    cases = []
    for name, volume in volumes:
        tensor = volume_to_tensor(volume.array)[0, 0].float()
        degradation = ThickSliceDegradation(factor, volume.spacing_mm[2], data.slice_profile)
        margin = degradation.margin
        depth = (tensor.shape[0] - 2 * margin) // factor * factor
        if depth < factor:
            raise ValueError(f"Validation volume {name} has {tensor.shape[0]} slices along k, too few for one thick "
                             f"slice of {factor} with profile {data.slice_profile!r}.")
        extended = tensor[:depth + 2 * margin]
        low = degradation(extended)
        if data.validation_rician_snr is not None:
            low = rician(low, float(foreground_mean(tensor)) / data.validation_rician_snr, generator)
        mapping = task.intensity.for_volume(tensor)
        cases.append(ValidationCase(name, mapping.forward(low)[None, None].float(),
                                    mapping.forward(extended[margin:margin + depth])[None, None].float()))
    return cases
