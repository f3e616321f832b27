"""The pycaffe training driver (virality/train/training.py, tools/train.py), run for real on tiny nets.

Expected values come from the rules written out here (the paper's three x0.1 drops, Caffe's
multistep schedule, the plateau rule of docs/TRAINING.md), never from the driver itself:
- plateau drops end to end through tools/train.py, with the rate each solver was built with;
- exact resume on a net shaped like the paper's models (Dropout in both towers, iter_size > 1);
- an infinite (not NaN) loss stops training at its iteration;
- overrides, snapshots, the CSV log, resume of the plateau state, initial weights.
"""
import csv
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import caffe
from caffe.proto import caffe_pb2
from google.protobuf import text_format

from virality.model.generated import generate
from virality.train.preflight import RunError
from virality.train.training import (CsvLog, NonFiniteLoss, PlateauDropper, TrainConfig, Trainer, check_data_sources,
                                     count_test_records, iteration_seed, read_solver, resolve_net_path, validate)

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


# ------------------------------------------------------------------ fixtures and helpers

@pytest.fixture(scope="module")
def lmdb_work(tmp_path_factory):
    """tiny_pvcnn and tiny_topic reading toy pair/topic LMDBs (Caffe's Data layer)."""
    from toy_data import make_toy_data
    work = tmp_path_factory.mktemp("driver_lmdb")
    for model in ("tiny_pvcnn", "tiny_topic"):
        generate(model, work, None, {})
    make_toy_data(work)
    return work


