#!/usr/bin/env bash
# Run every test: the notebooks (plain `nbdev_test`: slow cells skipped, default workers; --timing only prints each
# notebook's seconds), the README check, then pytest (CLI, data, resilience, distributed, the wheel, the notebooks
# under a Jupyter kernel, the docs site in headless Chromium, the export check). Expects the environment from
# tools/setup_env.sh; needs no network and nothing outside the clone (the download tests serve texts they make from
# a local HTTP server on 127.0.0.1; tests/test_standalone.py runs the data tests in a copy of the clone with nothing
# beside it). Extra arguments go to pytest, e.g. `bash tools/test.sh -k cli`.
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
start=$(date +%s)
echo "== nbdev_test (the default run: slow cells skipped; per-notebook seconds below)"
# One torch thread per notebook process, the tests' policy (the library sets none): nbdev_test runs as many
# workers as there are cores, and two threads per worker on 2 cores oversubscribe them (the default run took
# 765 s instead of 106 s on a busy machine). tests/conftest.py gives the same default to pytest and every
# process it starts, and the kernel test to its kernels. Override with OMP_NUM_THREADS=N.
nb_threads="${OMP_NUM_THREADS:-1}"
t0=$(date +%s); OMP_NUM_THREADS=$nb_threads nbdev_test --timing
echo "nbdev_test: $(( $(date +%s) - t0 )) s on $(nproc) cores, OMP_NUM_THREADS=$nb_threads (issue 11: under 120 s on 2)"
export CHARRNN_CACHE="${CHARRNN_CACHE:-$(mktemp -d)}"   # pytest never touches the user's real cache
export MPLBACKEND=Agg
echo "== README is rendered from nbs/index.ipynb"; python tools/render_readme.py --check
echo "== pytest"; time python -m pytest -q tests "$@"
echo "all tests passed in $(( $(date +%s) - start )) s"
