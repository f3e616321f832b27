"""Data-parallel training (virality/train/multigpu.py, tools/train.py --gpus) checked without GPUs.

The launcher, the rank processes, the sharding of every batch and exact resume run for real;
NCCL is replaced by virality.train.multigpu.CpuAllReduce (broadcast of rank 0's weights, gradients
averaged as Caffe's NCCL::on_gradients_ready does). The independent reference: one ordinary
solver whose net has the global batch (2 x B); N ranks of batch B must end with its weights.
"""
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from virality.train import multigpu

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
B = 8

RUN = textwrap.dedent("""
    import sys
    from pathlib import Path
    from virality.train.training import TrainConfig, Trainer
    from virality.train.multigpu import Leader
    work, out, world, max_iter, resume, snap = sys.argv[1:7]
    import os; os.chdir(work)
    cfg = TrainConfig(solver_path=Path(work) / "solvers/tiny_pvcnn.prototxt", out_dir=Path(out), workdir=Path(work),
                      max_iter=int(max_iter), snapshot_interval=int(snap), val_interval=1000,
                      resume=Path(resume) if resume != "-" else None)
    trainer = Trainer(cfg)
    if int(world) > 1:
        trainer.parallel = Leader(cfg, list(range(int(world))), backend="cpu", cpu_floats=4_000_000)
    trainer.run()
""")


def _nets(root, batch):
    run = subprocess.run([PY, str(ROOT / "tools/make_nets.py"), "--models", "tiny_pvcnn", "--feed", "pair_index",
                          "--out", str(root)], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    net = root / "prototxt/tiny_pvcnn/train_val.prototxt"
    text = net.read_text()
    assert text.count('\\"batch_size\\": 32') == 1, "the TRAIN feed's batch size is expected in its param_str"
    net.write_text(text.replace('\\"batch_size\\": 32', f'\\"batch_size\\": {batch}'))


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    base = tmp_path_factory.mktemp("multigpu")
    data = base / "data"
    run = subprocess.run([PY, str(ROOT / "tools/make_data.py"), "--dataset", "synthetic", "--out-root", str(data),
                          "--quiet", "--num-pairs", "300"], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    dirs = {}
    for name, batch in (("rank", B), ("whole", 2 * B)):
        d = base / name
        _nets(d, batch)
        (d / "data").symlink_to(data)
        dirs[name] = d
    return dirs


def _train(work, out, world, max_iter, resume="-", snap=0):
    r = subprocess.run([PY, "-c", RUN, str(work), str(out), str(world), str(max_iter), str(resume), str(snap)],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r.stdout


def _weights(model):
    import caffe
    from caffe.proto import caffe_pb2
    param = caffe_pb2.NetParameter()
    param.ParseFromString(Path(model).read_bytes())
    return {layer.name: [np.array(b.data, np.float64) for b in layer.blobs] for layer in param.layer if layer.blobs}


def _assert_close(a, b):
    assert a.keys() == b.keys()
    for name in a:
        for x, y in zip(a[name], b[name]):
            np.testing.assert_allclose(x, y, rtol=2e-4, atol=2e-6, err_msg=name)


def test_two_ranks_of_batch_b_train_as_one_solver_of_batch_2b_and_resume_exactly(work, tmp_path):
    whole = tmp_path / "whole"
    _train(work["whole"], whole, 1, 6)
    par = tmp_path / "par"
    log = _train(work["rank"], par, 2, 6, snap=3)
    assert f"effective batch 2 x {B} = {2 * B} pairs per iteration" in log
    w_whole = _weights(whole / "tiny_pvcnn_iter_6.caffemodel")
    w_par = _weights(par / "tiny_pvcnn_iter_6.caffemodel")
    _assert_close(w_par, w_whole)
    # and the ranks did not all read the same half: one solver of batch B differs
    single = tmp_path / "single"
    _train(work["rank"], single, 1, 6)
    w_single = _weights(single / "tiny_pvcnn_iter_6.caffemodel")
    assert any(not np.allclose(x, y, rtol=1e-3) for n in w_par for x, y in zip(w_par[n], w_single[n]))
    # exact resume: iterations 3..6 again, from the snapshot at 3, over two ranks
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    for f in par.glob("tiny_pvcnn_iter_3.*"):
        (resumed / f.name).write_bytes(f.read_bytes())
    _train(work["rank"], resumed, 2, 6, resume=resumed / "tiny_pvcnn_iter_3.solverstate")
    _assert_close(_weights(resumed / "tiny_pvcnn_iter_6.caffemodel"), w_par)


def test_gpus_option_is_checked_before_anything_runs(work, tmp_path):
    base = [PY, str(ROOT / "tools/train.py"), "--model", "tiny_pvcnn", "--workdir", str(work["rank"]),
            "--out", str(tmp_path / "o")]
    r = subprocess.run(base + ["--gpus", "0,0"], capture_output=True, text=True)
    assert r.returncode == 2 and "distinct" in r.stderr
    r = subprocess.run(base + ["--gpus", "0,x"], capture_output=True, text=True)
    assert r.returncode == 2 and "comma-separated" in r.stderr
    r = subprocess.run(base + ["--gpus", "0,1"], capture_output=True, text=True)
    if multigpu.engine_has_nccl():      # a CUDA engine (the GPU images) on a machine without a usable GPU
        assert r.returncode == 2 and "GPU 0 is not usable here (`caffe device_query -gpu 0`" in r.stderr
    else:                               # the CPU engine
        assert r.returncode == 2 and "needs an engine built with NCCL" in r.stderr
    assert not (tmp_path / "o").exists()


def _fake_caffe(tmp_path, script):
    caffe = tmp_path / "caffe"
    caffe.write_text("#!/bin/sh\n" + script)
    caffe.chmod(0o755)
    return caffe


def test_check_gpus_names_the_gpu_and_caffes_reason(tmp_path):
    # What a CUDA engine's device_query prints on a machine whose driver is too old (seen on our machines).
    caffe = _fake_caffe(tmp_path, 'echo "I1201 device_query.cpp] Querying GPUs $3" >&2\n'
                                  'echo "F1201 common.cpp:152] Check failed: error == cudaSuccess (35 vs. 0)  '
                                  'CUDA driver version is insufficient for CUDA runtime version" >&2\n'
                                  'kill -ABRT $$\n')
    with pytest.raises(multigpu.MultiGpuError) as err:
        multigpu.check_gpus([0, 1], caffe=caffe)
    msg = str(err.value)
    assert msg.startswith("GPU 0 is not usable here") and "CUDA driver version is insufficient" in msg


def test_check_gpus_asks_about_every_gpu(tmp_path):
    log = tmp_path / "asked"
    caffe = _fake_caffe(tmp_path, f'echo "$@" >> {log}\n[ "$3" != 2 ] || {{ echo "no device 2" >&2; exit 1; }}\n')
    multigpu.check_gpus([0, 1], caffe=caffe)
    assert log.read_text().split("\n")[:2] == ["device_query -gpu 0", "device_query -gpu 1"]
    with pytest.raises(multigpu.MultiGpuError, match="GPU 2 is not usable here.*no device 2"):
        multigpu.check_gpus([0, 2], caffe=caffe)
