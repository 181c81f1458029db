"""Probe SMORE-style self-supervised super-resolution with a plain residual 2D CNN on one thick-slice scan.

A plain 2D network trained for minutes on one scan's own in-plane pairs has been reported to gain several dB
over cubic B-spline. This script repeats that experiment reproducibly, with no shipped model and no other
data, only the thick-slice scan itself. It is independent of
``medgan.adaptation`` (which fine-tunes the 3D shipped network) and serves as the reference point for it.

1. The thick-slice volume (slice axis k, ``--factor`` times coarser than i and j) is divided by its 99.5th
   percentile and upsampled along k with a cubic B-spline onto the fine grid, output slice m at input slice
   coordinate (m + 0.5) / factor - 0.5 (the convention of ``medgan infer``).
2. Training pairs come from the scan's own axial slices: an in-plane axis is averaged in contiguous blocks of
   ``factor`` pixels (the boxcar slice profile of the thick slices), upsampled back in the same way, and paired
   with the original pixels. Both in-plane axes, both directions and every block phase give pairs.
3. A residual 2D CNN (``--layers`` 3x3 convolutions of ``--channels`` channels, ReLU) learns the correction with
   L1 loss and Adam for ``--minutes`` of wall time.
4. It is applied to the B-spline volume's (i, k) and (j, k) slices with k in place of the degraded axis, and the
   two results are averaged. Data consistency then shifts each run of ``factor`` output slices to average to
   its thick slice.

PSNR follows the ``mri-brain`` protocol of ``medgan evaluate``: both images divided by the reference's 99.5th
percentile, over the voxels where the reference exceeds 10 % of it.

Usage (after ``python scripts/prepare_mri_samples.py``):
    python scripts/probe_smore_2d.py work/mri-eval/thick_8mm.nii.gz work/mri-eval/reference_2mm.nii.gz --minutes 3
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import affine_transform
from torch import nn

from medgan.evaluation.metrics import psnr_db
from medgan.evaluation.protocols import PROTOCOLS
from medgan.io import read_volume


def upsample_axis0(image: np.ndarray, factor: int, length: int) -> np.ndarray:
    """Cubic B-spline along axis 0: output row m sits at input row (m + 0.5) / factor - 0.5; edges repeat."""
    matrix = np.array([1.0 / factor] + [1.0] * (image.ndim - 1))
    offset = [0.5 / factor - 0.5] + [0.0] * (image.ndim - 1)
    return affine_transform(image, matrix, offset=offset, output_shape=(length, *image.shape[1:]), order=3,
                            mode="nearest")


def in_plane_pairs(thick: np.ndarray, factor: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Return (degraded, original) 2D pairs from each axial slice, degraded along axis 0 of each pair."""
    pairs = []
    for k in range(thick.shape[2]):
        axial = thick[:, :, k]
        for image in (axial, axial.T, axial[::-1], axial.T[::-1]):
            for phase in range(factor):
                length = (image.shape[0] - phase) // factor * factor
                fine = np.ascontiguousarray(image[phase:phase + length])
                coarse = fine.reshape(length // factor, factor, -1).mean(axis=1)
                pairs.append((upsample_axis0(coarse, factor, length).astype(np.float32), fine.astype(np.float32)))
    return pairs


def residual_cnn(layers: int, channels: int) -> nn.Module:
    body: list[nn.Module] = [nn.Conv2d(1, channels, 3, padding=1), nn.ReLU()]
    for _ in range(layers - 2):
        body += [nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU()]
    body.append(nn.Conv2d(channels, 1, 3, padding=1))
    return nn.Sequential(*body)


def restore(network: nn.Module, upsampled: np.ndarray) -> np.ndarray:
    """Apply the 2D correction along (i, k) and (j, k) slices of an (i, j, k) volume and average the two."""
    with torch.no_grad():
        by_i = torch.from_numpy(np.ascontiguousarray(upsampled.transpose(0, 2, 1))).float()[:, None]
        by_j = torch.from_numpy(np.ascontiguousarray(upsampled.transpose(1, 2, 0))).float()[:, None]
        out_i = (by_i + network(by_i))[:, 0].numpy().transpose(0, 2, 1)
        out_j = (by_j + network(by_j))[:, 0].numpy().transpose(2, 0, 1)
    return (out_i + out_j) / 2.0


def data_consistency(fine: np.ndarray, thick: np.ndarray, factor: int) -> np.ndarray:
    blocks = fine.reshape(*fine.shape[:2], thick.shape[2], factor)
    return (blocks + (thick[..., None] - blocks.mean(axis=-1, keepdims=True))).reshape(fine.shape)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("thick", type=Path, help="thick-slice volume, slices along k")
    parser.add_argument("reference", type=Path, help="the fine volume the thick slices were averaged from")
    parser.add_argument("--factor", type=int, default=4)
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--crop", type=int, default=24, help="training crop size in pixels")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    arguments = parser.parse_args()

    torch.set_num_threads(arguments.threads)
    torch.manual_seed(arguments.seed)
    rng = np.random.default_rng(arguments.seed)
    factor = arguments.factor
    thick_volume = read_volume(arguments.thick)
    reference = read_volume(arguments.reference).array.astype(np.float64)
    scale = float(np.percentile(thick_volume.array, 99.5))
    thick = thick_volume.array.astype(np.float64) / scale
    if reference.shape != (*thick.shape[:2], thick.shape[2] * factor):
        raise SystemExit(f"The reference has shape {reference.shape}; expected {(*thick.shape[:2], thick.shape[2] * factor)} "
                         f"for factor {factor}.")

    protocol = PROTOCOLS["mri-brain"]

    def score(candidate: np.ndarray) -> float:
        prepared = protocol.prepare(reference, candidate * scale)
        return psnr_db(prepared.arrays[0], prepared.arrays[1], protocol.data_range, prepared.mask)

    upsampled = np.moveaxis(upsample_axis0(np.moveaxis(thick, 2, 0), factor, thick.shape[2] * factor), 0, 2)
    print(f"cubic B-spline: {score(upsampled):.2f} dB; with data consistency "
          f"{score(data_consistency(upsampled, thick, factor)):.2f} dB")

    pairs = in_plane_pairs(thick, factor)
    network = residual_cnn(arguments.layers, arguments.channels)
    optimizer = torch.optim.Adam(network.parameters(), lr=arguments.learning_rate)
    start = time.monotonic()
    step = 0
    while time.monotonic() - start < arguments.minutes * 60.0:
        inputs, targets = [], []
        for index in rng.integers(len(pairs), size=arguments.batch_size):
            coarse, fine = pairs[index]
            rows = min(arguments.crop, coarse.shape[0]) // factor * factor
            cols = min(arguments.crop, coarse.shape[1])
            row = rng.integers(0, (coarse.shape[0] - rows) // factor + 1) * factor
            col = rng.integers(0, coarse.shape[1] - cols + 1)
            flip = slice(None, None, -1 if rng.random() < 0.5 else 1)
            inputs.append(coarse[row:row + rows, col:col + cols][:, flip].copy())
            targets.append(fine[row:row + rows, col:col + cols][:, flip].copy())
        batch = torch.from_numpy(np.stack(inputs))[:, None]
        target = torch.from_numpy(np.stack(targets))[:, None]
        loss = (batch + network(batch) - target).abs().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        step += 1
        if step % 500 == 0:
            print(f"{time.monotonic() - start:6.0f} s, step {step}: L1 {loss.item():.4f}, "
                  f"PSNR {score(restore(network, upsampled)):.2f} dB", flush=True)
    restored = restore(network, upsampled)
    print(f"after {step} steps ({(time.monotonic() - start) / 60:.1f} min): {score(restored):.2f} dB; with data "
          f"consistency {score(data_consistency(restored, thick, factor)):.2f} dB")


if __name__ == "__main__":
    main()
