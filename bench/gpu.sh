#!/usr/bin/env bash
# The GPU path, timed with and without cuDNN in one run, on a machine with an NVIDIA GPU:
#
#   bash bench/gpu.sh [CUDA_ARCH_BIN]        # default 90 (H100/H200); "52 61" for TITAN X-class
#
#   1. two CUDA engines by the recipe of `make caffe CUDA=1` (engine/build_caffe.sh): cuDNN 9 + NCCL
#      (USE_CUDNN=1, the default) and Caffe's own kernels (USE_CUDNN=0, NCCL still on);
#   2. per engine: Caffe's own GPU unit tests for the layers our nets use (convolution, pooling,
#      LRN, ReLU/dropout, inner product, softmax; the cuDNN layers' own tests too in the cuDNN engine),
#      an AlexNet-PVCNN and a VGG-19-PVCNN training step, AlexNet-PVCNN deploy inference;
#   3. the pair feed's rate against a GIL-holding step (bench/feed_workers.py) and a 1-GPU run of
#      tools/train.py --gpus 0 through pycaffe's NCCL, with the cuDNN engine;
#   4. one table (and every measurement as a JSON line in bench/out/gpu/results.jsonl).
#
# The engines go to .cache-gpu/ and .engine-cuda, .engine-cuda-nocudnn (git-ignored): the CPU
# engine (.engine) is left alone. Needs what `make caffe CUDA=1` needs: Debian's build packages
# (make sysdeps), an nvcc 13.x on PATH and PyPI for the wheels of engine/cuda_wheels.txt (or
# CUDA_LIBS=toolkit). Expected under 8 minutes on 16 cores, most of it the two builds (not yet run
# on a GPU: no device was lent to the sessions that wrote it; docs/GPU.md).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ARCH="${1:-90}"
OUT_DIR="$PWD/bench/out/gpu"
RESULTS="$OUT_DIR/results.jsonl"
mkdir -p "$OUT_DIR"
: > "$RESULTS"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
make -s sysdeps venv
export CAFFE_CACHE_DIR="${CAFFE_CACHE_DIR:-$PWD/.cache-gpu}" GLOG_minloglevel=2
PY=.venv/bin/python
start=$(date +%s)

# record VARIANT JSON: append one measurement, tagged with the engine variant.
record() { "$PY" -c 'import json, sys; d = json.loads(sys.argv[2]); d["variant"] = sys.argv[1]; print(json.dumps(d))' \
               "$1" "$2" >> "$RESULTS"; }

# Caffe's gtest cases for the layers our nets use, on the GPU only: TestDtypesAndDevices suites
# run GPUDevice<float>/<double> as type parameters 2 and 3, the CuDNN* suites (GPUDeviceTest) as 0 and 1.
GPU_TESTS=""
for suite in ConvolutionLayerTest PoolingLayerTest LRNLayerTest NeuronLayerTest InnerProductLayerTest \
             SoftmaxLayerTest; do
    GPU_TESTS+="$suite/2.*:$suite/3.*:"
done
for suite in CuDNNConvolutionLayerTest CuDNNPoolingLayerTest CuDNNLRNLayerTest CuDNNNeuronLayerTest \
             CuDNNSoftmaxLayerTest; do
    GPU_TESTS+="$suite/0.*:$suite/1.*:"
done

for variant in cudnn caffe; do
    if [[ "$variant" == "cudnn" ]]; then use_cudnn=1; link=.engine-cuda; else use_cudnn=0; link=.engine-cuda-nocudnn; fi
    t0=$(date +%s)
    CUDA=1 CUDA_ARCH_BIN="$ARCH" USE_CUDNN=$use_cudnn USE_NCCL=1 JOBS="$(nproc)" \
        bash engine/build_caffe.sh --python "$PY" --link "$link"
    record "$variant" "{\"task\": \"build\", \"seconds\": $(( $(date +%s) - t0 ))}"
    cat "$link/build-info.txt"

    t0=$(date +%s)
    log="$OUT_DIR/unit-$variant.log"
    (cd "$link/test" && ./test.testbin --gtest_filter="${GPU_TESTS%:}" --gtest_color=no > "$log" 2>&1) || true
    passed=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) tests\{0,1\}\..*/\1/p' "$log" | tail -1)
    failed=$(sed -n 's/^ *\([0-9]*\) FAILED TESTS\{0,1\}$/\1/p' "$log" | tail -1)
    record "$variant" "{\"task\": \"unit\", \"passed\": ${passed:-0}, \"failed\": ${failed:-0}, \"seconds\": $(( $(date +%s) - t0 ))}"
    [[ "${failed:-0}" == "0" && -n "$passed" ]] || { echo "gpu.sh: $variant unit tests FAILED (see $log)"; grep '^\[  FAILED  \]' "$log" | head -20 || tail -20 "$log"; }

    export PYTHONPATH="$PWD:$PWD/$link/lib/python3/dist-packages"
    worker() { "$PY" bench/caffe_worker.py "$@" --gpu 0 | tail -1; }
    record "$variant" "$(worker train --model alexnet_pvcnn --pairs 64 --iters 20 --warmup 3 --gemm 0)"
    record "$variant" "$(worker train --model alexnet_pvcnn --pairs 16 --iters 20 --warmup 3 --gemm 0)"
    record "$variant" "$(worker infer --model alexnet_pvcnn --batch 256 --iters 20 --warmup 3)"
    record "$variant" "$(worker train --model vgg19_pvcnn --pairs 8 --iters 10 --warmup 2 --gemm 0)"
