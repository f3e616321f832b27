"""The benchmark harness's own logic (bench/): which engines it compares, and its model of
the GEMM calls an engine makes. The timings themselves are `make bench`'s job."""
import os
import sys
import tempfile
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))
import caffe_worker  # noqa: E402
import common  # noqa: E402
import run  # noqa: E402

import caffe  # noqa: E402


def _engine(root, name, blas="open", cuda="0", patched=True, complete=True, numpy="3.11.2 1.26.4"):
    eng = root / f"engine-{name}"
    (eng / "include" / "caffe" / "util").mkdir(parents=True)
    if patched:
        (eng / "include" / "caffe" / "util" / "parallel.hpp").write_text("// patch 0004\n")
    (eng / "build-info.txt").write_text(f"caffe_version=1.0.0\nkey={name}\ncuda={cuda} blas={blas}\n"
                                        f"python_numpy={numpy}\n")
    if complete:
        (eng / ".complete").touch()
    return eng


def test_discovery_finds_the_unpatched_reference_and_patched_other_blas(tmp_path, monkeypatch):
    monkeypatch.setenv("CAFFE_CACHE_DIR", str(tmp_path))
    project = _engine(tmp_path, "project")
    reference = _engine(tmp_path, "old", patched=False)
    mkl = _engine(tmp_path, "mkl", blas="mkl")
    _engine(tmp_path, "mkl-unpatched", blas="mkl", patched=False)    # not comparable: other patches
    _engine(tmp_path, "cuda", cuda="1", patched=False)                # not a CPU engine
    _engine(tmp_path, "half-built", patched=False, complete=False)    # no .complete marker
    _engine(tmp_path, "other-numpy", patched=False, numpy="3.11.2 2.0.0")
    _engine(tmp_path, "same-again")                                   # the project's own kind
    found = run.discover_engines(str(project))
    assert found == {"caffe-1.0": str(reference), "mkl (cached)": str(mkl)}


def test_build_info_is_read_as_the_build_script_writes_it(tmp_path):
    eng = _engine(tmp_path, "x", blas="open-openmp", cuda="0")
    info = run.read_build_info(eng)
    assert info["blas"] == "open-openmp" and info["cuda"].split()[0] == "0"


@pytest.mark.parametrize("model,pairs", [("alexnet_pvcnn", 4), ("tiny_pvcnn", 16)])
def test_gemm_model_does_the_net_flops_either_way(model, pairs, monkeypatch):
    """Per image (Caffe 1.0) or per chunk (patch 0004), the modelled GEMM calls do exactly the
    multiply-adds of the net's convolutions and fc layers (rank-1 bias GEMMs aside), and the
    chunked model issues far fewer calls."""
    monkeypatch.setenv("CAFFE_CONV_WORKSPACE_MB", "1")   # force several chunks
    with tempfile.TemporaryDirectory() as tmp:
        path = common.write_text(Path(tmp) / "train.prototxt", common.timing_train_net(model, pairs))
        net = caffe.Net(str(path), caffe.TRAIN)
        net_param = caffe_worker.net_param_of(path)
    flops = caffe_worker.flop_count(net, net_param)["train"]

    def work(calls):   # the forward lists' K = 1 calls are the bias updates
        return sum(2.0 * m * n * k * count for fwd, bwd in calls.values()
                   for _, _, m, n, k, count in [c for c in fwd if c[4] != 1] + bwd)

    def n_calls(calls):
        return sum(count for fwd, bwd in calls.values() for *_, count in fwd + bwd)

    per_image = caffe_worker.gemm_calls(net, net_param, batched=False)
    chunked = caffe_worker.gemm_calls(net, net_param, batched=True)
    assert work(per_image) == pytest.approx(flops, rel=1e-12)
    assert work(chunked) == pytest.approx(flops, rel=1e-12)
    assert n_calls(chunked) < n_calls(per_image)


def test_chunk_rule_matches_the_engine_patch():
    """The worker's copy of images_per_chunk(): workspace // ((rows + outputs) * pixels * 4)."""
    # AlexNet conv2 (group 2): 2400 rows, 256 outputs, 27x27 pixels -> 7.7 MB per image
    assert caffe_worker.conv_chunk(32, 2400, 256, 729) == 32            # 256 MB hold them all
    per_image = (2400 + 256) * 729 * 4
    assert caffe_worker.conv_chunk(64, 2400, 256, 729) == (256 << 20) // per_image
    assert caffe_worker.conv_chunk(5, 10 ** 6, 10, 10 ** 4) == 1        # never fewer than one
    patch = (Path(__file__).resolve().parent.parent / "engine" / "patches"
             / "0004-cpu-batched-convolution-and-threads.patch").read_text()
    assert "const long per_image = (rows + this->num_output_) *" in patch
    assert "long megabytes = 256;" in patch


# ---- the CPU and the kernels (bench/hardware.py) ----

import document  # noqa: E402
import hardware  # noqa: E402
import report  # noqa: E402

XEON_CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 207
model name\t: Intel(R) Xeon(R) Platinum 8581C CPU @ 2.30GHz
stepping\t: 2
flags\t\t: fpu sse sse2 avx fma avx2 avx512f avx512dq avx512bw avx512vl avx512_vnni avx512_bf16 amx_tile amx_bf16

