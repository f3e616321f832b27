"""The pycaffe training driver behind tools/train.py.

What it adds to ``caffe train`` (which remains the faithful command-line path):
- validation pairwise accuracy (or topic accuracy) at fixed intervals, on the
  solver's test net, which shares the training weights (Caffe's test nets do);
  every test record is counted exactly once (docs/TRAINING.md);
- learning-rate drops when validation stops improving (the paper's "decreased
  once the network began oscillating", Sec. 3: at most 3 drops of x0.1), as an
  alternative to the solver's fixed steps;
- snapshots and exact resume: the random state of each iteration is a function
  of (seed, iteration), and Python feeds are told where to continue;
- snapshots are complete or absent (written under a staging prefix, checked, then
  renamed: virality.train.snapshots), a resume works after the run directory moved, and
  SIGINT/SIGTERM stop the run after the current iteration with a snapshot there
  (:class:`Interrupted`; docs/FAILURES.md);
- a non-finite loss stops the run, naming the iteration; the last good snapshot
  is kept;
- progress lines and a CSV log plus PNG curves.
"""
import csv
import gc
import json
import math
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import lmdb
import numpy as np
from google.protobuf import text_format

import caffe
from caffe.proto import caffe_pb2
from virality.files import DiskError, check_free_space, load_npy, save_npy_atomic, write_text_atomic
from virality.data.imagestore import open_lmdb
from virality.outputs import OutputLock
from virality.model.ranking import pairwise_accuracy
from virality.train.snapshots import commit, prepare_staging, restorable, staging_prefix
from virality.pretrained.weights import read_net_param
from virality.train.preflight import SEED_LIMIT, check_seed

MAX_LR_DROPS = 3  # Sec. 3: the learning rate was decreased three times


class NonFiniteLoss(RuntimeError):
    """Training produced a NaN or infinite loss."""


class Interrupted(RuntimeError):
    """SIGINT or SIGTERM stopped training; ``snapshot`` is the solverstate written at ``iteration``."""

    def __init__(self, signum, iteration, snapshot):
        self.signum, self.iteration, self.snapshot = signum, iteration, snapshot
        super().__init__(f"{signal.Signals(signum).name} at iteration {iteration}; snapshot {snapshot}")


class StopRequests:
    """While active, SIGINT/SIGTERM only ask the loop to stop after the current iteration (``signum``);
    the first one puts the previous handlers back, so a second one acts at once (snapshots being
    staged, that leaves nothing incomplete under a final name)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum = None
        self.previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def _handle(self, signum, frame):
        self.signum = signum
        self._restore()

    def _restore(self):
        for s, handler in self.previous.items():
            signal.signal(s, handler)
        self.previous = {}

    def __exit__(self, *exc):
        self._restore()
        return False


@dataclass
class TrainConfig:
    solver_path: Path
    out_dir: Path
    workdir: Path
    weights: list = None
    resume: Path = None
    gpu: int = None
    lr_drops: str = "steps"          # "steps" (solver's multistep) or "plateau"
    val_interval: int = 0            # 0: the solver's test_interval
    patience: int = 3                # validations without improvement before a drop (plateau)
    min_delta: float = 0.002         # improvement that counts (accuracy)
    max_iter: int = 0                # 0: the solver's max_iter
    snapshot_interval: int = 0       # 0: the solver's snapshot
    seed: int = 1701
    display: int = 0                 # 0: the solver's display

    def __post_init__(self):
        check_seed(self.seed)


def iteration_seed(seed, iteration, rank=0):
    """Caffe's seed for one iteration (its Dropout masks) on one rank: a fixed function of (seed, iteration,
    rank), so that a resumed run draws the same masks as an unbroken one and the ranks of a multi-GPU run draw
    different ones (as the images of one large batch would); within Caffe's 32-bit range for every seed."""
    return (seed * 1000003 + iteration + 7919 * rank) % SEED_LIMIT


def read_solver(path):
    param = caffe_pb2.SolverParameter()
    text_format.Merge(Path(path).read_text(), param)
    return param


