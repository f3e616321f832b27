#!/usr/bin/env bash
# Time AlexNet-PVCNN on a GPU in one run: build the CUDA engine (the same recipe as
# `make caffe CUDA=1`), then a training step (forward, backward, SGD update) and deploy-net
# inference. For a lent GPU machine; run from the repo root:
#
#   bash bench/gpu.sh [CUDA_ARCH_BIN]        # default 90 (H100/H200); 52 61 for TITAN X-class
#
# Prints the GPU, the engine's build info and one JSON line per measurement. The engine goes
# to .cache-gpu/ and .engine-cuda (both git-ignored) so the CPU engine is left alone. cuBLAS and
# cuRAND come from NVIDIA's PyPI wheels (engine/cuda_wheels.txt) unless CUDA_LIBS=toolkit.
# Not yet run on a GPU (no device was lent to the session that wrote it).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ARCH="${1:-90}"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
make -s sysdeps venv
export CAFFE_CACHE_DIR="${CAFFE_CACHE_DIR:-$PWD/.cache-gpu}"
start=$(date +%s)
CUDA=1 CUDA_ARCH_BIN="$ARCH" JOBS="$(nproc)" bash engine/build_caffe.sh --python .venv/bin/python --link .engine-cuda
echo "gpu.sh: engine ready in $(( $(date +%s) - start )) s"
cat .engine-cuda/build-info.txt
export PYTHONPATH="$PWD:$PWD/.engine-cuda/lib/python3/dist-packages" GLOG_minloglevel=2
worker() { .venv/bin/python bench/caffe_worker.py "$@" --gpu 0 | tail -1; }
worker info
worker train --model alexnet_pvcnn --pairs 64 --iters 20 --warmup 3 --gemm 0
worker train --model alexnet_pvcnn --pairs 16 --iters 20 --warmup 3 --gemm 0
worker infer --model alexnet_pvcnn --batch 256 --iters 20 --warmup 3
worker train --model vgg19_pvcnn --pairs 8 --iters 10 --warmup 2 --gemm 0
# The pair-index feed against the measured step: thread vs worker processes (docs/GPU.md).
.venv/bin/python bench/feed_workers.py --pairs 64 --crop 227 --step-ms 0 81 --workers 1 2 4 --iters 20 | tail -1
# One GPU through the NCCL path of tools/train.py --gpus (needs an engine built with USE_NCCL).
if .venv/bin/python -c "import sys; from virality.train.multigpu import engine_has_nccl; sys.exit(not engine_has_nccl())"; then
    make -s data DATASET=synthetic
    timeout 120 .venv/bin/python tools/train.py --model tiny_pvcnn --gpus 0 --max-iter 50 --out "$CAFFE_CACHE_DIR/nccl-run" \
        | grep -E "effective batch|done" || echo "gpu.sh: the 1-GPU NCCL run FAILED"
else
    echo "gpu.sh: engine built without NCCL: the --gpus run is not measured"
fi
echo "gpu.sh: done in $(( $(date +%s) - start )) s"
