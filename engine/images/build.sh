#!/usr/bin/env bash
# Build one of the project's images from the Dockerfile (one recipe with `make caffe`).
#
# Usage: engine/images/build.sh cpu|titanx|current
#   cpu      virality-caffe:cpu      CPU engine (what `make caffe` builds)
#   titanx   virality-caffe:titanx   CUDA, sm_52 sm_61 (TITAN X-class, Maxwell/Pascal)
#   current  virality-caffe:current  CUDA, sm_70 .. sm_90 (Volta..Hopper)
#
# Builder (IMAGE_BUILDER=docker|podman, default: docker when a Docker daemon answers, else podman):
#   docker   `docker build` FROM the public bases (debian:12, nvidia/cuda:*-devel-ubuntu22.04).
#   podman   `podman build`, daemonless (Debian's podman/buildah: `make images-tools`), FROM the
#            local Debian 12 base that engine/images/base.sh makes with debootstrap; never pulls
#            (--pull=never), runs RUN steps with --isolation chroot (works in a VM, as root,
#            without a container runtime's namespaces for the build).
# Settings: ENGINE_SEED=1 (default) mounts the host's engine cache read-only into the engine
#   step (podman only), so a host engine with the same key is copied instead of compiled
#   (engine/images/seed_cache.sh; the image's engine then lives at the host's cache path);
#   ENGINE_SEED=0 compiles in the image. PODMAN_STORAGE_DRIVER (e.g. vfs) where overlay fails.
#   TAG overrides the image name. Extra arguments after the target go to the builder.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
BASE_IMAGE="${BASE_IMAGE:-localhost/virality-base:bookworm}"
log() { echo "images: $*"; }
die() { echo "images: error: $*" >&2; exit 1; }

target="${1:-}"; shift || true
case "$target" in
    cpu)     tag=virality-caffe:cpu;     cuda=(--build-arg CUDA=0);   docker_base=debian:12 ;;
    titanx)  tag=virality-caffe:titanx;  cuda=(--build-arg CUDA=1 --build-arg "CUDA_ARCH_BIN=52 61")
             docker_base=nvidia/cuda:11.8.0-devel-ubuntu22.04 ;;
    current) tag=virality-caffe:current; cuda=(--build-arg CUDA=1 --build-arg "CUDA_ARCH_BIN=70 75 80 86 89 90")
             docker_base=nvidia/cuda:12.6.3-devel-ubuntu22.04 ;;
    *) die "usage: engine/images/build.sh cpu|titanx|current [builder arguments]" ;;
esac
tag="${TAG:-$tag}"

builder="${IMAGE_BUILDER:-}"
if [[ -z "$builder" ]]; then
    if command -v docker >/dev/null && docker info >/dev/null 2>&1; then builder=docker; else builder=podman; fi
fi

cd "$ROOT"
start=$SECONDS
case "$builder" in
    docker)
        log "docker build $tag FROM $docker_base"
        docker build --build-arg "BASE=$docker_base" "${cuda[@]}" -t "$tag" "$@" .
        ;;
    podman)
        bash "$HERE/install_tools.sh"
        if [[ "$target" != "cpu" ]]; then
            die "the $target image FROM the debootstrap base needs the CUDA toolchain from NVIDIA's wheels, which this recipe does not install yet (docs/ENGINE.md, \"Images\"); build it with a Docker daemon (IMAGE_BUILDER=docker)"
        fi
        bash "$HERE/base.sh"
        args=(--isolation chroot --pull=never --layers --build-arg "BASE=$BASE_IMAGE" --build-arg PROTOBUF_PYTHON=upb)
        seed="${CAFFE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/virality-caffe}"
        if [[ "${ENGINE_SEED:-1}" == "1" && -d "$seed" ]]; then
            log "mounting the host's engine cache $seed read-only at /opt/engine-seed (ENGINE_SEED=0 compiles instead)"
            args+=(--volume "$seed:/opt/engine-seed:ro" --build-arg "CAFFE_CACHE_DIR=$seed")
        fi
        log "podman build $tag FROM $BASE_IMAGE"
        podman ${PODMAN_STORAGE_DRIVER:+--storage-driver "$PODMAN_STORAGE_DRIVER"} build "${args[@]}" "${cuda[@]}" -t "$tag" "$@" .
        ;;
    *) die "IMAGE_BUILDER='$builder': use docker or podman" ;;
esac
log "built $tag with $builder in $(( (SECONDS - start) / 60 )) min $(( (SECONDS - start) % 60 )) s"
