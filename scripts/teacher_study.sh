#!/usr/bin/env bash
# The teacher FAN alone, scored the way the acceptance chain scores it: how width, stacks, schedule and the
# profiled views change FAN-HR on real faces in every pose. Packs faces-300w and AFLW2000-dev as
# scripts/acceptance_300w.sh does (scripts/real_face_packs.sh; reused from PACKS when already there), trains `superfan train fan` with
# the given dotted overrides, and evaluates the teacher three times: on the real validation faces, on those
# with their rendered profiled views, and on AFLW2000-dev (never trained on, never used to pick a
# checkpoint: the teacher is its run's last checkpoint).
#
#   scripts/teacher_study.sh OUT [OVERRIDE ...]
#       e.g. scripts/teacher_study.sh out/teacher-wide model.fan.features=128
#   environment: PROFILE (default tiny), PACKS (default out/teacher-packs), TRAIN_VIEWS (profiled views per
#   training face, default 2), PROFILE_PITCH (default 15), FACES_300W and AFLW2000 (the data folders)
#
# Prints the wall time of each step; FAN-HR's rows land in OUT/eval*/table2.md.
set -euo pipefail
OUT=${1:?usage: scripts/teacher_study.sh OUT [OVERRIDE ...]}
shift
PROFILE=${PROFILE:-tiny}
DATA=${FACES_300W:-../shared/data/faces-300w}
AFLW=${AFLW2000:-../shared/data/aflw2000-dev}
TRAIN_VIEWS=${TRAIN_VIEWS:-2}
PROFILE_PITCH=${PROFILE_PITCH:-15}
PACKS=${PACKS:-out/teacher-packs}
PATH="$(pwd)/.venv/bin:$PATH"
export RAY_USAGE_STATS_ENABLED=0 PYTHONUNBUFFERED=1

for d in "$DATA" "$AFLW"; do [ -d "$d" ] || { echo "teacher_study: $d not found" >&2; exit 2; }; done
rm -rf "$OUT" && mkdir -p "$OUT" "$PACKS"
OUT=$(cd "$OUT" && pwd) PACKS=$(cd "$PACKS" && pwd)
start=$(date +%s)
step() { echo "== $1 (at $(( $(date +%s) - start )) s)"; }

source "$(dirname "$0")/real_face_packs.sh"
step "packs (in $PACKS; reused when present)"
real_face_packs "$PACKS" "$DATA" "$AFLW" "$TRAIN_VIEWS" "$PROFILE_PITCH"
M() { echo "$PACKS/$1/manifest.json"; }

step "teacher FAN ($PROFILE ${*:-with no overrides})"
superfan train fan --config "$PROFILE" --data "$(M train)" --data "$(M "train-profiled-v$TRAIN_VIEWS-p$PROFILE_PITCH")" \
  --val "$(M val)" --val "$(M val-profiled)" --storage "$OUT/runs" --name teacher "$@" | tee "$OUT/teacher.log"
TEACHER=$(sed -n 's/^checkpoint: //p' "$OUT/teacher.log" | tail -1)
[ -n "$TEACHER" ] || { echo "teacher_study: the teacher run printed no checkpoint" >&2; exit 1; }

step "evaluate: real validation faces; with their profiled views; AFLW2000-dev"
superfan evaluate --data "$(M val)" --fan "$TEACHER" --out "$OUT/eval" --no-progress >/dev/null
superfan evaluate --data "$(M val)" --data "$(M val-profiled)" --fan "$TEACHER" --out "$OUT/eval-profiled" --no-progress >/dev/null
superfan evaluate --data "$(M aflw2000)" --fan "$TEACHER" --out "$OUT/eval-aflw2000" --no-progress >/dev/null
for e in eval eval-profiled eval-aflw2000; do
  echo "$e: $(grep -m1 '^| FAN-HR' "$OUT/$e/table2.md")"
  echo "$e (51 inner points): $(grep '^| FAN-HR' "$OUT/$e/table2.md" | sed -n 2p)"
done
step "done"
