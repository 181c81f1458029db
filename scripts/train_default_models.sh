#!/usr/bin/env bash
# Rebuild the two shipped models from the real data that installs offline, then measure them on held-out real
# scans. Run from the repository root in an environment made with: pip install -e ".[test,recipe]"
#
# Wall time on a 2-core x86_64 machine (torch 2.13.0+cpu), measured while other jobs shared it: ldct-default
# about 35 minutes for stage 1 and 30 for stage 2, mri-sr-default 57 minutes for stage 1 and 25 for stage 2.
# train.device "auto" uses a GPU when there is one. Fetching the packages needs apt-get, dpkg and npm.
# Each step refuses to overwrite what exists; delete runs/ and work/ to start over.
set -euo pipefail
cd "$(dirname "$0")/.."

# Real volumes from Debian and npm packages, fetched once into work/packages and never committed. They are a
# contiguous head CT (invesalius-examples, GPL-2), the Colin27 1 mm T1 brain, kept for testing only
# (mricron-data, BSD-3-clause), and two 1 mm T1 scans (brainbrowser 2.3.0, AGPL-3.0).
mkdir -p work/packages
(cd work/packages && apt-get download invesalius-examples mricron-data && npm pack brainbrowser@2.3.0)
dpkg -x work/packages/invesalius-examples_*.deb work/packages/invesalius
dpkg -x work/packages/mricron-data_*.deb work/packages/mricron

# Data: pseudo-volumes from real CT slices (pydicom-data) plus the real head CT, the MNI152 template (nilearn)
# plus the two real T1 scans, and the held-out real thick-slice MRI pairs (nibabel's anatomical.nii, Colin27).
python scripts/prepare_ldct_data.py work/ldct-data --depth 32 \
    --invesalius work/packages/invesalius/usr/share/doc/invesalius-examples/examples/Cranium.inv3
python scripts/prepare_mri_data.py work/mri-data --brainbrowser work/packages/brainbrowser-2.3.0.tgz
python scripts/prepare_mri_samples.py
python scripts/prepare_mri_samples.py --colin27 work/packages/mricron/usr/share/mricron/templates/ch2.nii.gz

# Training, stage 1: the first recipes train from scratch on the pseudo-volumes and the template only. The
# stage-2 volumes share their folders, so stage 1 lists its own volumes, with paths relative to configs/.
medgan train --task ldct --config configs/ldct.yaml --run-dir runs/ldct-default \
    --set 'data.volumes=[../work/ldct-data/train/explicit_VR-UN.nii.gz, ../work/ldct-data/train/bad_sequence.nii.gz]'
medgan train --task mri-sr --config configs/mri_sr.yaml --run-dir runs/mri-sr-default \
    --set 'data.volumes=[../work/mri-data/train/mni152_t1_k000-123.nii.gz, ../work/mri-data/train/mni152_t1_k000-123_2mm.nii.gz]'
mkdir -p work/models
medgan export runs/ldct-default -o work/models/ldct-stage1.safetensors --name ldct-default --weights generator
medgan export runs/mri-sr-default -o work/models/mri-sr-stage1.safetensors --name mri-sr-default --weights ema

# Training, stage 2: fine-tune each stage-1 network with the real volumes added (train.init_generator).
medgan train --task ldct --config configs/ldct_real.yaml --run-dir runs/ldct-real
medgan train --task mri-sr --config configs/mri_sr_real.yaml --run-dir runs/mri-sr-real

# Export: weights plus a model card each.
medgan export runs/ldct-real -o runs/ldct-default.safetensors --name ldct-default --weights ema
medgan export runs/mri-sr-real -o runs/mri-sr-default.safetensors --name mri-sr-default --weights ema

# Measure on data the models never saw, against classical baselines (docs/models.md shows the results).
medgan evaluate --model runs/ldct-default.safetensors --pairs configs/eval/ldct-held-out.csv \
    --protocol ldct-abdomen --baselines gaussian,nlm,bm3d -o runs/eval-ldct-default
medgan evaluate --model runs/mri-sr-default.safetensors --pairs configs/eval/mri-sr-held-out.csv \
    --protocol mri-brain --baselines linear,bspline -o runs/eval-mri-sr-default
medgan evaluate --model runs/mri-sr-default.safetensors --pairs configs/eval/mri-sr-colin27.csv \
    --protocol mri-brain --baselines linear,bspline -o runs/eval-mri-sr-default-colin27
echo "Copy runs/*.safetensors and their .json cards into medgan/models/shipped/ to ship them."
