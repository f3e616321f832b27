#!/usr/bin/env bash
# Install the host tools listed in engine/images/apt-packages.txt (podman, buildah, debootstrap):
# what `make image-base` and `make docker*` need when no Docker daemon answers.
# Idempotent: returns at once when every package is installed. Runs apt as root, or through sudo.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PKG_LIST="$HERE/apt-packages.txt"
mapfile -t packages < <(grep -v '^\s*#' "$PKG_LIST" | sed '/^\s*$/d')

missing=()
for pkg in "${packages[@]}"; do
    status="$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)"
    [[ "$status" == "install ok installed" ]] || missing+=("$pkg")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

command -v apt-get >/dev/null 2>&1 || {
    echo "images: error: apt-get not found; install these packages yourself: ${missing[*]} (list: $PKG_LIST)" >&2; exit 1; }
if [[ "$(id -u)" -eq 0 ]]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO=(sudo)
else
    echo "images: error: installing ${missing[*]} needs root: run 'sudo make images-tools' once (list: $PKG_LIST)" >&2
    exit 1
fi
echo "images: installing ${missing[*]}"
"${SUDO[@]}" apt-get update -q
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
