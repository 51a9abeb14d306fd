#!/usr/bin/env bash
# The GPU-speed measurements, one part per device call, each ending inside its slot.
#
#   bash experiments/gpu_speed/run_all.sh OUTPUT_DIR [1|2|3] [ARCHIVE.tgz]
#
# A session has 15 device-minutes in all, machine start included, so part 1 is the headline
# alone and fits about 9 minutes (SLOT_S, default 480 s of work): our R101 training step at
# OS16, then torchvision's, then both at OS8, all bf16 with the default atrous impl (ms per
# step, the ratio, peak memory, TFLOP/s and the fraction of the bf16 peak).
# Part 2 (a later session): one atrous conv per impl, R101 OS16 with the other atrous impls,
# R50 at OS16/OS8 (each followed by torchvision's), then R101 OS16 fed through the host
# input path. Part 3: the levers of NOTES.md on R101 OS16 bf16 (state not donated; XLA
# autotuning off), then float32 and OS8 with the other impls.
# Jobs that would not end inside the slot are skipped and listed as such in results.md.
# ARCHIVE: OUTPUT_DIR packed into one .tgz when the script exits, however it exits (the
# device returns at most 8 files; a part writes about a dozen).
# TINY=1 runs the same plan at toy sizes (depth 14/26, crop 65, batch 2): the CPU check.
set -uo pipefail
OUT=${1:?usage: run_all.sh OUTPUT_DIR [1|2|3] [ARCHIVE.tgz]}
PART=${2:-1}
ARCHIVE=${3:-}
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
if [[ -n "$ARCHIVE" ]]; then
  mkdir -p "$(dirname "$ARCHIVE")"
  ARCHIVE=$(cd "$(dirname "$ARCHIVE")" && pwd)/$(basename "$ARCHIVE")
  trap 'tar czf "$ARCHIVE" -C "$(dirname "$OUT")" "$(basename "$OUT")" && echo "== packed $ARCHIVE"' EXIT
fi
START=$(date +%s)
SLOT=${SLOT_S:-480}  # seconds of work; the call also starts and packs (see gpu_session.md)
CACHE=${JAX_CACHE_DIR:-/tmp/deeplab_gpu_speed_jax_cache}  # a rerun compiles from cache
left() { echo $(( SLOT - ($(date +%s) - START) - ${1:-0} )); }

if [[ "${TINY:-0}" == 1 ]]; then
  CONV_FLAGS=(--channels_in 64 --channels_out 16 --size 17 --batch 2 --warmup 1 --iters 3)
  STEP_FLAGS=(--width 8 --aspp_channels 16 --atrous_rates 1,2,3 --crop 65 --batch 2 --warmup 1 --steps 3)
  INPUT_FLAGS=(--canvas 513 --input_examples 4 --input_workers 2)
  BIG=26; SMALL=14
else
  CONV_FLAGS=()
  STEP_FLAGS=()
  INPUT_FLAGS=(--input_workers 8)  # configs/voc.py's data.num_workers
  BIG=101; SMALL=50
fi

# One benchmark pass: NAME, then its flags. Output in $OUT/NAME/, log in $OUT/NAME.log.
bench() {
  local name=$1; shift
  echo "== benchmark.py $name ($(left)s left)"
  "$PY" -m experiments.gpu_speed.benchmark "${STEP_FLAGS[@]}" --compilation_cache_dir "$CACHE" \
    --output_dir "$OUT/$name" "$@" 2>&1 | tee "$OUT/$name.log"
}

if [[ "$PART" == 1 ]]; then
  # Ours then torchvision's at OS16, then at OS8: if the slot runs short, what is skipped is
  # the OS8 pair, never half of a pair's comparison at OS16.
  bench headline --settings "$BIG/16/bfloat16/xla,$BIG/8/bfloat16/xla" \
    --time_budget_s "$(left 10)" --job_timeout_s 240
elif [[ "$PART" == 2 ]]; then
  SETTINGS="$BIG/16/bfloat16/space_to_batch,$BIG/16/bfloat16/taps"
  SETTINGS+=",$SMALL/16/bfloat16/xla,$SMALL/8/bfloat16/xla"
  echo "== atrous_conv.py ($(left)s left)"
  timeout 150 "$PY" experiments/gpu_speed/atrous_conv.py "${CONV_FLAGS[@]}" \
    --output "$OUT/atrous_conv.json" 2>&1 | tee "$OUT/atrous_conv.log"
  bench step_part2 --settings "$SETTINGS" --time_budget_s "$(left 70)" --job_timeout_s 300
  bench with_input --settings "$BIG/16/bfloat16/xla" --frameworks jax --with_input \
    "${INPUT_FLAGS[@]}" --time_budget_s "$(left)" --job_estimate_s 45 \
    --job_timeout_s "$(( $(left) > 10 ? $(left) : 10 ))"
else
  # Each lever switched off on the headline setting; compare with part 1's row for it.
  bench lever_no_donate --settings "$BIG/16/bfloat16/xla" --frameworks jax --no_donate \
    --time_budget_s "$(left 300)" --job_estimate_s 90 --job_timeout_s 200
  XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_autotune_level=0" \
    bench lever_autotune_off --settings "$BIG/16/bfloat16/xla" --frameworks jax \
    --time_budget_s "$(left 250)" --job_estimate_s 150 --job_timeout_s 200
  SETTINGS="$BIG/16/float32/xla,$BIG/8/float32/xla,$BIG/8/bfloat16/space_to_batch"
  SETTINGS+=",$BIG/8/bfloat16/taps,$SMALL/16/float32/xla,$SMALL/8/float32/xla"
  bench step_part3 --settings "$SETTINGS" --time_budget_s "$(left)" --job_timeout_s 300
fi
echo "== done in $(( $(date +%s) - START ))s; results under $OUT"
