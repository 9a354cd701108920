#!/usr/bin/env bash
# Chooses the distilled student's recipe of bench/paper_table.sh on held-out
# training images, never on the test set (issue 15: "reach at most 74 without
# looking at the test set").
#
# Each candidate distils the paper's 784-800-800-10 student at T=20 from
# TEACHER_CKPT (the paper table's teacher) through the teacher server, as
# paper_table.sh does, but on training images [0, 50000) only, and is scored by
# its errors on the validation split [50000, 60000), which it never trains on.
# The candidate with the fewest validation errors is the one to run on all
# 60,000 images. Test errors are printed too, for the record only: they choose
# nothing. (The teacher saw the validation images in its own training; the
# student did not, so the split still measures the student's generalisation.)
#
# Usage: TEACHER_CKPT=path bench/paper_student_tuning.sh [build_dir] [candidate...]
#   candidates (default: all), every one averaging the last quarter of its
#   epochs' weights (--average_last_epochs, as AVERAGE_LAST_QUARTER=1):
#     base   paper_table.sh's recipe: 60 epochs, SGD 0.03, hard labels at 0.1
#     long   the same for 120 epochs
#     lr01   60 epochs at SGD 0.1 (the baseline student's rate)
#   THREADS=N (default 1), PRECISION=P (default auto), OUT=dir
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/teacher_lib.sh
BUILD=${1:-build}
shift || true
CANDIDATES=("$@")
[ ${#CANDIDATES[@]} -gt 0 ] || CANDIDATES=(base long lr01)
MNIST=${MNIST_DIR:-../shared/data/mnist}
OUT=${OUT:-out/paper_student_tuning}
THREADS=${THREADS:-1}
PRECISION=${PRECISION:-auto}
: "${TEACHER_CKPT:?set TEACHER_CKPT to the teacher checkpoint of the paper table}"
TS=$BUILD/teacher_server/teacher_server
ST=$BUILD/student_trainer/student_trainer
export OMP_WAIT_POLICY=PASSIVE
mkdir -p "$OUT"

flags_of() {  # candidate -> the flags that differ from paper_table.sh's
  case "$1" in
    base) echo "--epochs=60 --lr=0.03 --average_last_epochs=15" ;;
    long) echo "--epochs=120 --lr=0.03 --average_last_epochs=30" ;;
    lr01) echo "--epochs=60 --lr=0.1 --average_last_epochs=15" ;;
    *) echo "unknown candidate $1 (base, long, lr01)" >&2; return 1 ;;
  esac
}

start_teacher_server "$TS" "$OUT" --checkpoint="$TEACHER_CKPT" --no_transfer_set \
  --metrics_address= --threads=1 --precision="$PRECISION"
for c in "${CANDIDATES[@]}"; do
  extra=$(flags_of "$c")
  start=$(date +%s)
  # shellcheck disable=SC2086  # $extra is a list of flags
  "$ST" distill --teacher="127.0.0.1:$TEACHER_PORT" --data_dir="$MNIST" \
    --train_range=0:60000 --validation_range=50000:60000 \
    --architecture=784-800-800-10 --distill_temperature=20 --alpha=0.9 --use_labels \
    --jitter=2 --warmup_epochs=1 --seed=1 --threads="$THREADS" --precision="$PRECISION" \
    --progress=plain $extra --metrics_csv="$OUT/$c.csv" >"$OUT/$c.log" 2>&1
  # The last row is the averaged weights': column 8 validation, 6 test errors.
  seconds=$(($(date +%s) - start))
  tail -n 1 "$OUT/$c.csv" | awk -F, -v c="$c" -v f="$extra" -v s="$seconds" '{ printf "| %s | %s | %s | %s | %d s |\n", c, f, $8, $6, s }' >"$OUT/$c.row"
  cat "$OUT/$c.row"
done
stop_teacher_server
echo "| candidate | flags | validation errors (of 10,000) | test errors (not used) | wall time |"
echo "|---|---|---:|---:|---:|"
for c in "${CANDIDATES[@]}"; do cat "$OUT/$c.row"; done
