"""Data-parallel training on several GPUs of one machine through Caffe's NCCL (tools/train.py --gpus).

Caffe's PythonLayer refuses the CLI's multi-GPU mode (python_layer.hpp: "use train.py"), so, as
BVLC's python/train.py does, there is one solver process per GPU, each calling
``caffe.set_solver_count(N)``, ``caffe.set_solver_rank(r)`` and ``caffe.set_multiprocess(True)``
before building its solver, then ``caffe.NCCL(solver, uid)``: ``bcast()`` copies rank 0's weights
to every rank, and the NCCL object, added as the solver's callback (and after each layer's
backward when ``layer_wise_reduce``), all-reduces the gradients and scales them by 1/N before
every update (Caffe's NCCL<Dtype>::on_gradients_ready). Each rank's pair-index feed reads its own
share of every global batch of N x batch_size pairs (python_layers.pair_data reads
``caffe.solver_rank()``), so N ranks train exactly as one solver with the global batch would;
the effective batch is said in the log (docs/GPU.md).

Roles:
- rank 0 (the leader) is the ordinary ``virality.train.training.Trainer`` in the launching process: it
  validates (only Caffe's root solver has test nets), logs, snapshots, drops the learning rate
  and handles SIGINT/SIGTERM. Through ``Trainer.parallel`` (:class:`Leader`) it tells the other
  ranks, over one pipe each, what to do before every step: ``build`` (a solver from the
  effective solver file, restored from a solverstate, with a fresh NCCL id: at the start and
  after each plateau drop), ``step`` or ``stop``.
- ranks 1..N-1 (:func:`follower_main`, spawned processes: a fresh interpreter never inherits a
  CUDA context) do exactly that, seeking their feeds to the solver's iteration after every build
  (exact resume), and send back a traceback if they fail. They ignore SIGINT/SIGTERM (the
  leader stops them at an iteration boundary, after its snapshot) and exit if the leader is gone.

``backend="cpu"`` replaces NCCL by :class:`CpuAllReduce` (shared memory and a barrier, CPU mode):
the same launcher, sharding, rebuilds and resume, checkable on a machine without GPUs (tests).
"""
import multiprocessing as mp
import os
import signal
import threading
import time
import traceback
from dataclasses import replace

import numpy as np

#: seconds a follower waits for the leader's next command before checking that it is alive
POLL_S = 1.0


class MultiGpuError(RuntimeError):
    """A rank failed, or multi-GPU training cannot run here; the message says which and why."""


def parse_gpus(text):
    """'0,1,3' -> [0, 1, 3]; distinct non-negative ids."""
    try:
        gpus = [int(x) for x in text.split(",") if x.strip() != ""]
    except ValueError:
        raise MultiGpuError(f"--gpus {text!r}: expected comma-separated GPU ids, e.g. 0,1") from None
    if not gpus or any(g < 0 for g in gpus) or len(set(gpus)) != len(gpus):
        raise MultiGpuError(f"--gpus {text!r}: expected distinct non-negative GPU ids, e.g. 0,1")
    return gpus


def engine_has_nccl():
    """Whether this Caffe was built with NCCL (USE_NCCL): without it, caffe.NCCL aborts the process."""
    import importlib.util
    from pathlib import Path
    spec = importlib.util.find_spec("caffe")       # found, not imported: glog is configured before Caffe loads
    if spec is None or spec.origin is None:
        return False
    lib = Path(spec.origin).resolve().parents[4] / "lib"     # <engine>/lib/python3/dist-packages/caffe
    return any(b"libnccl.so" in f.read_bytes() for f in lib.glob("libcaffe.so*") if f.is_file())


def check_gpus(gpus, caffe=None, timeout=60):
    """Ask Caffe's own ``device_query`` about every GPU first, in a child process each.

    Without it a machine with no usable GPU (no device, no driver, a driver older than the
    engine's CUDA runtime) aborts the training process at CUDA's first call (a glog CHECK,
    SIGABRT) instead of saying why. Raises MultiGpuError naming the GPU and Caffe's reason."""
    import subprocess
    from virality.paths import ROOT
    caffe = str(caffe or ROOT / ".venv" / "bin" / "caffe")
    for gpu in gpus:
        try:
            r = subprocess.run([caffe, "device_query", "-gpu", str(gpu)], capture_output=True, text=True,
                               timeout=timeout)
        except OSError as err:
            raise MultiGpuError(f"cannot run {caffe} device_query to check GPU {gpu}: {err} (make env)") from None
        except subprocess.TimeoutExpired:
            raise MultiGpuError(f"GPU {gpu}: `caffe device_query -gpu {gpu}` did not answer in {timeout} s") from None
        if r.returncode != 0:
            lines = [l.strip() for l in (r.stderr + r.stdout).splitlines() if l.strip()]
            reason = next((l for l in reversed(lines) if "Check failed" in l or "error" in l.lower()),
                          lines[-1] if lines else f"exit status {r.returncode}")
            raise MultiGpuError(f"GPU {gpu} is not usable here (`caffe device_query -gpu {gpu}` exited "
                                f"{r.returncode}): {reason}")


