"""What the benchmark ran on: the CPU, and the BLAS kernels each library picked on it.

Standard library only (ctypes), so the Caffe worker, the PyTorch worker (its own venv)
and the orchestrator all use it.

- ``cpu()``: vendor, model name, family / model / stepping numbers and the vector-ISA
  flags that decide BLAS kernels, from /proc/cpuinfo; ``cpu_key(cpu)`` names one CPU model
  (BENCHMARKS.md keeps one section per key).
- ``openblas(path)``: the configuration and kernel family (``openblas_get_corename``)
  of the OpenBLAS library at ``path`` as loaded in this process, whatever its symbol
  prefix or suffix (Debian's plain names, numpy's ``..64_``, the scipy-openblas wheels'
  ``scipy_...``).
- ``mapped_blas()``: every BLAS library mapped into this process (OpenBLAS, MKL, BLIS).
- ``numpy_blas()``: the BLAS numpy itself calls, and its kernels.
- ``blas_environment()``: the variables that steer kernel choice and threads, as set.
"""
import ctypes
import os
import re

#: CPU flags that decide which GEMM kernels a BLAS can use.
ISA_FLAGS = ("avx", "fma", "avx2", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16",
             "avx512_fp16", "avx_vnni", "amx_tile", "amx_bf16")

#: Environment variables that change kernel choice or threading of the libraries compared.
BLAS_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS", "OPENBLAS_THREAD_TIMEOUT",
            "OMP_NUM_THREADS", "MKL_NUM_THREADS", "MKL_ENABLE_INSTRUCTIONS", "MKL_THREADING_LAYER",
            "MKL_DEBUG_CPU_TYPE", "CAFFE_CPU_THREADS", "CAFFE_CONV_WORKSPACE_MB")

#: (prefix, suffix) of OpenBLAS's exported names in the builds we meet.
_OPENBLAS_NAMES = (("", ""), ("", "64_"), ("scipy_", ""), ("scipy_", "64_"))


def parse_cpuinfo(text):
    """The first processor's fields of /proc/cpuinfo text -> dict (vendor, model_name, family,
    model, stepping, flags: the ISA_FLAGS present, in that order)."""
    fields = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    flags = set(fields.get("flags", "").split())
    return {
        "vendor": fields.get("vendor_id", "unknown"),
        "model_name": fields.get("model name", "unknown"),
        "family": fields.get("cpu family", "?"),
        "model": fields.get("model", "?"),
        "stepping": fields.get("stepping", "?"),
        "flags": [f for f in ISA_FLAGS if f in flags],
    }


def cpu(path="/proc/cpuinfo"):
    try:
        with open(path) as f:
            info = parse_cpuinfo(f.read())
    except OSError:
        import platform
        info = parse_cpuinfo("")
        info["model_name"] = platform.processor() or "unknown"
    info["cores"] = os.cpu_count()
    return info


def cpu_key(info):
    """One CPU model: vendor, model name, family and model numbers (the stepping aside)."""
    return f"{info['vendor']} {info['model_name']}, family {info['family']} model {info['model']}"


def cpu_title(info):
    flags = ", ".join(info["flags"]) or "no AVX"
    return f"{info['model_name']} ({info['vendor']}, family {info['family']} model {info['model']}; {flags})"


def _symbol(lib, name):
    try:
        return getattr(lib, name)
    except AttributeError:
        return None


def openblas(path):
    """Configuration and kernel family of the OpenBLAS at ``path``; None if it is not one."""
    lib = ctypes.CDLL(path)
    for prefix, suffix in _OPENBLAS_NAMES:
        corename = _symbol(lib, f"{prefix}openblas_get_corename{suffix}")
        config = _symbol(lib, f"{prefix}openblas_get_config{suffix}")
        if corename is None or config is None:
            continue
        corename.restype = config.restype = ctypes.c_char_p
        threads = _symbol(lib, f"{prefix}openblas_get_num_threads{suffix}")
        return {"kind": "OpenBLAS", "library": path, "config": config().decode(),
                "kernels": corename().decode(), "threads": threads() if threads else None,
                "symbols": f"{prefix}*{suffix}"}
    return None


def mkl(path):
    lib = ctypes.CDLL(path)
    version = _symbol(lib, "MKL_Get_Version_String")
    if version is None:
        return None
    buf = ctypes.create_string_buffer(256)
    version(buf, 256)
    threads = _symbol(lib, "MKL_Get_Max_Threads")
    return {"kind": "MKL", "library": path, "config": buf.value.decode().strip(),
            "kernels": "MKL's run-time dispatch (MKL_VERBOSE names the branch)",
            "threads": threads() if threads else None}


def mapped_libraries(pattern):
    """Paths of the shared libraries mapped into this process whose file name matches ``pattern``."""
    seen = []
    with open("/proc/self/maps") as maps:
        for line in maps:
            parts = line.split()
            if len(parts) >= 6 and re.search(pattern, os.path.basename(parts[-1])) and parts[-1] not in seen:
                seen.append(parts[-1])
    return seen


def describe(path):
    """What the BLAS library at ``path`` says about itself (OpenBLAS, MKL), or just its path."""
    try:
        return openblas(path) or mkl(path) or {"kind": "other", "library": path}
    except OSError as err:
        return {"kind": "unknown", "library": path, "error": str(err)}


def mapped_blas():
    return [describe(p) for p in mapped_libraries(r"openblas|mkl_rt|libmkl_core|blis")]


def numpy_blas():
    """The BLAS library numpy calls (the one it bundles in numpy.libs, or the one it links),
    with its kernels, and numpy's own build record of it."""
    import numpy as np
    a = np.ones((64, 64), np.float32)
    a @ a                                      # make sure it is loaded and initialised
    build = {}
    try:
        deps = np.show_config(mode="dicts").get("Build Dependencies", {})
        build = {k: deps.get("blas", {}).get(k) for k in ("name", "version")}
    except Exception:                          # older numpy: no dicts mode
        pass
    pkg = os.path.dirname(np.__file__)
    libs = [p for p in mapped_libraries(r"openblas|mkl_rt|blis")
            if p.startswith(os.path.dirname(pkg) + os.sep + "numpy.libs") or p.startswith(pkg)]
    info = describe(libs[0]) if libs else {"kind": build.get("name") or "unknown",
                                            "library": "linked (not bundled in numpy.libs)"}
    info["numpy"] = np.__version__
    info["build"] = build
    return info


def blas_environment():
    return {k: os.environ[k] for k in BLAS_ENV if k in os.environ}
