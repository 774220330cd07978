#!/usr/bin/env bash
# The 30-minute CPU run on Fashion-MNIST (the figure of issue 2), with its baselines, on this
# 2-core machine (AMX / AVX-512 BF16: bf16 autocast and channels_last are picked automatically).
#
#   benchmarks/fmnist_recipe.sh                   # → runs/fmnist30 (about 27 min of training)
#   RUN=runs/x WIDTH=32 EPOCHS=8 benchmarks/fmnist_recipe.sh
#   RUN=/tmp/r WIDTH=8 EPOCHS=1 LIMIT=2048 EVAL_LIMIT=1000 benchmarks/fmnist_recipe.sh   # check the script
#
# Why width 16, 16 epochs, all 60 000 images, the recipe's step schedule (short measurements here,
# full-set kNN, k = 200):
# - Equal wall time, width 16 learns faster than width 32 at the start: 2 epochs of width 16
#   (3.0 min, 661 img/s) gave 81.5 %, 1 epoch of width 32 (3.3 min, 307 img/s) gave 79.7 %.
# - Width 16 gains about 1.7 points per doubling of epochs (2 epochs 81.5 %, 4 epochs 83.2 %),
#   so 16 epochs point past 85 %; an epoch costs 90-97 s here, so 16 epochs plus a full-set kNN
#   every 2 epochs (~15 s each) fit in about 27 minutes, leaving a margin for a busier machine.
# - The step schedule (lr 0.03 for 60 % of the run, then 0.003, then 0.0015) is the paper's,
#   scaled; in the 4-epoch run its first decay gave the largest single gain (+1.2 points).
# - All images: every image seen more often is worth less than new ones in a short budget.
# The kNN per epoch comes from the training monitor (full train set as memory, full test set as
# queries, bf16 embeddings); the headline figure is the final fp32 `invedge eval` on the same split.
set -euo pipefail
cd "$(dirname "$0")/.."

RUN=${RUN:-runs/fmnist30}
WIDTH=${WIDTH:-16}
EPOCHS=${EPOCHS:-16}
EVAL_EVERY=${EVAL_EVERY:-2}
SCHEDULE=${SCHEDULE:-step}
BATCH=${BATCH:-128}
LR=${LR:-0.03}
BIN=${BIN:-.venv/bin}
LIMIT=${LIMIT:-}            # train on fewer images (a quick check of this script)
EVAL_LIMIT=${EVAL_LIMIT:-}  # evaluate on fewer images (idem)

start=$(date +%s)
"$BIN/invedge" train --data fashion-mnist --width "$WIDTH" --epochs "$EPOCHS" --out "$RUN" --overwrite \
    --schedule "$SCHEDULE" --batch-size "$BATCH" --lr "$LR" --eval-every "$EVAL_EVERY" --eval-memory 0 --eval-queries 0 --seed 0 ${LIMIT:+--limit "$LIMIT"}
trained=$(date +%s)
echo "training wall time: $(( (trained - start) / 60 )) min $(( (trained - start) % 60 )) s"

"$BIN/invedge" eval "$RUN" --json ${EVAL_LIMIT:+--limit "$EVAL_LIMIT"} > "$RUN/eval_knn.json"
for b in pixels pixels-normalized untrained; do
    "$BIN/invedge" eval "$RUN" --baseline "$b" --json ${EVAL_LIMIT:+--limit "$EVAL_LIMIT"} > "$RUN/baseline_$b.json"
done

"$BIN/python" - "$RUN" "$((trained - start))" <<'EOF'
import json, sys
from pathlib import Path

run, seconds = Path(sys.argv[1]), int(sys.argv[2])
print(f"\n{run}: {seconds // 60} min {seconds % 60} s of training")
print("epoch  loss     kNN (monitor)  minutes")
minutes = 0.0
for line in (run / "metrics.jsonl").read_text().splitlines():
    m = json.loads(line)
    minutes += (m["seconds"] + m.get("eval_seconds", 0)) / 60
    knn = f"{100 * m['knn_accuracy']:.2f} %" if m.get("knn_accuracy") is not None else "-"
    print(f"{m['epoch']:>5}  {m['loss']:.4f}   {knn:>12}  {minutes:7.1f}")
final = json.loads((run / "eval_knn.json").read_text())
print(f"final kNN (fp32, {final['memory']} memory / {final['queries']} queries): {100 * final['knn_accuracy']:.2f} %")
for b in ("pixels", "pixels-normalized", "untrained"):
    r = json.loads((run / f"baseline_{b}.json").read_text())
    print(f"baseline {r['evaluated']}: {100 * r['knn_accuracy']:.2f} %")
EOF
