"""The worker-process pair feed (virality/data/pair_workers.py) and data-parallel sharding of batches.

Reference batches come from PairBatcher.next_batch in the main process (itself checked against
hand-computed crops in test_pair_feeds.py); the worker feed must equal it batch for batch.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

import caffe
from virality.data.imagestore import build_image_store
from virality.data.pair_batches import ImageSource, PairBatcher
from virality.data.pair_workers import WorkerError, WorkerFeed
from virality.paths import ROOT

SIZE, CROP = 16, 12


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    d = tmp_path_factory.mktemp("workers")
    rng = np.random.default_rng(5)
    items = []
    for i in range(30):
        path = d / f"{i}.png"
        cv2.imwrite(str(path), rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))
        items.append((100 + i, path))
    build_image_store(items, d / "store", SIZE, progress=False)
    rng = np.random.default_rng(6)
    ids = 100 + rng.integers(0, 30, (23, 2))
    pairs = np.column_stack([ids, rng.choice([-1, 1], 23)]).astype(np.int32)
    np.save(d / "pairs.npy", pairs)
    return d


def _batcher(store, cache_mb=64, **kw):
    pairs = np.load(store / "pairs.npy")
    opts = dict(batch_size=5, crop_size=CROP, mean=(100.0, 110.0, 120.0), scale=0.5, mirror=True,
                random_crop=True, shuffle=True, seed=3)
    opts.update(kw)
    return PairBatcher(pairs, ImageSource(store / "store", cache_mb=cache_mb), **opts)


def _reference(store, n, **kw):
    b = _batcher(store, **kw)
    return [b.next_batch() for _ in range(n)]


def _take(feed, n):
    return [tuple(a.copy() for a in feed.get()) for _ in range(n)]


def _assert_same(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        for a, b in zip(g, w):
            np.testing.assert_array_equal(a, b)


def _gone(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    with open(f"/proc/{pid}/stat") as f:     # a zombie is gone too (not yet reaped by its parent)
        return f.read().split()[2] == "Z"


@pytest.mark.parametrize("cache_mb", [64, 0], ids=["in_memory", "from_lmdb"])
def test_worker_feed_equals_the_thread_feed_batch_for_batch_over_epochs(store, cache_mb):
    want = _reference(store, 12, cache_mb=cache_mb)          # 60 rows: 2.6 epochs of 23, reshuffled
    feed = WorkerFeed(_batcher(store, cache_mb=cache_mb), workers=3, depth=4)
    try:
        _assert_same(_take(feed, 12), want)
    finally:
        feed.close()


def test_test_phase_order_is_the_file_order(store):
    pairs = np.load(store / "pairs.npy")
    feed = WorkerFeed(_batcher(store, mirror=False, random_crop=False, shuffle=False), workers=2)
    try:
        labels = np.concatenate([feed.get()[2].copy() for _ in range(6)])      # 30 rows: wraps after 23
    finally:
        feed.close()
    np.testing.assert_array_equal(labels, np.concatenate([pairs[:, 2], pairs[:7, 2]]).astype(np.float32))


def test_worker_feed_is_deterministic_per_seed(store):
    feeds = [WorkerFeed(_batcher(store, seed=s), workers=2) for s in (3, 3, 4)]
    try:
        a, b, c = (_take(f, 4) for f in feeds)
    finally:
        for f in feeds:
            f.close()
    _assert_same(a, b)
    assert not all(np.array_equal(x[0], y[0]) for x, y in zip(a, c))


def test_seek_resumes_exactly(store):
    want = _reference(store, 11)
    batcher = _batcher(store)
    batcher.seek(7, np.load(store / "pairs.npy"))
    feed = WorkerFeed(batcher, workers=2)
    try:
        _assert_same(_take(feed, 4), want[7:])
    finally:
        feed.close()


def test_close_stops_every_worker_and_leaves_no_shared_memory(store):
    shm_before = set(os.listdir("/dev/shm"))
    feed = WorkerFeed(_batcher(store), workers=3)
    feed.get()
    pids = feed.pids
    assert all(not _gone(p) for p in pids)
    feed.close()
    feed.close()                                   # idempotent
    assert all(_gone(p) for p in pids)
    assert set(os.listdir("/dev/shm")) <= shm_before
    with pytest.raises(WorkerError, match="closed"):
        feed.get()


class _BrokenSource:
    """Fails on the third fetch of a worker (a damaged record, say)."""

    def __init__(self, source):
        self.source, self.size, self.calls = source, source.size, 0

    def after_fork(self):
        return self

    def fetch(self, ids):
        self.calls += 1
        if self.calls == 3:
            raise ValueError("record 4242 is damaged")
        return self.source.fetch(ids)


def test_an_error_in_a_worker_reaches_the_main_process_with_its_traceback(store):
    batcher = _batcher(store)
    batcher.source = _BrokenSource(batcher.source)
    feed = WorkerFeed(batcher, workers=1, depth=2)
    pids = feed.pids
    with pytest.raises(WorkerError) as info:
        for _ in range(5):
            feed.get()
    text = str(info.value)
    assert "batch 2" in text and "record 4242 is damaged" in text and "in fetch" in text and "Traceback" in text
    assert all(_gone(p) for p in pids)             # the feed closed itself


def test_a_killed_worker_is_named_with_its_exit_code(store):
    feed = WorkerFeed(_batcher(store), workers=1, depth=2)
    feed.get()
    os.kill(feed.pids[0], signal.SIGKILL)
    time.sleep(0.2)
    with pytest.raises(WorkerError, match=r"pair-worker-0 .*exit code -9"):
        for _ in range(5):
            feed.get()


def test_workers_exit_when_the_main_process_is_gone(store, tmp_path):
    # A child process makes a feed and is SIGKILLed: its workers must notice and exit.
    pid_file = tmp_path / "pids.json"
    child = os.fork()
    if child == 0:
        try:
            feed = WorkerFeed(_batcher(store), workers=2)
            feed.get()
            pid_file.write_text(json.dumps(feed.pids))
            time.sleep(60)
        finally:
            os._exit(0)
    for _ in range(200):
        if pid_file.exists() and pid_file.read_text():
            break
        time.sleep(0.05)
    pids = json.loads(pid_file.read_text())
    os.kill(child, signal.SIGKILL)
    os.waitpid(child, 0)
    deadline = time.time() + 10
    while time.time() < deadline and not all(_gone(p) for p in pids):
        time.sleep(0.1)
    left = [p for p in pids if not _gone(p)]
    for p in left:                                  # never leave orphans behind a failing test
        os.kill(p, signal.SIGKILL)
    assert not left


@pytest.mark.parametrize("end, codes", [("pass", "0 0"), ("feed.close()", "0 0"),
                                        ("[p.terminate() for p in feed._procs]; feed.close()", "-15 -15")],
                         ids=["left_open", "closed", "terminated"])
def test_a_process_that_loaded_caffe_ends_quietly_with_its_workers(store, tmp_path, end, codes):
    """pycaffe installs glog's failure signal handler (SIGTERM included) and the workers inherit it
    by fork: at exit, multiprocessing's own handler must not reach them first and SIGTERM them (each
    printed "*** SIGTERM received ... stack trace" at the end of every GPU-style training run), and a
    worker that is SIGTERMed all the same just ends (exit code -15), without glog's stack trace."""
    script = tmp_path / "feed_then_exit.py"
    script.write_text(f"""
import atexit, sys, numpy as np
procs = []                                     # registered first, so run last: after every exit handler
atexit.register(lambda: print("exitcodes", *[p.exitcode for p in procs], flush=True))
sys.path[:0] = [{str(ROOT)!r}, {str(Path(__file__).parent)!r}]
import caffe
caffe.init_log()                               # glog's failure signal handler, as training has it
from test_pair_workers import _batcher
from pathlib import Path
from virality.data.pair_workers import WorkerFeed
feed = WorkerFeed(_batcher(Path({str(store)!r})), workers=2)
feed.get()
print("pids", *feed.pids, flush=True)
procs.extend(feed._procs)
{end}
""")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    assert out.returncode == 0, out.stderr[-3000:]
    assert "SIGTERM" not in out.stderr and "Aborted" not in out.stderr, out.stderr[-3000:]
    pids = [int(p) for p in out.stdout.split("pids", 1)[1].split("exitcodes")[0].split()]
    assert len(pids) == 2 and all(_gone(p) for p in pids)
    assert out.stdout.split("exitcodes", 1)[1].split() == codes.split()    # 0: asked to stop, not terminated


