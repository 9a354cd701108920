#!/usr/bin/env bash
# Builds the Debian 12 (bookworm) base image that deploy/Dockerfile and
# deploy/Dockerfile.prometheus start FROM, with no image registry: debootstrap
# makes a minimal Debian root from Debian's own packages and `docker import`
# loads it as $DISTILLERY_BASE_IMAGE (default distillery/base:bookworm).
#
# Cached: the image carries a label with a hash of this script and its inputs
# (suite, mirrors); when an image with that tag and label exists nothing is
# done. Downloaded .debs are kept in $DISTILLERY_DEBOOTSTRAP_CACHE, so a
# rebuild (after `docker rmi`, or a changed script) needs no network for them.
#
# Usage: deploy/build_base_image.sh [--force]
# Env:   DISTILLERY_BASE_IMAGE, DEBIAN_MIRROR, DEBIAN_SECURITY_MIRROR,
#        DISTILLERY_DEBOOTSTRAP_CACHE. Needs root (or sudo) for debootstrap.
set -euo pipefail

IMAGE=${DISTILLERY_BASE_IMAGE:-distillery/base:bookworm}
SUITE=bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
CACHE=${DISTILLERY_DEBOOTSTRAP_CACHE:-/var/cache/distillery/debootstrap}
FORCE=${1:-}

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

stamp=$( (cat "$0"; echo "$SUITE $MIRROR $SECURITY_MIRROR") | sha256sum | cut -c1-16)
if [ "$FORCE" != "--force" ] &&
  [ "$(docker image inspect --format '{{ index .Config.Labels "org.distillery.base-stamp" }}' "$IMAGE" 2>/dev/null)" = "$stamp" ]; then
  echo "build_base_image: $IMAGE is up to date (stamp $stamp)"
  exit 0
fi

command -v debootstrap >/dev/null || { echo "build_base_image: debootstrap is missing (scripts/setup.sh installs it)" >&2; exit 1; }

root=$(mktemp -d /var/tmp/distillery-base.XXXXXX)
cleanup() { $SUDO rm -rf "$root"; }
trap cleanup EXIT
$SUDO mkdir -p "$CACHE"

echo "build_base_image: debootstrap $SUITE from $MIRROR into $root"
start=$SECONDS
# minbase: dpkg, apt and the Essential packages only; the images add the rest.
$SUDO debootstrap --variant=minbase --cache-dir="$CACHE" "$SUITE" "$root/rootfs" "$MIRROR" \
  >"$root.log" 2>&1 || { tail -30 "$root.log" >&2; rm -f "$root.log"; exit 1; }
rm -f "$root.log"

# The same sources as the host; apt keeps no .debs, installs no recommends,
# and accepts Release files past their Valid-Until (mirrors of snapshots).
$SUDO tee "$root/rootfs/etc/apt/sources.list" >/dev/null <<SOURCES
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb $SECURITY_MIRROR $SUITE-security main
SOURCES
$SUDO tee "$root/rootfs/etc/apt/apt.conf.d/90distillery" >/dev/null <<'APTCONF'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Check-Valid-Until "false";
Acquire::Languages "none";
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb || true"; };
APTCONF
$SUDO rm -rf "$root/rootfs/var/lib/apt/lists/"* "$root/rootfs/var/cache/apt/archives/"*.deb

$SUDO tar -C "$root/rootfs" --numeric-owner -c . |
  docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["/bin/bash"]' \
    --change "LABEL org.distillery.base-stamp=$stamp" \
    --message "debootstrap --variant=minbase $SUITE $MIRROR" \
    - "$IMAGE" >/dev/null
echo "build_base_image: $IMAGE built in $((SECONDS - start)) s (stamp $stamp)"