# -- the CPU stand-in for NCCL -------------------------------------------------------------------
class CpuAllReduce:
    """NCCL's two operations for CPU-mode ranks: broadcast rank 0's weights, average the gradients."""

    def __init__(self, ctx, world, floats):
        self.world, self.floats = world, floats
        self.buf = ctx.RawArray("f", world * floats)
        self.barrier = ctx.Barrier(world, timeout=120)   # a rank that died breaks it: BrokenBarrierError
        self.rank = 0

    def _params(self, solver):
        return [b for layer in solver.net.params.values() for b in layer]

    def attach(self, solver, rank):
        self.rank = rank
        params, seen, self._blobs = self._params(solver), set(), []
        for b in params:                     # shared parameters (the Siamese towers) appear twice: once is enough
            key = b.data.__array_interface__["data"][0]
            if key not in seen:
                seen.add(key)
                self._blobs.append(b)
        n = sum(b.data.size for b in self._blobs)
        if n > self.floats:
            raise MultiGpuError(f"CpuAllReduce: {n} parameters do not fit in {self.floats}")
        self.n = n
        shared = np.frombuffer(self.buf, np.float32).reshape(self.world, self.floats)
        self.shared = shared
        if rank == 0:
            self._pack(shared[0], "data")
        self.barrier.wait()
        self._unpack(shared[0], "data")
        self.barrier.wait()
        solver.add_callback(lambda: None, self._on_gradients_ready)

    def _pack(self, row, field):
        o = 0
        for b in self._blobs:
            a = getattr(b, field).ravel()
            row[o:o + a.size] = a
            o += a.size

    def _unpack(self, row, field):
        o = 0
        for b in self._blobs:
            a = getattr(b, field)
            a[...] = row[o:o + a.size].reshape(a.shape)
            o += a.size

    def _on_gradients_ready(self):
        self._pack(self.shared[self.rank], "diff")
        self.barrier.wait()
        total = self.shared[:, :self.n].sum(axis=0, dtype=np.float64) / self.world
        self.barrier.wait()
        self._unpack(total.astype(np.float32), "diff")


def _nccl_attach(solver, uid):
    import caffe
    nccl = caffe.NCCL(solver, uid)
    nccl.bcast()
    solver.add_callback(nccl)
    if solver.param.layer_wise_reduce:
        solver.net.after_backward(nccl)
    return nccl


def _join(rank, world):
    import caffe
    caffe.set_solver_count(world)
    caffe.set_solver_rank(rank)
    caffe.set_multiprocess(True)


