#!/usr/bin/env bash
# Set up a development environment from a fresh clone: .venv with torch (CPU build) and charrnn[dev].
# Safe to run again; it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then "${PYTHON:-python3}" -m venv .venv; fi
. .venv/bin/activate
# torch first, pinned: any looser requirement would make pip fetch a multi-GB CUDA build.
python -m pip install -q torch==2.13.0
python -m pip install -q -e ".[dev]"
python -c "import torch, nbdev, charrnn; print(f'charrnn {charrnn.__version__}, torch {torch.__version__}, nbdev {nbdev.__version__}')"