done

# The pair-index feed against a GIL-holding step: thread vs worker processes (docs/GPU.md), at the
# step time this GPU measured (cuDNN engine, AlexNet-PVCNN, 64 pairs) and the published TITAN X one.
gpu_step_ms=$("$PY" - "$RESULTS" <<'STEP'
import json, statistics, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    if (r.get("variant"), r.get("task"), r.get("model"), r.get("pairs")) == ("cudnn", "train", "alexnet_pvcnn", 64):
        print(f"{1000 * statistics.median(r['step_s']):.1f}")
        break
STEP
)
record feed "$("$PY" bench/feed_workers.py --pairs 64 --crop 227 --step-ms 0 $gpu_step_ms 81 --workers 1 2 4 \
               --iters 20 | tail -1)"

# One GPU through the NCCL path of tools/train.py --gpus, with the cuDNN engine.
export PYTHONPATH="$PWD:$PWD/.engine-cuda/lib/python3/dist-packages"
if "$PY" -c "import sys; from virality.train.multigpu import engine_has_nccl; sys.exit(not engine_has_nccl())"; then
    make -s data DATASET=synthetic
    t0=$(date +%s)
    if timeout 120 "$PY" tools/train.py --model tiny_pvcnn --gpus 0 --max-iter 50 --out "$CAFFE_CACHE_DIR/nccl-run" \
            > "$OUT_DIR/nccl.log" 2>&1; then ok=true; else ok=false; fi
    grep -E "effective batch|done" "$OUT_DIR/nccl.log" || true
    record nccl "{\"task\": \"nccl\", \"ok\": $ok, \"seconds\": $(( $(date +%s) - t0 ))}"
else
    echo "gpu.sh: the cuDNN engine was built without NCCL: the --gpus run is not measured"
fi

"$PY" - "$RESULTS" <<'TABLE'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
def find(variant, task, **match):
    for r in rows:
        if r.get("variant") == variant and r.get("task") == task and all(r.get(k) == v for k, v in match.items()):
            return r
def cell(variant, what):
    if what == "build":
        r = find(variant, "build"); return f"{r['seconds']} s" if r else "-"
    if what == "unit":
        r = find(variant, "unit"); return f"{r['passed']} passed, {r['failed']} failed ({r['seconds']} s)" if r else "-"
    task, model, size = what
    key = "pairs" if task == "train" else "batch"
    r = find(variant, task, model=model, **{key: size})
    if not r:
        return "-"
    if task == "train":
        t = statistics.median(r["step_s"]); return f"{1000 * t:.1f} ms ({r['pairs_per_step'] / t:.0f} pairs/s)"
    t = statistics.median(r["forward_s"]); return f"{1000 * t:.1f} ms ({size / t:.0f} images/s)"
lines = [("engine build", "build"), ("Caffe's GPU unit tests (our layers)", "unit"),
         ("AlexNet-PVCNN step, 64 pairs", ("train", "alexnet_pvcnn", 64)),
         ("AlexNet-PVCNN step, 16 pairs", ("train", "alexnet_pvcnn", 16)),
         ("AlexNet-PVCNN inference, batch 256", ("infer", "alexnet_pvcnn", 256)),
         ("VGG-19-PVCNN step, 8 pairs", ("train", "vgg19_pvcnn", 8))]
print("\n| measurement (median) | cuDNN 9 | Caffe's own kernels |\n| --- | --- | --- |")
for label, what in lines:
    print(f"| {label} | {cell('cudnn', what)} | {cell('caffe', what)} |")
feed = next((r for r in rows if r.get("variant") == "feed"), None)
if feed:
    print("\n| pair-index feed (bench/feed_workers.py), stand-in step | feed | waited for it | pairs/s |\n| --- | --- | --- | --- |")
    for r in feed["rows"]:
        print(f"| {r['step_ms']:.1f} ms | {r['mode']} | {r['wait_ms']:.1f} ms | {r['pairs_per_s']:.0f} |")
nccl = next((r for r in rows if r.get("variant") == "nccl"), None)
print(f"1-GPU NCCL run of tools/train.py --gpus 0: {'ok' if nccl and nccl['ok'] else 'FAILED' if nccl else 'not run'}"
      + (f" ({nccl['seconds']} s)" if nccl else ""))
TABLE
echo "gpu.sh: done in $(( $(date +%s) - start )) s"
