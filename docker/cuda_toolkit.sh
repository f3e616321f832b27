#!/usr/bin/env bash
# Inside an image build: a CUDA toolkit (nvcc, cicc, the CUDA runtime) instead of an nvidia/cuda
# base image, from one of two sources, by the pin file:
#
# - NVIDIA's PyPI wheels (docker/cuda13-toolkit.txt: pip requirement lines). They land in one
#   `pip install --target` tree (nvidia/cu<major>/{bin,include,lib,nvvm}); this adds what nvcc's
#   own nvcc.profile and CMake's FindCUDA expect of a toolkit (targets/x86_64-linux/{include,lib},
#   lib64, unversioned libcudart.so / libnvvm.so) and links the tree as
#   /usr/local/cuda-<major>.<minor> and /usr/local/cuda, whose bin/ the Dockerfile puts on PATH.
# - Debian's non-free archive (docker/cuda11-debian.txt: `apt: PACKAGE` and `unpack: PACKAGE=VERSION`
#   lines): `apt:` packages are installed; `unpack:` packages are downloaded from non-free (enabled
#   for this step only) and unpacked into / without being installed (see that file for why); their
#   nvcc is /usr/bin/nvcc, already on PATH.
#
# Usage: docker/cuda_toolkit.sh PINS PYTHON    e.g. docker/cuda_toolkit.sh docker/cuda13-toolkit.txt .venv/bin/python
# Settings: CUDA_WHEELS_DIR (default /opt/cuda-wheels), CUDA_LINK_PREFIX (default /usr/local: where
#   cuda-<release> and cuda are linked; another directory to try it outside an image).
set -euo pipefail
pins="${1:?usage: cuda_toolkit.sh PINS PYTHON}"; py="${2:?usage: cuda_toolkit.sh PINS PYTHON}"
log() { echo "images: $*"; }
die() { echo "images: error: $*" >&2; exit 1; }
[[ -f "$pins" ]] || die "no pin file '$pins' (e.g. docker/cuda13-toolkit.txt)"

debian_toolkit() {
    local list="$1" mirror sources=/etc/apt/sources.list.d/virality-non-free.list
    mapfile -t apt_pkgs < <(sed -n 's/^apt:[[:space:]]*//p' "$list")
    mapfile -t unpack < <(sed -n 's/^unpack:[[:space:]]*//p' "$list")
    mirror="$(sed -n 's/^deb \(http[^ ]*\) bookworm main.*/\1/p' /etc/apt/sources.list 2>/dev/null | head -1)"
    mirror="${mirror:-http://deb.debian.org/debian}"
    log "CUDA toolkit from Debian's non-free archive ($mirror): installing ${apt_pkgs[*]}; unpacking ${unpack[*]}"
    echo "deb $mirror bookworm non-free" > "$sources"
    apt-get update -q >/dev/null || die "apt-get update with $sources failed"
    apt-get install -y -q --no-install-recommends "${apt_pkgs[@]}" >/dev/null || die "could not install ${apt_pkgs[*]}"
    local debs; debs="$(mktemp -d)"
    (cd "$debs" && apt-get download -q "${unpack[@]}" >/dev/null) || die "could not download ${unpack[*]} from non-free"
    rm -f "$sources"; apt-get update -q >/dev/null
    local deb
    for deb in "$debs"/*.deb; do dpkg -x "$deb" /; done
    # nvidia-cuda-dev's static libraries (2.6 GB) but the CUDA runtime's, and its .so links to the
    # libraries that are not unpacked (cuBLAS, cuFFT, ...: Caffe takes cuBLAS/cuRAND from the wheels).
    local so
    for deb in "$debs"/nvidia-cuda-dev_*.deb; do
        while read -r so; do
            so="/${so#./}"
            case "$so" in
                */libcudart_static.a|*/libcudadevrt.a|*/libculibos.a) ;;
                *_static*.a) rm -f "$so" ;;
                *.so) [[ -e "$so" ]] || rm -f "$so" ;;
            esac
        done < <(dpkg-deb --fsys-tarfile "$deb" | tar -t)
    done
    rm -rf "$debs" /usr/share/doc/nvidia-cuda-* /usr/share/man/man1/nvcc*
    command -v nvcc >/dev/null && [[ -x /usr/lib/nvidia-cuda-toolkit/bin/cicc && -f /usr/include/cuda_runtime.h ]] \
        || die "nvcc, cicc or cuda_runtime.h missing after unpacking ${unpack[*]}"
    log "CUDA $(nvcc --version | sed -n 's/.*release \([0-9.]*\),.*/\1/p') toolkit from Debian non-free ($(nvcc --version | tail -1))"
}

if grep -q '^unpack:' "$pins"; then
    debian_toolkit "$pins"
    exit 0
fi

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