def resolve_net_path(net, solver_path, workdir):
    """A solver's net path: absolute as is; relative to the generator's output root
    (the solver file's grandparent: <root>/solvers/<model>.prototxt) when the net is
    there, else to the working directory (Caffe's rule)."""
    net = Path(net)
    if net.is_absolute():
        return net
    beside = Path(solver_path).resolve().parent.parent / net
    return beside.resolve() if beside.exists() else (Path(workdir) / net).resolve()


def count_test_records(net_param, workdir):
    """Number of records the TEST-phase data layer of a train_val net reads."""
    for layer in net_param.layer:
        if not any(rule.phase == caffe.TEST for rule in layer.include):
            continue
        if layer.type == "Data":
            source = Path(workdir) / layer.data_param.source
            if not source.exists():
                raise FileNotFoundError(f"test data {source} not found; run `make data` first")
            env = open_lmdb(source)      # checked: a truncated LMDB is an error, not a SIGBUS in Caffe
            try:
                return env.stat()["entries"]
            finally:
                env.close()
        if layer.type == "Python":
            pairs = json.loads(layer.python_param.param_str).get("pairs")
            path = Path(workdir) / pairs
            if not path.exists():
                raise FileNotFoundError(f"test pairs {path} not found; run `make data` first")
            return int(load_npy(path, mmap=True).shape[0])
    raise ValueError("the net has no TEST-phase data layer to validate on")


def check_data_sources(net_param, workdir):
    """Open every LMDB a Data layer of the net reads (either phase), checked (virality.data.imagestore.open_lmdb):
    Caffe itself would die of SIGBUS, with no message, on a truncated one."""
    for layer in net_param.layer:
        if layer.type == "Data" and layer.data_param.source:
            source = Path(workdir) / layer.data_param.source
            if not source.exists():
                raise FileNotFoundError(f"layer {layer.name}: data {source} not found; run `make data` first")
            open_lmdb(source).close()


def validate(test_net, num_records):
    """Accuracy over exactly ``num_records`` consecutive test records (each once).

    Ranking nets: pairwise accuracy from blobs score, score_p, label.
    Topic nets: classification accuracy from fc8_topic and label.
    """
    got = 0
    parts = []
    while got < num_records:
        test_net.forward()
        take = min(num_records - got, test_net.blobs["label"].data.shape[0])
        if "score_p" in test_net.blobs:
            parts.append((test_net.blobs["score"].data[:take].ravel().copy(),
                          test_net.blobs["score_p"].data[:take].ravel().copy(),
                          test_net.blobs["label"].data[:take].ravel().copy()))
        else:
            logits = test_net.blobs["fc8_topic"].data[:take]
            parts.append((logits.argmax(axis=1), None, test_net.blobs["label"].data[:take].ravel().copy()))
        got += take
    if parts[0][1] is not None:
        f1, f2, y = (np.concatenate([p[i] for p in parts]) for i in range(3))
        return pairwise_accuracy(f1, f2, y)
    pred = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[2] for p in parts])
    return float(np.mean(pred == labels))


class PlateauDropper:
    """Decide learning-rate drops from validation accuracy (higher is better)."""

    def __init__(self, patience, min_delta, max_drops=MAX_LR_DROPS):
        self.patience = patience
        self.min_delta = min_delta
        self.max_drops = max_drops
        self.best = -math.inf
        self.bad = 0        # validations since the last gain
        self.drops = 0

    def update(self, accuracy):
        """Record one validation; return True when the rate should drop now."""
        if accuracy > self.best + self.min_delta:
            self.best = accuracy
            self.bad = 0
            return False
        self.bad += 1
        if self.bad >= self.patience and self.drops < self.max_drops:
            self.drops += 1
            self.bad = 0
            return True
        return False

    def state(self):
        return dict(best=self.best, bad=self.bad, drops=self.drops)

    def load(self, state):
        self.best, self.bad, self.drops = state["best"], state["bad"], state["drops"]


