"""The engine's BLAS runs kernels as wide as the CPU allows (issue 11).

Debian 12's OpenBLAS 0.3.21 picks its kernels from a table of CPU models and falls back to
generic SSE3 (Prescott) kernels on CPUs newer than the table, a quarter of the speed on an
AVX-512 Xeon. The check asks the library that libcaffe actually calls, in a fresh process,
which kernels it chose.

OPENBLAS_CORETYPE: the project never sets it and never overrides it. When the environment
sets it (some machines do, e.g. OPENBLAS_CORETYPE=Haswell), the engine must honour it, and
the library's own choice is still checked, in a child process started without that variable:
that is the choice any user without the variable gets (docs/ENGINE.md, "BLAS").
"""
import json
import os
import subprocess

import pytest

# OpenBLAS core names (openblas_get_corename) by the widest vector unit their kernels use.
AVX512_CORES = {"skylakex", "cooperlake", "sapphirerapids"}
AVX2_CORES = {"haswell", "zen"} | AVX512_CORES

PROBE = r'''
import ctypes, json, os
import caffe  # noqa: F401  (loads libcaffe and its BLAS)

class DlInfo(ctypes.Structure):
    _fields_ = [("dli_fname", ctypes.c_char_p), ("dli_fbase", ctypes.c_void_p),
                ("dli_sname", ctypes.c_char_p), ("dli_saddr", ctypes.c_void_p)]

def mapped(name):
    with open("/proc/self/maps") as maps:
        for line in maps:
            if os.path.basename(line.split()[-1]).startswith(name):
                return line.split()[-1]

libcaffe = ctypes.CDLL(mapped("libcaffe.so"))
# The GEMM libcaffe binds: a prefixed OpenBLAS (scipy-openblas32) or an unprefixed one.
for prefix in ("scipy_", ""):
    try:
        sgemm = getattr(libcaffe, prefix + "cblas_sgemm")
        break
    except AttributeError:
        continue
info = DlInfo()
libdl = ctypes.CDLL(None)
libdl.dladdr.argtypes = [ctypes.c_void_p, ctypes.POINTER(DlInfo)]
assert libdl.dladdr(ctypes.cast(sgemm, ctypes.c_void_p), ctypes.byref(info))
blas = ctypes.CDLL(info.dli_fname.decode())
result = {"library": os.path.realpath(info.dli_fname.decode()), "prefix": prefix}
corename = getattr(blas, prefix + "openblas_get_corename", None)
if corename is not None:
    corename.restype = ctypes.c_char_p
    config = getattr(blas, prefix + "openblas_get_config")
    config.restype = ctypes.c_char_p
    result.update(core=corename().decode(), config=config().decode())
print(json.dumps(result))
'''


def probe(root, env):
    out = subprocess.run([str(root / ".venv/bin/python"), "-c", PROBE], capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def cpu_flags():
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    return set()


def required_cores(flags):
    """The kernel families a CPU with these flags must get, or None when nothing wider exists."""
    if "avx512f" in flags:
        return AVX512_CORES, "an AVX-512 family"
    if "avx2" in flags and "fma" in flags:
        return AVX2_CORES, "Haswell-class or better"
    return None, "any"


def test_required_cores_by_cpu_flags():
    assert required_cores({"sse2", "avx", "avx2", "fma", "avx512f"})[0] == AVX512_CORES
    assert required_cores({"sse2", "avx", "avx2", "fma"})[0] == AVX2_CORES
    assert "prescott" not in AVX2_CORES and "sandybridge" not in AVX2_CORES
    assert required_cores({"sse2", "sse3"})[0] is None


def test_engine_blas_picks_kernels_as_wide_as_the_cpu(root):
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    result = probe(root, env)
    if "core" not in result:
        pytest.skip(f"the engine's BLAS is not OpenBLAS ({result['library']}): MKL dispatches on CPU "
                    "features by itself, and bench/ reports its code path")
    cores, wanted = required_cores(cpu_flags())
    if cores is not None:
        assert result["core"].lower() in cores, (
            f"the engine's BLAS ({result['library']}, {result['config']}) runs {result['core']} kernels on "
            f"a CPU that needs {wanted} ({sorted(cores)}): rebuild the engine with a BLAS that knows this "
            "CPU (`make caffe`, BLAS=scipy-openblas; docs/ENGINE.md)")


def test_engine_blas_is_the_pinned_wheel_by_default(root):
    """The default engine (BLAS=scipy-openblas) calls scipy-openblas32, not the Debian OpenBLAS OpenCV loads."""
    info = (root / ".engine" / "build-info.txt").read_text()
    if "blas=scipy-openblas" not in info:
        pytest.skip("engine built with another BLAS= option: " + info.split("blas=")[1].split()[0])
    result = probe(root, dict(os.environ))
    assert result["prefix"] == "scipy_" and "libscipy_openblas" in result["library"], result
    pinned = (root / "engine" / "openblas_requirements.txt").read_text().split("scipy-openblas32==")[1].split()[0]
    assert result["config"].split()[1] == pinned, (result["config"], pinned)


def test_engine_honours_an_openblas_coretype_the_environment_sets(root):
    # Nehalem (SSE4.2) where the environment sets nothing: the oldest core the scipy-openblas32 build
    # carries (asked for Prescott or Core2 it reports Katmai); runs on any x86-64 CPU since 2008.
    forced = os.environ.get("OPENBLAS_CORETYPE") or "Nehalem"
    result = probe(root, dict(os.environ, OPENBLAS_CORETYPE=forced))
    if "core" not in result:
        pytest.skip("the engine's BLAS is not OpenBLAS")
    assert result["core"].lower() == forced.lower(), (forced, result)

