"""Compare training variants of the super-resolution refiner that ``medgan infer --adapt`` trains, on one scan.

``refine_super_resolution`` spends most of its budget on the refiner's steps, after nine passes of the 3D network
that do not depend on the variant. This script runs those passes once, keeps their output in a cache file, and
then trains one variant of the refiner for a fixed wall time on the cached pairs. It scores the result against
the reference under the ``mri-brain`` protocol of ``medgan evaluate``, after the same data consistency as
``medgan infer``. The refiner is applied to the whole prior at once instead of window by window, so scores differ
slightly from the CLI's. On Colin27 the shipped settings scored 31.08 dB here and 31.07 dB through the CLI, with
different step counts.

Each run appends one JSON line to ``--results``. docs/adaptation.md lists the runs behind the refiner's settings.

Usage (Colin27 pair from ``scripts/prepare_mri_samples.py --colin27``; one torch thread per run):
    python scripts/compare_refiner_variants.py work/mri-eval/colin27_thick_4mm.nii.gz \
        work/mri-eval/colin27_reference_1mm.nii.gz --cache work/refiner-cache.pt --name phases-bf16 \
        --seconds 1000 --precision bf16
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from medgan.adaptation.refine import PlaneRefiner, RefinedSuperResolution, _PlaneSampler, _super_resolve, phase_pairs
from medgan.evaluation.metrics import psnr_db, ssim_3d
from medgan.evaluation.protocols import PROTOCOLS
from medgan.inference.restorer import (
    enforce_thick_slice_consistency,
    load_model,
    tensor_to_volume_array,
    volume_to_tensor,
)
from medgan.io import read_volume
from medgan.tasks import IntensityMapping

SCALE = 4
"""Slice-axis factor of mri-sr-default."""


def build_cache(thick_path: Path, model: str, cache: Path) -> None:
    """Run the network over the scan and over the in-plane pairs of every phase; save the results to ``cache``."""
    started = time.monotonic()
    restorer = load_model(model, device="cpu")
    volume = read_volume(thick_path)
    intensity = IntensityMapping.from_dict(restorer.card.intensity).for_volume(volume.array)
    network = restorer.network.eval().requires_grad_(False)
    device = torch.device("cpu")
    inputs = intensity.forward(volume_to_tensor(volume.array.astype(np.float32)))[0, 0]
    prior = tensor_to_volume_array(_super_resolve(network, inputs, SCALE, device)[None, None])
    pairs = phase_pairs(network, prior, volume.spacing_mm, scale=SCALE, device=device)
    torch.save({"prior": torch.as_tensor(prior), "pairs": pairs, "intensity": intensity.to_dict()}, cache)
    print(f"cache written to {cache} in {time.monotonic() - started:.0f} s")


def learning_rate_at(base: float, schedule: str, fraction: float) -> float:
    """Return the learning rate after ``fraction`` of the wall time: constant or cosine decay to 0."""
    if schedule == "cosine":
        return base * 0.5 * (1.0 + math.cos(math.pi * fraction))
    return base


def train(arguments, pairs: list) -> tuple[torch.nn.Module, int]:
    """Train one refiner variant for ``arguments.seconds`` of wall time; return it and its number of steps."""
    generator = torch.Generator().manual_seed(arguments.seed)
    torch.manual_seed(arguments.seed)
    refiner = PlaneRefiner(arguments.layers, arguments.channels).train()
    bf16 = arguments.precision == "bf16"
    if bf16:
        refiner = refiner.to(memory_format=torch.channels_last)

    sampler = _PlaneSampler(pairs, arguments.crop)
    optimizer = torch.optim.Adam(refiner.parameters(), lr=arguments.lr)
    average = None
    if arguments.ema > 0:
        average = torch.optim.swa_utils.AveragedModel(
            refiner, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(arguments.ema))

    started = time.monotonic()
    steps = 0
    while (fraction := (time.monotonic() - started) / arguments.seconds) < 1.0:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate_at(arguments.lr, arguments.schedule, fraction)

        planes, targets = sampler(arguments.batch_size, generator)
        if bf16:
            planes = planes.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            outputs = refiner(planes)
        loss = torch.nn.functional.l1_loss(outputs.float(), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        steps += 1
        if average is not None:
            average.update_parameters(refiner)

    trained = average.module if average is not None else refiner
    return trained.to(memory_format=torch.contiguous_format).eval().requires_grad_(False), steps


class _ChunkedPlanes(torch.nn.Module):
    """Refiner applied 8 planes at a time, optionally averaged over the 4 flips of each plane."""

    def __init__(self, refiner: torch.nn.Module, flips: bool) -> None:
        super().__init__()
        self.refiner = refiner
        self.flip_dims = [(), (2,), (3,), (2, 3)] if flips else [()]

    def forward(self, planes: torch.Tensor) -> torch.Tensor:
        outputs = []
        for start in range(0, planes.shape[0], 8):
            chunk = planes[start:start + 8]
            total = torch.zeros_like(chunk)
            for dims in self.flip_dims:
                total += self.refiner(chunk.flip(dims)).flip(dims)
            outputs.append(total / len(self.flip_dims))
        return torch.cat(outputs)


def refine_volume(refiner: torch.nn.Module, fine: torch.Tensor, flips: bool) -> torch.Tensor:
    """Apply ``refiner`` to the (D, H) and (D, W) planes of ``(1, 1, D, H, W)`` ``fine`` and average them."""
    return RefinedSuperResolution(torch.nn.Identity(), _ChunkedPlanes(refiner, flips)).refine(fine)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("thick", type=Path, help="thick-slice scan, slices along k 4 times the in-plane spacing")
    parser.add_argument("reference", type=Path, help="reference on the output grid")
    parser.add_argument("--cache", type=Path, required=True,
                        help="cache file of the network's passes, written when missing")
    parser.add_argument("--model", default="mri-sr-default")
    parser.add_argument("--name", required=True, help="label of this run in the results")
    parser.add_argument("--results", type=Path, default=Path("refiner-variants.jsonl"))
    parser.add_argument("--seconds", type=float, default=1000.0, help="wall time of the refiner's steps")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--phases", choices=("one", "all"), default="all",
                        help="pairs from the first phase of the in-plane thick slices only, or from all four")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--schedule", choices=("constant", "cosine"), default="constant")
    parser.add_argument("--ema", type=float, default=0.0,
                        help="decay of an exponential weight average, or 0 for none")
    parser.add_argument("--flips", action="store_true", help="average over 4 flips of each plane at inference")
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--crop", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    arguments = parser.parse_args()

    torch.set_num_threads(arguments.threads)
    if not arguments.cache.exists():
        build_cache(arguments.thick, arguments.model, arguments.cache)
    # The cache is this script's own output, with tuples of tensors, so it is loaded without weights_only.
    cache = torch.load(arguments.cache, weights_only=False)
    pairs = [(inputs, targets) for phase, inputs, targets in cache["pairs"]
             if arguments.phases == "all" or phase == 0]
    refiner, steps = train(arguments, pairs)

    started = time.monotonic()
    with torch.no_grad():
        fine = refine_volume(refiner, volume_to_tensor(cache["prior"].numpy()), arguments.flips)
    inference_s = time.monotonic() - started
    intensity = IntensityMapping.from_dict(cache["intensity"])
    thick = read_volume(arguments.thick)
    reference = read_volume(arguments.reference)
    restored = tensor_to_volume_array(intensity.inverse(fine)).astype(np.float32)
    restored = enforce_thick_slice_consistency(restored, thick.array, SCALE)
    protocol = PROTOCOLS["mri-brain"]
    prepared = protocol.prepare(reference.array, restored.astype(np.float64))
    mapped_reference, mapped_restored = prepared.arrays
    row = {
        **{key: (str(value) if isinstance(value, Path) else value) for key, value in vars(arguments).items()},
        "steps": steps,
        "inference_s": round(inference_s, 1),
        "psnr_db": psnr_db(mapped_reference, mapped_restored, protocol.data_range, prepared.mask),
        "ssim": ssim_3d(mapped_reference, mapped_restored, protocol.data_range, prepared.mask),
    }
    print(json.dumps(row))
    with arguments.results.open("a") as results:
        results.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
