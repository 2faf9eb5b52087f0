#!/usr/bin/env bash
# The acceptance chain on real faces, as a user would type it: pack ../shared/data/faces-300w into a
# train/val split by a stable hash of each face's key (the training faces' silhouette jaw moved to the 3D
# contour, `--jaw 2d-3d`), add 300W-LP-style profiled views of both splits, train the teacher FAN on real and
# profiled faces, train every Table 1/2 variant of section 5 (Ours-pixel, Ours-pixel-feature,
# Ours-pixel-feature-heatmap, Ours-pixel-feature-heatmap-GAN, Super-FAN) and evaluate them all three times
# (Tables 1 and 2, the 51-point AUC and the error per landmark group, CED curves, sample grid): on the real
# validation faces, on those with their rendered profiled views, and on real faces in every pose
# (AFLW2000-3D, ../shared/data/aflw2000-dev, never trained on) -- the `tiny` profile on the CPU.
#
#   scripts/acceptance_300w.sh [FACES_300W_DIR] [OUT_DIR] [PROFILE] [AFLW2000_DIR]
#       (defaults: ../shared/data/faces-300w out/acceptance tiny ../shared/data/aflw2000-dev; the third
#        evaluation is skipped, saying so, when AFLW2000_DIR is absent)
#   environment: TRAIN_VIEWS (profiled views per training face, default 2), PROFILE_PITCH (degrees of pitch
#   tilt per view, default 15); to go on from scripts/teacher_study.sh, which packs the same shards and
#   trains the same teacher: PACKS (its packs folder, reused; default OUT/packs) and TEACHER (its checkpoint,
#   used instead of training one)
#
# The profile's stages form one chain (pixel -> feature -> heatmap -> gan -> end2end, each starting from the
# one before), trained as one Train run with train.keep_checkpoints=null, so Ray keeps every epoch's
# checkpoint (the profile's 2 would delete the earlier variants'); each variant is its stage's last one. Prints
# the wall time of each step; the tables land in OUT_DIR/eval*/table1.md and table2.md.
set -euo pipefail
DATA=${1:-../shared/data/faces-300w}
OUT=${2:-out/acceptance}
PROFILE=${3:-tiny}
AFLW=${4:-../shared/data/aflw2000-dev}
TRAIN_VIEWS=${TRAIN_VIEWS:-2}
PROFILE_PITCH=${PROFILE_PITCH:-15}
PATH="$(pwd)/.venv/bin:$PATH"
export RAY_USAGE_STATS_ENABLED=0 PYTHONUNBUFFERED=1

[ -d "$DATA" ] || { echo "acceptance: $DATA not found (the faces-300w set)" >&2; exit 2; }
rm -rf "$OUT" && mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
start=$(date +%s)
last=$start
step() {
  local now; now=$(date +%s)
  echo "== $1 (at $(( now - start )) s; previous step $(( now - last )) s)"
  last=$now
}

# The shards (scripts/real_face_packs.sh): 300-W split into train/val by a stable hash of each face's key, the
# training faces' jaws on the 3D contour, their profiled views, and AFLW2000-dev.
source "$(dirname "$0")/real_face_packs.sh"
PACKS=${PACKS:-$OUT/packs}
step "pack and profile 300-W ($TRAIN_VIEWS view(s) a training face, 45 and 75 degrees a validation face), pack AFLW2000 (in $PACKS; reused when present)"
mkdir -p "$PACKS" && PACKS=$(cd "$PACKS" && pwd)
real_face_packs "$PACKS" "$DATA" "$AFLW" "$TRAIN_VIEWS" "$PROFILE_PITCH"
mkdir -p "$OUT/shards"
for name in train val val-profiled aflw2000; do
  if [ -d "$PACKS/$name" ]; then ln -s "$PACKS/$name" "$OUT/shards/$name"; fi
done
ln -s "$PACKS/train-profiled-v$TRAIN_VIEWS-p$PROFILE_PITCH" "$OUT/shards/train-profiled"
TRAIN="$OUT/shards/train/manifest.json" VAL="$OUT/shards/val/manifest.json"
TRAIN_P="$OUT/shards/train-profiled/manifest.json" VAL_P="$OUT/shards/val-profiled/manifest.json"
AFLW_VAL=""
[ -f "$OUT/shards/aflw2000/manifest.json" ] && AFLW_VAL="$OUT/shards/aflw2000/manifest.json"

if [ -n "${TEACHER:-}" ]; then
  [ -e "$TEACHER" ] || { echo "acceptance: TEACHER $TEACHER not found" >&2; exit 2; }
  step "teacher FAN: $TEACHER"
  echo "checkpoint: $TEACHER" > "$OUT/teacher.log"
else
  step "teacher FAN"
  superfan train fan --config "$PROFILE" --data "$TRAIN" --data "$TRAIN_P" --val "$VAL" --val "$VAL_P" \
    --storage "$OUT/runs" --name teacher | tee "$OUT/teacher.log"
  TEACHER=$(sed -n 's/^checkpoint: //p' "$OUT/teacher.log" | tail -1)
  [ -n "$TEACHER" ] || { echo "acceptance: the teacher run printed no checkpoint" >&2; exit 1; }
fi

step "Super-FAN stages (one chain, one checkpoint kept per epoch)"
superfan train superfan --config "$PROFILE" --data "$TRAIN" --data "$TRAIN_P" --val "$VAL" --val "$VAL_P" \
  --storage "$OUT/runs" --name superfan --teacher "$TEACHER" train.keep_checkpoints=null | tee "$OUT/superfan.log"
# The last checkpoint of each stage (checkpoint_<global epoch>_<stage>), in the profile's order, and the
# wall time of each stage from their write times.
CKPTS=()
prev=$(stat -c %Y "$OUT/teacher.log")
for STAGE in $(python -c "from superfan.config import load_config as l; print(*[s.name for s in l('$PROFILE').stages if s.kind != 'fan'])"); do
  CKPT=$(ls -d "$OUT/runs/superfan/checkpoint_"*"_$STAGE" 2>/dev/null | sort | tail -1)
  [ -n "$CKPT" ] || { echo "acceptance: no checkpoint of stage $STAGE" >&2; exit 1; }
  t=$(stat -c %Y "$CKPT")
  echo "   stage $STAGE: $(basename "$CKPT"), ~$(( t - prev )) s"
  prev=$t
  CKPTS+=("$CKPT")
done

step "evaluate on the real validation faces"
superfan evaluate --data "$VAL" --fan "$TEACHER" "${CKPTS[@]}" --out "$OUT/eval" --no-progress
step "evaluate on the real validation faces and their profiled views (all three yaw bins)"
superfan evaluate --data "$VAL" --data "$VAL_P" --fan "$TEACHER" "${CKPTS[@]}" --out "$OUT/eval-profiled" --no-progress
if [ -n "$AFLW_VAL" ]; then
  step "evaluate on real faces in every pose (AFLW2000-3D dev half; never trained on)"
  superfan evaluate --data "$AFLW_VAL" --fan "$TEACHER" "${CKPTS[@]}" --out "$OUT/eval-aflw2000" --no-progress
fi
step "done"
