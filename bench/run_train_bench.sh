#!/usr/bin/env bash
# Training throughput: Distillery against the machine's fp32 GEMM rate and
# against PyTorch (Debian's python3-torch on OpenBLAS), in the same run.
# Each network is timed in a fresh process, ours and PyTorch's alternating,
# both on 2 threads, batch 128, dropout 0.2/0.5, max-norm 3.5, SGD momentum.
# Usage: bench/run_train_bench.sh [build_dir]   (needs a Release build)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
MNIST=${MNIST_DIR:-../shared/data/mnist}
THREADS=2
export OMP_NUM_THREADS=$THREADS
echo "# $(date -u +%FT%TZ) $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p')"
for arch in 784-1200-1200-10 784-800-800-10; do
  ours=$("$BUILD/bench/train_bench" --mnist_dir="$MNIST" --archs="$arch" --epochs=2 --threads=$THREADS)
  echo "$ours"
  theirs=$(/usr/bin/python3 bench/torch_peer.py --mnist-dir="$MNIST" --archs="$arch" --epochs=1 \
           --threads=$THREADS 2>/dev/null | grep '^torch_peer')
  echo "$theirs"
  ours_rate=$(sed -n 's/.*examples_per_s=\([0-9.]*\).*/\1/p' <<<"$ours")
  their_rate=$(sed -n 's/.*examples_per_s=\([0-9.]*\).*/\1/p' <<<"$theirs")
  awk -v a="$arch" -v o="$ours_rate" -v t="$their_rate" \
    'BEGIN { printf "ratio arch=%s distillery_over_torch=%.2f\n", a, o / t }'
done
