#!/usr/bin/env bash
# Every GPU figure of bench/ in one go (under 5 minutes on one H200-class GPU), for a machine with CUDA and torch.
# Usage (repo root): bash bench/gpu_all.sh [OUTDIR]
# The package need not be installed: PYTHONPATH is set to the repo. Each figure is a JSON line; tables follow.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-bench/gpu-results}; mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
run() { local name=$1; shift; echo "== $name"; timeout 170 "$@" 2>&1 | tee "$out/$name.txt"; }
run throughput python bench/train_throughput.py --device cuda --steps 20
run sampling python bench/sampling.py --device cuda --chars 2000
run time_to_quality python bench/time_to_quality.py --device cuda --budget 60
# DDP through NCCL with one process (multi-GPU cannot be shown on one GPU)
echo "== ddp_nccl_1proc"
tmp=$(mktemp -d); head -c 200000 "$(python -c 'from charrnn.data import get_corpus; print(get_corpus("tinyshakespeare"))')" > "$tmp/t.txt"
timeout 120 python -m torch.distributed.run --standalone --nproc_per_node 1 -m charrnn.cli train "$tmp/t.txt" --out "$tmp/run" \
  --hidden 256 --layers 2 --batch-size 32 --seq-len 64 --max-steps 40 --eval-every 20 --device cuda 2>&1 | tee "$out/ddp.txt"
python -m charrnn generate "$tmp/run" --length 100 --seed 0 --device cuda | tee -a "$out/ddp.txt"
