#!/usr/bin/env bash
# The paper's other transfer-set experiments (Hinton et al. 2015, sections 3
# and 5), on MNIST through the teacher server, with the paper's 784-800-800-10
# student at T=20:
#   78    a transfer set of only the 7s and 8s of [0, 50000); then the biases
#         of 7 and 8 lowered by one constant tuned on the validation split
#         [50000, 60000), never on the test set (paper: 47.3% test errors,
#         13.2% after lowering them by 7.6);
#   3pct  soft targets as a regulariser (the paper's Table 5, on speech): a
#         student on 3% of 50,000 images ([48500, 50000): a validation range
#         must lie within the training range, so the range is [48500, 60000)
#         with [50000, 60000) held out) trained on hard labels,
#         early-stopped on the validation split, against the same student on
#         the teacher's soft targets of those images, and against soft targets
#         of all 50,000.
# Usage: TEACHER_CKPT=teacher.ckpt bench/transfer_set_experiments.sh [build_dir]
#   STAGES="78 3pct"  EPOCHS=30  OUT=out/transfer_set
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/teacher_lib.sh
BUILD=${1:-build}
MNIST=${MNIST_DIR:-../shared/data/mnist}
OUT=${OUT:-out/transfer_set}
EPOCHS=${EPOCHS:-30}
STAGES=${STAGES:-78 3pct}
: "${TEACHER_CKPT:?set TEACHER_CKPT to a trained teacher checkpoint}"
mkdir -p "$OUT"
TS=$BUILD/teacher_server/teacher_server
ST=$BUILD/student_trainer/student_trainer
export OMP_WAIT_POLICY=PASSIVE
lscpu | grep 'Model name' | tee "$OUT/cpu.txt"
STUDENT=(--data_dir="$MNIST" --architecture=784-800-800-10 --epochs="$EPOCHS" --seed=1
         --threads=2 --progress=plain)
SOFT=(--distill_temperature=20 --alpha=1 --lr=0.03 --warmup_epochs=1 --jitter=0)

# Column 6 of a metrics CSV is the test errors, column 8 the validation
# errors: the last epoch's test errors, and those of the first epoch with
# the fewest validation errors (early stopping).
last_errors() { tail -n 1 "$1" | cut -d, -f6; }
early_stopped() {
  awk -F, 'NR > 1 && $8 >= 0 && (best == "" || $8 < best) { best = $8; test = $6; epoch = $1 }
           END { printf "%s (epoch %s, %s validation errors)", test, epoch, best }' "$1"
}

start_teacher_server "$TS" "$OUT" --checkpoint="$TEACHER_CKPT" --data_dir="$MNIST" \
  --transfer_range=0:50000 --metrics_address= --threads=1
TEACHER=127.0.0.1:$TEACHER_PORT

if [[ " $STAGES " == *" 78 "* ]]; then
  t0=$SECONDS
  "$ST" distill --teacher="$TEACHER" "${STUDENT[@]}" "${SOFT[@]}" --train_range=0:50000 \
    --exclude_classes=0,1,2,3,4,5,6,9 --checkpoint="$OUT/only78.ckpt" \
    --metrics_csv="$OUT/only78.csv" >"$OUT/only78.log" 2>&1
  "$BUILD/bench/bias_tune" --checkpoint="$OUT/only78.ckpt" --data_dir="$MNIST" \
    --validation_range=50000:60000 --bias_classes=7,8 --min_bias=-15 --max_bias=0 \
    | tee "$OUT/only78.txt"
  echo "only 7s and 8s: $((SECONDS - t0)) s" | tee -a "$OUT/only78.txt"
fi

if [[ " $STAGES " == *" 3pct "* ]]; then
  t0=$SECONDS
  "$ST" baseline "${STUDENT[@]}" --train_range=48500:60000 --validation_range=50000:60000 --lr=0.1 \
    --checkpoint="$OUT/hard3.ckpt" --metrics_csv="$OUT/hard3.csv" >"$OUT/hard3.log" 2>&1
  "$ST" distill --teacher="$TEACHER" "${STUDENT[@]}" "${SOFT[@]}" --train_range=48500:60000 \
    --validation_range=50000:60000 --checkpoint="$OUT/soft3.ckpt" --metrics_csv="$OUT/soft3.csv" \
    >"$OUT/soft3.log" 2>&1
  # All 50,000: the teacher's precomputed transfer set (the same targets as
  # asking for each unjittered image).
  "$ST" distill --teacher="$TEACHER" "${STUDENT[@]}" "${SOFT[@]}" --source=teacher \
    --checkpoint="$OUT/soft100.ckpt" --metrics_csv="$OUT/soft100.csv" >"$OUT/soft100.log" 2>&1
  {
    echo "| student 784-800-800-10 | data | test errors |"
    echo "|---|---|---:|"
    echo "| hard labels, early-stopped on [50000, 60000) | 3% (1,500) | $(early_stopped "$OUT/hard3.csv") |"
    echo "| hard labels, last epoch | 3% (1,500) | $(last_errors "$OUT/hard3.csv") |"
    echo "| soft targets T=20, last epoch | 3% (1,500) | $(last_errors "$OUT/soft3.csv") |"
    echo "| soft targets T=20, last epoch | 100% (50,000) | $(last_errors "$OUT/soft100.csv") |"
    echo
    echo "wall time $((SECONDS - t0)) s, $EPOCHS epochs each"
  } | tee "$OUT/3pct.md"
fi
stop_teacher_server
