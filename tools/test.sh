#!/usr/bin/env bash
# Run every test: the notebooks (nbdev_test, slow cells skipped) and pytest (CLI, resilience, docs site, kernel).
# Expects the environment from tools/setup_env.sh. Corpora come from ../shared/data unless CHARRNN_DATA is set.
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
export CHARRNN_DATA="${CHARRNN_DATA:-$(cd .. && pwd)/shared/data}"
export CHARRNN_CACHE="${CHARRNN_CACHE:-$(mktemp -d)}"   # never touch the user's real cache
export MPLBACKEND=Agg
# one thread per notebook process: two processes with two OpenMP threads each on two cores stall each other badly
echo "== nbdev_test"; time OMP_NUM_THREADS=1 nbdev_test --n_workers 2
echo "== README is rendered from nbs/index.ipynb"; python tools/render_readme.py --check
echo "== pytest"; time python -m pytest -q tests "$@"
