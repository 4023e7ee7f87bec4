#!/usr/bin/env bash
# The GPU matrix: measured peak VRAM and step time vs the prediction.
#
#   benchmarks/gpu/run.sh OUT_DIR                       # on a machine with one CUDA GPU
#   benchmarks/gpu/run.sh OUT_DIR --device cpu --tiny   # dry run here, on tiny models
#
# Needs torch, transformers, peft, pytest-benchmark, rich, tabulate; not `datasets`, no
# network, no install (the repository goes on PYTHONPATH). Commits nothing.
set -uo pipefail
if [ $# -lt 1 ]; then echo "usage: $0 OUT_DIR [--device cuda|cpu] [--tiny] [--budget-s S]" >&2; exit 2; fi
out=$1; shift
root=$(cd "$(dirname "$0")/../.." && pwd)
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
exec python3 "$root/benchmarks/gpu/run.py" --out "$out" "$@"
