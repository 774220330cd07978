#!/usr/bin/env bash
# Does bf16 autocast keep the accuracy of fp32 training, and how much faster is it? Same seed, same
# data, same schedule, trained twice in this one command; each run then evaluated in fp32 with the
# full-set kNN (60k memory, 10k queries, k = 200), so only the training precision differs.
#
#   benchmarks/bf16_vs_fp32.sh                         # width 16, 20 000 images, 3 epochs (~7 min here)
#   WIDTH=64 LIMIT=4096 EPOCHS=1 benchmarks/bf16_vs_fp32.sh   # the paper's width, a quick look
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-runs/precision}
WIDTH=${WIDTH:-16}
EPOCHS=${EPOCHS:-3}
LIMIT=${LIMIT:-20000}
BIN=${BIN:-.venv/bin}

for p in fp32 bf16; do
    "$BIN/invedge" train --data fashion-mnist --width "$WIDTH" --epochs "$EPOCHS" --limit "$LIMIT" \
        --precision "$p" --schedule cosine --eval-every 0 --seed 0 --out "$OUT/$p" --overwrite --quiet
    "$BIN/invedge" eval "$OUT/$p" --json > "$OUT/$p/eval_knn.json"
done

"$BIN/python" - "$OUT" <<'PY'
import json, sys
from pathlib import Path

out = Path(sys.argv[1])
rows = {}
for p in ("fp32", "bf16"):
    metrics = [json.loads(line) for line in (out / p / "metrics.jsonl").read_text().splitlines()]
    ips = sum(m["images"] for m in metrics) / sum(m["seconds"] for m in metrics)
    rows[p] = (ips, json.loads((out / p / "eval_knn.json").read_text())["knn_accuracy"])
print("precision  img/s    kNN (fp32 eval)")
for p, (ips, knn) in rows.items():
    print(f"{p:9s}  {ips:6.1f}   {100 * knn:.2f} %")
print(f"bf16 / fp32 speed: {rows['bf16'][0] / rows['fp32'][0]:.2f}x; "
      f"kNN difference: {100 * (rows['bf16'][1] - rows['fp32'][1]):+.2f} points")
PY
