#!/usr/bin/env bash
# Issue 9's run in one device call of at most 600 s: configs/camvid.py trained from scratch
# for as many steps as fit a fixed training-time budget on this machine, evaluated on val,
# and the evidence packed into one archive.
#
#   bash experiments/camvid/gpu_run.sh OUTPUT_DIR [TRAIN_BUDGET_S]
#
# 1. Calibration, unless STEPS is given: CALIBRATION_STEPS steps in a scratch workdir, which
#    measure images/s (timing.json, compilation and evaluation excluded). The evaluation
#    step lands in the persistent compilation cache and the real run loads it; the train
#    step does not carry over, since the poly schedule's length is a constant in it. So
#    calibration costs one extra train-step compilation: when the step time is already
#    known (experiments/gpu_speed), pass STEPS=N and skip it.
# 2. The run: num_train_steps = STEPS, or TRAIN_BUDGET_S x the measured steps/s rounded down
#    to a multiple of 100; 8 evaluations and checkpoints along the way. The step count is
#    in OUTPUT_DIR/schedule.txt and in the run's config.json.
# 3. OUTPUT_DIR/camvid_run.tgz: the workdir without checkpoints (config.json, timing.json,
#    training_curve.png, eval/*.json and pictures, predictions/, tensorboard/, train.log).
#
# Everything runs under one deadline (DEADLINE_S, default 560 s from the start). If the run
# would pass it, it gets SIGTERM, saves a checkpoint and stops with status 75; the archive
# is still written, and the log says so. Rerunning with the same STEPS on the same machine
# resumes it (the workdir is WORKDIR, outside OUTPUT_DIR).
#
# Settings (environment): PYTHON (python3), CAMVID_DIR (workdirs/camvid), WORKDIR
# (/tmp/deeplab_camvid_gpu), JAX_CACHE_DIR, STEPS, CALIBRATION_STEPS (100), DEADLINE_S (560),
# EXTRA_FLAGS (more --config.* overrides, e.g. the CPU check's reduced size).
set -uo pipefail
OUT=${1:?usage: gpu_run.sh OUTPUT_DIR [TRAIN_BUDGET_S]}
BUDGET=${2:-390}
START=$(date +%s)
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
DATA=${CAMVID_DIR:-workdirs/camvid}
WORK=${WORKDIR:-/tmp/deeplab_camvid_gpu}
CAL_STEPS=${CALIBRATION_STEPS:-100}
DEADLINE=${DEADLINE_S:-560}
export JAX_COMPILATION_CACHE_DIR=${JAX_CACHE_DIR:-/tmp/deeplab_camvid_jax_cache}
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"
left() { echo $(( DEADLINE - ($(date +%s) - START) )); }
# `timeout 0` would mean no limit at all: below 30 s there is no time to train.
limit() { local l; l=$(left); (( l >= 30 )) || { echo "deadline reached" >&2; return 1; }
          echo "$l"; }
read -r -a EXTRA <<< "${EXTRA_FLAGS:-}"
FLAGS=(--config=configs/camvid.py --config.data.source=folder "--config.data.folder=$DATA"
       --config.model.dtype=bfloat16 --config.data.num_workers=12 "${EXTRA[@]}")

if [[ -n "${STEPS:-}" ]]; then
  echo "STEPS=$STEPS given: no calibration" | tee "$OUT/schedule.txt"
else
  echo "== calibration: $CAL_STEPS steps ($(left)s left)"
  rm -rf "$WORK.calibration"
  LIMIT=$(limit) || exit 1
  timeout --preserve-status --signal=TERM --kill-after=20 "$LIMIT" "$PY" -m deeplab_jax.main "${FLAGS[@]}" \
    --workdir="$WORK.calibration" --config.num_train_steps="$CAL_STEPS" \
    --config.log_every_steps=50 --config.eval_every_steps="$CAL_STEPS" \
    --config.checkpoint_every_steps="$CAL_STEPS" 2>&1 | tee "$OUT/calibration.log"
  [[ ${PIPESTATUS[0]} == 0 ]] || { echo "calibration failed"; exit 1; }
  STEPS=$("$PY" -c '
import json, sys
timing = json.load(open(sys.argv[1]))[-1]
steps_per_second = timing["images_per_second"] / timing["global_batch_size"]
print(max(100, int(float(sys.argv[2]) * steps_per_second) // 100 * 100))
' "$WORK.calibration/timing.json" "$BUDGET") || { echo "no calibration timing.json"; exit 1; }
  echo "training budget ${BUDGET}s at the calibrated rate -> $STEPS steps" \
       "($(tr -d '\n ' < "$WORK.calibration/timing.json"))" | tee "$OUT/schedule.txt"
fi
EVERY=$(( STEPS / 8 ))

echo "== the run: $STEPS steps ($(left)s left)"
LIMIT=$(limit) || exit 1
timeout --preserve-status --signal=TERM --kill-after=20 "$LIMIT" "$PY" -m deeplab_jax.main "${FLAGS[@]}" --workdir="$WORK" \
  --config.num_train_steps="$STEPS" --config.eval_every_steps="$EVERY" \
  --config.checkpoint_every_steps="$EVERY" 2>&1 | tee -a "$WORK.log"
STATUS=${PIPESTATUS[0]}
case $STATUS in
  0) echo "== finished" ;;
  75) echo "== stopped at the deadline with a checkpoint (status 75): rerun with STEPS=$STEPS" \
          "on the same machine to resume" ;;
  *) echo "== the run failed with status $STATUS" ;;
esac
[[ -d "$WORK" ]] || { echo "no workdir $WORK to pack"; exit "$STATUS"; }
cp "$WORK.log" "$WORK/train.log"
tar czf "$OUT/camvid_run.tgz" --exclude=checkpoints -C "$(dirname "$WORK")" "$(basename "$WORK")"
echo "== packed $OUT/camvid_run.tgz in $(( $(date +%s) - START ))s"
exit "$STATUS"
