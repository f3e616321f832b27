#!/usr/bin/env bash
# Build BVLC Caffe 1.0 (Debian's source package, pinned and verified) into a
# per-user cache keyed by everything that affects the result, and link it into
# the project. One recipe for `make caffe`, `make caffe CUDA=1` and the Dockerfile.
#
# Usage: engine/build_caffe.sh --python PATH [--link DIR] [--check]
#   --check  build nothing: exit 0 when the cached build for these settings exists, 1 when
#            a build would be needed (prints the key and the path either way).
#
# Settings (environment, all optional):
#   CUDA=0|1          CPU_ONLY build (default 0) or a CUDA build.
#   CUDA_ARCH_BIN     CUDA compute capabilities, e.g. "90" or "52 61" (default "90").
#   USE_CUDNN=0|1     CUDA builds: Caffe's cuDNN layers, against cuDNN 9 (default 1;
#                     engine patch 0009 ports Caffe's cuDNN <= 7 code to cuDNN 8/9).
#   USE_NCCL=0|1      CUDA builds: Caffe's NCCL support, for tools/train.py --gpus
#                     (default 1).
#   CUDA_LIBS=wheels|toolkit
#                     Where cuBLAS/cuRAND/cuDNN/NCCL come from: NVIDIA's PyPI wheels
#                     pinned in engine/cuda_wheels.txt (default; our machines have
#                     nvcc but no CUDA libraries) or the CUDA toolkit itself (a CUDA
#                     base image; cuDNN and NCCL where Caffe's CMake finds them).
#                     The CUDA settings live in engine/cuda_build.sh.
#   BLAS=scipy-openblas|open|open-openmp|mkl
#                     BLAS Caffe links: OpenBLAS from the PyPI wheel scipy-openblas32
#                     (scipy-openblas, the default: a current OpenBLAS that picks its
#                     kernels from the CPU's features; pinned by hash in
#                     engine/openblas_requirements.txt, installed into the cache),
#                     Debian's OpenBLAS as the system selects it (open: its pthreads
#                     build), Debian's OpenBLAS built with OpenMP threads (open-openmp:
#                     package libopenblas0-openmp, linked by path; the system's choice
#                     is left alone), or Intel oneMKL from PyPI (mkl: versions pinned
#                     in engine/mkl_requirements.txt, installed into the cache).
#                     See docs/ENGINE.md, section "BLAS".
#   JOBS              Parallel compile jobs (default: nproc).
#   CAFFE_CACHE_DIR   Cache root (default ${XDG_CACHE_HOME:-~/.cache}/virality-caffe).
#
# The engine lands in $CAFFE_CACHE_DIR/engine-<key>/ (bin/, lib/, include/,
# lib/python3/dist-packages/caffe, and test/: Caffe's own test binary with the
# test data it reads, run by tests/test_engine_caffe_suite.py) and is marked
# complete only after a full install; the --link DIR symlink is switched to it
# atomically. A second run with the same key does nothing but re-link.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

CAFFE_VERSION="1.0.0+git20180821.99bd997-8"
DSC="caffe_${CAFFE_VERSION}.dsc"

PYTHON=""
LINK=""
CHECK=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --python) PYTHON="$2"; shift 2 ;;
        --link) LINK="$2"; shift 2 ;;
        --check) CHECK=1; shift ;;
        -h|--help) sed -n '2,42p' "$0"; exit 0 ;;
        *) echo "build_caffe.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done
[[ -n "$PYTHON" ]] || { echo "build_caffe.sh: --python PATH is required (the venv's python)" >&2; exit 2; }
[[ -x "$PYTHON" ]] || { echo "build_caffe.sh: python '$PYTHON' is not executable; run 'make venv' first" >&2; exit 2; }
# Absolute, but not resolved: the venv's python symlink is what finds the venv's numpy.
PYTHON="$(cd "$(dirname "$PYTHON")" && pwd)/$(basename "$PYTHON")"

CUDA="${CUDA:-0}"
CUDA_ARCH_BIN="${CUDA_ARCH_BIN:-90}"
BLAS="${BLAS:-scipy-openblas}"
JOBS="${JOBS:-$(nproc)}"
CACHE_ROOT="${CAFFE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/virality-caffe}"

