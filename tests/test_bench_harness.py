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


def _blas(kernels):
    return {"kind": "OpenBLAS", "config": f"OpenBLAS 0.3.21 DYNAMIC_ARCH {kernels} MAX_THREADS=64", "kernels": kernels}


def test_the_ceiling_is_the_best_library_of_each_round():
    """Engine BLAS, numpy and PyTorch each timed per round; a round's ceiling is the best of them,
    whichever library that is, and the report names it."""
    def caffe_round(engine, numpy):
        return {"gemm_gflops": [engine], "numpy_gemm_gflops": [numpy], "blas": _blas("Haswell"),
                "numpy_blas": dict(_blas("Haswell"), numpy="1.26.4")}
    res = {"alexnet": {"project": [caffe_round(100.0, 90.0), caffe_round(110.0, 120.0), caffe_round(105.0, 95.0)],
                       "project, spinning": [caffe_round(101.0, 91.0), caffe_round(108.0, 97.0),
                                             caffe_round(99.0, 96.0)]},
           "torch": "2.13.0+cpu",
           "torch_alexnet": [{"gemm_gflops": [300.0], "blas": {"kind": "mkl", "kernels": "AVX512"}},
                             {"gemm_gflops": [90.0], "blas": {"kind": "mkl", "kernels": "AVX512"}},
                             {"gemm_gflops": [280.0], "blas": {"kind": "mkl", "kernels": "AVX512"}}]}
    c = report.honest_ceiling(res)
    assert [g for g, _ in c["rounds"]] == [300.0, 120.0, 280.0]
    torch_lab = "PyTorch 2.13.0+cpu (torch.mm): mkl, AVX512"
    numpy_lab = "numpy 1.26.4 (np.matmul): OpenBLAS 0.3.21, Haswell kernels"
    assert [lab for _, lab in c["rounds"]] == [torch_lab, numpy_lab, torch_lab]
    assert c["median"] == 280.0 and c["library"] == torch_lab
    assert c["libraries"]["engine `project` (cblas_sgemm): OpenBLAS 0.3.21, Haswell kernels"] == [100.0, 110.0, 105.0]
    assert c["libraries"][numpy_lab] == [91.0, 120.0, 96.0]          # numpy: the best of the round's processes
    # without PyTorch the best of the others
    res["torch_alexnet"] = []
    c = report.honest_ceiling(res)
    assert [g for g, _ in c["rounds"]] == [101.0, 120.0, 105.0]


def _results():
    """A run's results with round numbers, the shape bench/run.py saves (two rounds)."""
    blas = _blas("Haswell")
    caffe_round = {"step_s": [1.0], "fwdbwd_s": [0.9], "update_s": [0.1], "gemm_gflops": [100.0],
                   "numpy_gemm_gflops": [90.0], "flops": {"train": 16 * 10e9, "forward": 1.0}, "blas": blas,
                   "numpy_blas": dict(blas, numpy="1.26.4"), "pairs_per_step": 16, "iter_size": 1}
    torch_blas = {"kind": "mkl", "config": "MKL 2024.2", "kernels": "AVX512", "threads": 2}
    cpu = hardware.parse_cpuinfo(XEON_CPUINFO)
    return {
        "machine": {"cpu": cpu["model_name"], "cpu_info": dict(cpu, cores=2), "cores": 2,
                    "blas_env": {"OPENBLAS_CORETYPE": "Haswell"}, "memory_gib": "23", "os": "Debian 12",
                    "kernel": "6", "gcc": "g++ 12", "python": "3.11", "loadavg_start": "1 1 1 1/1 1",
                    "loadavg_end": "1 1 1 1/1 1"},
        "variants": [{"label": "project", "engine": "project", "env": {}}],
        "engines": {"project": {"build": {}, "path": "/e", "blas": blas}},
        "pairs": 16, "rounds": 2, "quick": False, "command": "bench/run.py", "date": "2026-12-01 11:00 UTC",
        "elapsed_s": 60.0, "torch": "2.13.0+cpu", "torch_note": None,
        "alexnet": {"project": [caffe_round, caffe_round]},
        "torch_alexnet": [{"step_s": [1.6], "fwdbwd_s": [1.5], "gemm_gflops": [300.0], "blas": torch_blas}] * 2,
        "torch_infer": [{"infer_batch": 32, "infer_s": [0.5], "blas": torch_blas}] * 2,
        "infer": {"alexnet_pvcnn": [{"batch": 32, "forward_s": [0.25]}] * 2},
        "predict": {"setup": {"model": "alexnet_pvcnn", "one_batch": 32,
                              "photos": {"count": 256, "sources": ["astronaut.png"], "mean_megapixels": 0.3,
                                         "bytes": 256 * 80000},
                              "stages": {"images": 256, "decode_s": 1.0, "preprocess_s": 1.0, "forward_s": 2.0}},
                    "rounds": [{"one_batch_s": 2.0, "all_s": 4.0}] * 2},
        "layers": {}, "models": {}, "feeds": {},
    }


