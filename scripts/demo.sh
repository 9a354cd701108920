#!/usr/bin/env bash
# The main job on a fresh machine: installs, builds, then trains a teacher and
# a baseline student on Fashion-MNIST (Debian's dataset-fashion-mnist).
# Outputs go to out/demo/. Extra flags are passed to both trainers.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j2
OUT=out/demo
mkdir -p "$OUT"
DATA=${DATA_DIR:-/usr/share/datasets/fashion-mnist}
echo "== teacher (784-1200-1200-10) on $DATA"
build/teacher_server/teacher_server train --data_dir="$DATA" --epochs=5 \
  --checkpoint="$OUT/teacher.ckpt" --metrics_csv="$OUT/teacher.csv" "$@"
echo "== baseline student (784-800-800-10, hard labels)"
build/student_trainer/student_trainer baseline --data_dir="$DATA" --epochs=5 \
  --checkpoint="$OUT/baseline.ckpt" --metrics_csv="$OUT/baseline.csv" "$@"
echo "outputs: $OUT/"
