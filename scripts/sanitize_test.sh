#!/usr/bin/env bash
# Builds Distillery with AddressSanitizer (plus LeakSanitizer) and
# UndefinedBehaviorSanitizer (gcc) into build-asan and runs the whole test
# suite there. Any sanitizer report fails the test that triggered it (the
# processes abort; undefined behaviour is not recovered from). The options
# below are exported, so they reach every process a test starts (servers,
# trainers, the demo script's binaries).
# Usage: scripts/sanitize_test.sh [extra ctest arguments, e.g. -R idx]
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${DISTILLERY_ASAN_BUILD:-build-asan}
export ASAN_OPTIONS="halt_on_error=1:abort_on_error=0:detect_leaks=1:check_initialization_order=1:strict_init_order=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
export LSAN_OPTIONS="suppressions=$PWD/scripts/lsan.supp:print_suppressions=0"
start=$SECONDS
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DDISTILLERY_SANITIZE=address,undefined
cmake --build "$BUILD" -j2
echo "sanitize_test: built in $((SECONDS - start)) s"
export OMP_NUM_THREADS=2 OMP_WAIT_POLICY=PASSIVE
# The long load tests (label `long`) measure latency and memory, not memory errors.
ctest --test-dir "$BUILD" --output-on-failure -j2 -LE long "$@"
echo "sanitize_test: build and tests passed in $((SECONDS - start)) s"