def seek_python_feeds(iteration):
    """Tell every live pair-index feed which batch comes next (exact resume)."""
    try:
        from python_layers import pair_data
    except ImportError:
        return 0
    seek = getattr(pair_data, "seek_all", None)
    return seek(iteration) if seek else 0


def close_python_feeds():
    try:
        from python_layers import pair_data
    except ImportError:
        return
    pair_data.close_all()


def pairs_per_iteration(net, iter_size):
    return net.blobs["label"].data.shape[0] * iter_size


class CsvLog:
    FIELDS = ["iteration", "loss", "train_accuracy", "val_accuracy", "lr", "pairs_per_s", "elapsed_s"]

    def __init__(self, path, append):
        self.path = Path(path)
        new = not (append and self.path.exists())
        self.file = open(self.path, "w" if new else "a", newline="")
        self.writer = csv.DictWriter(self.file, fieldnames=self.FIELDS)
        if new:
            self.writer.writeheader()

    def write(self, **row):
        self.writer.writerow({k: row.get(k, "") for k in self.FIELDS})
        self.file.flush()

    def close(self):
        self.file.close()


#: history blobs a solver type keeps per learnable parameter (Caffe 1.0's solvers).
HISTORY_BLOBS = {"SGD": 1, "Nesterov": 1, "AdaGrad": 1, "RMSProp": 1, "AdaDelta": 2, "Adam": 2}


def snapshot_bytes(net, solver_type="SGD"):
    """About the bytes of one snapshot: the caffemodel holds every layer's blobs (shared ones once per
    layer), the solverstate the history of each distinct parameter."""
    blobs = [b.data for layer in net.params.values() for b in layer]
    distinct = {b.__array_interface__["data"][0]: b.nbytes for b in blobs}
    history = HISTORY_BLOBS.get(solver_type or "SGD", 2) * sum(distinct.values())
    return int(1.05 * (sum(b.nbytes for b in blobs) + history)) + (64 << 10)


def write_effective_solver(param, out_dir):
    return write_text_atomic(Path(out_dir) / "solver.effective.prototxt", text_format.MessageToString(param))