processor\t: 1
vendor_id\t: GenuineIntel
model name\t: something else entirely
"""


def test_cpuinfo_gives_vendor_model_numbers_and_vector_flags():
    cpu = hardware.parse_cpuinfo(XEON_CPUINFO)
    assert (cpu["vendor"], cpu["family"], cpu["model"], cpu["stepping"]) == ("GenuineIntel", "6", "207", "2")
    assert cpu["model_name"] == "Intel(R) Xeon(R) Platinum 8581C CPU @ 2.30GHz"       # the first processor's
    assert cpu["flags"] == ["avx", "fma", "avx2", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
                            "avx512_bf16", "amx_tile", "amx_bf16"]
    assert hardware.cpu_key(cpu) == "GenuineIntel Intel(R) Xeon(R) Platinum 8581C CPU @ 2.30GHz, family 6 model 207"


def test_numpys_blas_reports_the_kernels_of_the_library_it_loaded():
    info = hardware.numpy_blas()
    assert info["library"] in hardware.mapped_libraries(r"openblas|mkl|blis")
    if info["kind"] == "OpenBLAS":
        assert info["kernels"] and info["kernels"] in info["config"]     # openblas_get_corename of that library
        forced = os.environ.get("OPENBLAS_CORETYPE")
        if forced:                                                     # the environment's choice, never changed
            assert info["kernels"].lower() == forced.lower()


# ---- BENCHMARKS.md: one section per CPU model (bench/document.py) ----

LEGACY = """# Benchmarks

Written by `make bench` (`bench/run.py`) on 2026-11-29 07:50 UTC; 10.9 minutes. Command: `bench/run.py`.

## Machine and versions

| | |
| --- | --- |
| CPU | AMD EPYC, 2 cores visible; avx2, avx512f, avx512_bf16 |

## Targets

| target | measured | |
| --- | --- | --- |
| >= 50% of the GEMM ceiling | 56% in-round | **met** |
"""

XEON = "GenuineIntel Intel(R) Xeon(R) Platinum 8581C CPU @ 2.30GHz, family 6 model 207"
ZEN5 = "AuthenticAMD AMD EPYC, family 26 model 2"


def _section(title, figure):
    return {"title": title, "date": "2026-12-01 11:00 UTC", "ceiling": figure}, f"## {title}\n\nceiling {figure}"


def test_a_run_replaces_only_its_own_cpus_section():
    s, b = _section("Xeon 8581C", "350 GFLOP/s")
    doc = document.merge(LEGACY, XEON, s, b)
    sections = document.parse(doc)
    assert [k for k, _, _ in sections] == ["AMD EPYC, vendor/family/model not recorded", XEON]
    legacy_body = sections[0][2]
    # the earlier run's content is kept whole, its headings one level down, under its CPU's title
    assert legacy_body.startswith("## AMD EPYC (vendor, family and model not recorded; avx2, avx512f, avx512_bf16)")
    for line in ("### Machine and versions", "| CPU | AMD EPYC, 2 cores visible; avx2, avx512f, avx512_bf16 |",
                 "### Targets", "| >= 50% of the GEMM ceiling | 56% in-round | **met** |"):
        assert line in legacy_body.splitlines()
    assert sections[0][1]["date"] == "2026-11-29 07:50 UTC"
    # side by side: one column per CPU
    side = doc.split("## Side by side", 1)[1].split("<!--", 1)[0]
    assert "| | AMD EPYC (vendor, family and model not recorded; avx2, avx512f, avx512_bf16) | Xeon 8581C |" in side
    assert "| GEMM ceiling (float32 2048^3, best library) | - | 350 GFLOP/s |" in side

    # the same CPU again: its section replaced, the other left byte for byte
    s2, b2 = _section("Xeon 8581C", "356 GFLOP/s")
    doc2 = document.merge(doc, XEON, s2, b2)
    again = document.parse(doc2)
    assert [k for k, _, _ in again] == [k for k, _, _ in sections]
    assert again[0] == sections[0]
    assert again[1][2] == "## Xeon 8581C\n\nceiling 356 GFLOP/s" and "350 GFLOP/s" not in doc2
    # another CPU model (same name, other family): a section of its own, appended
    s3, b3 = _section("AMD EPYC (family 26 model 2)", "240 GFLOP/s")
    doc3 = document.merge(doc2, ZEN5, s3, b3)
    assert [k for k, _, _ in document.parse(doc3)] == [k for k, _, _ in sections] + [ZEN5]
    assert document.parse(doc3)[:2] == again
    assert document.merge(doc3, ZEN5, s3, b3) == doc3                # idempotent


def test_the_committed_benchmarks_file_is_in_sections_and_keeps_the_epyc_run():
    text = (Path(__file__).resolve().parent.parent / "BENCHMARKS.md").read_text()
    sections = document.parse(text)
    assert sections, "BENCHMARKS.md has no per-CPU sections"
    keys = [k for k, _, _ in sections]
    assert len(set(keys)) == len(keys)
    assert "AMD EPYC, vendor/family/model not recorded" in keys       # the 2026-11-29 run (issue 11: Zen 4)
    assert document.compose(sections) == text                        # nothing outside the sections but the index


def test_a_file_that_cannot_be_keyed_is_refused_not_overwritten(tmp_path):
    path = tmp_path / "BENCHMARKS.md"
    path.write_text("# My own notes\n\nnothing the bench wrote\n")
    with pytest.raises(document.DocumentError, match=str(path)):
        document.write(path, XEON, *_section("Xeon", "1"))
    assert path.read_text() == "# My own notes\n\nnothing the bench wrote\n"
