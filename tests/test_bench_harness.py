"""The benchmark harness's own logic (bench/): which engines it compares, and its model of
the GEMM calls an engine makes. The timings themselves are `make bench`'s job."""
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