@pytest.fixture(scope="module")
def index_work(tmp_path_factory):
    """tiny_pvcnn fed by the pair-index layer from a small synthetic world (exact resume)."""
    work = tmp_path_factory.mktemp("driver_index")
    run = subprocess.run([PY, str(ROOT / "tools/make_data.py"), "--dataset", "synthetic", "--out-root",
                          str(work / "data"), "--settings", "random", "--num-pairs", "2000",
                          "--pair-lmdb", "none", "--quiet"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    generate("tiny_pvcnn", work, "pair_index", {})
    return work


def write_solver(path, base, **fields):
    """A copy of solver file ``base`` with ``fields`` replaced (lists replace repeated fields)."""
    param = read_solver(base)
    for name, value in fields.items():
        if isinstance(value, (list, tuple)):
            del getattr(param, name)[:]
            getattr(param, name).extend(value)
        else:
            setattr(param, name, value)
    path.write_text(text_format.MessageToString(param))
    return path


def read_log(out):
    with open(out / "train_log.csv") as f:
        return list(csv.DictReader(f))


def run_trainer(work, out, monkeypatch, solver=None, progress=None, **overrides):
    """Train in this process (Caffe resolves data sources from the cwd); returns the log lines."""
    monkeypatch.chdir(work)
    cfg = TrainConfig(solver_path=solver or work / "solvers/tiny_pvcnn.prototxt", out_dir=out, workdir=work,
                      **overrides)
    lines = []
    final = Trainer(cfg, log=lines.append, progress=progress).run()
    return final, lines


def train_tool(work, out, *extra, solver=None, expect=0):
    cmd = [PY, str(ROOT / "tools/train.py"), "--model", "tiny_pvcnn", "--workdir", str(work), "--out", str(out),
           *extra]
    if solver:
        cmd += ["--solver", str(solver)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == expect, res.stdout + res.stderr
    return res


def params_of(deploy, caffemodel):
    net = caffe.Net(str(deploy), str(caffemodel), caffe.TEST)
    return {(name, i): b.data.copy() for name, blobs in net.params.items() for i, b in enumerate(blobs)}


# ------------------------------------------------------------------ plateau drops, end to end

def test_plateau_drops_lower_the_rate_three_times_through_the_tool(lmdb_work, tmp_path):
    """With a rate of 1e-12 the weights do not move, so validation accuracy never improves: the rule
    (patience 1) drops at every validation after the first, three times at most (Sec. 3), each x0.1."""
    solver = write_solver(tmp_path / "slow.prototxt", lmdb_work / "solvers/tiny_pvcnn.prototxt", base_lr=1e-12,
                          net=str(lmdb_work / "prototxt/tiny_pvcnn/train_val.prototxt"))
    out = tmp_path / "run"
    res = train_tool(lmdb_work, out, "--lr-drops", "plateau", "--patience", "1", "--max-iter", "10",
                     "--val-interval", "2", solver=solver)
    rows = [r for r in read_log(out) if r["val_accuracy"]]
    assert [int(r["iteration"]) for r in rows] == [2, 4, 6, 8, 10]
    # The lr column is the rate of the next iteration: the drop decided at 4 applies from iteration 5 on.
    np.testing.assert_allclose([float(r["lr"]) for r in rows], [1e-12, 1e-12, 1e-13, 1e-14, 1e-15], rtol=1e-6)   # SolverParameter holds float32
    assert len({r["val_accuracy"] for r in rows}) == 1            # nothing improved, as designed
    for k in (1, 2, 3):
        assert f"learning-rate drop {k}/3" in res.stdout
    assert "learning-rate drop 4/3" not in res.stdout
    # The solver Caffe ran last was built with the thrice-lowered rate and no step schedule.
    effective = read_solver(out / "solver.effective.prototxt")
    assert effective.base_lr == pytest.approx(1e-15, rel=1e-6, abs=0)
    assert effective.lr_policy == "fixed" and list(effective.stepvalue) == []
    # Each drop restarts from a snapshot taken at the validation that decided it.
    assert sorted(int(p.stem.split("_iter_")[1]) for p in out.glob("tiny_pvcnn_iter_*.caffemodel")) == [4, 6, 8, 10]


def test_plateau_state_survives_a_resume(lmdb_work, tmp_path, monkeypatch):
    solver = write_solver(tmp_path / "slow.prototxt", lmdb_work / "solvers/tiny_pvcnn.prototxt", base_lr=1e-12,
                          net=str(lmdb_work / "prototxt/tiny_pvcnn/train_val.prototxt"))
    out = tmp_path / "run"
    common = dict(lr_drops="plateau", patience=1, val_interval=2, solver=solver)
    run_trainer(lmdb_work, out, monkeypatch, max_iter=6, **common)        # drops at 4 and 6
    # Resume from the snapshot of iteration 4 (one drop so far, best = the accuracy of iteration 2).
    _, lines = run_trainer(lmdb_work, out, monkeypatch, max_iter=8,
                           resume=out / "tiny_pvcnn_iter_4.solverstate", **common)
    assert lines[1].startswith("train: 4 iterations from 4, 32 records/iteration")   # after the note
    drops = [line for line in lines if "learning-rate drop" in line]
    assert len(drops) == 2 and "drop 2/3" in drops[0] and "drop 3/3" in drops[1]
    rows = read_log(out)
    assert [int(r["iteration"]) for r in rows if r["val_accuracy"]] == [2, 4, 6, 6, 8]   # appended, one header
    np.testing.assert_allclose([float(r["lr"]) for r in rows[3:]], [1e-13, 1e-14], rtol=1e-6)
    assert any("not bit-identical" in line for line in lines)      # resuming a Data-layer net is flagged


def test_plateau_dropper_counts_only_gains_above_min_delta():
    d = PlateauDropper(patience=2, min_delta=0.25)
    assert d.update(0.5) is False and d.best == 0.5              # the first validation is a gain over -inf
    assert d.update(0.75) is False and d.bad == 1                # +0.25 is not more than min_delta
    assert d.update(0.6) is True and d.drops == 1 and d.bad == 0   # patience 2 reached: drop, count again
    e = PlateauDropper(patience=2, min_delta=0.25)
    e.load(d.state())
    assert (e.best, e.bad, e.drops) == (0.5, 0, 1)
    assert [e.update(a) for a in (0.7, 0.7, 0.7, 0.7)] == [False, True, False, True] and e.drops == 3
    assert [e.update(0.7) for _ in range(4)] == [False] * 4 and e.drops == 3      # three drops at most
    assert e.update(0.76) is False and (e.best, e.bad) == (0.76, 0)             # a real gain resets the count


# ------------------------------------------------------------------ exact resume of the real shape

def _with_dropout(work):
    """The pair-index tiny_pvcnn with Dropout after fc6 and fc7 of both towers, as AlexNet/VGG-19 have."""
    path = work / "prototxt/tiny_pvcnn/train_val.prototxt"
    net = caffe_pb2.NetParameter()
    text_format.Merge(path.read_text(), net)
    layers = []
    for layer in net.layer:
        layers.append(layer)
        if layer.name in ("relu6", "relu6_p", "relu7", "relu7_p"):
            drop = caffe_pb2.LayerParameter(name=layer.name.replace("relu", "drop"), type="Dropout",
                                            bottom=[layer.top[0]], top=[layer.top[0]])
            drop.dropout_param.dropout_ratio = 0.5
            layers.append(drop)
    del net.layer[:]
    net.layer.extend(layers)
    out = work / "prototxt/tiny_dropout.prototxt"
    out.write_text(text_format.MessageToString(net))
    return out


def test_resume_is_exact_with_dropout_and_iter_size(index_work, tmp_path):
    """VGG-19's solver accumulates 4 passes per update and both towers drop out: a resumed run must
    seek the feed by iterations x iter_size and re-seed each iteration's dropout masks."""
    net = _with_dropout(index_work)
    solver = write_solver(tmp_path / "solver.prototxt", index_work / "solvers/tiny_pvcnn.prototxt",
                          iter_size=2, net=str(net), base_lr=0.01)
    straight, split = tmp_path / "straight", tmp_path / "split"
    common = ("--val-interval", "6")
    res = train_tool(index_work, straight, "--max-iter", "12", *common, solver=solver)
    assert "64 records/iteration" in res.stdout                  # 32 pairs x iter_size 2
    train_tool(index_work, split, "--max-iter", "6", *common, solver=solver)
    resumed = train_tool(index_work, split, "--max-iter", "12", "--resume",
                         str(split / "tiny_pvcnn_iter_6.solverstate"), *common, solver=solver)
    assert "not bit-identical" not in resumed.stdout             # only Data-layer nets get that note
    # The snapshot resumed from is the user's: it is still there, whole (only a copy made for a moved run is removed).
    assert (split / "tiny_pvcnn_iter_6.solverstate").is_file() and (split / "tiny_pvcnn_iter_6.caffemodel").is_file()
    deploy = index_work / "prototxt/tiny_pvcnn/deploy.prototxt"
    a = params_of(deploy, straight / "tiny_pvcnn_iter_12.caffemodel")
    b = params_of(deploy, split / "tiny_pvcnn_iter_12.caffemodel")
    mid = params_of(deploy, split / "tiny_pvcnn_iter_6.caffemodel")
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=str(key))
    assert not np.array_equal(a[("fc6", 0)], mid[("fc6", 0)])   # training went on after the resume


# ------------------------------------------------------------------ non-finite losses

def _loss_net_with_lambda(work, lam):
    path = work / "prototxt/tiny_pvcnn/train_val.prototxt"
    text = path.read_text().replace('\\"lambda\\": 0.001', f'\\"lambda\\": {lam}')
    assert text != path.read_text(), "the loss layer's param_str was not found"
    out = work / f"prototxt/tiny_lambda_{lam:g}.prototxt"
    out.write_text(text)
    return out


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")   # the point of the test
def test_an_infinite_loss_stops_training_at_its_iteration(lmdb_work, tmp_path, monkeypatch):
    """lambda = 1e38: each pair's lambda * E_r is at least 1e38 / (d^2 + 0.1), and 32 of them overflow
    the float32 loss blob to +inf at the very first iteration (not NaN)."""
    net = _loss_net_with_lambda(lmdb_work, 1e38)
    solver = write_solver(tmp_path / "inf.prototxt", lmdb_work / "solvers/tiny_pvcnn.prototxt", net=str(net))
    out = tmp_path / "run"
    with pytest.raises(NonFiniteLoss, match=r"non-finite loss \(inf\) at iteration 0; stopped. Last good "
                                            r"snapshot: none"):
        run_trainer(lmdb_work, out, monkeypatch, solver=solver, max_iter=5, snapshot_interval=1)
    assert not list(out.glob("*.caffemodel"))                   # nothing written after the bad step


# ------------------------------------------------------------------ schedule, overrides, log

def test_multistep_schedule_overrides_snapshots_and_log(lmdb_work, tmp_path, monkeypatch):
    solver = write_solver(tmp_path / "steps.prototxt", lmdb_work / "solvers/tiny_pvcnn.prototxt",
                          stepvalue=[2, 4, 5], display=1,
                          net=str(lmdb_work / "prototxt/tiny_pvcnn/train_val.prototxt"))
    out = tmp_path / "run"
    final, lines = run_trainer(lmdb_work, out, monkeypatch, solver=solver, max_iter=6, snapshot_interval=2,
                               val_interval=3)
    rows = read_log(out)
    assert [int(r["iteration"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    # Caffe's multistep: base_lr * gamma^(number of stepvalues <= iter), for the iteration that comes next.
    np.testing.assert_allclose([float(r["lr"]) for r in rows], [1e-3, 1e-4, 1e-4, 1e-5, 1e-6, 1e-6], rtol=1e-6)   # SolverParameter holds float32
    assert [bool(r["val_accuracy"]) for r in rows] == [False, False, True, False, False, True]
    for r in rows:
        assert 0.0 <= float(r["train_accuracy"]) <= 1.0 and float(r["train_accuracy"]) * 64 % 1 == 0  # 32 pairs
        assert float(r["loss"]) > 0
    # Each row's rate is the records of its window over the time since the previous row.
    for prev, row in zip(rows[1:], rows[2:]):
        span = float(row["elapsed_s"]) - float(prev["elapsed_s"])
        assert float(row["pairs_per_s"]) * span == pytest.approx(32, rel=1e-3)
    assert sorted(p.name for p in out.glob("*.caffemodel")) == [f"tiny_pvcnn_iter_{i}.caffemodel" for i in (2, 4, 6)]
    assert final == out / "tiny_pvcnn_iter_6.solverstate" and final.exists()
    assert lines[0].startswith("train: 6 iterations from 0, 32 records/iteration, validation every 3 on 1000 validation (D_val) records")
    assert lines[-1] == f"train: done; final snapshot {final}"
    iters = [line for line in lines if line.startswith("iter ")]
    assert iters[0].startswith("iter 1/6 loss ") and " lr 0.001 " in iters[0]
    assert "val_accuracy" in iters[2] and "val_accuracy" not in iters[1]


def test_solver_defaults_are_used_when_not_overridden(lmdb_work, tmp_path, monkeypatch):
    solver = write_solver(tmp_path / "short.prototxt", lmdb_work / "solvers/tiny_pvcnn.prototxt", max_iter=4,
                          snapshot=2, display=2, test_interval=4,
                          net=str(lmdb_work / "prototxt/tiny_pvcnn/train_val.prototxt"))
    out = tmp_path / "runs" / "a" / "run"                         # made with its parents
    run_trainer(lmdb_work, out, monkeypatch, solver=solver)
    run_trainer(lmdb_work, out, monkeypatch, solver=solver)       # a new run (no resume) starts a new log
    rows = read_log(out)
    assert [(int(r["iteration"]), bool(r["val_accuracy"])) for r in rows] == [(2, False), (4, True)]
    assert sorted(p.name for p in out.glob("*.caffemodel")) == ["tiny_pvcnn_iter_2.caffemodel",
                                                                 "tiny_pvcnn_iter_4.caffemodel"]
    effective = read_solver(out / "solver.effective.prototxt")
    # The driver validates and snapshots itself; Caffe's own testing and snapshots are off.
    assert effective.snapshot == 0 and effective.test_interval == 10 ** 9 and not effective.test_initialization
    assert effective.lr_policy == "multistep" and effective.base_lr == pytest.approx(1e-3)
    # Caffe writes into the staging directory; the driver checks and renames (virality/train/snapshots.py).
    assert effective.snapshot_prefix == str(out / ".snapshot-partial" / "tiny_pvcnn")


def test_initial_weights_are_loaded(lmdb_work, tmp_path, monkeypatch):
    """--weights: at base_lr 0 and no weight decay, one iteration leaves the loaded weights as they are."""
    deploy = lmdb_work / "prototxt/tiny_pvcnn/deploy.prototxt"
    net = caffe.Net(str(deploy), caffe.TEST)
    rng = np.random.default_rng(5)
    for blobs in net.params.values():
        for b in blobs:
            b.data[...] = rng.normal(0, 0.1, b.data.shape)
    net.save(str(tmp_path / "init.caffemodel"))
    want = params_of(deploy, tmp_path / "init.caffemodel")
    solver = write_solver(tmp_path / "frozen.prototxt", lmdb_work / "solvers/tiny_pvcnn.prototxt", base_lr=0.0,
                          weight_decay=0.0, net=str(lmdb_work / "prototxt/tiny_pvcnn/train_val.prototxt"))
    out = tmp_path / "run"
    run_trainer(lmdb_work, out, monkeypatch, solver=solver, max_iter=1, weights=[tmp_path / "init.caffemodel"])
    got = params_of(deploy, out / "tiny_pvcnn_iter_1.caffemodel")
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=str(key))


def test_topic_nets_validate_on_classification_accuracy(lmdb_work, tmp_path, monkeypatch):
    out = tmp_path / "run"
    run_trainer(lmdb_work, out, monkeypatch, solver=lmdb_work / "solvers/tiny_topic.prototxt", max_iter=2,
                val_interval=2)
    (row,) = read_log(out)
    acc = float(row["val_accuracy"])
    assert 0.0 <= acc <= 1.0 and abs(acc * 1000 - round(acc * 1000)) < 1e-6    # k of 1000 test images


class FakeTopicNet:
    def __init__(self, logits, labels, batch):
        self.logits, self.labels, self.batch, self.pos = logits, labels, batch, 0
        self.blobs = {"fc8_topic": type("B", (), {})(), "label": type("B", (), {})()}

    def forward(self):
        idx = (self.pos + np.arange(self.batch)) % len(self.labels)
        self.pos = (self.pos + self.batch) % len(self.labels)
        self.blobs["fc8_topic"].data = self.logits[idx]
        self.blobs["label"].data = self.labels[idx].astype(np.float32)


def test_validate_topic_accuracy_counts_each_image_once():
    logits = np.eye(3)[[0, 1, 2, 0, 1]] * 5.0                      # predicts 0, 1, 2, 0, 1
    labels = np.array([0, 1, 0, 0, 2])                            # right: images 0, 1, 3
    assert validate(FakeTopicNet(logits, labels, batch=2), 5) == pytest.approx(3 / 5)
    # A validation set within one batch: one forward pass, the same count.
    assert validate(FakeTopicNet(logits, labels, batch=5), 5) == pytest.approx(3 / 5)
    assert validate(FakeTopicNet(logits, labels, batch=8), 5) == pytest.approx(3 / 5)


# ------------------------------------------------------------------ paths and test-set size

def test_resolve_net_path(tmp_path):
    root, work = tmp_path / "root", tmp_path / "work"
    (root / "solvers").mkdir(parents=True)
    (root / "prototxt/m").mkdir(parents=True)
    (root / "prototxt/m/train_val.prototxt").write_text("")
    solver = root / "solvers/m.prototxt"
    assert resolve_net_path("/abs/net.prototxt", solver, work) == Path("/abs/net.prototxt")
    assert resolve_net_path("prototxt/m/train_val.prototxt", solver, work) == root / "prototxt/m/train_val.prototxt"
    assert resolve_net_path("prototxt/other.prototxt", solver, work) == work.resolve() / "prototxt/other.prototxt"


def _net_with_test_layer(layer_text):
    net = caffe_pb2.NetParameter()
    text_format.Merge(layer_text, net)
    return net


def test_count_test_records_of_each_feed(lmdb_work, index_work, tmp_path):
    from virality.pretrained.weights import read_net_param
    lmdb_net = read_net_param(lmdb_work / "prototxt/tiny_pvcnn/train_val.prototxt")
    assert count_test_records(lmdb_net, lmdb_work) == 1000          # toy_data writes 1000 validation pairs
    index_net = read_net_param(index_work / "prototxt/tiny_pvcnn/train_val.prototxt")
    n_val = np.load(index_work / "data/synthetic/random/pairs_val.npy").shape[0]
    assert count_test_records(index_net, index_work) == n_val == 300
    with pytest.raises(FileNotFoundError, match="pairs_val_lmdb not found; run `make data`"):
        count_test_records(lmdb_net, tmp_path)
    with pytest.raises(FileNotFoundError, match="pairs_val.npy not found; run `make data`"):
        count_test_records(index_net, tmp_path)
    train_only = _net_with_test_layer('layer { name: "d" type: "Data" include { phase: TRAIN } }'
                                      'layer { name: "x" type: "Input" }')
    with pytest.raises(ValueError, match="no TEST-phase data layer"):
        count_test_records(train_only, tmp_path)


def test_a_solver_whose_net_is_missing_is_refused(tmp_path):
    solver = tmp_path / "solvers/x.prototxt"
    solver.parent.mkdir()
    solver.write_text('net: "prototxt/none.prototxt"\nmax_iter: 1\n')
    with pytest.raises(FileNotFoundError, match="none.prototxt not found"):
        Trainer(TrainConfig(solver_path=solver, out_dir=tmp_path / "out", workdir=tmp_path))


def test_config_defaults_are_the_documented_ones(lmdb_work, tmp_path, monkeypatch):
    """docs/TRAINING.md: drop when accuracy has not improved by min_delta (0.002) for --patience (3)
    validations; the solvers' seed 1701; fixed steps unless --lr-drops plateau."""
    cfg = TrainConfig(solver_path=lmdb_work / "solvers/tiny_pvcnn.prototxt", out_dir=tmp_path, workdir=lmdb_work)
    assert (cfg.patience, cfg.min_delta, cfg.seed, cfg.lr_drops) == (3, 0.002, 1701, "steps")
    assert (cfg.max_iter, cfg.snapshot_interval, cfg.val_interval, cfg.display) == (0, 0, 0, 0)   # the solver's
    assert cfg.weights is None and cfg.resume is None and cfg.gpu is None
    # A solver without test_interval and display: validation every 1000 iterations, progress every 20.
    bare = write_solver(tmp_path / "bare.prototxt", lmdb_work / "solvers/tiny_pvcnn.prototxt", test_interval=0,
                        display=0, net=str(lmdb_work / "prototxt/tiny_pvcnn/train_val.prototxt"))
    monkeypatch.chdir(lmdb_work)
    trainer = Trainer(TrainConfig(solver_path=bare, out_dir=tmp_path / "out", workdir=lmdb_work))
    assert (trainer.val_interval, trainer.display, trainer.dropper.patience) == (1000, 20, 3)
    assert trainer.dropper.min_delta == 0.002 and trainer.base.max_iter == 1000


@pytest.mark.parametrize("gamma, want", [(0.5, 0.5e-12), (None, 1e-13)])
def test_plateau_drop_uses_the_solvers_gamma_else_a_tenth(lmdb_work, tmp_path, monkeypatch, gamma, want):
    solver = write_solver(tmp_path / "slow.prototxt", lmdb_work / "solvers/tiny_pvcnn.prototxt", base_lr=1e-12,
                          net=str(lmdb_work / "prototxt/tiny_pvcnn/train_val.prototxt"))
    param = read_solver(solver)
    if gamma is None:
        param.ClearField("gamma")
    else:
        param.gamma = gamma
    solver.write_text(text_format.MessageToString(param))
    out = tmp_path / "run"
    run_trainer(lmdb_work, out, monkeypatch, solver=solver, lr_drops="plateau", patience=1, val_interval=2,
                max_iter=4)                                      # one drop, decided at iteration 4
    assert read_solver(out / "solver.effective.prototxt").base_lr == pytest.approx(want, rel=1e-6, abs=0)    # abs=0: approx allows 1e-12 by default


def test_the_seed_makes_initialisation_reproducible(lmdb_work, tmp_path, monkeypatch):
    """With no random_seed in the solver, the driver's --seed alone decides the initial weights."""
    solver = write_solver(tmp_path / "unseeded.prototxt", lmdb_work / "solvers/tiny_pvcnn.prototxt", base_lr=0.0,
                          net=str(lmdb_work / "prototxt/tiny_pvcnn/train_val.prototxt"))
    param = read_solver(solver)
    param.ClearField("random_seed")
    solver.write_text(text_format.MessageToString(param))
    deploy = lmdb_work / "prototxt/tiny_pvcnn/deploy.prototxt"
    weights = {}
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        run_trainer(lmdb_work, tmp_path / name, monkeypatch, solver=solver, max_iter=1, seed=seed)
        weights[name] = params_of(deploy, tmp_path / name / "tiny_pvcnn_iter_1.caffemodel")[("conv1", 0)]
    np.testing.assert_array_equal(weights["a"], weights["b"])
    assert not np.array_equal(weights["a"], weights["c"])


def test_each_csv_log_row_is_on_disk_before_the_log_is_closed(tmp_path):
    """A killed run keeps the rows it logged: each one is flushed when written."""
    path = tmp_path / "train_log.csv"
    log = CsvLog(path, append=False)
    log.write(iteration=2, loss=0.5, lr=0.01)
    try:
        assert path.read_text().splitlines() == ["iteration,loss,train_accuracy,val_accuracy,lr,pairs_per_s,elapsed_s",
                                                 "2,0.5,,,0.01,,"]
    finally:
        log.close()
    assert log.file.closed


# Caffe 1.0's solvers keep one history blob per learnable parameter (SGD, Nesterov, AdaGrad, RMSProp) or two
# (AdaDelta, Adam: sgd_solvers.cpp / adadelta_solver.cpp / adam_solver.cpp add a second set).
@pytest.mark.parametrize("solver_type, history", [("SGD", 1), ("Nesterov", 1), ("AdaGrad", 1), ("RMSProp", 1),
                                                  ("AdaDelta", 2), ("Adam", 2), (None, 1)])
def test_snapshot_bytes_counts_the_weights_and_the_solvers_history(tmp_path, solver_type, history):
    from virality.train.training import snapshot_bytes
    # two InnerProduct layers 3 -> 2 sharing their weights and bias: 8 floats = 32 bytes, held by each layer in
    # the caffemodel (64 bytes), once in the history (32 bytes per history blob)
    shared = 'param { name: "w" } param { name: "b" } inner_product_param { num_output: 2 }'
    (tmp_path / "net.prototxt").write_text(
        'layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 1 dim: 3 } } }'
        f'layer {{ name: "a" type: "InnerProduct" bottom: "x" top: "a" {shared} }}'
        f'layer {{ name: "b" type: "InnerProduct" bottom: "x" top: "b" {shared} }}')
    net = caffe.Net(str(tmp_path / "net.prototxt"), caffe.TRAIN)
    assert snapshot_bytes(net, solver_type) == int(1.05 * (64 + history * 32)) + 65536


def _small_lmdb(path, records=200):
    import lmdb
    env = lmdb.open(str(path), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for i in range(records):
            txn.put(b"%08d" % i, bytes(1000))
    env.close()
    return path


def test_check_data_sources_opens_each_data_layers_lmdb_and_only_those(tmp_path):
    """Caffe reads data_param.source only in Data layers: a Python layer's stray source is left alone, a
    Data layer's missing LMDB is named, and a truncated one is refused before Caffe maps it."""
    data = _small_lmdb(tmp_path / "val_lmdb")
    net = _net_with_test_layer('layer { name: "py" type: "Python" data_param { source: "nowhere_lmdb" } }'
                               'layer { name: "val" type: "Data" data_param { source: "val_lmdb" } }')
    check_data_sources(net, tmp_path)                                  # whole and present: no error
    with pytest.raises(FileNotFoundError, match=r"layer val: data .*gone_lmdb not found; run `make data`"):
        check_data_sources(_net_with_test_layer('layer { name: "py" type: "Python" '
                                                'data_param { source: "nowhere_lmdb" } }'
                                                'layer { name: "val" type: "Data" data_param { source: "gone_lmdb" } }'),
                           tmp_path)
    mdb = data / "data.mdb"
    with open(mdb, "r+b") as f:
        f.truncate(mdb.stat().st_size // 2)
    with pytest.raises(Exception, match=f"{mdb}: truncated"):
        check_data_sources(net, tmp_path)


def test_count_test_records_closes_the_lmdb_it_opens(tmp_path, monkeypatch):
    """The count opens the validation LMDB and closes it (a long run must not keep a second map of it)."""
    import lmdb
    import virality.train.training as training
    _small_lmdb(tmp_path / "val_lmdb", records=7)
    opened = []
    monkeypatch.setattr(training, "open_lmdb", lambda path, *a, **k: opened.append(lmdb.open(
        str(path), readonly=True, lock=False)) or opened[-1])
    net = _net_with_test_layer('layer { name: "val" type: "Data" include { phase: TEST } '
                               'data_param { source: "val_lmdb" } }')
    assert count_test_records(net, tmp_path) == 7
    assert len(opened) == 1
    with pytest.raises(lmdb.Error):            # py-lmdb refuses every call on a closed environment
        opened[0].stat()


def _prefetch_threads():
    import threading
    return [t for t in threading.enumerate() if t.name == "pair-prefetch" and t.is_alive()]


def test_a_plateau_drop_stops_the_replaced_nets_pair_feeds(index_work, tmp_path, monkeypatch):
    """Each drop replaces the solver: the feeds of the nets it replaces are stopped (close_python_feeds),
    so after training with two drops only the final solver's feeds (its TRAIN and TEST feed) can be left."""
    from python_layers import pair_data
    pair_data.close_all()
    before = len(_prefetch_threads())
    solver = write_solver(tmp_path / "slow.prototxt", index_work / "solvers/tiny_pvcnn.prototxt", base_lr=1e-12,
                          net=str(index_work / "prototxt/tiny_pvcnn/train_val.prototxt"))
    _, lines = run_trainer(index_work, tmp_path / "run", monkeypatch, solver=solver, lr_drops="plateau",
                           patience=1, val_interval=2, max_iter=6)
    assert sum("learning-rate drop" in line for line in lines) == 2
    assert len(_prefetch_threads()) - before <= 2
    pair_data.close_all()


@pytest.mark.parametrize("step", [1.0, 100.0])
def test_the_progress_line_gives_the_time_left_at_the_windows_rate(lmdb_work, tmp_path, monkeypatch, step):
    """ETA = records still to train / records per second of the last window, on a clock that advances `step`
    seconds per reading (so that the rate, and the ETA, are not rounded away on a fast tiny net; at 100 s a
    reading the rate is below 1 record/s, and the ETA must still be a number). The clock starts at 1e6 s, so
    that elapsed_s (now - start) cannot pass for a sum."""
    import re
    import types
    import virality.train.training as training
    ticks = iter(range(10 ** 6))
    monkeypatch.setattr(training, "time", types.SimpleNamespace(time=lambda: 1e6 + step * next(ticks)))
    solver = write_solver(tmp_path / "eta.prototxt", lmdb_work / "solvers/tiny_pvcnn.prototxt", display=1,
                          net=str(lmdb_work / "prototxt/tiny_pvcnn/train_val.prototxt"))
    calls = []
    _, lines = run_trainer(lmdb_work, tmp_path / "run", monkeypatch, solver=solver, max_iter=6, val_interval=6,
                           progress=lambda done, total: calls.append((done, total)))
    assert calls == [(i, 6) for i in range(1, 7)]        # the caller's progress bar moves with every progress line
    rows = read_log(tmp_path / "run")
    iters = [line for line in lines if line.startswith("iter ")]
    assert len(iters) == len(rows) == 6
    for line, row in zip(iters, rows):
        eta = float(re.search(r" ETA (\S+)s", line).group(1))
        want = (6 - int(row["iteration"])) * 32 / float(row["pairs_per_s"])      # 32 records per iteration
        assert abs(eta - want) <= 0.5, (line, want)
    assert float(re.search(r" ETA (\S+)s", iters[0]).group(1)) >= 2          # not rounded to 0: the clock is slow
    if step == 100.0:
        assert all(float(r["pairs_per_s"]) < 1 for r in rows)
    elapsed = [float(r["elapsed_s"]) for r in rows]
    used = next(ticks) * step                          # the clock's whole advance during the run
    assert elapsed == sorted(elapsed) and 0 < elapsed[-1] <= used


# ------------------------------------------------------------------ seeds

def test_iteration_seeds_are_the_documented_formula_within_caffes_range():
    """(seed * 1000003 + iteration + 7919 * rank) mod 2**32, by hand. The formula decides every run's Dropout
    masks, so changing it changes the numbers of every run trained before with the same seed."""
    assert iteration_seed(1701, 5) == 1701005108                 # 1701 * 1000003 = 1701005103, + 5
    assert iteration_seed(1701, 5, rank=2) == 1701020946         # + 2 * 7919 = 15838
    assert iteration_seed(2 ** 32 - 1, 3) == 4293967296          # (-1000003 + 3) mod 2**32 = 2**32 - 1000000


def test_the_largest_seed_trains(lmdb_work, tmp_path, monkeypatch):
    """Caffe's seed is an unsigned 32-bit int: 2**32 - 1 is a valid seed, and its per-iteration seeds
    (about 4e15 before the modulo) must still fit."""
    final, _ = run_trainer(lmdb_work, tmp_path / "run", monkeypatch, max_iter=2, val_interval=2, seed=2 ** 32 - 1)
    assert Path(final).exists()


@pytest.mark.parametrize("seed", [-1, 2 ** 32, 1.5, True])
def test_a_seed_caffe_cannot_take_is_refused_by_name(tmp_path, seed):
    with pytest.raises(RunError, match=f"seed {seed!r}: give a whole number from 0 to 4294967295"):
        TrainConfig(solver_path=tmp_path / "s.prototxt", out_dir=tmp_path, workdir=tmp_path, seed=seed)


def test_the_tool_refuses_a_negative_seed_before_it_starts(tmp_path):
    res = subprocess.run([PY, str(ROOT / "tools/train.py"), "--model", "tiny_pvcnn", "--out", str(tmp_path / "o"),
                          "--seed", "-1"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "argument --seed: seed -1: give a whole number from 0 to 4294967295" in res.stderr
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------ stop requests (SIGINT, SIGTERM)

def test_interrupted_says_the_signal_the_iteration_and_the_snapshot():
    from virality.train.training import Interrupted
    err = Interrupted(signal.SIGTERM, 7, Path("/runs/a/tiny_pvcnn_iter_7.solverstate"))
    assert str(err) == "SIGTERM at iteration 7; snapshot /runs/a/tiny_pvcnn_iter_7.solverstate"
    assert (err.signum, err.iteration) == (signal.SIGTERM, 7)


def test_the_first_signal_asks_to_stop_and_a_second_one_acts_at_once():
    """The first SIGTERM is only recorded (the loop stops after its iteration, with a snapshot); it puts the
    previous handler back, so a second SIGTERM reaches that handler at once; leaving restores it too."""
    from virality.train.training import StopRequests
    seen = []
    outer = lambda signum, frame: seen.append(signum)      # noqa: E731
    old = signal.signal(signal.SIGTERM, outer)
    try:
        with StopRequests() as stop:
            assert signal.getsignal(signal.SIGTERM) is not outer
            os.kill(os.getpid(), signal.SIGTERM)
            assert stop.signum == signal.SIGTERM and seen == []
            assert signal.getsignal(signal.SIGTERM) is outer
            os.kill(os.getpid(), signal.SIGTERM)
            assert seen == [signal.SIGTERM]
        assert signal.getsignal(signal.SIGTERM) is outer
        with pytest.raises(ZeroDivisionError):          # an error inside is not swallowed
            with StopRequests():
                1 / 0
        assert signal.getsignal(signal.SIGTERM) is outer and signal.getsignal(signal.SIGINT) is not None
    finally:
        signal.signal(signal.SIGTERM, old)


def test_stop_requests_outside_the_main_thread_leave_the_signals_alone():
    """Python refuses signal handlers outside the main thread: there StopRequests installs none (a trainer run
    from a worker thread still trains) instead of raising."""
    from virality.train.training import StopRequests
    before = signal.getsignal(signal.SIGTERM)
    errors, signums = [], []

    def work():
        try:
            with StopRequests() as stop:
                signums.append(stop.signum)
        except Exception as err:           # noqa: BLE001 - the test reports it
            errors.append(err)
    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert errors == [] and signums == [None] and signal.getsignal(signal.SIGTERM) is before


def open_files():
    fds = Path("/proc/self/fd")
    names = []
    for fd in fds.iterdir():
        try:
            names.append(os.readlink(fd))
        except OSError:            # the descriptor listdir itself used, closed since
            pass
    return names


def test_training_gives_back_the_signals_and_its_files_when_it_ends(lmdb_work, tmp_path, monkeypatch):
    """While training, SIGINT/SIGTERM only ask it to stop; afterwards (evaluation, the next run of a plan)
    they act as before again. And nothing of the run stays open (a plan trains many runs in one process)."""
    import gc
    import warnings
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)     # a file left to the garbage collector says so
        run_trainer(lmdb_work, tmp_path / "run", monkeypatch, max_iter=2, val_interval=2)
        gc.collect()
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    assert [f for f in open_files() if f.startswith(str(tmp_path / "run"))] == []
    unclosed = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert not [m for m in unclosed if str(tmp_path / "run") in m], unclosed


def test_the_seed_seeds_numpys_global_generator_too(lmdb_work, tmp_path, monkeypatch):
    """--seed is "the seed of numpy and Caffe": Python layers of the user's that draw from numpy's global
    generator get the same draws in every run with that seed. The generator's state when the solver is
    made equals a fresh RandomState(seed)'s."""
    import virality.train.training as training
    states = []
    real = caffe.get_solver

    def get_solver(path):
        states.append(np.random.get_state()[1].copy())
        return real(path)
    monkeypatch.setattr(training.caffe, "get_solver", get_solver)
    np.random.seed(99)                                   # some other state before training
    run_trainer(lmdb_work, tmp_path / "run", monkeypatch, max_iter=2, val_interval=2, seed=4242)
    np.testing.assert_array_equal(states[0], np.random.RandomState(4242).get_state()[1])
