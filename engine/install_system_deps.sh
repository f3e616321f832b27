#!/usr/bin/env bash
# Install the system packages listed in engine/apt-packages.txt and register the
# deb-src entry that `apt-get source` needs to fetch Caffe's Debian source package.
#
# Idempotent: when every package is installed and the source entry exists it
# returns at once without touching apt. Runs apt as root, or through sudo.
#
#   --packages FILE   install the packages of another list instead (one per line, # comments),
#                     without the source entry: `make images-tools` (engine/images/apt-packages.txt).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PKG_LIST="$HERE/apt-packages.txt"
SRC_LIST=/etc/apt/sources.list.d/virality-caffe-bullseye-src.sources
NEED_SRC=1
if [[ "${1:-}" == "--packages" ]]; then
    [[ -f "${2:-}" ]] || { echo "error: --packages needs a package list file, got '${2:-}'" >&2; exit 2; }
    PKG_LIST="$2"; NEED_SRC=0
fi

mapfile -t packages < <(grep -v '^\s*#' "$PKG_LIST" | sed '/^\s*$/d')

missing=()
for pkg in "${packages[@]}"; do
    status="$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)"
    [[ "$status" == "install ok installed" ]] || missing+=("$pkg")
done

if [[ ${#missing[@]} -eq 0 && ( "$NEED_SRC" == "0" || -f "$SRC_LIST" ) ]]; then
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: apt-get not found. This project installs its system packages with apt" >&2
    echo "(Debian 12 / Ubuntu 22.04 or newer). Install the packages in $PKG_LIST by hand." >&2
    exit 1
fi

if [[ "$(id -u)" -eq 0 ]]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO=(sudo)
else
    echo "error: installing system packages needs root. Run the make target with sudo once," >&2
    echo "or install these packages yourself: ${missing[*]:-(none)} (list: $PKG_LIST)" >&2
    [[ "$NEED_SRC" == "0" ]] || \
        echo "and create $SRC_LIST with a Debian 11 (bullseye) deb-src entry (see docs/ENGINE.md)." >&2
    exit 1
fi

if [[ ${#missing[@]} -gt 0 ]]; then
    echo "engine: installing system packages: ${missing[*]}"
    "${SUDO[@]}" apt-get update -q
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# The source entry needs Debian's archive keyring (installed above: debian-archive-keyring).
if [[ "$NEED_SRC" == "1" && ! -f "$SRC_LIST" ]]; then
    echo "engine: adding the Debian 11 (bullseye) source entry $SRC_LIST (for apt-get source caffe)"
    keyring=/usr/share/keyrings/debian-archive-keyring.gpg
    [[ -f "$keyring" ]] || { echo "error: $keyring missing; install debian-archive-keyring" >&2; exit 1; }
    "${SUDO[@]}" tee "$SRC_LIST" >/dev/null <<SOURCES
# Added by virality-caffe (engine/install_system_deps.sh): Caffe's source package
# comes from Debian 11; nothing is installed from this entry, sources only.
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bullseye
Components: main
Signed-By: $keyring
SOURCES
    "${SUDO[@]}" apt-get update -q
fi
