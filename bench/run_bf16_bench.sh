#!/usr/bin/env bash
# bf16 against f32, and both against PyTorch, in one run on this CPU
# (issue 17), with the CPU model and the ISA oneDNN reports:
#   1. what --precision=auto picks here for training and for serving, and
#      with oneDNN capped at AVX512_CORE_BF16 (the path of CPUs with
#      AVX512_BF16 but no AMX);
#   2. serving 784-1200-1200-10 at batch 1024: ours in-process and over
#      gRPC in f32 and bf16, with the in-process pass against a oneDNN
#      matmul on the same shapes (serving_bench), and PyTorch in-process in
#      f32, bf16 autocast and as a bf16 model (torch_serving_peer.py);
#   3. training 784-1200-1200-10 and 784-800-800-10, ours in f32 and bf16
#      against PyTorch at its best (run_train_bench.sh);
#   4. training the convolutional teacher, ours in f32 and bf16 against
#      PyTorch at its best (run_cnn_bench.sh).
# OpenMP's wait policy: every measurement of one process (ours and
# PyTorch's) runs under libgomp's default, as the programs run out of the
# box (threads spin briefly, then sleep). OMP_WAIT_POLICY=PASSIVE, for
# processes that share the cores, makes every oneDNN primitive wake its
# threads: on a Zen 5 it cost 1.3-1.7x in bf16 training and 1.1-1.5x in
# in-process serving (bench/RESULTS.md). Serving over gRPC, a client and a
# server on the same cores, is measured under both policies.
# About 7 to 15 minutes on 2 cores; run it on an idle machine.
# Usage: bench/run_bf16_bench.sh [build_dir]   (needs a Release build)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/teacher_lib.sh
BUILD=${1:-build}
MNIST=${MNIST_DIR:-../shared/data/mnist}
OUT=${OUT:-out/bf16_bench}
mkdir -p "$OUT"
TS=$BUILD/teacher_server/teacher_server
export OMP_NUM_THREADS=2
unset OMP_WAIT_POLICY
precisions="f32"
if grep -qw avx512_bf16 /proc/cpuinfo || grep -qw amx_bf16 /proc/cpuinfo; then
  precisions="f32 bf16"
fi
echo "# $(date -u +%FT%TZ) $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p')," \
  "family $(sed -n 's/^cpu family\s*: //p' /proc/cpuinfo | head -1)," \
  "model $(sed -n 's/^model\s*: //p' /proc/cpuinfo | head -1)"

echo "== 1. what auto picks"
# A one-epoch 784-1200-1200-10 teacher: the serving benchmarks' checkpoint
# (speed does not depend on the weights), and the training choice's log;
# under the cap only the log counts, so it trains on 1,000 images.
for cap in "" AVX512_CORE_BF16; do
  log=$(env ${cap:+ONEDNN_MAX_CPU_ISA=$cap} "$TS" train --data_dir="$MNIST" \
          --architecture=784-1200-1200-10 --epochs=1 --threads=2 --precision=auto \
          ${cap:+--train_range=0:1000} --checkpoint="$OUT/teacher${cap:+_$cap}.ckpt" 2>&1)
  echo "training, oneDNN cap ${cap:-none}: $(grep -o 'precision .*' <<<"$log" | head -1)"
  env ${cap:+ONEDNN_MAX_CPU_ISA=$cap} bash -c "source scripts/teacher_lib.sh
    start_teacher_server '$TS' '$OUT' --checkpoint='$OUT/teacher.ckpt' --no_transfer_set \
      --metrics_address= --threads=2 --precision=auto
    stop_teacher_server"
  echo "serving, oneDNN cap ${cap:-none}: $(grep -o 'precision .*' "$OUT/server.log" | head -1)"
done

echo "== 2. serving 784-1200-1200-10"
for precision in $precisions; do
  for policy in default PASSIVE; do
    echo "# OpenMP wait policy: $policy"
    policy_env=()
    if [ "$policy" = PASSIVE ]; then policy_env=(OMP_WAIT_POLICY=PASSIVE); fi
    env "${policy_env[@]}" "$BUILD/bench/serving_bench" --checkpoint="$OUT/teacher.ckpt" \
      --server="$TS" --precision="$precision" --seconds=3 --threads=2 2>/dev/null |
      grep -v "^\[\|^batching"
  done
done
/usr/bin/python3 bench/torch_serving_peer.py --threads 2 --batch 1024 --seconds 3

echo "== 3. training the MLPs"
for precision in $precisions; do
  PRECISION=$precision bench/run_train_bench.sh "$BUILD"
done

echo "== 4. training the convolutional teacher"
for precision in $precisions; do
  PRECISION=$precision ROUNDS=1 bench/run_cnn_bench.sh "$BUILD"
done
