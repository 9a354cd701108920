#!/usr/bin/env bash
# Builds Distillery's three images with no image registry, from the
# repository root as build context:
#   distillery/base:bookworm   debootstrap + docker import (deploy/build_base_image.sh)
#   distillery/runtime         teacher_server, student_trainer (deploy/Dockerfile)
#   distillery/prometheus      Debian's prometheus (deploy/Dockerfile.prometheus)
# Reruns are quick: the base image is skipped when up to date and Docker's
# layer cache keeps the rest. A proxy for apt, if the host needs one, is
# passed on from http_proxy/https_proxy (Docker's predefined build args).
# Usage: deploy/build_images.sh    Env: DISTILLERY_BUILD_JOBS (default 2)
set -euo pipefail
cd "$(dirname "$0")/.."

base=${DISTILLERY_BASE_IMAGE:-distillery/base:bookworm}
DISTILLERY_BASE_IMAGE=$base deploy/build_base_image.sh

build_args=(--build-arg "BASE_IMAGE=$base")
for var in http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY; do
  if [ -n "${!var:-}" ]; then build_args+=(--build-arg "$var=${!var}"); fi
done

start=$SECONDS
docker build "${build_args[@]}" --build-arg "JOBS=${DISTILLERY_BUILD_JOBS:-2}" \
  -f deploy/Dockerfile -t "${DISTILLERY_IMAGE:-distillery/runtime}" .
docker build "${build_args[@]}" \
  -f deploy/Dockerfile.prometheus -t "${DISTILLERY_PROMETHEUS_IMAGE:-distillery/prometheus}" .
echo "build_images: runtime and prometheus images built in $((SECONDS - start)) s"
