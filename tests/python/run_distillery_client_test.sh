#!/usr/bin/env bash
# Installs python/ (distillery_client) into a fresh venv with the README's
# install line (from a copy of python/), offline, and runs its pytest suite
# with that interpreter against real teacher_server processes.
# Usage: run_distillery_client_test.sh VENV_DIR TEACHER_SERVER CLIENT_TOOL MNIST_DIR [pytest args]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="$1" server="$2" tool="$3" mnist="$4"
shift 4
rm -rf "$venv"
/usr/bin/python3 -m venv --system-site-packages "$venv"
# pip builds in the source directory (build/, *.egg-info), so two of these
# tests run at once (ctest -j2) would race on python/: each builds from its
# own copy, with the stubs generated from the repository's proto/.
cp -r "$repo/python" "$venv/src"
rm -rf "$venv/src/build" "$venv/src"/*.egg-info
# --no-build-isolation: Debian's setuptools and wheel build it; --no-index:
# nothing is fetched (the dependencies are Debian's python3-grpcio,
# python3-protobuf and python3-numpy).
DISTILLERY_PROTO_DIR="$repo/proto" \
  "$venv/bin/pip" install --quiet --no-build-isolation --no-index "$venv/src"
# The package under test is the installed one, not the source tree.
cd "$venv"
export DISTILLERY_TEACHER_SERVER="$server" DISTILLERY_CLIENT_TOOL="$tool" \
  DISTILLERY_MNIST_DIR="$mnist" DISTILLERY_CERTS_SCRIPT="$repo/tests/make_test_certs.sh"
unset DISTILLERY_AUTH_TOKEN
exec "$venv/bin/python" -m pytest -p no:cacheprovider -q \
  -o "markers=long: the PyTorch student (minutes)" "$here/distillery_client_test.py" "$@"
