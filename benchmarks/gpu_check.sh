#!/usr/bin/env bash
# One short check of the CUDA paths (training loop, precision, compile, long run, torch bench rows)
# on a GPU machine: under 8 minutes on an H200, writes a JSON report and prints a table.
# See benchmarks/gpu_check.py for the steps.
#
#   benchmarks/gpu_check.sh                            # → gpu_check.json (+ gpu_check-runs/)
#   benchmarks/gpu_check.sh --out /tmp/g.json          # elsewhere
#   benchmarks/gpu_check.sh --dry-run --out /tmp/d.json   # every step at toy size on a CPU (seconds)
#
# The GPU machine has no network: Fashion-MNIST's four files come with the working tree, and
# INVEDGE_FASHION_MNIST points at their folder (default: the Debian package's folder); the project
# is installed there with `pip install --no-deps -e .`. PYTHON picks the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
data="${INVEDGE_FASHION_MNIST:-/usr/share/datasets/fashion-mnist}"
for f in train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz; do
    if [[ ! -f "$data/$f" ]]; then
        echo "error: Fashion-MNIST file $data/$f not found. Set INVEDGE_FASHION_MNIST to the folder holding the four files" >&2
        exit 1
    fi
done
export INVEDGE_FASHION_MNIST="$data"
exec "$PYTHON" benchmarks/gpu_check.py "$@"
