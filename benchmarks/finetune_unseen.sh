#!/usr/bin/env bash
# --init on unseen classes (the paper's protocol, Ye et al. 2019 §4.2): train on Fashion-MNIST
# classes 0-4, then train briefly on classes 5-9 starting from that run (--init) and, for the same
# budget, from random weights; Recall@1 on the test images of 5-9 for both, and for the 0-4 run
# applied directly (no training on 5-9 at all).
#
#   benchmarks/finetune_unseen.sh                              # → runs/unseen (about 8 min on 2 cores)
#   SEEN_EPOCHS=1 NEW_EPOCHS=1 LIMIT=2048 WIDTH=8 OUT=/tmp/u benchmarks/finetune_unseen.sh   # check the script
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-runs/unseen}
WIDTH=${WIDTH:-16}
SEEN_EPOCHS=${SEEN_EPOCHS:-6}
NEW_EPOCHS=${NEW_EPOCHS:-1}
BIN=${BIN:-.venv/bin}
LIMIT=${LIMIT:-}
common=(--data fashion-mnist --schedule cosine --batch-size 128 --lr 0.03 --seed 0 -q --eval-every 0 ${LIMIT:+--limit "$LIMIT"})

"$BIN/invedge" train "${common[@]}" --classes 0-4 --width "$WIDTH" --epochs "$SEEN_EPOCHS" --out "$OUT/seen" --overwrite > /dev/null
"$BIN/invedge" train "${common[@]}" --classes 5-9 --init "$OUT/seen" --epochs "$NEW_EPOCHS" --out "$OUT/init" --overwrite > /dev/null
"$BIN/invedge" train "${common[@]}" --classes 5-9 --width "$WIDTH" --epochs "$NEW_EPOCHS" --out "$OUT/scratch" --overwrite > /dev/null
for run in seen init scratch; do
    "$BIN/invedge" eval "$OUT/$run" --classes 5-9 --protocol retrieval --json > "$OUT/$run.retrieval.json"
done

"$BIN/python" - "$OUT" "$SEEN_EPOCHS" "$NEW_EPOCHS" <<'PY'
import json, sys
from pathlib import Path

out, seen, new = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
rows = {
    "seen": f"trained on 0-4 ({seen} epochs), applied to 5-9 directly",
    "init": f"--init the 0-4 run, then {new} epoch(s) on 5-9",
    "scratch": f"random weights, {new} epoch(s) on 5-9",
}
print(f"{'run':<52} {'R@1':>7} {'R@8':>7} {'NMI':>6}")
report = {}
for name, what in rows.items():
    r = json.loads((out / f"{name}.retrieval.json").read_text())
    report[name] = {"what": what, **{k: r[k] for k in ("recall@1", "recall@2", "recall@4", "recall@8", "nmi")}}
    print(f"{what:<52} {100 * r['recall@1']:6.2f}% {100 * r['recall@8']:6.2f}% {r['nmi']:6.3f}")
(out / "unseen.json").write_text(json.dumps(report, indent=1))
print(f"wrote {out / 'unseen.json'}")
PY
