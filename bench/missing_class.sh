#!/usr/bin/env bash
# The paper's transfer set without any 3s (Hinton et al. 2015, section 3):
# the 800-800 student is distilled from the full teacher on training examples
# [0, 50000) with every 3 removed; then the bias of class 3 is raised by an
# amount tuned on the validation split [50000, 60000) (never on the test set).
# Paper: 206 errors, 133 of them on the 1,010 threes; 109 errors after the fix.
# Usage: TEACHER_CKPT=teacher.ckpt bench/missing_class.sh [build_dir]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/teacher_lib.sh
BUILD=${1:-build}
MNIST=${MNIST_DIR:-../shared/data/mnist}
OUT=${OUT:-out/missing_class}
EPOCHS=${EPOCHS:-30}
: "${TEACHER_CKPT:?set TEACHER_CKPT to a trained teacher checkpoint}"
mkdir -p "$OUT"
export OMP_WAIT_POLICY=PASSIVE
start_teacher_server "$BUILD/teacher_server/teacher_server" "$OUT" --checkpoint="$TEACHER_CKPT" --no_transfer_set --metrics_address= --threads=1
"$BUILD/student_trainer/student_trainer" distill --teacher="127.0.0.1:$TEACHER_PORT" \
  --data_dir="$MNIST" --train_range=0:50000 --exclude_classes=3 --architecture=784-800-800-10 \
  --distill_temperature=20 --alpha=1 --epochs="$EPOCHS" --lr=0.03 --warmup_epochs=1 --seed=1 \
  --threads=2 --checkpoint="$OUT/student.ckpt" --metrics_csv="$OUT/student.csv" >"$OUT/student.log" 2>&1
"$BUILD/bench/bias_tune" --checkpoint="$OUT/student.ckpt" --data_dir="$MNIST" \
  --validation_range=50000:60000 --bias_classes=3 | tee "$OUT/result.txt"
