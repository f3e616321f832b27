#!/usr/bin/env bash
# Inside an image build: a CUDA toolkit (nvcc, cicc, the CUDA runtime, CCCL) from NVIDIA's PyPI
# wheels instead of an nvidia/cuda base image. The wheels land in one `pip install --target`
# tree (nvidia/cu<major>/{bin,include,lib,nvvm}); this adds what nvcc's own nvcc.profile and
# CMake's FindCUDA expect of a toolkit (targets/x86_64-linux/{include,lib}, lib64, unversioned
# libcudart.so / libnvvm.so) and links the tree as /usr/local/cuda-<major>.<minor> and
# /usr/local/cuda, whose bin/ the Dockerfile puts on PATH.
#
# Usage: docker/cuda_toolkit.sh PINS PYTHON    e.g. docker/cuda_toolkit.sh docker/cuda13-toolkit.txt .venv/bin/python
# Settings: CUDA_WHEELS_DIR (default /opt/cuda-wheels), CUDA_LINK_PREFIX (default /usr/local: where
#   cuda-<release> and cuda are linked; another directory to try it outside an image).
set -euo pipefail
pins="${1:?usage: cuda_toolkit.sh PINS PYTHON}"; py="${2:?usage: cuda_toolkit.sh PINS PYTHON}"
log() { echo "images: $*"; }
die() { echo "images: error: $*" >&2; exit 1; }
[[ -f "$pins" ]] || die "no pin file '$pins' (e.g. docker/cuda13-toolkit.txt)"

dest="${CUDA_WHEELS_DIR:-/opt/cuda-wheels}"; prefix="${CUDA_LINK_PREFIX:-/usr/local}"
log "installing the CUDA toolkit wheels pinned in $pins into $dest"
"$py" -m pip install -q --disable-pip-version-check --no-deps --target "$dest" -r "$pins" \
    || die "could not install the wheels pinned in $pins"
root="$(ls -d "$dest"/nvidia/cu[0-9]* 2>/dev/null | head -1)"
[[ -x "$root/bin/nvcc" && -x "$root/nvvm/bin/cicc" && -f "$root/include/cuda_runtime.h" ]] \
    || die "nvcc, nvvm/bin/cicc or include/cuda_runtime.h missing under ${root:-$dest/nvidia/cu*}: are nvidia-cuda-nvcc, nvidia-nvvm, nvidia-cuda-crt and nvidia-cuda-runtime pinned in $pins?"
mkdir -p "$root/targets/x86_64-linux"
ln -sfn ../../include "$root/targets/x86_64-linux/include"
ln -sfn ../../lib "$root/targets/x86_64-linux/lib"
ln -sfn lib "$root/lib64"
for so in libcudart libnvvm; do
    versioned="$(cd "$root/lib" && ls $so.so.* 2>/dev/null | head -1)"
    [[ -n "$versioned" ]] || die "$root/lib has no $so.so.*"
    ln -sfn "$versioned" "$root/lib/$so.so"
done
release="$("$root/bin/nvcc" --version | sed -n 's/.*release \([0-9][0-9]*\.[0-9][0-9]*\).*/\1/p' | head -1)"
[[ -n "$release" ]] || die "cannot read the release from $root/bin/nvcc --version"
mkdir -p "$prefix"
ln -sfn "$root" "$prefix/cuda-$release"
ln -sfn "$prefix/cuda-$release" "$prefix/cuda"
log "CUDA $release toolkit from wheels at $prefix/cuda-$release ($(du -sh "$dest" | cut -f1))"
