#!/usr/bin/env bash
# Install the host tools listed in engine/images/apt-packages.txt (podman, buildah, debootstrap):
# what `make image-base` and `make docker*` need when no Docker daemon answers. The same
# installer as `make sysdeps` (engine/install_system_deps.sh), on this list.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec bash "$HERE/../install_system_deps.sh" --packages "$HERE/apt-packages.txt"
