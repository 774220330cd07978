#!/usr/bin/env bash
# Short Fashion-MNIST runs that differ only in their augmentation (the recipe's width, batch, lr,
# cosine schedule and seed), then one table: which augmentation to give the 30-minute recipe.
#
#   benchmarks/fmnist_aug_screen.sh                                   # the specs below, 4 epochs each
#   EPOCHS=2 SPECS="preset=natural crop=0.35-1" benchmarks/fmnist_aug_screen.sh
#   EPOCHS=1 LIMIT=2048 WIDTH=8 OUT=/tmp/screen benchmarks/fmnist_aug_screen.sh   # check the script
#
# Each SPEC is an --aug text over the natural preset ("preset=NAME" alone: that preset). The kNN is
# the training monitor's on the full split (60 000 memory, 10 000 queries, k = 200), after the last
# epoch. Runs are sequential: each has both cores, and the images/s column is comparable.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-runs/aug_screen}
WIDTH=${WIDTH:-16}
EPOCHS=${EPOCHS:-4}
BIN=${BIN:-.venv/bin}
LIMIT=${LIMIT:-}
SPECS=${SPECS:-"preset=natural crop=0.35-1 crop=0.5-1 rotate=10 jitter=0.2 blur=0.3"}

mkdir -p "$OUT"
n=0
for spec in $SPECS; do
    n=$((n + 1))
    run="$OUT/$n"
    if [[ $spec == preset=* ]]; then aug=(--preset "${spec#preset=}"); else aug=(--aug "$spec"); fi
    echo "== $spec → $run"
    "$BIN/invedge" train --data fashion-mnist --width "$WIDTH" --epochs "$EPOCHS" --out "$run" --overwrite \
        --schedule cosine --batch-size 128 --lr 0.03 --seed 0 --eval-every "$EPOCHS" --eval-memory 0 \
        --eval-queries 0 -q "${aug[@]}" ${LIMIT:+--limit "$LIMIT"} > /dev/null
    echo "$spec" > "$run/spec.txt"
done

"$BIN/python" - "$OUT" "$n" <<'PY'
import json, sys
from pathlib import Path

out, n = Path(sys.argv[1]), int(sys.argv[2])
rows = []
for i in range(1, n + 1):
    run = out / str(i)
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    seconds = sum(m["seconds"] for m in metrics)
    rows.append(((run / "spec.txt").read_text().strip(), metrics[-1]["knn_accuracy"], seconds, metrics[-1]["loss"]))
base = rows[0][1]
print(f"{'augmentation':<28} {'kNN':>8} {'vs first':>9} {'train s':>8} {'loss':>7}")
for spec, knn, seconds, loss in rows:
    print(f"{spec:<28} {100 * knn:7.2f}% {100 * (knn - base):+8.2f} {seconds:8.0f} {loss:7.4f}")
(out / "screen.json").write_text(json.dumps([dict(zip(("spec", "knn", "seconds", "loss"), r)) for r in rows], indent=1))
PY
