"""Make the figures of docs/simulation.md under docs/images/.

- ``simulation_ct_dose.png``: the real CT slice medgan/data/ct_small.nii.gz at its own dose (100 %) and with
  noise inserted for 25 % and 10 % (``LowDoseCT(..., assume_noiseless_input=False)``, parallel beam, seed 0),
  in a soft-tissue window of [-160, 240] HU.
- ``simulation_mri_thickness.png``: a coronal slice of the MNI152 template (nilearn, 1 mm) at 1, 3 and 5 mm
  axial slice thickness (boxcar profile, low-resolution grid shown with nearest-neighbour pixels at the true
  aspect ratio).

Needs nilearn for the template (``pip install nilearn``); the template ships inside the nilearn wheel, so
nothing is downloaded.

Usage: python scripts/make_simulation_figures.py [--output-dir docs/images]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from medgan.inference.restorer import tensor_to_volume_array, volume_to_tensor
from medgan.io import Volume, read_volume
from medgan.transforms import LowDoseCT, ThickSliceMRI

ROOT = Path(__file__).resolve().parent.parent
CT_WINDOW_HU = (-160.0, 240.0)
LABEL_HEIGHT = 22


def to_gray(image: np.ndarray, low: float, high: float) -> np.ndarray:
    return (np.clip((image - low) / (high - low), 0, 1) * 255).astype(np.uint8)


def labelled_row(panels: list[np.ndarray], labels: list[str], gap: int = 6) -> Image.Image:
    """Put grayscale panels side by side, each with its label above it."""
    height = max(panel.shape[0] for panel in panels)
    width = sum(panel.shape[1] for panel in panels) + gap * (len(panels) - 1)
    canvas = Image.new("L", (width, height + LABEL_HEIGHT), color=255)
    draw = ImageDraw.Draw(canvas)
    left = 0
    for panel, label in zip(panels, labels):
        canvas.paste(Image.fromarray(panel), (left, LABEL_HEIGHT))
        draw.text((left + 4, 4), label, fill=0)
        left += panel.shape[1] + gap
    return canvas


def ct_figure(output: Path) -> None:
    volume = read_volume(ROOT / "medgan" / "data" / "ct_small.nii.gz")
    spacing_i, spacing_j, _ = volume.spacing_mm
    hu = volume_to_tensor(volume.array)[0, 0].double()
    panels = [volume.array[:, :, 0]]
    labels = ["100 % (real scan)"]
    for dose_fraction in (0.25, 0.10):
        transform = LowDoseCT(dose_fraction, assume_noiseless_input=False)
        low = transform(hu, (spacing_j, spacing_i), generator=torch.Generator().manual_seed(0))
        panels.append(tensor_to_volume_array(low[None, None])[:, :, 0])
        labels.append(f"{round(dose_fraction * 100)} % (simulated)")
    # Volume arrays are (i, j); show j as rows and i as columns, as volume_to_tensor does, at 2x size.
    images = [np.kron(to_gray(panel.T, *CT_WINDOW_HU), np.ones((2, 2), dtype=np.uint8)) for panel in panels]
    labelled_row(images, labels).save(output, optimize=True)


def mri_figure(output: Path) -> None:
    from nilearn.datasets import load_mni152_template

    template = load_mni152_template(resolution=1)
    volume = Volume(array=np.asarray(template.get_fdata(), dtype=np.float32), affine=template.affine, modality="MR")
    coronal_j = 126
    panels, labels = [], []
    for thickness_mm in (1.0, 3.0, 5.0):
        if thickness_mm == 1.0:
            thick = volume
            label = "1 mm (template)"
        else:
            thick = ThickSliceMRI(thickness_mm, slice_axis=2)(volume)
            label = f"{thickness_mm:.0f} mm slices"
        coronal = thick.array[:, coronal_j, :]
        # Repeat each thick slice over the 1 mm rows it averages, so all panels share the 1 mm scale. The
        # input rows past the last whole slab stay black.
        repeat = int(round(thick.spacing_mm[2]))
        stretched = np.zeros(volume.shape[0:1] + volume.shape[2:3], dtype=np.float32)
        stretched[:, : coronal.shape[1] * repeat] = np.repeat(coronal, repeat, axis=1)
        # Rows run from superior (top) to inferior, columns from right to left of the subject (RAS i axis).
        panels.append(to_gray(stretched.T[::-1], 0.0, 1.0))
        labels.append(label)
    images = [np.kron(panel, np.ones((2, 2), dtype=np.uint8)) for panel in panels]
    labelled_row(images, labels).save(output, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", type=Path, default=ROOT / "docs" / "images")
    arguments = parser.parse_args()
    arguments.output_dir.mkdir(parents=True, exist_ok=True)
    ct_output = arguments.output_dir / "simulation_ct_dose.png"
    mri_output = arguments.output_dir / "simulation_mri_thickness.png"
    ct_figure(ct_output)
    mri_figure(mri_output)
    for path in (ct_output, mri_output):
        print(f"Wrote {path} ({path.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
