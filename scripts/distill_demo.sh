#!/usr/bin/env bash
# The distillation demo: split a training set, train a convolutional teacher
# on one part, serve it, and train a baseline student (hard labels) and a
# distilled student (the transfer part without labels, soft targets from the
# server) at the same time, both on the same 1-px jittered views so that the
# gap measures distillation alone; then print the table and plot test errors
# per epoch. Every stage prints its progress (epochs, test errors, time left).
#
# Usage: scripts/distill_demo.sh [options]
#   --data_dir=DIR     MNIST-format directory (default: Debian's Fashion-MNIST)
#   --out=DIR          outputs (default: out/demo)
#   --build=DIR        build directory (default: build)
#   --quick            a small, fast configuration (used by the tests)
# Environment: TEACHER_EPOCHS, STUDENT_EPOCHS, TEMPERATURE override the defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/teacher_lib.sh

DATA=/usr/share/datasets/fashion-mnist
OUT=out/demo
BUILD=build
QUICK=0
for arg in "$@"; do
  case "$arg" in
    --data_dir=*) DATA=${arg#*=} ;;
    --out=*) OUT=${arg#*=} ;;
    --build=*) BUILD=${arg#*=} ;;
    --quick) QUICK=1 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "unknown option $arg (see --help)" >&2; exit 2 ;;
  esac
done
TEACHER_BIN=$BUILD/teacher_server/teacher_server
STUDENT_BIN=$BUILD/student_trainer/student_trainer
for bin in "$TEACHER_BIN" "$STUDENT_BIN"; do
  [ -x "$bin" ] || { echo "missing $bin: build first (scripts/demo.sh builds)" >&2; exit 1; }
done
[ -d "$DATA" ] || { echo "no data directory $DATA (apt-get install dataset-fashion-mnist)" >&2; exit 1; }

if [ "$QUICK" = 1 ]; then
  TEACHER_ARCH="conv5x5:16/same+bn,pool2,fc:128,fc:10"; TEACHER_RANGE=0:10000
  TRANSFER_RANGE=10000:12000; TEACHER_SETUP=()
  TEACHER_EPOCHS=${TEACHER_EPOCHS:-4}; STUDENT_EPOCHS=${STUDENT_EPOCHS:-10}
  TEACHER_FLAGS=(--input_dropout=0 --hidden_dropout=0.2 --jitter=1 --lr=0.05 --max_norm=0
                 --momentum_start=0.9 --momentum_end=0.9 --momentum_ramp_epochs=0
                 --dampened_momentum=false)
  DISTILL_FLAGS=(--lr=0.1)
  STUDENT_ARCH=784-200-200-10; EVAL_EVERY=1; DEFAULT_T=2
else
  # The teacher learns from the first 50,000 images; the students from the
  # other 10,000, the distilled one without their labels. A small LeNet-like
  # CNN with batch norm: 35 s to 2 minutes on 2 cores, by CPU. The students'
  # 200 epochs: the distilled one kept gaining after 100 (1,089 errors at
  # 100, 1,046 at 200 on Zen 5), the baseline little (1,206 and 1,208).
  TEACHER_ARCH="conv5x5:16/same+bn,pool2,conv5x5:32/same+bn,pool2,fc:256,fc:10"
  TEACHER_RANGE=0:50000; TRANSFER_RANGE=50000:60000; TEACHER_SETUP=()
  TEACHER_EPOCHS=${TEACHER_EPOCHS:-8}; STUDENT_EPOCHS=${STUDENT_EPOCHS:-200}
  TEACHER_FLAGS=(--input_dropout=0 --hidden_dropout=0.3 --jitter=1 --lr=0.05 --max_norm=0
                 --weight_decay=5e-4 --momentum_start=0.9 --momentum_end=0.9
                 --momentum_ramp_epochs=0 --dampened_momentum=false)
  # This teacher's logits are large: a gentler start keeps the T^2-scaled
  # loss from blowing up the student.
  DISTILL_FLAGS=(--lr=0.03 --warmup_epochs=1)
  STUDENT_ARCH=784-800-800-10; EVAL_EVERY=1; DEFAULT_T=4