class Trainer:
    """Runs one training job (see the module docstring)."""

    def __init__(self, config, log=print, progress=None):
        """``progress(done, max_iter)``, when given, is called with every progress line
        (the experiment plan's whole-plan ETA, virality/experiments/plan.py)."""
        self.cfg = config
        self.log = log
        self.progress = progress
        self.base = read_solver(config.solver_path)
        if config.max_iter:
            self.base.max_iter = config.max_iter
        if config.snapshot_interval:
            self.base.snapshot = config.snapshot_interval
        net_path = resolve_net_path(self.base.net, config.solver_path, config.workdir)
        if not net_path.exists():
            raise FileNotFoundError(f"solver {config.solver_path}: net {net_path} not found")
        self.base.net = str(net_path)
        self.out_dir = Path(config.out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.base.snapshot_prefix = str(self.out_dir / Path(self.base.snapshot_prefix or "model").name)
        self.staged_prefix = staging_prefix(self.base.snapshot_prefix)   # Caffe writes here; commit() moves
        self.snapshot_iter = self.last_state = None
        self.val_interval = config.val_interval or self.base.test_interval or 1000
        self.display = config.display or self.base.display or 20
        self.dropper = PlateauDropper(config.patience, config.min_delta)
        self.net_param = read_net_param(net_path)
        self.num_test = count_test_records(self.net_param, config.workdir)
        check_data_sources(self.net_param, config.workdir)
        #: data-parallel training: the leader of virality.train.multigpu (None: one solver)
        self.parallel = None

    # -- solver construction ------------------------------------------------------------
    def _solver_param(self, drops):
        param = caffe_pb2.SolverParameter()
        param.CopyFrom(self.base)
        # The driver validates and snapshots itself; Caffe's own testing is switched off.
        param.test_interval = 10 ** 9
        param.test_initialization = False
        param.snapshot = 0
        param.snapshot_prefix = str(self.staged_prefix)
        if self.cfg.lr_drops == "plateau":
            param.lr_policy = "fixed"
            param.base_lr = self.base.base_lr * (self.base.gamma or 0.1) ** drops
            del param.stepvalue[:]
        return param

    def _make_solver(self, drops, restore=None):
        path = write_effective_solver(self._solver_param(drops), self.out_dir)
        solver = caffe.get_solver(str(path))
        if restore:
            solver.restore(str(restore))
        if self.parallel is not None:      # the other ranks build the same solver; weights broadcast
            self.parallel.attach(solver, path, restore)
        return solver

    def current_lr(self, solver):
        p = self._solver_param(self.dropper.drops)
        if p.lr_policy == "multistep":
            passed = sum(1 for s in p.stepvalue if solver.iter >= s)
            return p.base_lr * p.gamma ** passed
        return p.base_lr

    def snapshot(self, solver):
        """Write, check and move into place the snapshot of the current iteration; its solverstate."""
        try:
            check_free_space(self.out_dir, snapshot_bytes(solver.net, self.base.type),
                             f"the snapshot at iteration {solver.iter}")
        except DiskError as err:
            raise DiskError(err.errno, f"{err}; stopped before writing it. The last complete snapshot: "
                                       f"{self.last_state or 'none'}") from None
        solver.snapshot()
        _, state = commit(self.staged_prefix, self.base.snapshot_prefix, solver.iter, solver.net)
        save_npy_atomic(self.out_dir / f"driver_iter_{solver.iter}.npy",
                        np.array([self.dropper.best, self.dropper.bad, self.dropper.drops], dtype=np.float64))
        self.snapshot_iter, self.last_state = solver.iter, state
        return state

    # -- the loop ----------------------------------------------------------------------
    def run(self):
        """Train (one run per output directory at a time: virality.outputs.OutputLock)."""
        with OutputLock(self.out_dir):
            prepare_staging(self.staged_prefix)
            return self._run()

    def _run(self):
        cfg = self.cfg
        if cfg.gpu is not None:
            caffe.set_device(cfg.gpu)
            caffe.set_mode_gpu()
        else:
            caffe.set_mode_cpu()
        if self.parallel is not None:
            self.parallel.join()           # caffe.set_solver_count/rank before any solver exists
        caffe.set_random_seed(cfg.seed)
        np.random.seed(cfg.seed)

        restore = restore_from = None
        if cfg.resume:
            restore = Path(cfg.resume)
            restore_from, copied = restorable(restore, self.staged_prefix.parent)
            if copied:
                self.log(f"train: {restore} names weights that are gone (a moved run); restoring with "
                         f"{restore.with_suffix('.caffemodel')} beside it")
            driver_state = restore.with_name(restore.name.replace(
                Path(self.base.snapshot_prefix).name + "_iter_", "driver_iter_")).with_suffix(".npy")
            if driver_state.exists():
                best, bad, drops = np.load(driver_state)
                self.dropper.load(dict(best=float(best), bad=int(bad), drops=int(drops)))
        if cfg.weights and not restore and self.parallel is not None:
            self.parallel.weights = cfg.weights     # copied before the broadcast to the other ranks
        solver = self._make_solver(self.dropper.drops, restore_from)
        if restore_from is not None and restore_from != restore:
            restore_from.unlink()
        if cfg.weights and not restore and self.parallel is None:
            for w in cfg.weights:
                solver.net.copy_from(str(w))
        start = solver.iter
        if start:
            seek_python_feeds(start * max(1, self.base.iter_size))
            if any(layer.type == "Data" for layer in self.net_param.layer):
                self.log("train: note: resuming a net fed by Caffe's Data layer (pair LMDB) is not "
                         "bit-identical: its cursor and crop/mirror RNG are not in the solverstate. "
                         "Use --feed pair_index nets for exact resume (docs/TRAINING.md).")
        max_iter = self.base.max_iter
        iter_size = max(1, self.base.iter_size)
        per_iter = pairs_per_iteration(solver.net, iter_size) * (self.parallel.world if self.parallel else 1)
        csv_log = CsvLog(self.out_dir / "train_log.csv", append=bool(restore))
        self.log(f"train: {max_iter - start} iterations from {start}, {per_iter} records/iteration, "
                 f"validation every {self.val_interval} on {self.num_test} validation (D_val) records, "
                 f"lr drops: {cfg.lr_drops}, out: {self.out_dir}")
        last_good = restore
        self.snapshot_iter, self.last_state = (start, restore) if restore else (None, None)
        t0 = time.time()
        window_losses, window_acc, window_t = [], [], time.time()
        stop = StopRequests()
        try:
            stop.__enter__()
            while solver.iter < max_iter:
                it = solver.iter
                caffe.set_random_seed(iteration_seed(cfg.seed, it))
                if self.parallel is not None:
                    self.parallel.before_step(it)
                solver.step(1)
                loss = float(np.asarray(solver.net.blobs["loss"].data).ravel()[0])
                if not math.isfinite(loss):
                    raise NonFiniteLoss(
                        f"non-finite loss ({loss}) at iteration {it}; stopped. Last good snapshot: "
                        f"{last_good or 'none (no snapshot yet)'}. Lower base_lr or check the data.")
                window_losses.append(loss)
                if "accuracy" in solver.net.blobs:
                    window_acc.append(float(np.asarray(solver.net.blobs["accuracy"].data).ravel()[0]))
                done = solver.iter
                val_acc = None
                if done % self.val_interval == 0 or done == max_iter:
                    # Caffe shares the trained weights with a test net only inside Solver::Test;
                    # the driver runs the test net itself, so it shares them first.
                    solver.test_nets[0].share_with(solver.net)
                    val_acc = validate(solver.test_nets[0], self.num_test)
                if done % self.display == 0 or val_acc is not None or done == max_iter:
                    now = time.time()
                    rate = len(window_losses) * per_iter / max(now - window_t, 1e-9)
                    eta = (max_iter - done) * per_iter / rate if rate > 0 else float("nan")
                    lr = self.current_lr(solver)
                    row = dict(iteration=done, loss=np.mean(window_losses),
                               train_accuracy=np.mean(window_acc) if window_acc else "",
                               val_accuracy="" if val_acc is None else val_acc, lr=lr,
                               pairs_per_s=rate, elapsed_s=now - t0)
                    csv_log.write(**row)
                    msg = (f"iter {done}/{max_iter} loss {row['loss']:.4f} lr {lr:g} "
                           f"{rate:.1f} records/s ETA {eta:.0f}s")
                    if val_acc is not None:
                        msg += f" val_accuracy {val_acc:.4f}"
                    self.log(msg)
                    if self.progress:
                        self.progress(done, max_iter)
                    window_losses, window_acc, window_t = [], [], now
                if val_acc is not None and cfg.lr_drops == "plateau" and self.dropper.update(val_acc):
                    state = self.snapshot(solver)
                    last_good = state
                    self.log(f"validation stopped improving (best {self.dropper.best:.4f}): "
                             f"learning-rate drop {self.dropper.drops}/{MAX_LR_DROPS}")
                    close_python_feeds()
                    solver = None
                    gc.collect()
                    solver = self._make_solver(self.dropper.drops, restore=state)
                    seek_python_feeds(solver.iter * iter_size)
                snap = self.base.snapshot
                if snap and done % snap == 0 and done != max_iter:
                    last_good = self.snapshot(solver)
                if stop.signum is not None and done != max_iter:
                    if self.snapshot_iter != done:
                        last_good = self.snapshot(solver)
                    raise Interrupted(stop.signum, done, last_good)
            if self.snapshot_iter != solver.iter:
                last_good = self.snapshot(solver)
        finally:
            if self.parallel is not None:
                self.parallel.finish()
            stop.__exit__()
            csv_log.close()
            # Free Caffe (and its Python layers) now, while the interpreter is whole: a solver
            # kept alive by an exception's traceback until shutdown crashes in its destructor.
            solver = None
            gc.collect()
        self.log(f"train: done; final snapshot {last_good}")
        return last_good