# -- rank 0 -------------------------------------------------------------------------------------
class Leader:
    """``Trainer.parallel`` for rank 0: starts and commands the other ranks."""

    def __init__(self, config, gpus, backend="nccl", log=print, cpu_floats=0):
        self.world, self.gpus, self.backend, self.log = len(gpus), list(gpus), backend, log
        self.weights, self._nccl = [], None
        ctx = mp.get_context("spawn")
        self.allreduce = CpuAllReduce(ctx, self.world, cpu_floats) if backend == "cpu" else None
        self._conns, self._procs = [], []
        for rank in range(1, self.world):
            mine, theirs = ctx.Pipe()
            cfg = replace(config, gpu=None if backend == "cpu" else gpus[rank])
            proc = ctx.Process(target=follower_main, name=f"solver-rank-{rank}", daemon=True,
                               args=(cfg, rank, self.world, backend, theirs, self.allreduce, os.getpid()))
            proc.start()
            theirs.close()
            self._conns.append(mine)
            self._procs.append(proc)

    def join(self):
        _join(0, self.world)

    def _send(self, message):
        self._check()
        for conn in self._conns:
            conn.send(message)

    def _check(self):
        for rank, (conn, proc) in enumerate(zip(self._conns, self._procs), 1):
            if conn.poll():
                kind, detail = conn.recv()
                self._abort()
                raise MultiGpuError(f"solver rank {rank} (GPU {self.gpus[rank]}) failed; its traceback:\n{detail}")
            if proc.exitcode is not None:
                self._abort()
                raise MultiGpuError(f"solver rank {rank} (GPU {self.gpus[rank]}) exited with code {proc.exitcode}")

    def attach(self, solver, solver_path, restore):
        import caffe
        for w in self.weights:           # copied once, into rank 0; the broadcast gives them to all
            solver.net.copy_from(str(w))
        self.weights = []
        uid = caffe.NCCL.new_uid() if self.backend == "nccl" else b""
        self._send(("build", str(solver_path), str(restore) if restore else None, uid))
        if self.backend == "cpu":
            try:
                self.allreduce.attach(solver, 0)
            except threading.BrokenBarrierError:
                self._check()
                raise MultiGpuError("CpuAllReduce: a rank did not reach the broadcast") from None
        else:
            self._nccl = _nccl_attach(solver, uid)
        batch = solver.net.blobs["label"].data.shape[0]
        self.log(f"train: data-parallel over {self.world} solvers ({self.backend}, GPUs "
                 f"{','.join(map(str, self.gpus))}): effective batch {self.world} x {batch} = "
                 f"{self.world * batch} pairs per iteration (each rank reads its own share)")

    def before_step(self, iteration):
        self._send(("step", iteration))

    def finish(self):
        """Stop the other ranks (after the last step or on an error) and check how they ended."""
        failures = []
        for rank, (conn, proc) in enumerate(zip(self._conns, self._procs), 1):
            try:
                conn.send(("stop",))
            except (BrokenPipeError, OSError):
                pass
            proc.join(timeout=60)
            if proc.exitcode is None:
                proc.kill()
                proc.join(timeout=5)
                failures.append(f"rank {rank} did not stop and was killed")
            elif proc.exitcode != 0:
                detail = conn.recv()[1] if conn.poll() else f"exit code {proc.exitcode}"
                failures.append(f"rank {rank}: {detail}")
        self._conns, self._procs = [], []
        if failures:
            raise MultiGpuError("solver ranks failed: " + "; ".join(failures))

    def _abort(self):
        for proc in self._procs:
            if proc.exitcode is None:
                proc.kill()
                proc.join(timeout=5)
        self._conns, self._procs = [], []


# -- ranks 1..N-1 -------------------------------------------------------------------------------
def follower_main(config, rank, world, backend, conn, allreduce, leader_pid):
    """A spawned solver process: build, step and stop as the leader says."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)     # the leader stops every rank after its snapshot
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        os.chdir(config.workdir)
        _follow(config, rank, world, backend, conn, allreduce, leader_pid)
    except BaseException:
        traceback.print_exc()
        try:
            conn.send(("error", traceback.format_exc()))
        finally:
            os._exit(1)


def _follow(config, rank, world, backend, conn, allreduce, leader_pid):
    import gc

    import caffe
    from virality.train.training import close_python_feeds, iteration_seed, read_solver, seek_python_feeds

    if config.gpu is not None:
        caffe.set_device(config.gpu)
        caffe.set_mode_gpu()
    else:
        caffe.set_mode_cpu()
    _join(rank, world)
    solver = nccl = None
    while True:
        while not conn.poll(POLL_S):
            if os.getppid() != leader_pid:
                raise MultiGpuError(f"rank {rank}: the leader (pid {leader_pid}) is gone")
        message = conn.recv()
        if message[0] == "stop":
            break
        if message[0] == "build":
            _, solver_path, restore, uid = message
            close_python_feeds()
            solver = nccl = None
            gc.collect()
            solver = caffe.get_solver(solver_path)
            if restore:
                solver.restore(restore)
            iter_size = max(1, read_solver(solver_path).iter_size)
            if solver.iter:
                seek_python_feeds(solver.iter * iter_size)
            if backend == "cpu":
                allreduce.attach(solver, rank)
            else:
                nccl = _nccl_attach(solver, uid)
        elif message[0] == "step":
            caffe.set_random_seed(iteration_seed(config.seed, message[1], rank))
            solver.step(1)
    close_python_feeds()
    solver = nccl = None
    gc.collect()
