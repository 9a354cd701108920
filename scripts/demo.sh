#!/usr/bin/env bash
# The main job on a fresh Debian 12 machine: installs the packages, builds,
# and runs the distillation demo on Fashion-MNIST (Debian's
# dataset-fashion-mnist). Options are passed to scripts/distill_demo.sh
# (for example --data_dir=DIR for any MNIST-format directory).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j2 --target teacher_server student_trainer
exec scripts/distill_demo.sh "$@"
