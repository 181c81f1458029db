#!/usr/bin/env bash
# Install medgan with its test dependencies into .venv and run the test suite.
# torch 2.13.0 (CPU build) is installed first so that pip never pulls a several-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q torch==2.13.0
python -m pip install -q -e ".[test,dicom-codecs]"
python -m pytest -q "$@"
