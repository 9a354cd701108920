#!/usr/bin/env bash
# Builds Distillery and runs the whole test suite. Installs the Debian
# packages first (idempotent). Usage: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build -j2
# Each test process gets an explicit thread count (see docs/architecture.md).
export OMP_NUM_THREADS=2 OMP_WAIT_POLICY=PASSIVE
ctest --test-dir build --output-on-failure -j2
# The docker-compose deployment, end to end on this machine's Docker Engine.
bash deploy/compose_test.sh
# Hardening (issue #8): the suite again under ASan+UBSan, then each fuzz target.
bash scripts/sanitize_test.sh
bash scripts/fuzz.sh
