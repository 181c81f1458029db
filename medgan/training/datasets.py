"""Training pairs: random 3D patches of (low-quality, high-quality) volumes in network units.

Two sources: normal-dose volumes with low dose simulated on the fly in the projection domain, or paired
low/normal-dose volumes on the same grid (listed by `medgan.training.manifests`). Both draw every random choice
from an explicit ``torch.Generator``, so a seeded run samples the same patches again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from medgan.config import DataConfig
from medgan.inference.restorer import volume_to_tensor
from medgan.io import Volume
from medgan.tasks import IntensityMapping
from medgan.training.manifests import PairEntry
from medgan.training.simulation import NoiseBank, SliceNoiseSimulator

logger = logging.getLogger(__name__)


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * torch.rand((), generator=generator).item()


def _randint(generator: torch.Generator, high: int) -> int:
    """Uniform integer in ``[0, high)``."""
    return int(torch.randint(high, (), generator=generator).item())


def list_volume_paths(entries: list[str]) -> list[Path]:
    """Expand config entries into volume paths: NIfTI/NRRD/MHA files, or folders holding DICOM series or volumes.

    A folder counts as one DICOM series unless it contains NIfTI, NRRD or MHA files, which are listed instead.

    Raises:
        FileNotFoundError: if an entry does not exist.
    """
    suffixes = (".nii", ".nii.gz", ".nrrd", ".mha")
    paths: list[Path] = []
    for entry in entries:
        path = Path(entry)
        if not path.exists():
            raise FileNotFoundError(f"Training volume {path} not found (listed in the config's data section).")
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.name.endswith(suffixes))
            paths.extend(files if files else [path])
        else:
            paths.append(path)
    return paths


def _check_same_grid(low: Volume, high: Volume, low_path: object, high_path: object) -> None:
    """Raise unless the pair shares shape and affine (within 1e-3 mm): pairs are never resampled silently."""
    if low.shape != high.shape or not np.allclose(low.affine, high.affine, atol=1e-3):
        raise ValueError(
            f"Paired volumes must share one grid: {low_path} has shape {low.shape} and {high_path} has shape "
            f"{high.shape}, affines\n{low.affine}\nand\n{high.affine}. Resample one onto the other first."
        )


@dataclass
class _PatchBox:
    start: tuple[int, int, int]
    size: tuple[int, int, int]


class PatchSampler:
    """Draw batches of random ``(low, high)`` patches, ``(B, 1, D, H, W)`` in network units.

    Args:
        data: the data section of the config.
        intensity: mapping from physical units to network units.
        high_volumes: normal-dose volumes (HU), one per training case.
        low_volumes: paired low-dose volumes on the same grids, or ``None`` to simulate low dose.

    ``generator`` seeds the noise bank when ``data.simulation`` is ``"noise-bank"``.

    With probability ``data.thin_patch_probability`` a patch is one slice repeated along D, noise included:
    networks with replicated-edge padding then learn what they will see on a single-slice input.
    """

    def __init__(self, data: DataConfig, intensity: IntensityMapping, high_volumes: list[Volume],
                 low_volumes: list[Volume] | None = None, generator: torch.Generator | None = None) -> None:
        if not high_volumes:
            raise ValueError("PatchSampler needs at least one volume.")
        self.data = data
        self.intensity = intensity
        self.high = [volume_to_tensor(v.array)[0, 0] for v in high_volumes]
        self.low = [volume_to_tensor(v.array)[0, 0] for v in low_volumes] if low_volumes is not None else None
        self.simulators: list[SliceNoiseSimulator | NoiseBank] | None = None
        if self.low is None:
            self.simulators = [
                SliceNoiseSimulator(hu, _slice_spacing_mm(volume), data) for hu, volume in zip(self.high, high_volumes)
            ]
            if data.simulation == "noise-bank":
                bank_generator = generator if generator is not None else torch.Generator().manual_seed(0)
                logger.info("Precomputing a noise bank of %d realizations per slice", data.noise_bank_size)
                self.simulators = [NoiseBank(s, data.noise_bank_size, bank_generator) for s in self.simulators]
        voxels = torch.tensor([float(t.numel()) for t in self.high])
        self.volume_weights = voxels / voxels.sum()

    def _draw_box(self, shape: tuple[int, ...], generator: torch.Generator) -> _PatchBox:
        size = tuple(min(p, s) for p, s in zip(self.data.patch_size, shape))
        start = tuple(_randint(generator, s - p + 1) for s, p in zip(shape, size))
        return _PatchBox(start=start, size=size)  # type: ignore[arg-type]

    def sample_pair(self, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw one ``(low, high)`` pair of ``(1, D, H, W)`` patches in network units."""
        index = int(torch.multinomial(self.volume_weights, 1, generator=generator).item())
        high_volume = self.high[index]
        box = self._draw_box(tuple(high_volume.shape), generator)
        thin = torch.rand((), generator=generator).item() < self.data.thin_patch_probability
        (d0, h0, w0), (dd, dh, dw) = box.start, box.size
        slices = range(d0, d0 + (1 if thin else dd))
        high = high_volume[slices.start:slices.stop, h0:h0 + dh, w0:w0 + dw]
        if self.low is not None:
            low = self.low[index][slices.start:slices.stop, h0:h0 + dh, w0:w0 + dw]
        else:
            dose_fraction = _uniform(generator, *self.data.dose_fraction_range)
            noise = self.simulators[index].noise_hu(slices, (h0, h0 + dh, w0, w0 + dw), dose_fraction, generator)
            low = high + noise
        if thin:
            high = high.expand(dd, -1, -1)
            low = low.expand(dd, -1, -1)
        if self.data.flips:
            for axis in range(3):
                if torch.rand((), generator=generator).item() < 0.5:
                    high = high.flip(axis)
                    low = low.flip(axis)
        return self.intensity.forward(low)[None].float(), self.intensity.forward(high)[None].float()

    def __call__(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        pairs = [self.sample_pair(generator) for _ in range(batch_size)]
        shapes = {tuple(low.shape) for low, _ in pairs}
        if len(shapes) > 1:
            # Volumes smaller than the patch give smaller patches; crop the batch to the common size.
            common = [min(s[axis] for s in shapes) for axis in range(4)]
            pairs = [(low[:, :common[1], :common[2], :common[3]], high[:, :common[1], :common[2], :common[3]])
                     for low, high in pairs]
        return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])


def _slice_spacing_mm(volume: Volume) -> tuple[float, float]:
    """Pixel spacing of an axial slice in the (H, W) = (j, i) layout, in mm."""
    spacing_i, spacing_j, _ = volume.spacing_mm
    return (spacing_j, spacing_i)


def load_training_volumes(entries: list[PairEntry]) -> tuple[list[Volume], list[Volume] | None]:
    """Read each entry's volumes once: ``(high, low)``, with ``low`` ``None`` when low quality is simulated.

    Raises:
        ValueError: if some entries are paired and others not, or a pair's volumes differ in grid.
    """
    paired = {entry.low is not None for entry in entries}
    if len(paired) > 1:
        raise ValueError("Either every training entry has a low-quality volume or none has.")
    highs, lows = [], []
    for entry in entries:
        high = entry.high.read()
        logger.info("Training volume of patient %s: %r", entry.patient, high)
        highs.append(high)
        if entry.low is not None:
            low = entry.low.read()
            _check_same_grid(low, high, entry.low, entry.high)
            lows.append(low)
    return highs, (lows if paired == {True} else None)
