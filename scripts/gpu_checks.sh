#!/usr/bin/env bash
# Every GPU check of the project in one run, for a CUDA machine (CI has none; the same code paths run on
# CPU in `make test`):
#
#   scripts/gpu_checks.sh OUT_DIR [PYTHON]      (PYTHON defaults to python3; run from the repository root)
#
#   1. pytest -m gpu tests/test_gpu.py: every stage step in bf16 + channels_last, the enhancer against CPU,
#      the training loop from shards, collectives under nccl, cpu:gloo,cuda:nccl and gloo;
#   2. scripts/gpu_share.py: two Train ranks on one GPU, and 1/2/4 trials per GPU (docs/results.md, "Several
#      trials per GPU");
#   3. superfan bench models / train (paper profile, batch 64) / enhance: the GPU figures of docs/results.md;
#   4. scripts/loop_throughput.py with the paper profile: the loop with its data stream, no Ray;
#   5. cost (issue 31; not in the default STEPS: STEPS=cost, ~8 min, at most 11.5 by its step limits): `superfan bench loop` on 4,096
#      packed synthetic faces, paper profile, bf16 + channels_last: heatmap and end2end stages, data.augment_on
#      device at batch 64/256/512/1024 and loader at 64/256/512, device at 1024 with the real-world degradation
#      (nvJPEG round trips), heatmap at 512 with torch.compile (train.compile), then generator inference (`bench models`) at batch 1024/4096/8192. JSON rows in
#      OUT_DIR/cost_*.json, written as each is measured, so a step cut short by its limit keeps its rows.
#
# Each step has its own time limit and its own output file in OUT_DIR; a failed step does not stop the
# others. The script exits non-zero when any step failed. STEPS="tests share bench loop" picks steps;
# SHARE_STEPS sets gpu_share.py's steps per trial (default 200).
set -uo pipefail
OUT=${1:?usage: scripts/gpu_checks.sh OUT_DIR [PYTHON]}
PY=${2:-python3}
STEPS=${STEPS:-tests share bench loop}
export RAY_USAGE_STATS_ENABLED=0 PYTHONUNBUFFERED=1
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d)
failed=()

step() {  # step NAME LIMIT_S CMD...: run CMD with a limit, its output in OUT/NAME.txt
  local name=$1 limit=$2 t0 rc
  shift 2
  t0=$(date +%s)
  echo "== $name: $*"
  timeout --kill-after=10 "$limit" "$@" >"$OUT/$name.txt" 2>&1
  rc=$?
  echo "== $name: exit $rc in $(( $(date +%s) - t0 )) s"
  tail -n 25 "$OUT/$name.txt"
  [ "$rc" -eq 0 ] || failed+=("$name")
}

has() { [[ " $STEPS " == *" $1 "* ]]; }

{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  "$PY" -c "import sys, torch, torchvision; print(sys.version.split()[0], 'torch', torch.__version__, 'torchvision', torchvision.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"
  echo "CPU cores: $(nproc)"
} >"$OUT/machine.txt" 2>&1
cat "$OUT/machine.txt"

SUPERFAN=("$PY" -c "import sys; from superfan.cli import main; sys.exit(main(sys.argv[1:]))")  # the console script

if has tests; then
  step tests 240 "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py
fi
if has share; then
  step gpu_share 300 "$PY" scripts/gpu_share.py "$WORK/share" --steps "${SHARE_STEPS:-200}"
fi
if has bench; then
  step bench_models 90 "${SUPERFAN[@]}" bench models
  step bench_train 120 "${SUPERFAN[@]}" bench train --config paper --batch 64 --steps 10
  step bench_enhance 120 "${SUPERFAN[@]}" bench enhance --batches 1,64,256,1000
fi
if has loop; then
  step loop 300 "$PY" scripts/loop_throughput.py "$WORK/loop" --config paper
fi
if has cost; then  # issue 31: where a trial's GPU-hours go (docs/development.md, "GPU cost")
  step cost_pack 40 "$PY" -m shards pack synthetic 4096 "$WORK/cost/train" --split train --shard-size 512 \
    --pack-workers "$(nproc)" --no-progress
  LOOP=(bench loop --config paper --data "$WORK/cost/train/manifest.json" --stages heatmap,end2end
        --loader-workers "$(( $(nproc) > 3 ? $(nproc) - 2 : 1 ))" --steps 3 --seconds 3 --warmup-steps 2)
  step cost_loop_device 180 "${SUPERFAN[@]}" "${LOOP[@]}" --augment-on device --batches 64,256,512,1024 \
    --json-out "$OUT/cost_loop_device.json"
  # Not 1,024 on the loader path: 12-14 workers x 4 prefetched batches of finished float tensors (heatmaps
  # 285 MB a batch) would hold ~19 GB of shared memory; the device path hands over ~25 MB of JPEG bytes.
  step cost_loop_loader 150 "${SUPERFAN[@]}" "${LOOP[@]}" --augment-on loader --batches 64,256,512 \
    --json-out "$OUT/cost_loop_loader.json"
  step cost_loop_compile 120 "${SUPERFAN[@]}" "${LOOP[@]}" --stages heatmap --augment-on device --batches 512 \
    --compile --json-out "$OUT/cost_loop_compile.json"
  step cost_loop_real_world 60 "${SUPERFAN[@]}" "${LOOP[@]}" --stages heatmap --augment-on device --batches 1024 \
    --real-world --json-out "$OUT/cost_loop_real_world.json"
  for b in 1024 4096 8192; do
    step "cost_generator_$b" 45 "${SUPERFAN[@]}" bench models --batch "$b" --json-out "$OUT/cost_generator_$b.json"
  done
fi
rm -rf "$WORK"
if [ ${#failed[@]} -gt 0 ]; then
  echo "gpu checks: FAILED: ${failed[*]}"
  exit 1
fi
echo "gpu checks: all passed"