def test_the_report_judges_each_target_against_the_honest_ceiling_and_pytorch():
    """Hand-computed: Caffe 16 pairs/s vs PyTorch 10 (1.6x, met); ceiling torch.mm 300 GFLOP/s at
    10 GFLOP per pair = 30 pairs/s, Caffe at 53% (missed: needs 18 pairs/s); deploy 128 vs 64
    images/s (2.0x, met); predict (256 - 32) / (4 - 2) = 112 images/s = 88% of 128 (met)."""
    key, summary, body = report.render(_results())
    assert key == XEON
    rows = {line.split(" | ")[0].lstrip("| "): line for line in body.splitlines() if line.startswith("| ")}
    train = rows["Caffe AlexNet-PVCNN training >= 1.5x PyTorch's pairs/s"]
    assert "1.60x" in train and "**met**" in train and "Caffe 16.0, PyTorch 10.0 pairs/s" in train
    ceil = rows["Caffe AlexNet-PVCNN training >= 60% of the GEMM ceiling"]
    assert "53% in-round" in ceil and "300 GFLOP/s, set by PyTorch 2.13.0+cpu (torch.mm)" in ceil
    assert "**not met**" in ceil and "missed by 11%" in ceil and "16.0 -> 18.0 pairs/s" in ceil
    infer = rows["AlexNet deploy inference, batch 32, >= 2.0x PyTorch's images/s"]
    assert "2.00x" in infer and "**met**" in infer and "Caffe 128.0, PyTorch 64.0 images/s" in infer
    pred = [l for k, l in rows.items() if k.startswith("`tools/predict.py` end to end")][0]
    assert "88% in-round" in pred and "112.0 images/s end to end, forward alone 128.0" in pred and "**met**" in pred
    assert summary["targets"] == "3 of 4" and summary["coretype"] == "Haswell"
    assert summary["kernels"] == "Haswell / Haswell / AVX512"
    assert "| OPENBLAS_CORETYPE | `Haswell`, set by the environment" in body


def _gpufeed(worker_wait_ms):
    row = dict(iters=20, copy_ms=20.0)
    return {"pairs": 64, "crop": 227, "images": 200, "cores": 2,
            "published_step_ms": {"TITAN X, cuDNN-class": 81.0, "TITAN X, Caffe's own kernels": 324.0},
            "rows": [dict(row, workers=0, step_ms=0.0, iteration_ms=50.0, wait_ms=30.0, pairs_per_s=1280.0),
                     dict(row, workers=0, step_ms=81.0, iteration_ms=160.0, wait_ms=59.0, pairs_per_s=400.0),
                     dict(row, workers=1, step_ms=81.0, iteration_ms=110.0, wait_ms=9.0, pairs_per_s=581.8),
                     dict(row, workers=2, step_ms=81.0, iteration_ms=105.0, wait_ms=worker_wait_ms,
                          pairs_per_s=609.5)]}


@pytest.mark.parametrize("wait_ms, share, met", [(4.05, "5.0%", True), (8.91, "11.0%", False)])
def test_the_gpu_feed_target_is_the_best_worker_wait_over_the_titan_x_step(wait_ms, share, met):
    """81 ms step: the best worker count's wait over 81 ms (4.05 / 81 = 5.0%, met; 8.91 / 81 = 11.0% is
    still the best of 9.0 and 8.91, not met); the thread's 59 / 81 = 73% beside it."""
    res = dict(_results(), gpufeed=_gpufeed(wait_ms))
    _, summary, body = report.render(res)
    rows = {line.split(" | ")[0].lstrip("| "): line for line in body.splitlines() if line.startswith("| ")}
    target = [l for k, l in rows.items() if k.startswith("a 81 ms step (TITAN X, cuDNN-class) waits")][0]
    assert f"{share} ({wait_ms:.1f} ms, 2 workers; the thread: 73%)" in target
    assert ("**met**" if met else "**not met**") in target
    assert summary["targets"] == ("4 of 5" if met else "3 of 5")
    assert "| 81 ms (TITAN X, cuDNN-class) | thread | 160.0 | 59.0 | 20.0 | 400 |" in body
    assert "| none (the feed alone) | thread | 50.0 | 30.0 | 20.0 | 1280 |" in body
    assert "(790 pairs/s)" in body and "(198 pairs/s)" in body          # 64 / 0.081, 64 / 0.324


