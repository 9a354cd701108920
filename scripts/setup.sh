#!/usr/bin/env bash
# Installs everything Distillery needs to build, test and run its demo, from
# Debian 12 packages, plus onnx and onnxruntime from PyPI for the ONNX export's
# runtime test. Idempotent: running it again installs nothing new.
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
  # The ONNX schema (onnx.proto) the ONNX export is compiled from.
  libonnx-dev
  # openssl makes the throw-away certificates of the TLS tests.
  openssl
  # Default data set for a fresh machine, and the demo's plot.
  dataset-fashion-mnist gnuplot-nox
  # Real third-party peers: PyTorch (benchmarks) and a Python gRPC client (tests).
  python3 python3-numpy python3-torch python3-grpcio python3-protobuf libopenblas0-openmp
  # pip, for the Python packages Debian 12 does not have (below).
  python3-pip
  # The Python client package (python/): a venv, its build without PyPI
  # (pip install --no-build-isolation), and its tests (pytest). Its stubs are
  # generated with protoc and grpc_python_plugin (protobuf-compiler-grpc,
  # above), or python3-grpc-tools.
  python3-venv python3-setuptools python3-wheel python3-pytest python3-grpc-tools
  # Deployment (deploy/): the base image made with debootstrap (no image
  # registry), the compose test's client and HTTP queries; Docker Engine itself
  # comes with the machine.
  debootstrap docker-compose curl
  # Fuzzing (scripts/fuzz.sh): clang with libFuzzer and the sanitizer
  # runtimes, and clang's OpenMP runtime. (The sanitizer build uses gcc.)
  clang-14 libclang-rt-14-dev libomp-14-dev
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ "${#missing[@]}" -eq 0 ]; then
  echo "setup: all ${#PACKAGES[@]} packages already installed"
else
  echo "setup: installing ${#missing[@]} packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# ONNX Runtime and the onnx checker (tests/python/onnx_runtime_test.py) are
# not packaged by Debian 12: they come from PyPI, for the python3 on PATH,
# which is the interpreter ctest runs that test with. Only missing modules
# are installed (an existing numpy is left alone).
pip_packages=()
# kubernetes-validate (deploy/k8s/check_manifests.py) checks the Kubernetes
# manifests against the API's schemas, which it bundles.
for module in numpy onnx onnxruntime kubernetes_validate; do
  python3 -c "import $module" 2>/dev/null || pip_packages+=("$module")
done
if [ "${#pip_packages[@]}" -eq 0 ]; then
  echo "setup: Python modules numpy, onnx, onnxruntime, kubernetes_validate already installed for $(command -v python3)"
else
  echo "setup: installing ${pip_packages[*]} from PyPI for $(command -v python3)"
  pip_args=(--quiet)
  # Debian's own interpreter refuses pip installs (PEP 668) unless told to.
  if python3 -c 'import os, sys, sysconfig
sys.exit(not os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")))'; then
    pip_args+=(--break-system-packages)
  fi
  python3 -m pip install "${pip_args[@]}" "${pip_packages[@]}"
fi
echo "setup: done"
