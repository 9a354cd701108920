#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/) with clang-14 into build-fuzz and runs
# each for FUZZ_SECONDS (default 60) on a copy of its seed corpus
# (fuzz/corpus/<target>/, never written to) with its dictionary. Fails if any
# target crashes, leaks, hits undefined behaviour, times out on one input or
# runs out of memory; the reproducer is left in build-fuzz/artifacts/.
# Usage: scripts/fuzz.sh [target ...]   (default: all five)
#   FUZZ_SECONDS=600 scripts/fuzz.sh checkpoint_fuzzer
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${DISTILLERY_FUZZ_BUILD:-build-fuzz}
SECONDS_EACH=${FUZZ_SECONDS:-60}
TARGETS=("$@")
if [ "${#TARGETS[@]}" -eq 0 ]; then
  TARGETS=(idx_fuzzer checkpoint_fuzzer soft_targets_request_fuzzer target_codec_fuzzer
           onnx_import_fuzzer npy_fuzzer)
fi
start=$SECONDS
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_COMPILER=clang++-14 -DDISTILLERY_FUZZ=ON
cmake --build "$BUILD" -j2 --target "${TARGETS[@]}"
echo "fuzz: built in $((SECONDS - start)) s"

export ASAN_OPTIONS="halt_on_error=1:detect_leaks=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
export LSAN_OPTIONS="suppressions=$PWD/scripts/lsan.supp:print_suppressions=0"
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE
mkdir -p "$BUILD/artifacts"
for target in "${TARGETS[@]}"; do
  # A scratch copy: the fuzzer adds what it finds to the first corpus
  # directory, which must not be the one in the repository.
  work="$BUILD/corpus/$target"
  rm -rf "$work"
  mkdir -p "$work"
  cp fuzz/corpus/"$target"/* "$work"/
  echo "fuzz: running $target for $SECONDS_EACH s on $(ls "$work" | wc -l) seeds"
  if ! "$BUILD/fuzz/$target" "$work" -dict="fuzz/$target.dict" \
      -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 -max_len=8192 \
      -print_final_stats=1 -artifact_prefix="$BUILD/artifacts/$target-" \
      >"$BUILD/$target.log" 2>&1; then
    tail -n 60 "$BUILD/$target.log"
    echo "fuzz: FAIL: $target crashed; reproducer in $BUILD/artifacts/, log $BUILD/$target.log"
    exit 1
  fi
  grep -E "^stat::(number_of_executed_units|new_units_added)|Done [0-9]+ runs" \
    "$BUILD/$target.log" || true
done
echo "fuzz: ${#TARGETS[@]} targets ran $SECONDS_EACH s each without a crash ($((SECONDS - start)) s)"
