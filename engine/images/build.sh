#!/usr/bin/env bash
# Build one of the project's images from the Dockerfile (one recipe with `make caffe`).
#
# Usage: engine/images/build.sh cpu|titanx|current
#   cpu      virality-caffe:cpu      CPU engine (what `make caffe` builds)
#   titanx   virality-caffe:titanx   CUDA 11.8, sm_52 sm_61 (TITAN X-class, Maxwell/Pascal;
#                                    CUDA_ARCH_BIN_TITANX="52 61 70" adds Volta)
#   current  virality-caffe:current  CUDA 13.0 (podman) sm_75 .. sm_90 (Turing..Hopper;
#                                    CUDA_ARCH_BIN_CURRENT); CUDA 12.6 (docker) sm_70 .. sm_90
#
# Builder (IMAGE_BUILDER=docker|podman, default: docker when a Docker daemon answers, else podman):
#   docker   `docker build` FROM the public bases (debian:12, nvidia/cuda:*-devel-ubuntu22.04).
#   podman   `podman build`, daemonless (Debian's podman/buildah: `make images-tools`), FROM the
#            local Debian 12 base that engine/images/base.sh makes with debootstrap; never pulls
#            (--pull=never), runs RUN steps with --isolation chroot (works in a VM, as root,
#            without a container runtime's namespaces for the build).
# Settings: ENGINE_SEED=1 (default) mounts the host's engine cache read-only into the engine
#   step (podman only), so a host engine with the same key is copied instead of compiled
#   (docker/seed_cache.sh; the image's engine then lives at the host's cache path);
#   ENGINE_SEED=0 compiles in the image. PODMAN_STORAGE_DRIVER (e.g. vfs) where overlay fails.
#   BUILD_CA: a CA bundle pip needs to reach PyPI (default: $PIP_CERT, else $SSL_CERT_FILE, when
#   set; our machines reach PyPI through a TLS-intercepting proxy), mounted read-only for the
#   build's pip (build argument PIP_CERT), not copied into the image; BUILD_CA= turns it off.
#   TAG overrides the image name. Extra arguments after the target go to the builder.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
BASE_IMAGE="${BASE_IMAGE:-localhost/virality-base:bookworm}"
log() { echo "images: $*"; }
die() { echo "images: error: $*" >&2; exit 1; }

