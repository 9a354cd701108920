#!/usr/bin/env bash
# The paper's transfer set without any 3s (Hinton et al. 2015, section 3):
# the 800-800 student is distilled from the full teacher on training examples
# [0, 50000) with every 3 removed; then the bias of class 3 is raised by an
# amount tuned on the validation split [50000, 60000) (never on the test set).
# Paper: 206 errors, 133 of them on the 1,010 threes; 109 errors after the fix.
# Usage: TEACHER_CKPT=teacher.ckpt bench/missing_class.sh [build_dir]
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
MNIST=${MNIST_DIR:-../shared/data/mnist}
OUT=${OUT:-out/missing_class}
EPOCHS=${EPOCHS:-30}
: "${TEACHER_CKPT:?set TEACHER_CKPT to a trained teacher checkpoint}"
mkdir -p "$OUT"
export OMP_WAIT_POLICY=PASSIVE
"$BUILD/teacher_server/teacher_server" serve --checkpoint="$TEACHER_CKPT" --no_transfer_set \
  --address=127.0.0.1:0 --port_file="$OUT/port" --metrics_address= --threads=1 >"$OUT/server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
rm -f "$OUT/port"; for _ in $(seq 1 600); do [ -s "$OUT/port" ] && break; sleep 0.1; done
"$BUILD/student_trainer/student_trainer" distill --teacher="127.0.0.1:$(cat "$OUT/port")" \
  --data_dir="$MNIST" --train_range=0:50000 --exclude_classes=3 --architecture=784-800-800-10 \
  --distill_temperature=20 --alpha=1 --epochs="$EPOCHS" --lr=0.03 --warmup_epochs=1 --seed=1 \
  --threads=2 --checkpoint="$OUT/student.ckpt" --metrics_csv="$OUT/student.csv" >"$OUT/student.log" 2>&1
"$BUILD/bench/bias_tune" --checkpoint="$OUT/student.ckpt" --data_dir="$MNIST" \
  --validation_range=50000:60000 --bias_class=3 | tee "$OUT/result.txt"
