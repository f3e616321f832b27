"""Training snapshots that are complete or absent, found without trusting a damaged one, and
resumable from wherever the run directory has moved (docs/FAILURES.md).

Caffe writes ``<prefix>_iter_N.caffemodel`` and then ``<prefix>_iter_N.solverstate``
straight under their final names; a full disk or a kill in between leaves a
truncated file there. The training driver (virality.train.training) therefore points
Caffe at a staging prefix in ``<out>/.snapshot-partial/`` and calls
:func:`commit` afterwards, which checks the caffemodel against the net and the
solverstate's wire format, then renames them into place (caffemodel first, so
a solverstate under its final name always has its weights).

A solverstate names its caffemodel by absolute path (field ``learned_net``),
which breaks when the run directory moves. ``commit`` appends a new
``learned_net`` naming the final path (protobuf keeps the last value of a
singular field, so no copy of the optimiser history is needed), and
:func:`restorable` makes a copy naming the caffemodel beside the solverstate
when the recorded one is gone.
"""
import mmap
import os
import re
import shutil
from pathlib import Path

from virality.pretrained.caffemodel import CaffeModelError, _enc_varint, _fields, read_caffemodel

STAGING_DIR = ".snapshot-partial"
#: SolverState fields (caffe.proto): iter = 1, learned_net = 2, history = 3, current_step = 4.
_ITER, _LEARNED_NET, _HISTORY = 1, 2, 3


class SnapshotError(RuntimeError):
    """A snapshot that is incomplete or does not fit its net; the message names the file."""


def check_caffemodel(path, net=None):
    """Raise SnapshotError unless ``path`` parses to the end (and, given a pycaffe ``net``, holds
    every parameter blob of it in the right size)."""
    try:
        model = read_caffemodel(path)
    except CaffeModelError as err:
        raise SnapshotError(f"incomplete or damaged snapshot: {err}") from None
    if net is not None:
        layers = model.by_name()
        for name, blobs in net.params.items():
            stored = layers.get(name)
            sizes = [b.data.size for b in blobs]
            if stored is None or [b.data.size for b in stored.blobs] != sizes:
                raise SnapshotError(f"{path}: layer {name} is missing or has other blob sizes than the net "
                                    f"({sizes}); the snapshot is incomplete")
    return model


def read_solverstate(path):
    """{iter, learned_net (the last one), history (count)} of a binary solverstate, checking its wire format."""
    path = Path(path)
    out = dict(iter=None, learned_net=None, history=0)
    try:
        size = path.stat().st_size
        if size == 0:
            raise ValueError("the file is empty")
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            for number, wire, value, start, stop in _fields(data, 0, size):
                if number == _ITER and wire == 0:
                    out["iter"] = value
                elif number == _LEARNED_NET and wire == 2:
                    out["learned_net"] = data[start:stop].decode("utf-8")
                elif number == _HISTORY and wire == 2:
                    out["history"] += 1
    except (OSError, ValueError, UnicodeDecodeError) as err:
        raise SnapshotError(f"{path}: incomplete or damaged solverstate ({err})") from None
    return out


def _learned_net_field(caffemodel):
    name = str(caffemodel).encode("utf-8")
    return bytes([_LEARNED_NET << 3 | 2]) + _enc_varint(len(name)) + name


def staging_prefix(final_prefix):
    """The prefix Caffe snapshots to: ``<dir>/.snapshot-partial/<name>``."""
    final_prefix = Path(final_prefix)
    return final_prefix.parent / STAGING_DIR / final_prefix.name


def prepare_staging(staged_prefix):
    """An empty staging directory (leftovers of a killed run or a full disk removed)."""
    staging = Path(staged_prefix).parent
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)


def commit(staged_prefix, final_prefix, iteration, net):
    """Check the snapshot Caffe wrote at ``staged_prefix`` and move it to ``final_prefix``.

    Returns the final (caffemodel, solverstate). Raises SnapshotError (and moves nothing)
    when a file is incomplete or does not fit ``net``."""
    staged_model = Path(f"{staged_prefix}_iter_{iteration}.caffemodel")
    staged_state = Path(f"{staged_prefix}_iter_{iteration}.solverstate")
    model = Path(f"{final_prefix}_iter_{iteration}.caffemodel")
    state = Path(f"{final_prefix}_iter_{iteration}.solverstate")
    check_caffemodel(staged_model, net)
    info = read_solverstate(staged_state)
    if info["iter"] != iteration or not info["history"]:
        raise SnapshotError(f"{staged_state}: iteration {info['iter']} and {info['history']} history blobs; "
                            f"expected iteration {iteration}: incomplete")
    os.replace(staged_model, model)
    with open(staged_state, "ab") as f:
        f.write(_learned_net_field(model.resolve()))
        f.flush()
        os.fsync(f.fileno())
    os.replace(staged_state, state)
    return model, state


def restorable(state, scratch_dir):
    """A solverstate Caffe can restore from: ``state`` itself when the caffemodel it names exists,
    else a copy in ``scratch_dir`` naming ``<same stem>.caffemodel`` beside it (a moved run).
    Returns (path, is_copy)."""
    state = Path(state)
    info = read_solverstate(state)
    if info["learned_net"] and Path(info["learned_net"]).is_file():
        return state, False
    beside = state.with_suffix(".caffemodel")
    if not beside.is_file():
        raise SnapshotError(f"{state}: its weights {info['learned_net']} are gone and there is no {beside.name} "
                            "beside it; copy the caffemodel of the same iteration next to the solverstate")
    check_caffemodel(beside)
    Path(scratch_dir).mkdir(parents=True, exist_ok=True)
    copy = Path(scratch_dir) / f".resume-{os.getpid()}-{state.name}"
    shutil.copyfile(state, copy)
    with open(copy, "ab") as f:
        f.write(_learned_net_field(beside.resolve()))
    return copy, True


def latest_snapshot(model_dir, prefix, log=None):
    """The complete caffemodel with the highest iteration number (by name, never by mtime).

    An incomplete one (truncated by a full disk or a kill: it does not parse to its end)
    is passed over, and named through ``log`` when given."""
    found = []
    for path in Path(model_dir).glob(f"{prefix}_iter_*.caffemodel"):
        m = re.fullmatch(rf"{re.escape(prefix)}_iter_(\d+)\.caffemodel", path.name)
        if m:
            found.append((int(m.group(1)), path))
    skipped = []
    for _, path in sorted(found, reverse=True):
        try:
            check_caffemodel(path)
        except SnapshotError as err:
            skipped.append(str(err))
            if log:
                log(f"skipping {err}")
            continue
        return path
    raise FileNotFoundError(f"no complete {prefix}_iter_*.caffemodel in {model_dir}"
                            + (f" ({len(skipped)} incomplete: {'; '.join(skipped)})" if skipped else "")
                            + f"; train first (make train MODEL={prefix})")
