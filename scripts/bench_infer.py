"""Time medgan's sliding-window engine against MONAI's on the same network and volume.

Both run the shipped ldct-default network over a synthetic CT-like volume with the model's window. MONAI's
`sliding_window_inference` runs with its default arguments (overlap 0.25, constant blending, batch 1, padding to
the window). medgan's engine runs with its defaults (overlap 0.25, Gaussian blending, batch 1). The script
reports seconds, the speed ratio, the maximum absolute difference of the outputs in HU, and the peak resident
memory of the process.

Usage: python scripts/bench_infer.py [--shape 32 256 256] [--device cpu] [--repeats 1]
"""

from __future__ import annotations

import argparse
import platform
import resource
import time

import numpy as np
import torch
from monai.inferers import sliding_window_inference as monai_sliding_window_inference

from medgan import load_model
from medgan.inference.sliding_window import sliding_window_inference


def phantom_hu(shape: tuple[int, int, int], seed: int = 0) -> torch.Tensor:
    """Make a (D, H, W) body-like ellipse of soft tissue with bone and fat inserts in air, plus 20 HU noise."""
    depth, height, width = shape
    y, x = np.meshgrid(np.linspace(-1, 1, height), np.linspace(-1, 1, width), indexing="ij")
    body = np.where(x**2 / 0.8 + y**2 / 0.5 < 1, 40.0, -1000.0)
    body[(x - 0.3) ** 2 + y**2 < 0.01] = 900.0
    body[(x + 0.35) ** 2 + (y - 0.1) ** 2 < 0.02] = -100.0
    noise = np.random.default_rng(seed).normal(0.0, 20.0, shape)
    return torch.from_numpy((body[None] + noise).astype(np.float32))


def timed(function) -> tuple[torch.Tensor, float]:
    started = time.perf_counter()
    with torch.no_grad():
        result = function()
    return result, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=[32, 256, 256], metavar=("D", "H", "W"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=1)
    arguments = parser.parse_args()

    restorer = load_model("ldct-default", device=arguments.device)
    network = restorer.network
    window = restorer.default_roi()
    volume = restorer.intensity.forward(phantom_hu(tuple(arguments.shape)))[None, None]
    device = torch.device(arguments.device)

    medgan_times, monai_times = [], []
    for _ in range(arguments.repeats):
        ours, seconds = timed(lambda: sliding_window_inference(volume, network, window, device=device))
        medgan_times.append(seconds)
        theirs, seconds = timed(lambda: monai_sliding_window_inference(volume.to(device), window, 1, network))
        monai_times.append(seconds)
    difference_hu = (restorer.intensity.inverse(ours) - restorer.intensity.inverse(theirs.cpu())).abs().max()
    # The network is fully convolutional, so one pass over the whole volume is the reference that tiling
    # approximates: every window edge inside the volume changes the output within the receptive field.
    with torch.no_grad():
        whole = network(volume.to(device)).cpu()
    ours_error = (restorer.intensity.inverse(ours) - restorer.intensity.inverse(whole)).abs()
    theirs_error = (restorer.intensity.inverse(theirs.cpu()) - restorer.intensity.inverse(whole)).abs()
    peak_megabytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    input_megabytes = volume.numel() * 4 / 2**20

    print(f"machine: {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"device {arguments.device}")
    print(f"volume (D, H, W): {tuple(arguments.shape)}, window {window}, network {restorer.card.network['name']}")
    print(f"medgan engine: {min(medgan_times):.2f} s (best of {arguments.repeats})")
    print(f"MONAI default: {min(monai_times):.2f} s (best of {arguments.repeats})")
    print(f"speed ratio MONAI / medgan: {min(monai_times) / min(medgan_times):.2f}")
    print(f"max |difference| of outputs: {float(difference_hu):.2f} HU (the two blend overlaps differently)")
    print(f"against one whole-volume pass: medgan max {float(ours_error.max()):.2f} HU, mean "
          f"{float(ours_error.mean()):.4f} HU; MONAI max {float(theirs_error.max()):.2f} HU, mean "
          f"{float(theirs_error.mean()):.4f} HU")
    print(f"peak resident memory: {peak_megabytes:.0f} MiB for a {input_megabytes:.1f} MiB input")


if __name__ == "__main__":
    main()
