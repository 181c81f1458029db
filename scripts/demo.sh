#!/usr/bin/env bash
# Install medgan into .venv and denoise the shipped real CT sample with the shipped ldct-default model.
# torch 2.13.0 (CPU build) is installed first so that pip never pulls a several-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q torch==2.13.0
python -m pip install -q -e .
mkdir -p demo-output
medgan infer medgan/data/ct_small_quarter_dose.nii.gz -o demo-output/ct_small_denoised.nii.gz --overwrite
