#!/usr/bin/env bash
# Reproduces the MNIST table of Hinton et al. (2015), section 3:
#   teacher 784-1200-1200-10, dropout + 2-px jitter, all 60,000 images (paper: 67 errors)
#   baseline student 784-800-800-10, hard labels, no regularisation      (paper: 146)
#   the same student distilled at T=20 through the teacher server          (paper: 74)
# Usage: bench/paper_table.sh [build_dir]
#   TEACHER_CKPT=path  reuse a trained teacher instead of training one (400 epochs, ~40 min)
#   STUDENT_EPOCHS, DISTILL_EPOCHS override the students' epochs, DISTILL_LR the
#                      distilled student's rate (bench/paper_student_tuning.sh
#                      compares settings on a validation split)
#   THREADS=N          compute threads of every stage (default 2)
#   PRECISION=P        --precision of every stage: auto (default), f32 or bf16
#   AVERAGE_LAST_QUARTER=1  every network's weights are the mean over the last
#                      quarter of its epochs (--average_last_epochs, SWA), a
#                      choice made before any run and never by the test set
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/teacher_lib.sh
BUILD=${1:-build}
MNIST=${MNIST_DIR:-../shared/data/mnist}
OUT=${OUT:-out/paper_table}
mkdir -p "$OUT"
TS=$BUILD/teacher_server/teacher_server
ST=$BUILD/student_trainer/student_trainer
export OMP_WAIT_POLICY=PASSIVE
THREADS=${THREADS:-2}
PRECISION=${PRECISION:-auto}
STUDENT_EPOCHS=${STUDENT_EPOCHS:-30}
DISTILL_EPOCHS=${DISTILL_EPOCHS:-60}
DISTILL_LR=${DISTILL_LR:-0.03}
# --average_last_epochs for a run of $1 epochs, when asked for.
average() { if [ "${AVERAGE_LAST_QUARTER:-0}" = 1 ]; then echo "--average_last_epochs=$(($1 / 4))"; fi; }
t0=$(date +%s)
TEACHER_CKPT=${TEACHER_CKPT:-$OUT/teacher.ckpt}
if [ ! -f "$TEACHER_CKPT" ]; then
  echo "== teacher (400 epochs)"
  "$TS" train --data_dir="$MNIST" --epochs=400 --seed=1 --threads="$THREADS" $(average 400) \
    --precision="$PRECISION" \
    --checkpoint="$TEACHER_CKPT" --metrics_csv="$OUT/teacher.csv" 2>&1 | tee "$OUT/teacher.log"
fi
t1=$(date +%s)

echo "== baseline student, hard labels"
"$ST" baseline --data_dir="$MNIST" --architecture=784-800-800-10 --epochs="$STUDENT_EPOCHS" \
  --lr=0.1 --seed=1 --threads="$THREADS" $(average "$STUDENT_EPOCHS") --precision="$PRECISION" \
  --checkpoint="$OUT/baseline.ckpt" \
  --metrics_csv="$OUT/baseline.csv" 2>&1 | tee "$OUT/baseline.log" | grep -E "epoch .*/|done"
t2=$(date +%s)

echo "== distilled student, T=20, through the teacher server"
start_teacher_server "$TS" "$OUT" --checkpoint="$TEACHER_CKPT" --no_transfer_set --metrics_address= --threads=1 \
  --precision="$PRECISION"
# The student sees every image shifted by up to 2 px, and the teacher labels
# exactly that view; hard labels weigh 1 - alpha = 0.1.
"$ST" distill --teacher="127.0.0.1:$TEACHER_PORT" --data_dir="$MNIST" \
  --architecture=784-800-800-10 --distill_temperature=20 --alpha=0.9 --use_labels \
  --jitter=2 --epochs="$DISTILL_EPOCHS" --lr="$DISTILL_LR" --warmup_epochs=1 --seed=1 --threads="$THREADS" \
  $(average "$DISTILL_EPOCHS") --precision="$PRECISION" \
  --checkpoint="$OUT/distilled.ckpt" --metrics_csv="$OUT/distilled.csv" 2>&1 \
  | tee "$OUT/distilled.log" | grep -E "epoch .*/|done"
stop_teacher_server
t3=$(date +%s)

errors() { tail -n 1 "$1" | cut -d, -f6; }
TE=$(awk -F, 'NR > 1 { e = $6 } END { print e }' "${TEACHER_CSV:-$OUT/teacher.csv}" 2>/dev/null || echo "?")
BE=$(errors "$OUT/baseline.csv"); DE=$(errors "$OUT/distilled.csv")
{
  echo "| network | paper | Distillery |"
  echo "|---|---:|---:|"
  echo "| teacher 784-1200-1200-10 | 67 | $TE |"
  echo "| baseline student 784-800-800-10 | 146 | $BE |"
  echo "| distilled student 784-800-800-10, T=20 | 74 | $DE |"
  awk -v t="$TE" -v b="$BE" -v d="$DE" 'BEGIN { if (b != t) printf "\nshare of the baseline-teacher gap closed: %.0f%% (paper: %.0f%%)\n", 100 * (b - d) / (b - t), 100 * (146 - 74) / (146 - 67) }'
  echo
  echo "wall time: teacher $((t1 - t0)) s (0 = reused), baseline $((t2 - t1)) s, distilled $((t3 - t2)) s"
} | tee "$OUT/table.md"
