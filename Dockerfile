# virality-caffe images, built by the same recipe as `make caffe` (engine/build_caffe.sh).
#
#   make docker        GPU image for TITAN X-class cards (Maxwell/Pascal: sm_52, sm_61)
#   make docker-current  GPU image for current cards (Volta..Hopper: sm_70 - sm_90)
#   make docker-cpu    CPU image
#
# or directly, e.g.:
#   docker build --build-arg BASE=nvidia/cuda:12.6.3-devel-ubuntu22.04 \
#                --build-arg CUDA=1 --build-arg CUDA_ARCH_BIN="70 75 80 86 89 90" -t virality-caffe:current .
#   docker run --gpus all -it virality-caffe:titanx make train MODEL=alexnet_pvcnn GPU=0 WEIGHTS=...
#
# Why CUDA 11.8 for the TITAN X image (docs/ENGINE.md, "GPU images"): it is the newest toolkit
# that still builds for sm_52/sm_61 without deprecation. Why USE_CUDNN=0 USE_NCCL=0 here, while
# they are on by default in `make caffe CUDA=1`: the engine takes cuDNN 9 (engine patch 0009) and
# NCCL from NVIDIA's CUDA 13 wheels (engine/cuda_wheels.txt), and these images build with the
# CUDA 11.8 / 12.6 toolkits of their base (CUDA_LIBS=toolkit), which hold neither; Caffe's own
# CUDA kernels (im2col + cuBLAS GEMM) run every layer. cuDNN/NCCL in the images is still to do.
ARG BASE=nvidia/cuda:11.8.0-devel-ubuntu22.04
FROM ${BASE}

ARG CUDA=1
ARG CUDA_ARCH_BIN="52 61"
ARG BLAS=scipy-openblas
ENV DEBIAN_FRONTEND=noninteractive \
    CUDA=${CUDA} CUDA_ARCH_BIN=${CUDA_ARCH_BIN} CUDA_LIBS=toolkit USE_CUDNN=0 USE_NCCL=0 BLAS=${BLAS} \
    XDG_CACHE_HOME=/opt/cache \
    # Ubuntu 22.04's protoc 3.12 generates code the C++-backed protobuf 4.21 runtime refuses.
    PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python

RUN apt-get update -q && apt-get install -y -q --no-install-recommends make ca-certificates \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/virality-caffe
# The recipe first, so the engine layer is cached across changes to the rest of the project.
COPY Makefile requirements.txt ./
COPY engine/ engine/
RUN make sysdeps && make venv && make caffe && rm -rf /var/lib/apt/lists/*

COPY . .
RUN make env && .venv/bin/python -c "import caffe; assert 'Python' in caffe.layer_type_list()" \
    && .venv/bin/caffe --version
ENV PATH=/opt/virality-caffe/.venv/bin:$PATH
CMD ["make", "help"]
