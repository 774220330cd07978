#!/usr/bin/env bash
# The 30-minute CPU run on Fashion-MNIST (the figures below, from two machines), with its baselines.
# bf16 autocast and channels_last are picked where the CPU has native bf16 (AMX / AVX-512 BF16).
#
#   benchmarks/fmnist_recipe.sh                   # → runs/fmnist30 (6 epochs in fp32, 32 in bf16)
#   RUN=runs/fmnist30_28px AUG=size=0 EPOCHS=3 COMPARE=runs/fmnist30 benchmarks/fmnist_recipe.sh
#                                                 # full-size views, and both kNN curves against minutes
#   RUN=/tmp/r WIDTH=8 EPOCHS=1 LIMIT=2048 EVAL_LIMIT=1000 benchmarks/fmnist_recipe.sh   # check the script
#
# On a 2-core AMD EPYC (AVX2 only: fp32 at 130-150 img/s with 28 px views, 5x slower than
# the Xeon below). Short screens (python benchmarks/fmnist_screen.py: 19 200 images, 2 epochs,
# kNN on 20 000 train / 10 000 test images) against the base run, 300 steps, 76.22 % in 285 s:
# - 20 px views of the 28 px images (--aug size=20; evaluated at 28 px): 75.03 % at 300 steps
#   (162 s: 1.76x the loop's speed), 78.72 % at 660 steps (347 s). 24 px, 474 steps: 77.53 % (350 s);
#   16 px, 960 steps: 75.45 % (361 s). At equal time 20 px views were best.
# - Temperature 0.2: 75.72 % (-0.50). Gradient through the keys too (--no-detach-keys): +1.56 at
#   28 px, -0.68 at 20 px, +0.88 at 16 px: no clear gain, not taken.
# - The whole run: 6 epochs of 20 px views, 26.1 min of steps and 1.5 min of monitor
#   (228-234 img/s): 83.41 % (fp32, full split). That is below the 86.5 % asked for and the 85.13 %
#   of the Xeon's 20 epochs (which had 5x the speed).
# - On the Xeon, 20 px views should make each step about 1.7x faster as they did here, so 32 epochs
#   should fit in 30 minutes there: this is estimated, and it has not been run there.
#
# On a 2-core AMX Xeon in bf16. Why width 16, all 60 000 images, batch 128, lr 0.03, cosine
# (kNN on the full split, k = 200):
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
# The kNN per epoch comes from the training monitor (10 000 train / 2 000 test images every epoch,
# EVAL_MEMORY / EVAL_QUERIES; the Xeon's figures above took the full split every 5 epochs); the
# headline figure is always the final fp32 `invedge eval` on the full split (60 000 memory, 10 000
# queries).
set -euo pipefail
cd "$(dirname "$0")/.."

RUN=${RUN:-runs/fmnist30}
BIN=${BIN:-.venv/bin}
WIDTH=${WIDTH:-16}
# 6 in fp32 (the 2-core AVX2 EPYC: 27.6 min); 32 where bf16 autocast is native (the AMX Xeon: estimated, see above)
EPOCHS=${EPOCHS:-$("$BIN/python" -c "from invspread_edge.precision import cpu_has_native_bf16 as b; print(32 if b() else 6)")}
EVAL_EVERY=${EVAL_EVERY:-1}
SCHEDULE=${SCHEDULE:-cosine}
BATCH=${BATCH:-128}
LR=${LR:-0.03}
AUG=${AUG:-size=20}          # --aug over the paper's augmentation: 20 px views of the 28 px images
KEYS=${KEYS:---detach-keys}  # the authors' gradient; --no-detach-keys: through both sides
EVAL_MEMORY=${EVAL_MEMORY:-10000}  # the per-epoch monitor (0: all); the final figure is always the full split
EVAL_QUERIES=${EVAL_QUERIES:-2000}
LIMIT=${LIMIT:-}            # train on fewer images (a quick check of this script)
EVAL_LIMIT=${EVAL_LIMIT:-}  # evaluate on fewer images (idem)
COMPARE=${COMPARE:-}        # another run of this script (e.g. AUG=size=0): both kNN curves against minutes

