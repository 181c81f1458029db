"""Measure an LDCT model on the held-out real CT slice (CT_small.dcm) and print a Markdown report.

Two inputs, both real CT the model never saw:
1. the slice at a simulated 25 % dose (the shipped sample), scored against the real normal-dose slice;
2. the real normal-dose slice as it is, with its own scanner noise.
Noise is the standard deviation in the most uniform 11 x 11 soft-tissue box of the normal-dose slice, found
automatically. Bias is the change of the mean HU in that box. A Gaussian filter is the reference baseline.

Usage: python scripts/evaluate_ldct_model.py [--model ldct-default] [--json OUT.json] [--update-card]

--update-card stores the numbers in the model's JSON card under metrics.held_out_ct_small. The weights, and so
the card's SHA-256, stay unchanged.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from importlib import resources

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from medgan import load_model, read_volume
from medgan.evaluation.metrics import HU_WINDOW_WIDE, psnr, ssim_slices, windowed
from medgan.evaluation.regions import find_uniform_region


def scores(reference: np.ndarray, candidate: np.ndarray, region, baseline_region_values: np.ndarray) -> dict:
    ref = windowed(np.transpose(reference, (2, 1, 0)), HU_WINDOW_WIDE)
    cand = windowed(np.transpose(candidate, (2, 1, 0)), HU_WINDOW_WIDE)
    values = region.take(candidate)
    return {
        "psnr_db": psnr(ref, cand),
        "ssim": ssim_slices(ref, cand),
        "noise_std_hu": float(values.std()),
        "mean_hu": float(values.mean()),
        "mean_shift_hu": float(values.mean() - baseline_region_values.mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ldct-default")
    parser.add_argument("--json", default=None)
    parser.add_argument("--update-card", action="store_true")
    arguments = parser.parse_args()

    data = resources.files("medgan.data")
    reference = read_volume(str(data / "ct_small.nii.gz"))
    low = read_volume(str(data / "ct_small_quarter_dose.nii.gz"))
    restorer = load_model(arguments.model, device="cpu")
    region = find_uniform_region(reference.array)

    started = time.perf_counter()
    restored_low = restorer.restore(low)
    seconds = time.perf_counter() - started
    restored_native = restorer.restore(reference)
    gaussian_low = gaussian_filter(low.array, sigma=(1.0, 1.0, 0.0))

    region_low = region.take(low.array)
    region_reference = region.take(reference.array)
    results = {
        "region": vars(region),
        "quarter_dose": {
            "input": scores(reference.array, low.array, region, region_low),
            "gaussian_sigma_1px": scores(reference.array, gaussian_low, region, region_low),
            "model": scores(reference.array, restored_low.array, region, region_low),
        },
        "native": {
            "input": scores(reference.array, reference.array, region, region_reference),
            "model": scores(reference.array, restored_native.array, region, region_reference),
        },
        "seconds_quarter_dose": seconds,
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
                   f"torch {torch.__version__}",
    }
    quarter = results["quarter_dose"]
    native = results["native"]
    results["quarter_dose"]["noise_reduction"] = 1 - quarter["model"]["noise_std_hu"] / quarter["input"]["noise_std_hu"]
    results["native"]["noise_reduction"] = 1 - native["model"]["noise_std_hu"] / native["input"]["noise_std_hu"]

    print(f"Uniform region (i, j, k box): {vars(region)}")
    print("\n| input | method | PSNR (dB) | SSIM | noise std (HU) | mean HU shift |")
    print("|---|---|---|---|---|---|")
    for case, rows in (("quarter dose (simulated)", quarter), ("native dose (real noise)", native)):
        for method in ("input", "gaussian_sigma_1px", "model"):
            if method not in rows:
                continue
            r = rows[method]
            print(f"| {case} | {method} | {r['psnr_db']:.2f} | {r['ssim']:.4f} | {r['noise_std_hu']:.1f} | "
                  f"{r['mean_shift_hu']:+.1f} |")
    print(f"\nNoise reduction: quarter dose {quarter['noise_reduction']:.1%}, native {native['noise_reduction']:.1%}")
    print(f"Restoring the quarter-dose slice took {seconds:.2f} s on {results['machine']}")
    if arguments.json:
        with open(arguments.json, "w", encoding="utf-8") as stream:
            json.dump(results, stream, indent=2, default=float)
    if arguments.update_card:
        update_card(arguments.model, results)


def update_card(model: str, results: dict) -> None:
    from medgan.io import atomic_output
    from medgan.models.files import card_path_for, resolve_model_path

    card_path = card_path_for(resolve_model_path(model))
    card = json.loads(card_path.read_text(encoding="utf-8"))
    quarter, native = results["quarter_dose"], results["native"]
    card["metrics"]["held_out_ct_small"] = {
        "protocol": "pydicom CT_small.dcm (real CT slice, never used in training or validation). PSNR and SSIM "
                    "in the window [-1000, 1000] HU mapped to [0, 1] against the real slice; noise std and mean "
                    "HU in the most uniform 11 x 11 soft-tissue box of the real slice. Command: python "
                    "scripts/evaluate_ldct_model.py --update-card",
        "quarter_dose_input": {k: round(v, 4) for k, v in quarter["input"].items()},
        "quarter_dose_output": {k: round(v, 4) for k, v in quarter["model"].items()},
        "quarter_dose_noise_reduction": round(quarter["noise_reduction"], 4),
        "native_dose_noise_std_hu_input": round(native["input"]["noise_std_hu"], 3),
        "native_dose_noise_std_hu_output": round(native["model"]["noise_std_hu"], 3),
        "native_dose_mean_shift_hu": round(native["model"]["mean_shift_hu"], 3),
        "native_dose_noise_reduction": round(native["noise_reduction"], 4),
    }
    with atomic_output(card_path, overwrite=True) as temporary:
        temporary.write_text(json.dumps(card, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    print(f"Updated {card_path}")


if __name__ == "__main__":
    main()
