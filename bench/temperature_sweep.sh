#!/usr/bin/env bash
# The effect of temperature (Hinton et al. 2015, section 3): the 800-800
# student distilled at T = 1, 2, 5, 10, 20 and a 30-30 student at T = 2.5, 4,
# 8, all from the same teacher through the teacher server (its transfer set:
# all 60,000 MNIST training images, logits precomputed on the server).
# Paper: above 8 all similar for 300+ units; 2.5 to 4 best for 30 units.
# Usage: TEACHER_CKPT=teacher.ckpt bench/temperature_sweep.sh [build_dir]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/teacher_lib.sh
BUILD=${1:-build}
MNIST=${MNIST_DIR:-../shared/data/mnist}
OUT=${OUT:-out/temperature_sweep}
EPOCHS=${EPOCHS:-20}
: "${TEACHER_CKPT:?set TEACHER_CKPT to a trained teacher checkpoint}"
mkdir -p "$OUT"
export OMP_WAIT_POLICY=PASSIVE
start_teacher_server "$BUILD/teacher_server/teacher_server" "$OUT" --checkpoint="$TEACHER_CKPT" --data_dir="$MNIST" --metrics_address= --threads=1
PORT=$TEACHER_PORT
echo "| student | T | test errors ($EPOCHS epochs) |" | tee "$OUT/table.md"
echo "|---|---:|---:|" | tee -a "$OUT/table.md"
run() {  # arch T
  local name="$1-T$2"
  "$BUILD/student_trainer/student_trainer" distill --teacher="127.0.0.1:$PORT" --source=teacher \
    --data_dir="$MNIST" --architecture="$1" --distill_temperature="$2" --alpha=1 \
    --epochs="$EPOCHS" --lr=0.03 --warmup_epochs=1 --seed=1 --threads=2 \
    --metrics_csv="$OUT/$name.csv" >"$OUT/$name.log" 2>&1
  echo "| $1 | $2 | $(tail -n 1 "$OUT/$name.csv" | cut -d, -f6) |" | tee -a "$OUT/table.md"
}
for t in 1 2 5 10 20; do run 784-800-800-10 "$t"; done
for t in 2.5 4 8; do run 784-30-30-10 "$t"; done
