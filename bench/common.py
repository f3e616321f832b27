"""Shared pieces of the benchmark harness: nets with Input layers, FLOP counts, stats.

Only the standard library and caffe_pb2 (protobuf text format) are needed here, so
the orchestrator (bench/run.py) can use it without loading an engine.
"""
import json
import os
import statistics
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"

#: Input side of each architecture's network (virality/model/architectures.py, Model Zoo crops).
CROP = {"alexnet": 227, "vgg19": 224, "tiny": 32}

#: Layer types that feed data: replaced by an Input layer for timing.
DATA_TYPES = {"Data", "ImageData", "HDF5Data", "DummyData", "MemoryData", "WindowData", "Input"}


def arch_of(model):
    return model.split("_")[0]


def _caffe_pb2():
    from caffe.proto import caffe_pb2  # noqa: the engine's generated protobuf module
    return caffe_pb2


def load_net_param(path):
    from google.protobuf import text_format
    net = _caffe_pb2().NetParameter()
    text_format.Merge(Path(path).read_text(), net)
    return net


def _is_train(layer):
    phases = [r.phase for r in layer.include if r.HasField("phase")]
    return not phases or 0 in phases      # caffe_pb2.TRAIN == 0


def _is_feed(layer):
    if layer.bottom:
        return False
    if layer.type in DATA_TYPES:
        return True
    # Python data layers (e.g. python_layers.pair_data.PairIndexData) have no bottoms.
    return layer.type == "Python"


def timing_train_net(model, pairs, src=None, feed="input"):
    """The TRAIN-phase net of ``model`` with its data layers replaced by one Input layer.

    The Input layer provides every blob the data layers provided (or that a Slice of
    them provided): image blobs as (pairs, 3, crop, crop), the label as (pairs,).
    Everything else (towers, shared weights, the Python ranking loss) is the
    generated net, unchanged. ``feed="dummy"`` uses a DummyData layer instead
    (Gaussian images, every label +1), for ``caffe time``, which cannot fill an
    Input layer (and the loss layer rejects labels other than +-1).
    """
    caffe_pb2 = _caffe_pb2()
    src = src or ROOT / "prototxt" / model / "train_val.prototxt"
    net = load_net_param(src)
    layers = [l for l in net.layer if _is_train(l)]
    feed_tops = set()
    kept = []
    for layer in layers:
        if _is_feed(layer):
            feed_tops.update(layer.top)
            continue
        if layer.type == "Slice" and all(b in feed_tops for b in layer.bottom):
            feed_tops.update(layer.top)
            continue
        kept.append(layer)
    produced = {t for l in kept for t in l.top if t not in l.bottom}
    needed = []
    for layer in kept:
        for b in layer.bottom:
            if b not in produced and b not in needed:
                needed.append(b)
    crop = CROP[arch_of(model)]
    out = caffe_pb2.NetParameter()
    out.name = net.name + "_timing"
    inp = out.layer.add()
    inp.name = "input"
    inp.type = "Input" if feed == "input" else "DummyData"
    for blob in needed:
        inp.top.append(blob)
        is_label = blob.startswith("label")
        dims = [pairs] if is_label else [pairs, 3, crop, crop]
        if feed == "input":
            inp.input_param.shape.add().dim.extend(dims)
        else:
            inp.dummy_data_param.shape.add().dim.extend(dims)
            filler = inp.dummy_data_param.data_filler.add()
            if is_label:
                filler.type, filler.value = "constant", 1.0
            else:
                filler.type, filler.std = "gaussian", 50.0
    for layer in kept:
        new = out.layer.add()
        new.CopyFrom(layer)
        del new.include[:]
    return out


def deploy_net_path(model):
    return ROOT / "prototxt" / model / "deploy.prototxt"


def write_text(path, message):
    from google.protobuf import text_format
    Path(path).write_text(text_format.MessageToString(message))
    return path


def solver_for(model, net_path, out_path):
    """The model's solver (solvers/<model>.prototxt) on ``net_path``, CPU, no tests or snapshots."""
    from google.protobuf import text_format
    caffe_pb2 = _caffe_pb2()
    s = caffe_pb2.SolverParameter()
    text_format.Merge((ROOT / "solvers" / f"{model}.prototxt").read_text(), s)
    for field in ("net", "train_net", "test_net", "test_iter", "test_interval", "snapshot",
                  "snapshot_prefix", "test_initialization", "display", "average_loss"):
        s.ClearField(field)
    s.net = str(net_path)
    s.solver_mode = caffe_pb2.SolverParameter.CPU
    s.max_iter = 10 ** 8
    s.display = 0
    s.snapshot = 0
    s.snapshot_prefix = "/tmp/virality-bench-snapshot"
    s.snapshot_after_train = False
    Path(out_path).write_text(text_format.MessageToString(s))
    return out_path


# ---- timing and statistics ----

def time_call(fn, min_time, repeats):
    """Seconds per call of ``fn()``: calibrated to ~min_time / 3 per batch of calls, best of ``repeats``."""
    fn()
    calls = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        dt = time.perf_counter() - t0
        if dt >= min_time / 3 or calls >= 4096:
            break
        calls *= 4
    best = [dt / calls]
    for _ in range(repeats - 1):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        best.append((time.perf_counter() - t0) / calls)
    return min(best)


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def has_cpu_patches(engine):
    """True when the engine directory carries patch 0004 (batched convolution, Caffe's CPU
    threads): its installed headers then include caffe/util/parallel.hpp."""
    return (Path(engine) / "include" / "caffe" / "util" / "parallel.hpp").exists()


# ---- child processes ----

def engine_env(engine, extra=None):
    """Environment that makes ``python -c 'import caffe'`` load ``engine``'s pycaffe."""
    env = dict(os.environ)
    pp = [str(Path(engine) / "lib" / "python3" / "dist-packages"), str(ROOT)]
    if env.get("PYTHONPATH"):
        pp.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(pp)
    env.setdefault("GLOG_minloglevel", "2")
    for k, v in (extra or {}).items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    return env


def run_json(cmd, env, timeout=1800):
    """Run a worker; its last stdout line is a JSON object."""
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n"
                           f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
    if not lines:
        raise RuntimeError(f"no JSON from {cmd}:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return json.loads(lines[-1])