fi
T=${TEMPERATURE:-$DEFAULT_T}
mkdir -p "$OUT"
rm -f "$OUT"/*.csv "$OUT"/*.ckpt "$OUT"/port
start=$(date +%s)
log() { echo "[demo $(( $(date +%s) - start ))s] $*"; }
export OMP_WAIT_POLICY=PASSIVE

log "data: $DATA; teacher on training examples [$TEACHER_RANGE), transfer set [$TRANSFER_RANGE)"
log "1/4 training the teacher $TEACHER_ARCH for $TEACHER_EPOCHS epochs (log: $OUT/teacher.log)"
# The teacher's epoch lines, shortened, as they come.
show_epochs() {
  local line
  while IFS= read -r line; do
    case "$line" in
      *"] epoch "*)
        log "   teacher epoch $(sed -n 's/.*epoch *\([0-9]*\/[0-9]*\).*test errors \([0-9]*\).*left \(.*\)$/\1: \2 test errors, \3 left/p' <<<"$line")" ;;
    esac
  done
}
"$TEACHER_BIN" train --data_dir="$DATA" --train_range="$TEACHER_RANGE" \
  --architecture="$TEACHER_ARCH" --epochs="$TEACHER_EPOCHS" "${TEACHER_SETUP[@]}" \
  "${TEACHER_FLAGS[@]}" --progress=plain \
  --eval_every="$EVAL_EVERY" --threads=2 \
  --checkpoint="$OUT/teacher.ckpt" --metrics_csv="$OUT/teacher.csv" 2>&1 |
  tee "$OUT/teacher.log" | show_epochs
[ "${PIPESTATUS[0]}" = 0 ] || { tail -5 "$OUT/teacher.log"; exit 1; }
log "   $(grep -o 'done: .*' "$OUT/teacher.log")"

log "2/4 serving the teacher (log: $OUT/server.log)"
start_teacher_server "$TEACHER_BIN" "$OUT" --checkpoint="$OUT/teacher.ckpt" --no_transfer_set \
  --metrics_address= --threads=1 --default_temperature="$T"
PORT=$TEACHER_PORT
log "   teacher serving on 127.0.0.1:$PORT"

log "3/4 training two students $STUDENT_ARCH at once for $STUDENT_EPOCHS epochs:"
log "    baseline on the hard labels of [$TRANSFER_RANGE), distilled on the teacher's soft targets"
log "    at T=$T for the same images without labels; both see each image shifted by up to 1 px"
log "    (the teacher labels each view the distilled student sees)"
"$STUDENT_BIN" baseline --data_dir="$DATA" --train_range="$TRANSFER_RANGE" \
  --architecture="$STUDENT_ARCH" --epochs="$STUDENT_EPOCHS" --lr=0.1 --jitter=1 --threads=1 \
  --eval_every="$EVAL_EVERY" --progress=plain \
  --checkpoint="$OUT/baseline.ckpt" --metrics_csv="$OUT/baseline.csv" >"$OUT/baseline.log" 2>&1 &
BASELINE=$!
"$STUDENT_BIN" distill --teacher="127.0.0.1:$PORT" --data_dir="$DATA" \
  --train_range="$TRANSFER_RANGE" --architecture="$STUDENT_ARCH" --epochs="$STUDENT_EPOCHS" \
  --distill_temperature="$T" --alpha=1 "${DISTILL_FLAGS[@]}" --jitter=1 --threads=1 \
  --eval_every="$EVAL_EVERY" --progress=plain \
  --checkpoint="$OUT/distilled.ckpt" --metrics_csv="$OUT/distilled.csv" >"$OUT/distilled.log" 2>&1 &
DISTILLED=$!
# "12/50 (1,402 test errors)" for a student's metrics CSV.
student_status() {
  local done errors
  done=$(tail -n +2 "$OUT/$1.csv" 2>/dev/null | wc -l)
  errors=$( [ "$done" -gt 0 ] && tail -n 1 "$OUT/$1.csv" | cut -d, -f6 || echo -)
  echo "$done/$STUDENT_EPOCHS ($errors test errors)"
}
students_start=$(date +%s)
while kill -0 $BASELINE 2>/dev/null || kill -0 $DISTILLED 2>/dev/null; do
  sleep 10
  d=$(tail -n +2 "$OUT/distilled.csv" 2>/dev/null | wc -l)
  left=-
  if [ "$d" -gt 0 ]; then
    s=$(( ( $(date +%s) - students_start ) * (STUDENT_EPOCHS - d) / d ))
    left=$(printf '%d:%02d' $((s / 60)) $((s % 60)))
  fi
  log "   epochs: baseline $(student_status baseline), distilled $(student_status distilled), $left left"
done
wait $BASELINE || { tail -5 "$OUT/baseline.log"; exit 1; }
wait $DISTILLED || { tail -5 "$OUT/distilled.log"; exit 1; }
stop_teacher_server

log "4/4 results"
errors() { tail -n 1 "$OUT/$1.csv" | cut -d, -f6; }
# A network's parameter count, from its training log.
params() { sed -n 's/.*training .* (\([0-9]*\) parameters).*/\1/p' "$OUT/$1.log" | head -1; }
TE=$(errors teacher); BE=$(errors baseline); DE=$(errors distilled)
TOTAL=$(tail -n 1 "$OUT/teacher.csv" | cut -d, -f7)
{
  echo "network,architecture,parameters,test_errors,test_examples"
  echo "teacher,${TEACHER_ARCH//,/ },$(params teacher),$TE,$TOTAL"
  echo "baseline_student,$STUDENT_ARCH,$(params baseline),$BE,$TOTAL"
  echo "distilled_student,$STUDENT_ARCH,$(params distilled),$DE,$TOTAL"
} >"$OUT/summary.csv"
awk -F, -v te="$TE" -v be="$BE" -v de="$DE" 'NR > 1 {
  printf "  %-18s %10s params %6s test errors   %s\n", $1, $3, $4, $2 }
  END { if (be > te) printf "  distillation closed %.0f%% of the gap between the baseline and the teacher\n",
        100 * (be - de) / (be - te);
        else printf "  the teacher is no better than the baseline student here: there is no gap to close\n" }' "$OUT/summary.csv" | tee "$OUT/summary.txt"

if command -v gnuplot >/dev/null; then
  gnuplot <<GP
set terminal pngcairo size 900,560
set output "$OUT/test_errors.png"
set datafile separator ","
set title "Test errors per epoch ($(basename "$DATA"))"
set xlabel "epoch"; set ylabel "test errors (of $TOTAL)"; set key top right; set grid
plot "$OUT/teacher.csv" using 1:6 every ::1 with linespoints title "teacher $TEACHER_ARCH", \
     "$OUT/baseline.csv" using 1:6 every ::1 with linespoints title "baseline student (hard labels, 1-px jitter)", \
     "$OUT/distilled.csv" using 1:6 every ::1 with linespoints title "distilled student (T=$T, no labels, 1-px jitter)"
GP
  log "plot: $OUT/test_errors.png"
fi
log "outputs in $OUT/: summary.csv, checkpoints (*.ckpt), per-epoch metrics (*.csv), logs"