@pytest.mark.parametrize("world", [2, 3])
def test_ranks_read_disjoint_shares_that_make_up_the_global_batch(store, world):
    """Ranks 0..world-1 with batch b together produce exactly the batches of one solver with world x b,
    including the augmentation and across a seek (exact resume)."""
    b = 2
    whole = _reference(store, 8, batch_size=b * world)
    shards = [_batcher(store, batch_size=b, rank=r, world=world) for r in range(world)]
    for k in range(5):
        parts = [s.next_batch() for s in shards]
        for t in range(3):
            np.testing.assert_array_equal(np.concatenate([p[t] for p in parts]), whole[k][t])
    pairs = np.load(store / "pairs.npy")
    for r, s in enumerate(shards):
        s.seek(6, pairs)
        got = s.next_batch()
        np.testing.assert_array_equal(got[0], whole[6][0][r * b:(r + 1) * b])


def _net(tmp_path, params, name):
    path = tmp_path / f"{name}.prototxt"
    path.write_text(f"""name: "feed"
layer {{ name: "data" type: "Python" top: "data" top: "data_p" top: "label" include {{ phase: TRAIN }}
  python_param {{ module: "python_layers.pair_data" layer: "PairIndexData" param_str: '{json.dumps(params)}' }} }}
""")
    return caffe.Net(str(path), caffe.TRAIN)


