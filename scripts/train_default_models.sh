#!/usr/bin/env bash
# Rebuild the two shipped models from the real data that installs offline, then measure them on held-out real
# scans. Run from the repository root in an environment made with: pip install -e ".[test,recipe]"
#
# Wall time on a 2-core x86_64 machine (torch 2.13.0+cpu), measured while other jobs shared it: ldct-default
# about 35 minutes, mri-sr-default 57 minutes. train.device "auto" uses a GPU when there is one.
# Each step refuses to overwrite what exists; delete runs/ and work/ to start over.
set -euo pipefail
cd "$(dirname "$0")/.."

# Data: pseudo-volumes from real CT slices (pydicom-data), the MNI152 template (nilearn), and the held-out real
# thick-slice MRI pair (nibabel's anatomical.nii).
python scripts/prepare_ldct_data.py work/ldct-data --depth 32
python scripts/prepare_mri_data.py work/mri-data
python scripts/prepare_mri_samples.py

# Training: the recipes in configs/ are the shipped models' settings.
medgan train --task ldct --config configs/ldct.yaml --run-dir runs/ldct-default
medgan train --task mri-sr --config configs/mri_sr.yaml --run-dir runs/mri-sr-default

# Export: weights plus a model card each.
medgan export runs/ldct-default -o runs/ldct-default.safetensors --name ldct-default --weights ema
medgan export runs/mri-sr-default -o runs/mri-sr-default.safetensors --name mri-sr-default --weights ema

# Measure on data the models never saw, against classical baselines (docs/models.md shows the results).
medgan evaluate --model runs/ldct-default.safetensors --pairs configs/eval/ldct-held-out.csv \
    --protocol ldct-abdomen --baselines gaussian,nlm,bm3d -o runs/eval-ldct-default
medgan evaluate --model runs/mri-sr-default.safetensors --pairs configs/eval/mri-sr-held-out.csv \
    --protocol mri-brain --baselines linear,bspline -o runs/eval-mri-sr-default
echo "Copy runs/*.safetensors and their .json cards into medgan/models/shipped/ to ship them."
