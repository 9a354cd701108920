#!/bin/bash
# Serving speed of an imported teacher (issue 14), f32, one batch size, in
# one run:
#   1. PyTorch (/usr/bin/python3, Debian's python3-torch) builds a CNN with
#      batch norm and dropout and exports it with torch.onnx.export;
#   2. teacher_server import converts it (batch norms folded, MNIST's
#      mean/std as its preprocessing);
#   3. student_trainer baseline trains the same architecture natively (the
#      imported checkpoint's architecture string, batch norm folded away)
#      for one short epoch;
#   4. build/bench/onnx_import_bench measures both forward passes
#      (Network::Infer, what the server's batcher runs, in-process) and ONNX
#      Runtime (the python3 on PATH; intra_op_num_threads=2, sequential) runs
#      the exported model on the same normalised batch, in alternating rounds;
#      the medians are compared.
# Speed does not depend on the weights' values, so the PyTorch model is not
# trained. Not a test: the figures go to bench/RESULTS.md.
#
#   bench/run_onnx_import_bench.sh [build dir] [mnist dir]
set -euo pipefail
BUILD=${1:-build}
MNIST=${2:-../shared/data/mnist}
BATCH=${BATCH:-1024}
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-5}
SECONDS_PER_ROUND=${SECONDS_PER_ROUND:-3}
export OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=$THREADS
TMP=$(mktemp -d /tmp/onnx_import_bench.XXXXXX)
[ -n "${KEEP:-}" ] && echo "keeping $TMP" || trap 'rm -rf "$TMP"' EXIT

/usr/bin/python3 - "$TMP/cnn.onnx" <<'PY'
import sys
import torch
import torch.nn as nn
torch.manual_seed(0)
torch.set_num_threads(2)
model = nn.Sequential(
    nn.Conv2d(1, 32, 5, padding=2), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
    nn.Conv2d(32, 64, 5, padding=2), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
    nn.Flatten(), nn.Linear(64 * 7 * 7, 256), nn.ReLU(), nn.Dropout(0.5), nn.Linear(256, 10))
model.eval()
torch.onnx.export(model, torch.zeros(1, 1, 28, 28), sys.argv[1], opset_version=13,
                  input_names=["input"], output_names=["output"],
                  dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
print("pytorch", torch.__version__, "exported", sys.argv[1])
PY

"$BUILD/teacher_server/teacher_server" import --onnx="$TMP/cnn.onnx" \
    --checkpoint="$TMP/imported.ckpt" --input_mean=0.1307 --input_std=0.3081 > "$TMP/import.log" 2>&1
ARCH=$("$BUILD/teacher_server/teacher_server" inspect --checkpoint="$TMP/imported.ckpt" 2>&1 |
       sed -n 's/^architecture: *//p')
echo "architecture: $ARCH"
"$BUILD/student_trainer/student_trainer" baseline --data_dir="$MNIST" --architecture="$ARCH" \
    --epochs=1 --train_range=0:2000 --jitter=0 --checkpoint="$TMP/native.ckpt" \
    --threads="$THREADS" > "$TMP/train.log" 2>&1

cat > "$TMP/ort.py" <<'PY'
import sys, time
import numpy as np
import onnxruntime
model, batch, threads, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
options = onnxruntime.SessionOptions()
options.intra_op_num_threads = threads
options.inter_op_num_threads = 1
options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
session = onnxruntime.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])
pixels = (np.arange(batch * 784) * 7 % 256).astype(np.float32).reshape(batch, 1, 28, 28)
x = ((pixels / np.float32(255) - np.float32(0.1307)) / np.float32(0.3081)).astype(np.float32)
for _ in range(2):
    session.run(None, {"input": x})
n, start = 0, time.perf_counter()
while time.perf_counter() - start < seconds:
    session.run(None, {"input": x})
    n += batch
print(f"onnxruntime-{onnxruntime.__version__} {n / (time.perf_counter() - start):.0f}")
PY

# Rounds alternate between the engine (both checkpoints, alternating) and
# ONNX Runtime, so that the shared machine's load falls on all three alike.
: > "$TMP/rounds.txt"
for round in $(seq "$ROUNDS"); do
  "$BUILD/bench/onnx_import_bench" --checkpoints="$TMP/imported.ckpt,$TMP/native.ckpt" \
      --batch="$BATCH" --threads="$THREADS" --rounds=1 --seconds="$SECONDS_PER_ROUND" |
      awk -v r="$round" '{n = $1; sub(/.*\//, "", n); print r, n, $2}' >> "$TMP/rounds.txt"
  python3 "$TMP/ort.py" "$TMP/cnn.onnx" "$BATCH" "$THREADS" "$SECONDS_PER_ROUND" |
      awk -v r="$round" '{print r, $1, $2}' >> "$TMP/rounds.txt"
done
echo "batch $BATCH, f32, $THREADS threads, $ROUNDS alternating rounds of ${SECONDS_PER_ROUND}s (examples/s):"
python3 - "$TMP/rounds.txt" <<'PY'
import statistics, sys
rates = {}
for line in open(sys.argv[1]):
    _, name, rate = line.split()
    rates.setdefault(name, []).append(float(rate))
median = {name: statistics.median(r) for name, r in rates.items()}
for name, r in rates.items():
    print(f"  {name:26s} median {median[name]:8.0f}   rounds {', '.join(f'{x:.0f}' for x in r)}")
ort = next(n for n in median if n.startswith("onnxruntime"))
print(f"imported / native:       {median['imported.ckpt'] / median['native.ckpt']:.3f} (target >= 0.90)")
print(f"imported / onnxruntime:  {median['imported.ckpt'] / median[ort]:.3f} (target >= 1.00)")
PY
lscpu | grep -E '^(Model name|CPU family|Model):'
