#!/usr/bin/env bash
# Run every test: the notebooks (plain `nbdev_test`: slow cells skipped, default workers, no settings), the README
# check, then pytest (CLI, data, resilience, distributed, the wheel, the notebooks under a Jupyter kernel, the docs
# site in headless Chromium, the export check). Expects the environment from tools/setup_env.sh; needs no network
# and nothing outside the clone (the download tests serve ../shared/data from a local HTTP server where it exists).
# Extra arguments go to pytest, e.g. `bash tools/test.sh -k cli`.
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
start=$(date +%s)
echo "== nbdev_test"; time nbdev_test
export CHARRNN_CACHE="${CHARRNN_CACHE:-$(mktemp -d)}"   # pytest never touches the user's real cache
export MPLBACKEND=Agg
echo "== README is rendered from nbs/index.ipynb"; python tools/render_readme.py --check
echo "== pytest"; time python -m pytest -q tests "$@"
echo "all tests passed in $(( $(date +%s) - start )) s"