log() { echo "engine: $*"; }
die() { echo "engine: error: $*" >&2; exit 1; }

case "$BLAS" in
    scipy-openblas|open|open-openmp|mkl) ;;
    *) die "BLAS='$BLAS' is not supported; use BLAS=scipy-openblas (the default), open, open-openmp or mkl (see docs/ENGINE.md)" ;;
esac

case "$CUDA" in 0|1) ;; *) die "CUDA='$CUDA': use 0 (a CPU build, the default) or 1" ;; esac

# ---- the cache key: sources, patches, this script, flags, toolchain versions ----
py_info="$("$PYTHON" -c 'import sys, numpy; print(sys.version.split()[0], numpy.__version__)')" \
    || die "'$PYTHON' cannot import numpy; run 'make venv' first"
py_minor="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
cuda_info="none"
if [[ "$CUDA" == "1" ]]; then
    # shellcheck source=cuda_build.sh
    source "$HERE/cuda_build.sh"
    cuda_settings
fi
# The patches this build applies: all of them in a CUDA build; a CPU build leaves out those whose
# header says "Builds: CUDA only" (code under USE_CUDNN or in CMake's CUDA part, which a CPU build
# never compiles), so they, like engine/cuda_build.sh and engine/cuda_wheels.txt, are not part of
# a CPU engine's key.
patches=()
for patch in "$HERE"/patches/*.patch; do
    if [[ "$CUDA" != "1" ]] && sed -n '/^\(diff \|--- \)/q;p' "$patch" | grep -qx 'Builds: CUDA only'; then
        continue
    fi
    patches+=("$patch")
done
key="$({
    cat "$HERE/SHA256SUMS"
    cat "${patches[@]}"
    cat "$HERE/build_caffe.sh"
    if [[ "$CUDA" == "1" ]]; then cat "$HERE/cuda_build.sh" "$HERE/cuda_wheels.txt"; fi
    if [[ "$BLAS" == "mkl" ]]; then cat "$HERE/mkl_requirements.txt"; fi
    if [[ "$BLAS" == "scipy-openblas" ]]; then cat "$HERE/openblas_requirements.txt"; fi
    echo "CUDA=$CUDA BLAS=$BLAS python/numpy=$py_info cuda=$cuda_info"
    cmake --version | head -1
    g++ --version | head -1
} | sha256sum | cut -c1-16)"
PREFIX="$CACHE_ROOT/engine-$key"

link_engine() {
    [[ -n "$LINK" ]] || return 0
    ln -sfn "$PREFIX" "$LINK.tmp.$$"
    mv -T "$LINK.tmp.$$" "$LINK"
    log "linked $LINK -> $PREFIX"
}

if [[ "$CHECK" == "1" ]]; then
    if [[ -f "$PREFIX/.complete" ]]; then log "up to date (cached build $PREFIX)"; exit 0; fi
    log "a build is needed (key $key, $PREFIX)"; exit 1
fi

if [[ -f "$PREFIX/.complete" ]]; then
    log "up to date (cached build $PREFIX)"
    link_engine
    exit 0
fi

log "building Caffe $CAFFE_VERSION (CUDA=$CUDA, BLAS=$BLAS, python/numpy $py_info)"
log "cache key $key; a CPU build (with Caffe's test binary) takes about 12 minutes on 2 cores, a CUDA build longer (docs/ENGINE.md)"
mkdir -p "$CACHE_ROOT/downloads"

# ---- fetch and verify the Debian source package ----
sums_ok() { (cd "$CACHE_ROOT/downloads" && sha256sum --quiet -c "$HERE/SHA256SUMS" >/dev/null 2>&1); }
if ! sums_ok; then
    command -v apt-get >/dev/null || die "apt-get not found; put the files named in $HERE/SHA256SUMS into $CACHE_ROOT/downloads"
    if ! apt-cache showsrc caffe 2>/dev/null | grep -qx "Version: $CAFFE_VERSION"; then
        die "apt does not know the source package caffe=$CAFFE_VERSION; run 'make sysdeps' (adds the Debian 11 deb-src entry and runs apt-get update)"
    fi
    dl="$(mktemp -d "$CACHE_ROOT/downloads.tmp.XXXXXX")"
    log "downloading the source package with apt-get source"
    (cd "$dl" && apt-get source --download-only -q "caffe=$CAFFE_VERSION" 2>&1 | grep -v '^W: Download is performed unsandboxed' || true)
    if ! (cd "$dl" && sha256sum -c "$HERE/SHA256SUMS"); then
        rm -rf "$dl"
        die "downloaded files do not match engine/SHA256SUMS; refusing to build"
    fi
    mv -f "$dl"/caffe_* "$CACHE_ROOT/downloads/"
    rm -rf "$dl"
fi
sums_ok || die "source files in $CACHE_ROOT/downloads do not match engine/SHA256SUMS"
log "source package verified against engine/SHA256SUMS"

# ---- unpack (Debian's patches applied), apply ours ----
WORK="$(mktemp -d "$CACHE_ROOT/build-$key.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
dpkg-source --no-check -x "$CACHE_ROOT/downloads/$DSC" "$WORK/src" >/dev/null
for patch in "${patches[@]}"; do
    log "applying $(basename "$patch")"
    patch -d "$WORK/src" -p1 --forward --quiet < "$patch"
done

# ---- configure ----
cmake_args=(
    -DCMAKE_BUILD_TYPE=Release
    -DCMAKE_INSTALL_PREFIX="$PREFIX"
    # python_version selects Boost.Python's component name (boost_python311).
    -DBUILD_python=ON -DBUILD_python_layer=ON "-Dpython_version=$py_minor"
    -DPYTHON_EXECUTABLE="$PYTHON"
    -DUSE_LMDB=ON -DUSE_LEVELDB=OFF -DUSE_OPENCV=ON
    -DBUILD_docs=OFF -DBUILD_matlab=OFF
    # Every binary, the test binary too (never installed by `make install`), gets
    # the installed RUNPATH at link time: the build tree is deleted afterwards.
    -DCMAKE_BUILD_WITH_INSTALL_RPATH=ON
)
case "$BLAS" in
    scipy-openblas)
        # OpenBLAS from the scipy-openblas32 wheel, pinned by hash, installed once per
        # pin set. Its library has a name of its own and every symbol the prefix
        # scipy_ (Caffe maps its calls: engine patch 0006), so the Debian OpenBLAS
        # that OpenCV loads into the same process never stands in for it. Its
        # directory lands in the binaries' RUNPATH (CMAKE_INSTALL_RPATH_USE_LINK_PATH).
        ob="$CACHE_ROOT/scipy-openblas-$(sha256sum "$HERE/openblas_requirements.txt" | cut -c1-12)"
        if [[ ! -f "$ob/.complete" ]]; then
            log "installing the scipy-openblas32 wheel into $ob"
            rm -rf "$ob"
            "$PYTHON" -m pip install -q --disable-pip-version-check --no-deps --require-hashes \
                --target "$ob" -r "$HERE/openblas_requirements.txt" \
                || die "could not install the wheel pinned in engine/openblas_requirements.txt"
            touch "$ob/.complete"
        fi
        ob_lib="$ob/scipy_openblas32/lib/libscipy_openblas.so"
        [[ -f "$ob_lib" && -f "$ob/scipy_openblas32/include/cblas.h" ]] \
            || die "libscipy_openblas.so or cblas.h not found under $ob/scipy_openblas32"
        cmake_args+=(-DBLAS=Open "-DOpenBLAS_INCLUDE_DIR=$ob/scipy_openblas32/include"
                     "-DOpenBLAS_LIB=$ob_lib" -DBLAS_SYMBOL_PREFIX=scipy_)
        ;;
    open) cmake_args+=(-DBLAS=Open) ;;
    open-openmp)
        # Debian's OpenMP build of the same OpenBLAS, by its path: libcaffe's RUNPATH
        # then holds its directory (CMAKE_INSTALL_RPATH_USE_LINK_PATH), so the engine
        # loads it whatever the system's libopenblas.so.0 alternative points to.
        omp_lib="/usr/lib/$(gcc -print-multiarch)/openblas-openmp/libopenblas.so.0"
        [[ -f "$omp_lib" ]] || die "BLAS=open-openmp needs $omp_lib: install the Debian package libopenblas0-openmp"
        cmake_args+=(-DBLAS=Open "-DOpenBLAS_LIB=$omp_lib")
        ;;
    mkl)
        # oneMKL from PyPI, pinned in mkl_requirements.txt, installed once per pin set.
        mkl="$CACHE_ROOT/mkl-$(sha256sum "$HERE/mkl_requirements.txt" | cut -c1-12)"
        if [[ ! -f "$mkl/.complete" ]]; then
            log "installing oneMKL wheels into $mkl"
            rm -rf "$mkl"
            "$PYTHON" -m pip install -q --disable-pip-version-check --no-warn-script-location \
                --prefix "$mkl" -r "$HERE/mkl_requirements.txt"
            touch "$mkl/.complete"
        fi
        mkl_rt="$(ls "$mkl"/lib/libmkl_rt.so* 2>/dev/null | head -1)"
        [[ -f "$mkl/include/mkl.h" && -n "$mkl_rt" ]] || die "mkl.h or libmkl_rt.so not found under $mkl"
        # Caffe's FindMKL looks for an unversioned libmkl_rt.so, which the wheels do not
        # ship: name the library and the include directory directly. mkl_rt picks its
        # kernels (AVX-512, AVX2, ...) and its threading layer at run time. Caffe's
        # CMake (CMAKE_INSTALL_RPATH_USE_LINK_PATH) puts $mkl/lib into the installed
        # binaries' RUNPATH, where mkl_rt also finds its kernels and libiomp5.
        cmake_args+=(
            -DBLAS=MKL "-DMKL_ROOT=$mkl" "-DMKL_INCLUDE_DIR=$mkl/include"
            -DMKL_USE_SINGLE_DYNAMIC_LIBRARY=ON "-DMKL_RT_LIBRARY=$mkl_rt"
        )
        ;;
esac

if [[ "$CUDA" == "1" ]]; then
    cuda_cmake_args
else
    cmake_args+=(-DCPU_ONLY=ON -DUSE_NCCL=OFF)
fi

mkdir -p "$WORK/build"
log "configuring"
(cd "$WORK/build" && cmake "${cmake_args[@]}" ../src > cmake.log 2>&1) \
    || { tail -40 "$WORK/build/cmake.log" >&2; die "cmake failed (log above)"; }
if [[ "$CUDA" == "1" ]]; then cuda_check_config "$WORK/build/cmake.log"; fi

# ---- build and install ----
log "compiling with $JOBS jobs (log: quiet unless it fails)"
rm -rf "$PREFIX"
if ! (cd "$WORK/build" && make -j"$JOBS" > make.log 2>&1 && make install > install.log 2>&1 \
        && make -j"$JOBS" test.testbin >> make.log 2>&1); then
    grep -n -B2 -A8 -E 'error|Error' "$WORK/build/make.log" | tail -60 >&2 || tail -60 "$WORK/build/make.log" >&2
    die "the Caffe build failed (errors above)"
fi

# Caffe's own test suite, kept with the engine: it runs from a directory holding
# the relative paths it reads (src/caffe/test/test_data, examples/images).
log "keeping Caffe's test binary and its test data in $PREFIX/test"
mkdir -p "$PREFIX/test/src/caffe/test" "$PREFIX/test/examples"
cp "$WORK/build/test/test.testbin" "$PREFIX/test/"
cp -r "$WORK/src/src/caffe/test/test_data" "$PREFIX/test/src/caffe/test/"
cp -r "$WORK/src/examples/images" "$PREFIX/test/examples/"

# The caffe binary embeds Debian's Python: record what it was built with.
{
    echo "caffe_version=$CAFFE_VERSION"
    echo "key=$key"
    echo "cuda=$CUDA blas=$BLAS"
    echo "python_numpy=$py_info"
    echo "cuda_info=$cuda_info"
    if [[ "$CUDA" == "1" ]]; then cuda_build_info; fi
    echo "built=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
} > "$PREFIX/build-info.txt"
if [[ "$CUDA" == "1" ]]; then cuda_check_engine; fi
touch "$PREFIX/.complete"
log "installed into $PREFIX"
link_engine