start=$(date +%s)
"$BIN/invedge" train --data fashion-mnist --width "$WIDTH" --epochs "$EPOCHS" --out "$RUN" --overwrite \
    --schedule "$SCHEDULE" --batch-size "$BATCH" --lr "$LR" --aug "$AUG" $KEYS --eval-every "$EVAL_EVERY" \
    --eval-memory "$EVAL_MEMORY" --eval-queries "$EVAL_QUERIES" --seed 0 ${LIMIT:+--limit "$LIMIT"}
trained=$(date +%s)
echo "training wall time: $(( (trained - start) / 60 )) min $(( (trained - start) % 60 )) s"

"$BIN/invedge" eval "$RUN" --json ${EVAL_LIMIT:+--limit "$EVAL_LIMIT"} > "$RUN/eval_knn.json"
for b in pixels pixels-normalized untrained; do
    "$BIN/invedge" eval "$RUN" --baseline "$b" --json ${EVAL_LIMIT:+--limit "$EVAL_LIMIT"} > "$RUN/baseline_$b.json"
done

"$BIN/python" - "$RUN" "$((trained - start))" "$EVAL_MEMORY" "$EVAL_QUERIES" "$COMPARE" <<'EOF'
import json, sys
from pathlib import Path

run, seconds = Path(sys.argv[1]), int(sys.argv[2])
print(f"\n{run}: {seconds // 60} min {seconds % 60} s of training")
print(f"epoch  loss     kNN (monitor: {sys.argv[3]} memory / {sys.argv[4]} queries, 0 = all)  minutes")
minutes = 0.0
for line in (run / "metrics.jsonl").read_text().splitlines():
    m = json.loads(line)
    minutes += (m["seconds"] + m.get("eval_seconds", 0)) / 60
    knn = f"{100 * m['knn_accuracy']:.2f} %" if m.get("knn_accuracy") is not None else "-"
    print(f"{m['epoch']:>5}  {m['loss']:.4f}   {knn:>12}  {minutes:49.1f}")
final = json.loads((run / "eval_knn.json").read_text())
print(f"final kNN (fp32, {final['memory']} memory / {final['queries']} queries): {100 * final['knn_accuracy']:.2f} %")
references = {"target": 0.865, "final (full split)": final["knn_accuracy"]}  # the monitor sees a subset
for b in ("pixels", "pixels-normalized", "untrained"):
    r = json.loads((run / f"baseline_{b}.json").read_text())
    print(f"baseline {r['evaluated']}: {100 * r['knn_accuracy']:.2f} %")
    references[b] = r["knn_accuracy"]

from invspread_edge.plots import plot_curves

metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
plot_curves(metrics, run / "curves_baselines.png", "kNN per epoch against its baselines", references)
print(f"wrote {run / 'curves_baselines.png'}")
if sys.argv[5]:
    from invspread_edge.plots import plot_knn_over_time

    other = Path(sys.argv[5])
    runs = {}
    for r in (run, other):
        config = json.loads((r / "run.json").read_text())["config"]
        view = config["augment"]["view_size"] or config["image_size"]
        lines = (r / "metrics.jsonl").read_text().splitlines()
        runs[f"{r.name}: {view} px views, {len(lines)} epochs"] = [json.loads(line) for line in lines]
        final = json.loads((r / "eval_knn.json").read_text())["knn_accuracy"]
        print(f"{r.name}: final kNN {100 * final:.2f} %")
    plot_knn_over_time(runs, run / "recipe_vs_compare.png", "kNN (monitor) against minutes", references)
    print(f"wrote {run / 'recipe_vs_compare.png'}")
EOF
