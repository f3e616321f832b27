# CUDA builds (CUDA=1) of engine/build_caffe.sh: sourced by it for CUDA builds only, and hashed
# into the cache key of CUDA builds only (with engine/cuda_wheels.txt and the patches marked
# "Builds: CUDA only"), so that nothing here changes a CPU engine's key.
#
#   cuda_settings      check CUDA_ARCH_BIN, USE_CUDNN, USE_NCCL, CUDA_LIBS and nvcc; set cuda_info
#   cuda_cmake_args    append the CUDA settings to cmake_args (installs the pinned wheels first)
#   cuda_check_config  after cmake: cuDNN was found when USE_CUDNN=1
#   cuda_check_engine  after the install: libcaffe needs cuDNN/NCCL as asked, and finds every library
#   cuda_build_info    lines for build-info.txt
#
# Settings: USE_CUDNN=1 (default) builds Caffe's cuDNN layers against cuDNN 9 (engine patch
# 0009 makes Caffe's cuDNN <= 7 code build with cuDNN 8 and 9); USE_NCCL=1 (default) builds
# Caffe's NCCL support (caffe.NCCL, tools/train.py --gpus). CUDA_LIBS=wheels (default): cuBLAS,
# cuRAND, cuDNN and NCCL from NVIDIA's PyPI wheels pinned in engine/cuda_wheels.txt, the section
# of nvcc's CUDA major version ([cuda13], [cuda12], [cuda11]); CUDA_LIBS=toolkit: cuBLAS/cuRAND from the CUDA
# toolkit, cuDNN and NCCL where Caffe's CMake finds them (the toolkit's include directory,
# CUDNN_ROOT, NCCL_DIR). CUDA_HOST_COMPILER: the C compiler nvcc runs (CMake's FindCUDA otherwise
# passes the C compiler of the build, which CUDA 11.8's nvcc refuses past gcc 11; the TITAN X
# image sets gcc-11).

# The pins of one CUDA major version: the lines of its [cudaN] section of engine/cuda_wheels.txt.
wheel_pins() {
    sed -n "/^\[cuda$1\]\$/,/^\[/p" "$HERE/cuda_wheels.txt" | grep -v -e '^\[' -e '^#' -e '^[[:space:]]*$' || true
}

onoff() { if [[ "$1" == "1" ]]; then echo ON; else echo OFF; fi; }

cuda_settings() {
    USE_CUDNN="${USE_CUDNN:-1}"
    USE_NCCL="${USE_NCCL:-1}"
    CUDA_LIBS="${CUDA_LIBS:-wheels}"
    local v
    for v in USE_CUDNN USE_NCCL; do
        [[ "${!v}" == "0" || "${!v}" == "1" ]] || die "$v='${!v}': use 1 (the default in CUDA builds) or 0"
    done
    case "$CUDA_LIBS" in
        wheels|toolkit) ;;
        *) die "CUDA_LIBS='$CUDA_LIBS': use wheels (NVIDIA's PyPI wheels, the default) or toolkit" ;;
    esac
    [[ "$CUDA_ARCH_BIN" =~ ^[0-9]+( [0-9]+)*$ ]] \
        || die "CUDA_ARCH_BIN='$CUDA_ARCH_BIN': compute capabilities without dots, separated by spaces, e.g. \"90\" or \"52 61\""
    command -v nvcc >/dev/null || die "CUDA=1 but nvcc is not on PATH"
    local release
    release="$(nvcc --version | sed -n 's/.*release \([0-9][0-9]*\.[0-9][0-9]*\).*/\1/p' | head -1)"
    [[ -n "$release" ]] || die "cannot read the CUDA release from 'nvcc --version'"
    WHEELS_CUDA_MAJOR="${release%%.*}"
    if [[ "$CUDA_LIBS" == "wheels" && -z "$(wheel_pins "$WHEELS_CUDA_MAJOR")" ]]; then
        local have
        have="$(sed -n 's/^\[cuda\([0-9]*\)\]$/\1/p' "$HERE/cuda_wheels.txt" | tr '\n' ' ' | sed 's/ $//')"
        die "engine/cuda_wheels.txt pins no wheels for CUDA $WHEELS_CUDA_MAJOR (nvcc is CUDA $release; it has sections for CUDA $have): put such an nvcc first on PATH, or use CUDA_LIBS=toolkit (libraries from the CUDA toolkit; cuDNN and NCCL from the system, or USE_CUDNN=0 USE_NCCL=0)"
    fi
    if [[ -n "${CUDA_HOST_COMPILER:-}" ]]; then
        command -v "$CUDA_HOST_COMPILER" >/dev/null || die "CUDA_HOST_COMPILER='$CUDA_HOST_COMPILER' is not a program on PATH"
    fi
    cuda_info="$(nvcc --version | tail -1) arch=$CUDA_ARCH_BIN cudnn=$USE_CUDNN nccl=$USE_NCCL libs=$CUDA_LIBS"
    if [[ -n "${CUDA_HOST_COMPILER:-}" ]]; then cuda_info+=" host=$("$CUDA_HOST_COMPILER" --version | head -1)"; fi
}

