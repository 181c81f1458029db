"""Time medgan's sliding-window engine against MONAI's on the same network, volume and window.

Both run the shipped ldct-default network over a synthetic CT-like volume with the model's default window.
MONAI's `sliding_window_inference` runs with its default arguments (overlap 0.25, constant blending, one window
per call) on the network as loaded. medgan's engine runs as `Restorer.restore` runs it: overlap 0.25, Gaussian
blending, channels-last 3D on CPU, ``--batch-size`` windows per call and ``--precision``.

The script reports:
- seconds of each engine and the speed ratio;
- agreement: medgan with constant blending against MONAI (the same windows and weights, so they must agree to
  rounding), medgan's default Gaussian blending against MONAI, and each against one whole-volume pass;
- the GFLOP/s of the network's convolutions in medgan's run, counted with ``torch.utils.flop_counter``, against
  a ceiling: one Conv3d of the network's channel width on a large input, timed in a loop;
- with ``--rss``, the peak resident memory of the engine alone on a ``--rss-shape`` float32 volume, measured in a
  separate process (``ru_maxrss``), against the input's size.

Usage: python scripts/bench_infer.py [--shape 32 256 256] [--device cpu] [--precision fp32] [--batch-size 4]
       [--threads N] [--rss --rss-shape 400 512 512 --rss-network shipped|identity]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time

import numpy as np
import torch
from monai.inferers import sliding_window_inference as monai_sliding_window_inference
from torch.utils.flop_counter import FlopCounterMode

from medgan import load_model
from medgan.inference.sliding_window import plan_tiling, sliding_window_inference
from medgan.models.files import load_model_files


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


def conv_flops_per_window(network, window, batch_size: int, channels_last: bool, precision: str,
                          device: torch.device) -> float:
    """Count the FLOPs of one network call on ``batch_size`` windows and return them per window."""
    batch = torch.zeros((batch_size, 1, *window), device=device)
    if channels_last:
        batch = batch.to(memory_format=torch.channels_last_3d)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        network(batch)
    return counter.get_total_flops() / batch_size


def conv3d_ceiling(channels: int, device: torch.device, precision: str, channels_last: bool,
                   seconds: float = 5.0) -> float:
    """Return the GFLOP/s of one Conv3d(channels, channels, 3) on a (1, channels, 32, 96, 96) input, timed in a loop."""
    conv = torch.nn.Conv3d(channels, channels, 3, padding=1).to(device).eval()
    data = torch.randn(1, channels, 32, 96, 96, device=device)
    if channels_last:
        conv = conv.to(memory_format=torch.channels_last_3d)
        data = data.to(memory_format=torch.channels_last_3d)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    flops = 2 * channels * channels * 27 * data[0, 0].numel()
    calls = 0
    with torch.no_grad(), torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        conv(data)
        started = time.perf_counter()
        while time.perf_counter() - started < seconds or calls < 3:
            conv(data)
            calls += 1
        if device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - started
    return flops * calls / elapsed / 1e9


def rss_child(arguments) -> None:
    """Run the engine once on a float32 volume of ``--rss-shape`` and print peak memory figures as JSON."""
    restorer = load_model("ldct-default", device=arguments.device)
    network = restorer.network if arguments.rss_network == "shipped" else (lambda batch: batch)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    volume = torch.randn((1, 1, *arguments.rss_shape), generator=torch.Generator().manual_seed(0)) * 0.02
    started = time.perf_counter()
    with torch.no_grad():
        output = sliding_window_inference(volume, network, restorer.default_roi(),
                                          batch_size=arguments.batch_size, precision=arguments.precision,
                                          channels_last=restorer.channels_last, device=restorer.device)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"shape": list(arguments.rss_shape), "input_bytes": volume.numel() * 4,
                      "baseline_rss_bytes": baseline, "peak_rss_bytes": peak, "seconds": seconds,
                      "output_shape": list(output.shape)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=[32, 256, 256], metavar=("D", "H", "W"),
                        help="volume for the timing comparison, voxels")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32")
    parser.add_argument("--batch-size", type=int, default=4, help="windows per network call in medgan's run")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--no-reference", action="store_true", help="skip the whole-volume pass (saves memory)")
    parser.add_argument("--rss", action="store_true", help="also measure peak memory in a separate process")
    parser.add_argument("--rss-shape", type=int, nargs=3, default=[400, 512, 512], metavar=("D", "H", "W"))
    parser.add_argument("--rss-network", choices=["shipped", "identity"], default="shipped",
                        help="network of the memory run: identity measures the engine's own memory in seconds "
                             "instead of the shipped network's hours on a few CPU cores")
    parser.add_argument("--rss-child", action="store_true", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.threads is not None:
        torch.set_num_threads(arguments.threads)
    if arguments.rss_child:
        rss_child(arguments)
        return

    device = torch.device(arguments.device)
    restorer = load_model("ldct-default", device=device)
    plain_network, _ = load_model_files("ldct-default", device=str(device))  # as a MONAI user would run it
    plain_network.eval()
    window = restorer.default_roi()
    volume = restorer.intensity.forward(phantom_hu(tuple(arguments.shape)))[None, None]
    hu = restorer.intensity.inverse

    def ours(blend: str = "gaussian") -> torch.Tensor:
        return sliding_window_inference(volume, restorer.network, window, batch_size=arguments.batch_size,
                                        blend=blend, precision=arguments.precision,
                                        channels_last=restorer.channels_last, device=device)

    medgan_times, monai_times = [], []
    for _ in range(arguments.repeats):
        medgan_output, seconds = timed(ours)
        medgan_times.append(seconds)
        monai_output, seconds = timed(lambda: monai_sliding_window_inference(volume.to(device), window, 1,
                                                                             plain_network).cpu())
        monai_times.append(seconds)
    constant_output, _ = timed(lambda: ours("constant"))

    tilings = plan_tiling(volume.shape[2:], window, 0.25, (1, 1, 1))
    windows = int(np.prod([len(tiling.starts) for tiling in tilings]))
    flops = conv_flops_per_window(restorer.network, [t.window for t in tilings], arguments.batch_size,
                                  restorer.channels_last, arguments.precision, device) * windows
    channels = int(restorer.card.network["kwargs"].get("channels", 32))
    ceiling = conv3d_ceiling(channels, device, arguments.precision, restorer.channels_last)
    achieved = flops / min(medgan_times) / 1e9

    print(f"machine: {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"device {arguments.device}, precision {arguments.precision}")
    print(f"volume (D, H, W): {tuple(arguments.shape)}, window {window}, {windows} windows, network "
          f"{restorer.card.network['name']} {restorer.card.network['kwargs']}, medgan batch {arguments.batch_size}, "
          f"channels-last {restorer.channels_last}")
    print(f"medgan engine: {min(medgan_times):.2f} s (best of {arguments.repeats})")
    print(f"MONAI default: {min(monai_times):.2f} s (best of {arguments.repeats})")
    print(f"speed ratio MONAI / medgan: {min(monai_times) / min(medgan_times):.2f}")
    print(f"max |medgan constant blending - MONAI|: {float((hu(constant_output) - hu(monai_output)).abs().max()):.4f} HU")
    print(f"max |medgan Gaussian blending - MONAI|: {float((hu(medgan_output) - hu(monai_output)).abs().max()):.2f} HU")
    if not arguments.no_reference:
        # The network is fully convolutional, so one pass over the whole volume is the reference that tiling
        # approximates: every window edge inside the volume changes the output within the receptive field.
        with torch.no_grad():
            whole = plain_network(volume.to(device)).cpu()
        for name, result in (("medgan", medgan_output), ("MONAI", monai_output)):
            error = (hu(result) - hu(whole)).abs()
            print(f"{name} against one whole-volume pass: max {float(error.max()):.2f} HU, mean "
                  f"{float(error.mean()):.4f} HU")
    print(f"convolution throughput: {achieved:.1f} GFLOP/s ({flops / 1e9:.1f} GFLOP); Conv3d({channels}, "
          f"{channels}, 3) ceiling {ceiling:.1f} GFLOP/s; {100 * achieved / ceiling:.0f} % of the ceiling")
    peak_megabytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory of this process: {peak_megabytes:.0f} MiB")

    if arguments.rss:
        command = [sys.executable, __file__, "--rss-child", "--device", arguments.device, "--precision",
                   arguments.precision, "--batch-size", str(arguments.batch_size), "--rss-shape",
                   *map(str, arguments.rss_shape), "--rss-network", arguments.rss_network]
        if arguments.threads is not None:
            command += ["--threads", str(arguments.threads)]
        figures = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
        model_bytes = figures["baseline_rss_bytes"]
        ratio = (figures["peak_rss_bytes"] - model_bytes) / figures["input_bytes"]
        print(f"engine with the {arguments.rss_network} network on {tuple(figures['shape'])} float32 ({figures['input_bytes'] / 2**20:.0f} MiB input): "
              f"peak RSS {figures['peak_rss_bytes'] / 2**20:.0f} MiB, of which {model_bytes / 2**20:.0f} MiB before "
              f"the input (interpreter, torch, model); {ratio:.2f} x the input above that, "
              f"{figures['seconds']:.0f} s")


if __name__ == "__main__":
    main()