target="${1:-}"; shift || true
case "$target" in
    # The CPU image leaves the CUDA settings unset (the Dockerfile's defaults are for nvidia/cuda
    # bases): `make caffe CUDA=1` in it then gets the engine's defaults, as on a host.
    cpu)     tag=virality-caffe:cpu;     docker_base=debian:12
             cuda=(--build-arg CUDA=0 --build-arg CUDA_ARCH_BIN= --build-arg CUDA_LIBS= --build-arg USE_CUDNN= --build-arg USE_NCCL=) ;;
    # docker: the nvidia/cuda base's nvcc (11.8 / 12.6, with Ubuntu 22.04's gcc 11); cuBLAS, cuRAND, cuDNN
    # and NCCL from the wheels of that CUDA major version (engine/cuda_wheels.txt [cuda11] / [cuda12]).
    titanx)  tag=virality-caffe:titanx;  cuda=(--build-arg CUDA=1 --build-arg "CUDA_ARCH_BIN=52 61"
                                               --build-arg CUDA_LIBS=wheels --build-arg USE_CUDNN=1 --build-arg USE_NCCL=1)
             docker_base=nvidia/cuda:11.8.0-devel-ubuntu22.04 ;;
    current) tag=virality-caffe:current; cuda=(--build-arg CUDA=1 --build-arg "CUDA_ARCH_BIN=70 75 80 86 89 90"
                                               --build-arg CUDA_LIBS=wheels --build-arg USE_CUDNN=1 --build-arg USE_NCCL=1)
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
        case "$target" in
            titanx)
                # CUDA 11.8's nvcc from Debian's non-free archive (docker/cuda11-debian.txt: NVIDIA's
                # PyPI wheels hold no CUDA 11/12 nvcc, and CUDA 13 no longer compiles for sm_52/sm_61),
                # run with gcc-11; cuBLAS, cuRAND, cuDNN 9.10 and NCCL from NVIDIA's CUDA 11 wheels
                # (engine/cuda_wheels.txt [cuda11], CUDA_LIBS=wheels).
                # CUDA 11.8 also compiles for Volta: CUDA_ARCH_BIN_TITANX="52 61 70" adds the V100.
                cuda=(--build-arg CUDA=1 --build-arg "CUDA_ARCH_BIN=${CUDA_ARCH_BIN_TITANX:-52 61}"
                      --build-arg CUDA_LIBS=wheels --build-arg USE_CUDNN=1 --build-arg USE_NCCL=1
                      --build-arg CUDA_TOOLKIT=cuda11-debian.txt --build-arg CUDA_HOST_COMPILER=gcc-11) ;;
            current)
                # CUDA 13 from the wheels: nvcc (docker/cuda13-toolkit.txt) and the libraries with
                # cuDNN 9 and NCCL (engine/cuda_wheels.txt, CUDA_LIBS=wheels). CUDA 13 dropped sm_70.
                cuda=(--build-arg CUDA=1 --build-arg "CUDA_ARCH_BIN=${CUDA_ARCH_BIN_CURRENT:-75 80 86 89 90}"
                      --build-arg CUDA_LIBS=wheels --build-arg USE_CUDNN=1 --build-arg USE_NCCL=1
                      --build-arg CUDA_TOOLKIT=cuda13-toolkit.txt) ;;
        esac
        bash "$HERE/base.sh"
        args=(--isolation chroot --pull=never --layers --build-arg "BASE=$BASE_IMAGE" --build-arg PROTOBUF_PYTHON=upb)
        seed="${CAFFE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/virality-caffe}"
        if [[ "${ENGINE_SEED:-1}" == "1" && -d "$seed" ]]; then
            log "mounting the host's engine cache $seed read-only at /opt/engine-seed (ENGINE_SEED=0 compiles instead)"
            args+=(--volume "$seed:/opt/engine-seed:ro" --build-arg "CAFFE_CACHE_DIR=$seed")
        fi
        ca="${BUILD_CA-${PIP_CERT:-${SSL_CERT_FILE:-}}}"
        if [[ -n "$ca" ]]; then
            [[ -f "$ca" ]] || die "BUILD_CA='$ca' is not a file (a CA bundle for pip; BUILD_CA= for none)"
            log "pip in the build trusts $ca (mounted read-only; BUILD_CA= for none)"
            args+=(--volume "$(readlink -f "$ca"):/opt/build-ca/ca.crt:ro" --build-arg PIP_CERT=/opt/build-ca/ca.crt)
        fi
        iid="$(mktemp)"; ctx="$(mktemp -d)"; trap 'rm -rf "$iid" "$ctx"' EXIT
        args+=(--iidfile "$iid")
        # podman reads the context at each COPY step: the build reads a snapshot taken now (context.sh).
        bash "$HERE/context.sh" "$ctx"
        revision="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
        if [[ -n "$(git status --porcelain 2>/dev/null)" ]]; then revision+="+local-changes"; fi
        log "podman build $tag FROM $BASE_IMAGE, from a snapshot of the tree at $revision"
        podman ${PODMAN_STORAGE_DRIVER:+--storage-driver "$PODMAN_STORAGE_DRIVER"} build "${args[@]}" "${cuda[@]}" \
            --label "org.opencontainers.image.revision=$revision" -f "$ctx/Dockerfile" -t "$tag" "$@" "$ctx"
        ;;
    *) die "IMAGE_BUILDER='$builder': use docker or podman" ;;
esac
# podman build can exit 0 when it is stopped by a signal: the image ID it writes at the end is
# what says it was built.
if [[ "$builder" == "podman" && ! -s "$iid" ]]; then
    die "podman build ended without writing an image ID: $tag was not built (stopped?)"
fi
log "built $tag with $builder in $(( (SECONDS - start) / 60 )) min $(( (SECONDS - start) % 60 )) s"
