#!/usr/bin/env bash
# Training throughput: Distillery against the machine's fp32 GEMM rate and
# against PyTorch (Debian's python3-torch on OpenBLAS), in the same run.
# Each network is timed in a fresh process, ours and PyTorch's alternating,
# both on 2 threads, batch 128, dropout 0.2/0.5, max-norm 3.5, SGD momentum.
#
# The peer is measured at its best: OpenBLAS picks its kernels by
# OPENBLAS_CORETYPE, and on a CPU it does not know (this machine's) the
# choice matters (AVX2 "Haswell" kernels against AVX-512 "SkylakeX" ones), so
# PyTorch runs once per core type in PEER_CORETYPES and its fastest run
# counts. A core type the CPU cannot run is skipped.
# On CPUs with avx512_bf16 PyTorch also runs under bf16 autocast (with the
# default core type), and the fastest of all its runs counts.
# PRECISION=bf16 trains ours in bf16 mixed precision (default f32).
# Usage: bench/run_train_bench.sh [build_dir]   (needs a Release build)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
MNIST=${MNIST_DIR:-../shared/data/mnist}
THREADS=2
PRECISION=${PRECISION:-f32}
PEER_CORETYPES=${PEER_CORETYPES:-"Haswell SkylakeX Cooperlake"}
export OMP_NUM_THREADS=$THREADS
rate_of() { sed -n 's/.*examples_per_s=\([0-9.]*\).*/\1/p' <<<"$1"; }
echo "# $(date -u +%FT%TZ) $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p')," \
  "family $(sed -n 's/^cpu family\s*: //p' /proc/cpuinfo | head -1)," \
  "model $(sed -n 's/^model\s*: //p' /proc/cpuinfo | head -1)"
for arch in 784-1200-1200-10 784-800-800-10; do
  ours=$("$BUILD/bench/train_bench" --mnist_dir="$MNIST" --archs="$arch" --epochs=2 --threads=$THREADS \
           --precision="$PRECISION")
  echo "$ours"
  best_rate=0 best_line=""
  peers=$PEER_CORETYPES
  if grep -qw avx512_bf16 /proc/cpuinfo; then peers="$peers autocast"; fi
  for peer in $peers; do
    if [ "$peer" = autocast ]; then coretype="" flag=--autocast; else coretype=$peer flag=""; fi
    theirs=$(env ${coretype:+OPENBLAS_CORETYPE=$coretype} /usr/bin/python3 bench/torch_peer.py --mnist-dir="$MNIST" \
             --archs="$arch" --epochs=1 --threads=$THREADS $flag 2>/dev/null | grep '^torch_peer') || {
      echo "# torch_peer with OPENBLAS_CORETYPE=$coretype $flag did not run on this CPU; skipped"
      continue
    }
    echo "$theirs coretype=${coretype:-default}"
    rate=$(rate_of "$theirs")
    if awk -v r="$rate" -v b="$best_rate" 'BEGIN { exit !(r > b) }'; then
      best_rate=$rate best_line="coretype=${coretype:-default}${flag:+ autocast}"
    fi
  done
  awk -v a="$arch" -v o="$(rate_of "$ours")" -v t="$best_rate" -v c="$best_line" \
    'BEGIN { printf "ratio arch=%s distillery_over_torch=%.2f (peer at its best: %s, %.1f examples/s)\n", a, o / t, c, t }'
done
