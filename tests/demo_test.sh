#!/usr/bin/env bash
# The README's demo, shortened (--quick: a few epochs on a slice of MNIST):
# the distilled student, trained on the teacher's soft targets without
# labels, must beat the baseline student trained on the same images' hard
# labels by at least MARGIN test errors, and the table and plot must exist.
# Usage: tests/demo_test.sh BUILD_DIR MNIST_DIR
set -euo pipefail
BUILD=$1
MNIST=$2
MARGIN=150
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
"$(dirname "$0")/../scripts/distill_demo.sh" --quick --build="$BUILD" --data_dir="$MNIST" --out="$OUT"
errors() { awk -F, -v n="$1" '$1 == n { print $4 }' "$OUT/summary.csv"; }
baseline=$(errors baseline_student)
distilled=$(errors distilled_student)
teacher=$(errors teacher)
echo "teacher $teacher, baseline $baseline, distilled $distilled test errors"
[ -s "$OUT/test_errors.png" ] || { echo "FAIL: no plot"; exit 1; }
if [ $((baseline - distilled)) -lt $MARGIN ]; then
  echo "FAIL: the distilled student ($distilled errors) does not beat the baseline ($baseline) by $MARGIN"
  exit 1
fi
echo "PASS: distillation saved $((baseline - distilled)) test errors (margin $MARGIN)"
