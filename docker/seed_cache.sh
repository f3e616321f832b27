#!/usr/bin/env bash
# Inside an image build: copy a matching engine from a read-only engine cache mounted into the
# build (engine/images/build.sh mounts the host's ~/.cache/virality-caffe at SEED with
# `podman build --volume`), so that the next `make caffe` finds it up to date instead of
# compiling Caffe again (12 minutes on 2 cores). Nothing is copied unless it is the very engine
# `make caffe` would build here: engine/build_caffe.sh --check computes the key in the image
# (sources, patches, flags, Python/numpy, cmake and g++ versions), and the engine's RUNPATH must
# name the image's cache directory (a Caffe build is not relocatable).
#
# Usage: docker/seed_cache.sh SEED   (SEED: the mounted cache root; CAFFE_CACHE_DIR: the image's)
# Exits 0 whether or not it copied (a miss only means `make caffe` compiles); it says which.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SEED="${1:?usage: seed_cache.sh SEED (the mounted engine cache)}"
DEST="${CAFFE_CACHE_DIR:?seed_cache.sh: CAFFE_CACHE_DIR must name the engine cache of the image}"
PY="${PY:-.venv/bin/python}"
log() { echo "images: $*"; }

[[ -d "$SEED" ]] || { log "no engine cache mounted at $SEED: make caffe builds the engine"; exit 0; }
check="$(CAFFE_CACHE_DIR="$SEED" bash "$HERE/../engine/build_caffe.sh" --python "$PY" --check 2>&1 || true)"
key="$(grep -o 'engine-[0-9a-f]\{16\}' <<<"$check" | head -1 | cut -d- -f2)"
[[ -n "$key" ]] || { log "could not read the engine key from build_caffe.sh --check: $check"; exit 0; }
src="$SEED/engine-$key"
if [[ ! -f "$src/.complete" ]]; then
    log "the mounted cache has no complete engine-$key (the key of this image: the host has not built it, or its toolchain or settings differ): make caffe builds it"
    exit 0
fi
lib="$(ls "$src"/lib/libcaffe.so.* | head -1)"
runpath="$(readelf -d "$lib" | sed -n 's/.*(RUNPATH).*\[\(.*\)\]/\1/p')"
if [[ ":$runpath:" != *":$DEST/engine-$key/lib:"* ]]; then
    log "engine-$key in the mounted cache was built for another cache directory (RUNPATH $runpath; here CAFFE_CACHE_DIR=$DEST): make caffe builds it"
    exit 0
fi
mkdir -p "$DEST"
# The engine and every cache directory its RUNPATH names (the scipy-openblas32 wheel, MKL, CUDA wheels).
copy=("engine-$key")
IFS=: read -r -a dirs <<<"$runpath"
for d in "${dirs[@]}"; do
    [[ "$d" == "$DEST"/* ]] || continue
    top="${d#"$DEST"/}"; top="${top%%/*}"
    [[ " ${copy[*]} " == *" $top "* ]] || copy+=("$top")
done
for entry in "${copy[@]}"; do
    [[ -e "$SEED/$entry" ]] || { log "the mounted cache lacks $entry (named by the engine's RUNPATH): make caffe builds the engine"; exit 0; }
done
for entry in "${copy[@]}"; do
    rm -rf "$DEST/$entry.seed.$$"
    cp -a "$SEED/$entry" "$DEST/$entry.seed.$$"
    rm -rf "$DEST/$entry"
    mv "$DEST/$entry.seed.$$" "$DEST/$entry"
done
log "copied ${copy[*]} from the mounted engine cache (key $key matches this image's toolchain)"
