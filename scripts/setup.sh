#!/usr/bin/env bash
# Installs everything Distillery needs to build, test and run its demo, from
# Debian 12 packages only. Idempotent: running it again installs nothing new.
# Needs root (or sudo). Nothing is downloaded at run time afterwards.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

PACKAGES=(
  # Toolchain and build.
  build-essential cmake ninja-build pkg-config clang-format
  # Libraries the C++ code links against (Debian builds oneDNN with its
  # OpenCL GPU runtime, so its CMake config needs the OpenCL headers).
  libdnnl-dev ocl-icd-opencl-dev opencl-c-headers libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc
  libabsl-dev libspdlog-dev libfmt-dev libgtest-dev libgmock-dev prometheus-cpp-dev zlib1g-dev
  # Default data set for a fresh machine, and the demo's plot.
  dataset-fashion-mnist gnuplot-nox
  # Real third-party peers: PyTorch (benchmarks) and a Python gRPC client (tests).
  python3 python3-numpy python3-torch python3-grpcio python3-protobuf libopenblas0-openmp
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ "${#missing[@]}" -eq 0 ]; then
  echo "setup: all ${#PACKAGES[@]} packages already installed"
  exit 0
fi

echo "setup: installing ${#missing[@]} packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "setup: done"