def test_the_layer_with_workers_gives_the_thread_layers_batches_and_closes(store, tmp_path):
    from python_layers import pair_data

    params = dict(image_store=str(store / "store"), pairs=str(store / "pairs.npy"), batch_size=4,
                  crop_size=CROP, mirror=True, shuffle=True, seed=9)
    nets = [_net(tmp_path, dict(params, workers=w), f"w{w}") for w in (0, 2)]
    for _ in range(7):
        outs = []
        for net in nets:
            net.forward()
            outs.append([net.blobs[k].data.copy() for k in ("data", "data_p", "label")])
        for a, b in zip(*outs):
            np.testing.assert_array_equal(a, b)
    feed = nets[1].layers[0]
    pids = feed.prefetcher.pids
    assert pair_data.seek_all(3) >= 2
    assert all(_gone(p) for p in pids)              # seek replaced the workers
    pids = feed.prefetcher.pids
    pair_data.close_all()
    assert all(_gone(p) for p in pids)
    with pytest.raises(Exception, match="'workers' must be >= 0"):
        _net(tmp_path, dict(params, workers=-1), "bad")


def test_a_feed_closed_for_a_replaced_net_is_not_restarted_by_seek_all(store, tmp_path):
    """A plateau drop closes the feeds (close_all), builds the new solver, then seeks (seek_all): the
    replaced net's layer, still alive, must not get its workers back (nothing would ever close them)."""
    from python_layers import pair_data
    from virality.data import pair_workers

    pair_data.close_all()                                   # start from no live layer
    params = dict(image_store=str(store / "store"), pairs=str(store / "pairs.npy"), batch_size=4,
                  crop_size=CROP, shuffle=True, seed=9, workers=1)
    old = _net(tmp_path, params, "old")                     # the replaced solver's net, still referenced
    old_feed = old.layers[0].prefetcher
    pair_data.close_all()
    new = _net(tmp_path, params, "new")
    assert pair_data.seek_all(3) == 1                       # the new net's feed only
    assert old.layers[0].prefetcher is old_feed and old_feed._closed
    assert set(pair_workers._LIVE_FEEDS) == {new.layers[0].prefetcher}
    pair_data.close_all()
    assert not pair_workers._LIVE_FEEDS


def test_the_layer_shards_by_caffe_solver_rank(store, tmp_path):
    params = dict(image_store=str(store / "store"), pairs=str(store / "pairs.npy"), batch_size=3,
                  crop_size=CROP, mirror=True, shuffle=True, seed=9)
    whole = _net(tmp_path, dict(params, batch_size=6), "whole")
    whole.forward()
    try:
        caffe.set_multiprocess(True)      # one solver per process, as tools/train.py --gpus runs them
        caffe.set_solver_count(2)
        parts = []
        for r in range(2):
            caffe.set_solver_rank(r)
            net = _net(tmp_path, params, f"rank{r}")
            net.forward()
            parts.append(net.blobs["data"].data.copy())
    finally:
        caffe.set_solver_count(1)
        caffe.set_solver_rank(0)
        caffe.set_multiprocess(False)
    np.testing.assert_array_equal(np.concatenate(parts), whole.blobs["data"].data)