cuda_cmake_args() {
    cmake_args+=(-DCPU_ONLY=OFF -DCUDA_ARCH_NAME=Manual "-DCUDA_ARCH_BIN=$CUDA_ARCH_BIN" -DCUDA_ARCH_PTX=
                 "-DUSE_CUDNN=$(onoff "$USE_CUDNN")" "-DUSE_NCCL=$(onoff "$USE_NCCL")")
    if [[ -n "${CUDA_HOST_COMPILER:-}" ]]; then
        cmake_args+=("-DCUDA_HOST_COMPILER=$(command -v "$CUDA_HOST_COMPILER")")
    fi
    # CUDA 13's nvcc hides __global__ functions from other shared objects and gives the host stubs of
    # __global__ templates internal linkage; Caffe's test binary launches libcaffe's templated kernels
    # (test_im2col_kernel.cu: "hidden symbol `caffe::im2col_gpu_kernel<float>...' isn't defined"), as
    # every CUDA <= 12 build allowed. These two flags (nvcc >= 12.8) keep the CUDA <= 12 behaviour.
    local nvcc_flags=""
    if (( WHEELS_CUDA_MAJOR >= 13 )); then
        nvcc_flags="--device-entity-has-hidden-visibility=false;-static-global-template-stub=false"
    fi
    if [[ "$CUDA_LIBS" != "wheels" ]]; then
        [[ -z "$nvcc_flags" ]] || cmake_args+=("-DCUDA_NVCC_FLAGS=$nvcc_flags")
        return 0
    fi
    local pins
    pins="$(wheel_pins "$WHEELS_CUDA_MAJOR")"
    wheels="$CACHE_ROOT/cuda-wheels-$(sha256sum <<<"$pins" | cut -c1-12)"
    if [[ ! -f "$wheels/.complete" ]]; then
        log "installing the CUDA $WHEELS_CUDA_MAJOR wheels pinned in engine/cuda_wheels.txt into $wheels (about 2 GB)"
        rm -rf "$wheels"
        "$PYTHON" -m pip install -q --disable-pip-version-check --target "$wheels" -r /dev/stdin <<<"$pins" \
            || die "could not install the CUDA $WHEELS_CUDA_MAJOR wheels pinned in engine/cuda_wheels.txt"
        touch "$wheels/.complete"
    fi
    # cuBLAS and cuRAND: one tree in CUDA 13's wheels (nvidia/cu13), one per library in CUDA 11/12's.
    local blas_dir rand_dir cublas curand
    if [[ -d "$wheels/nvidia/cu$WHEELS_CUDA_MAJOR" ]]; then
        blas_dir="$wheels/nvidia/cu$WHEELS_CUDA_MAJOR"; rand_dir="$blas_dir"
    else
        blas_dir="$wheels/nvidia/cublas"; rand_dir="$wheels/nvidia/curand"
    fi
    cublas="$(ls "$blas_dir"/lib/libcublas.so.* 2>/dev/null | head -1)"
    curand="$(ls "$rand_dir"/lib/libcurand.so.* 2>/dev/null | head -1)"
    [[ -f "$cublas" && -f "$curand" && -f "$blas_dir/include/cublas_v2.h" && -f "$rand_dir/include/curand.h" ]] \
        || die "cuBLAS/cuRAND (libraries, cublas_v2.h, curand.h) not found under $blas_dir and $rand_dir: remove $wheels and build again"
    local includes=("$blas_dir/include") rpath="$PREFIX/lib;$blas_dir/lib"
    if [[ "$rand_dir" != "$blas_dir" ]]; then includes+=("$rand_dir/include"); rpath+=";$rand_dir/lib"; fi
    cmake_args+=("-DCUDA_CUBLAS_LIBRARIES=$cublas" "-DCUDA_cublas_LIBRARY=$cublas" "-DCUDA_curand_LIBRARY=$curand")
    if [[ "$USE_CUDNN" == "1" ]]; then
        local cudnn="$wheels/nvidia/cudnn" lib
        lib="$(ls "$cudnn"/lib/libcudnn.so.* 2>/dev/null | head -1)"
        [[ -f "$lib" && -f "$cudnn/include/cudnn_version.h" ]] \
            || die "cuDNN (libcudnn.so.*, cudnn_version.h) not found under $cudnn: is nvidia-cudnn-cu$WHEELS_CUDA_MAJOR pinned in engine/cuda_wheels.txt? (or USE_CUDNN=0)"
        cmake_args+=("-DCUDNN_INCLUDE=$cudnn/include" "-DCUDNN_LIBRARY=$lib")
        includes+=("$cudnn/include"); rpath+=";$cudnn/lib"
    fi
    if [[ "$USE_NCCL" == "1" ]]; then
        local nccl="$wheels/nvidia/nccl" lib
        lib="$(ls "$nccl"/lib/libnccl.so.* 2>/dev/null | head -1)"
        [[ -f "$lib" && -f "$nccl/include/nccl.h" ]] \
            || die "NCCL (libnccl.so.*, nccl.h) not found under $nccl: is nvidia-nccl-cu$WHEELS_CUDA_MAJOR pinned in engine/cuda_wheels.txt? (or USE_NCCL=0)"
        cmake_args+=("-DNCCL_INCLUDE_DIR=$nccl/include" "-DNCCL_LIBRARIES=$lib")
        includes+=("$nccl/include"); rpath+=";$nccl/lib"
    fi
    local cxx="" nvcc="$nvcc_flags" d
    for d in "${includes[@]}"; do cxx+="${cxx:+ }-isystem $d"; nvcc+="${nvcc:+;}-isystem;$d"; done
    # The wheels' directories go into every binary's RUNPATH: the engine finds them at run time
    # without LD_LIBRARY_PATH (cuDNN 9 loads its sub-libraries from its own directory).
    cmake_args+=("-DCMAKE_CXX_FLAGS=$cxx" "-DCUDA_NVCC_FLAGS=$nvcc" "-DCMAKE_INSTALL_RPATH=$rpath")
}

