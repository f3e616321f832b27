#!/usr/bin/env bash
# Copy the build context of the images (the repository's files) into DEST, as they are now.
#
# Usage: engine/images/context.sh DEST        (engine/images/build.sh runs it for podman builds)
#
# podman/buildah read the context directory at each COPY step of the build, not once at its start
# as `docker build` does (it sends the context to the daemon first): a tree edited during the hour a
# GPU image takes would go into the image half old, half new (seen on 2026-12-01: the engine step
# compiled from one engine/cuda_wheels.txt, a later `COPY . .` brought another, and the image began
# compiling a second engine). So a podman build reads this snapshot instead. In a git checkout it
# holds what git tracks and the untracked files git does not ignore, as they are on disk (edits
# included, deleted files left out); elsewhere (a source archive) every file. .dockerignore applies
# on top, in the build.
set -euo pipefail
dest="${1:?usage: engine/images/context.sh DEST}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
mkdir -p "$dest"
cd "$ROOT"
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git ls-files -z --cached --others --exclude-standard \
        | while IFS= read -r -d '' f; do if [[ -e "$f" || -L "$f" ]]; then printf '%s\0' "$f"; fi; done \
        | tar --null -T - -cf - | tar -C "$dest" -xf -
else
    tar --exclude=./.git -cf - . | tar -C "$dest" -xf -
fi
