#!/usr/bin/env bash
# Convolutional training throughput: Distillery's `teacher_server train` on
# the MNIST convolutional teacher's network against PyTorch (Debian's
# python3-torch, whose convolutions run on oneDNN 2.6 too), in the same run,
# alternating, each in a fresh process on 2 threads, batch 128, one epoch of
# EXAMPLES training images, no jitter. PyTorch runs in both memory formats
# (contiguous NCHW and channels_last), and on CPUs with avx512_bf16 also
# under bf16 autocast, and its fastest run counts. PRECISION (auto, f32 or
# bf16; default auto) is ours.
# Usage: [PRECISION=P] bench/run_cnn_bench.sh [build_dir]   (needs a Release build)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
MNIST=${MNIST_DIR:-../shared/data/mnist}
EXAMPLES=${EXAMPLES:-20000}
ROUNDS=${ROUNDS:-2}
PRECISION=${PRECISION:-auto}
peers=("" --channels-last)
if grep -qw avx512_bf16 /proc/cpuinfo; then peers+=(--autocast "--channels-last --autocast"); fi
ARCH="conv5x5:32/same+bn,pool2,conv5x5:64/same+bn,pool2,fc:512,fc:10"
# One process at a time: libgomp's default wait policy (run_bf16_bench.sh).
export OMP_NUM_THREADS=2
unset OMP_WAIT_POLICY
echo "# $(date -u +%FT%TZ) $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p')," \
  "family $(sed -n 's/^cpu family\s*: //p' /proc/cpuinfo | head -1)," \
  "model $(sed -n 's/^model\s*: //p' /proc/cpuinfo | head -1), oneDNN ISA cap: ${ONEDNN_MAX_CPU_ISA:-none}"
best_ours=0 best_theirs=0
for round in $(seq "$ROUNDS"); do
  line=$("$BUILD/teacher_server/teacher_server" train --data_dir="$MNIST" --train_range=0:"$EXAMPLES" \
         --architecture="$ARCH" --input_dropout=0 --hidden_dropout=0.5 --jitter=0 --epochs=1 \
         --lr=0.05 --momentum_start=0.9 --momentum_end=0.9 --momentum_ramp_epochs=0 \
         --dampened_momentum=false --max_norm=0 --weight_decay=5e-4 --threads=2 \
         --precision="$PRECISION" 2>&1 | grep -o '[0-9]* examples/s' | head -1)
  ours=${line% examples/s}
  echo "distillery round=$round examples_per_s=$ours precision=$PRECISION"
  awk -v r="$ours" -v b="$best_ours" 'BEGIN { exit !(r > b) }' && best_ours=$ours
  for peer in "${peers[@]}"; do
    theirs=$(/usr/bin/python3 bench/torch_cnn_peer.py --mnist-dir="$MNIST" --threads=2 \
             --examples="$EXAMPLES" $peer | grep '^torch_cnn_peer')
    echo "$theirs round=$round"
    rate=$(sed -n 's/.*examples_per_s=\([0-9.]*\).*/\1/p' <<<"$theirs")
    awk -v r="$rate" -v b="$best_theirs" 'BEGIN { exit !(r > b) }' && best_theirs=$rate
  done
done
awk -v o="$best_ours" -v t="$best_theirs" \
  'BEGIN { printf "ratio cnn distillery_over_torch=%.2f (best runs: %.1f against %.1f examples/s)\n", o / t, o, t }'
