#!/usr/bin/env bash
# Make the images' base without pulling anything: Debian 12 (bookworm) from Debian's archive by
# debootstrap, imported into the local podman/buildah store as localhost/virality-base:bookworm.
# The Dockerfile builds FROM it with --build-arg BASE=localhost/virality-base:bookworm (what
# engine/images/build.sh passes when it builds with podman).
#
# Usage: engine/images/base.sh [--force]
#   --force  rebuild even when the image already exists (otherwise a no-op).
# Settings (environment): BASE_IMAGE (default localhost/virality-base:bookworm),
#   DEBIAN_MIRROR (default http://deb.debian.org/debian), IMAGES_TMP (default /var/tmp),
#   PODMAN_STORAGE_DRIVER (default: podman's own, overlay on ext4/xfs; vfs where overlay fails).
# Needs root (debootstrap makes device nodes and chowns files) and the tools of `make images-tools`.
set -euo pipefail

BASE_IMAGE="${BASE_IMAGE:-localhost/virality-base:bookworm}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
TMP_ROOT="${IMAGES_TMP:-/var/tmp}"
FORCE=0
[[ "${1:-}" == "--force" ]] && FORCE=1

log() { echo "images: $*"; }
die() { echo "images: error: $*" >&2; exit 1; }
podman_() { podman ${PODMAN_STORAGE_DRIVER:+--storage-driver "$PODMAN_STORAGE_DRIVER"} "$@"; }

[[ "$(id -u)" -eq 0 ]] || die "debootstrap needs root: run 'sudo make image-base'"
for tool in debootstrap podman; do
    command -v "$tool" >/dev/null || die "$tool not found: run 'make images-tools' (engine/images/apt-packages.txt)"
done
if [[ "$FORCE" == "0" ]] && podman_ image exists "$BASE_IMAGE"; then
    log "$BASE_IMAGE exists (engine/images/base.sh --force rebuilds it)"
    exit 0
fi

WORK="$(mktemp -d "$TMP_ROOT/virality-base.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
log "debootstrap bookworm (minbase) from $MIRROR into $WORK/rootfs"
# minbase: essential packages and apt (with debian-archive-keyring); the Dockerfile installs the rest.
if ! debootstrap --variant=minbase --include=ca-certificates bookworm "$WORK/rootfs" "$MIRROR" \
        > "$WORK/debootstrap.log" 2>&1; then
    tail -30 "$WORK/debootstrap.log" >&2
    die "debootstrap failed (log above)"
fi
# What an image of Debian's own carries: apt's lists are fetched again by the first apt-get update.
rm -rf "$WORK"/rootfs/var/lib/apt/lists/* "$WORK"/rootfs/var/cache/apt/archives/*.deb
packages="$(chroot "$WORK/rootfs" dpkg-query -W -f '${Package}=${Version}\n' | wc -l)"
log "importing the root filesystem ($(du -sh "$WORK/rootfs" | cut -f1), $packages packages) as $BASE_IMAGE"
tar -C "$WORK/rootfs" --numeric-owner -cf - . \
    | podman_ import --change 'CMD ["/bin/bash"]' --change 'ENV LANG=C.UTF-8' \
        --message "debootstrap --variant=minbase bookworm $MIRROR ($(date -u +%Y-%m-%d))" - "$BASE_IMAGE" >/dev/null \
    || die "podman import failed"
log "made $BASE_IMAGE: $(podman_ image inspect --format '{{.Id}}' "$BASE_IMAGE" | cut -c1-12)"
