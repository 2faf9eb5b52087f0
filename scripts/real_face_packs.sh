# Sourced by scripts/acceptance_300w.sh and scripts/teacher_study.sh: the shards both score on, packed once
# into a folder and reused when already there, so the two scripts always train and score on the same faces.
#
#   real_face_packs PACKS FACES_300W AFLW2000 TRAIN_VIEWS PROFILE_PITCH
#
# PACKS/train (300-W, hash 0-0.8, the silhouette jaw moved to the 3D contour: --jaw 2d-3d) and PACKS/val
# (hash 0.8-1, as annotated); PACKS/train-profiled-v<TRAIN_VIEWS>-p<PROFILE_PITCH>: 300W-LP-style profiled
# views (shards/profile.py) of the training faces, each turned to TRAIN_VIEWS of 30..90 degrees beyond its own
# yaw, its pitch tilted by up to PROFILE_PITCH degrees; PACKS/val-profiled: each validation face turned to 45
# and 75, so the three yaw bins are filled; PACKS/aflw2000 (real faces in every pose, never trained on) when
# AFLW2000 exists. Views are labelled on the 3D jaw contour (2D-3D), as AFLW2000-3D is.
real_face_packs() {
  local packs=$1 data=$2 aflw=$3 views=$4 pitch=$5
  _pack() {  # NAME ARGS...: pack once into PACKS/NAME
    local name=$1; shift
    [ -f "$packs/$name/manifest.json" ] && return 0
    python -m shards pack "$@" "$packs/$name" --pack-workers 2 --no-progress
  }
  _pack train 300w "$data" --split train --hash-range 0:0.8 --jaw 2d-3d
  _pack val 300w "$data" --split val --hash-range 0.8:1
  _pack "train-profiled-v$views-p$pitch" 300w "$data" --split train --hash-range 0:0.8 \
    --yaws default --profile-views "$views" --profile-pitch "$pitch"
  _pack val-profiled 300w "$data" --split val --hash-range 0.8:1 --yaws 45,75
  if [ -d "$aflw" ]; then
    _pack aflw2000 mat "$aflw" --split val --dataset aflw2000
  else
    echo "$aflw not found: the evaluation on real faces in every pose is skipped" >&2
  fi
}
