#!/usr/bin/env bash
# The issue-4 acceptance chain on real faces, as a user would type it: pack ../shared/data/faces-300w into a
# train/val split by a stable hash of each face's key, train the teacher FAN, train the Super-FAN stages,
# and evaluate (Tables 1 and 2, CED curves, sample grid) -- the `tiny` profile on the CPU.
#
#   scripts/acceptance_300w.sh [FACES_300W_DIR] [OUT_DIR]      (defaults: ../shared/data/faces-300w out/acceptance)
#
# Prints the wall time of each step; the tables land in OUT_DIR/eval/table1.md and table2.md.
set -euo pipefail
DATA=${1:-../shared/data/faces-300w}
OUT=${2:-out/acceptance}
PATH="$(pwd)/.venv/bin:$PATH"
export RAY_USAGE_STATS_ENABLED=0 PYTHONUNBUFFERED=1

[ -d "$DATA" ] || { echo "acceptance: $DATA not found (the faces-300w set)" >&2; exit 2; }
rm -rf "$OUT" && mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
start=$(date +%s)
step() { echo "== $1 ($(( $(date +%s) - start )) s)"; }

step "pack train (hash 0-0.8) and val (hash 0.8-1)"
python -m shards pack 300w "$DATA" "$OUT/shards/train" --split train --hash-range 0:0.8 --workers 2 --quiet
python -m shards pack 300w "$DATA" "$OUT/shards/val" --split val --hash-range 0.8:1 --workers 2 --quiet
TRAIN="$OUT/shards/train/manifest.json" VAL="$OUT/shards/val/manifest.json"

step "teacher FAN"
superfan train fan --config tiny --data "$TRAIN" --val "$VAL" --storage "$OUT/runs" --name teacher \
  | tee "$OUT/teacher.log"
TEACHER=$(sed -n 's/^checkpoint: //p' "$OUT/teacher.log" | tail -1)

step "Super-FAN stages (heatmap -> gan -> end2end)"
superfan train superfan --config tiny --data "$TRAIN" --val "$VAL" --storage "$OUT/runs" --name superfan \
  --teacher "$TEACHER" | tee "$OUT/superfan.log"
SUPERFAN=$(sed -n 's/^checkpoint: //p' "$OUT/superfan.log" | tail -1)

step "evaluate on the validation faces"
superfan evaluate --data "$VAL" --fan "$TEACHER" "$SUPERFAN" --out "$OUT/eval" --no-progress
step "done"