def test_a_run_without_the_gpu_feed_says_it_was_not_measured():
    res = dict(_results(), gpufeed={"error": "RuntimeError: not asked for (--sections)"})
    _, summary, body = report.render(res)
    assert "Not measured in this run (RuntimeError: not asked for (--sections))" in body
    assert summary["targets"] == "3 of 4"


def test_add_to_refuses_another_cpus_run_and_sections_that_need_the_alexnet_run(tmp_path):
    old = tmp_path / "results.json"
    old.write_text(__import__("json").dumps(_results()))
    here = dict(_results()["machine"], cpu_info=dict(_results()["machine"]["cpu_info"], model="143"))
    args = type("A", (), dict(json=str(tmp_path / "new.json"), out=str(tmp_path / "B.md")))()
    with pytest.raises(SystemExit, match="that run was on .*model 207, this machine is .*model 143"):
        run.add_sections(str(old), {"gpufeed"}, None, [{}], True, here, args)
    with pytest.raises(SystemExit, match="--add-to measures only feeds, gpufeed; --sections asked for infer"):
        run.add_sections(str(old), {"infer", "gpufeed"}, None, [{}], True, _results()["machine"], args)
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(SystemExit, match="bad.json: cannot read an earlier run's results"):
        run.add_sections(str(tmp_path / "bad.json"), {"gpufeed"}, None, [{}], True, here, args)
    assert not (tmp_path / "new.json").exists() and not (tmp_path / "B.md").exists()


def test_add_to_adds_the_section_names_it_and_keeps_the_rest(tmp_path, monkeypatch):
    import json
    old = tmp_path / "results.json"
    old.write_text(json.dumps(_results()))
    monkeypatch.setattr(run, "measure_standalone", lambda name, sections, runner, base, quick: _gpufeed(4.05))
    monkeypatch.setattr(sys, "argv", ["bench/run.py", "--add-to", str(old), "--sections", "gpufeed"])
    args = type("A", (), dict(json=str(tmp_path / "new.json"), out=str(tmp_path / "B.md")))()
    run.add_sections(str(old), {"gpufeed"}, None, [{}], True, _results()["machine"], args)
    new = json.loads((tmp_path / "new.json").read_text())
    assert new["gpufeed"] == _gpufeed(4.05) and new["alexnet"] == _results()["alexnet"]
    assert [a["section"] for a in new["added"]] == ["gpufeed"]
    body = (tmp_path / "B.md").read_text()
    assert "after the rest of this section, and added to that run with `bench/run.py --add-to" in body
    assert "Written by `make bench` (`bench/run.py`) on 2026-12-01 11:00 UTC" in body


def test_predict_photos_are_real_jpegs_at_user_sizes(tmp_path):
    import cv2
    import predict_e2e
    info = predict_e2e.make_photos(tmp_path, 12)
    files = sorted(tmp_path.iterdir())
    assert [f.name for f in files] == [f"{i:05d}.jpg" for i in range(12)] and info["count"] == 12
    sides = set()
    for f in files:
        image = cv2.imread(str(f), cv2.IMREAD_COLOR)
        assert image is not None and image.std() > 10           # a photo, not a flat stand-in
        sides.add(max(image.shape[:2]))
    assert sides <= {480, 640, 800} and len(sides) > 1
    assert info["sources"] == list(predict_e2e.PHOTOS)


def test_the_sgemm_timed_is_the_one_libcaffe_imports(tmp_path):
    """A prefixed BLAS (engine patch 0006: scipy_cblas_sgemm) is found by name in libcaffe's
    string table; plain cblas_sgemm would resolve to Debian's OpenBLAS that OpenCV loads."""
    lib = tmp_path / "libcaffe.so"
    lib.write_bytes(b"\x7fELF\0scipy_cblas_sgemm\0cblas_saxpby\0")
    assert caffe_worker.sgemm_name(lib) == "scipy_cblas_sgemm"
    lib.write_bytes(b"\x7fELF\0cblas_sgemm\0cblas_saxpby\0")
    assert caffe_worker.sgemm_name(lib) == "cblas_sgemm"
    lib.write_bytes(b"\x7fELF\0xcblas_sgemm\0")
    with pytest.raises(RuntimeError, match="imports none of"):
        caffe_worker.sgemm_name(lib)
    # and the engine this test runs on: the name is one its libcaffe really imports
    libcaffe = next(iter(hardware.mapped_libraries(r"^libcaffe\.so")))
    import ctypes
    assert hasattr(ctypes.CDLL(libcaffe), caffe_worker.sgemm_name(libcaffe))