cuda_check_config() {
    local log_file="$1"
    if [[ "$USE_CUDNN" == "1" ]] && ! grep -q "Found cuDNN: ver\. [0-9]" "$log_file"; then
        die "USE_CUDNN=1 but Caffe's CMake found no cuDNN (see $log_file): with CUDA_LIBS=toolkit use a CUDA image with cuDNN or set CUDNN_ROOT; or build with USE_CUDNN=0"
    fi
    return 0
}

cuda_check_engine() {
    local lib needed missing
    lib="$(ls "$PREFIX"/lib/libcaffe.so.* 2>/dev/null | head -1)"
    [[ -f "$lib" ]] || die "libcaffe.so.* not found in $PREFIX/lib after the install"
    needed="$(readelf -d "$lib" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')"
    if [[ "$USE_CUDNN" == "1" ]] && ! grep -q '^libcudnn\.so' <<<"$needed"; then
        die "USE_CUDNN=1 but $lib does not link cuDNN (NEEDED: $(echo $needed))"
    fi
    if [[ "$USE_NCCL" == "1" ]] && ! grep -q '^libnccl\.so' <<<"$needed"; then
        die "USE_NCCL=1 but $lib does not link NCCL (NEEDED: $(echo $needed))"
    fi
    # Every library resolves through the RUNPATH (ldd names the ones that would not load).
    missing="$(ldd "$lib" "$PREFIX/bin/caffe" 2>&1 | grep 'not found' | sort -u || true)"
    [[ -z "$missing" ]] || die "the engine's libraries do not all resolve (check the RUNPATH): $missing"
    return 0
}

cuda_build_info() {
    if [[ "$CUDA_LIBS" == "wheels" ]]; then
        echo "cuda_wheels=$(wheel_pins "$WHEELS_CUDA_MAJOR" | tr '\n' ' ' | sed 's/ $//')"
    fi
    echo "cudnn=$USE_CUDNN nccl=$USE_NCCL"
}
