#!/usr/bin/env python3
"""Does the pair-index feed keep up with a GPU step? Thread vs worker processes.

    .venv/bin/python bench/feed_workers.py [--quick] [--pairs 64] [--crop 227] [--step-ms 81 ...]
                                           [--workers 1 2 3] [--iters 20]

`make bench` runs it (bench/run.py section `gpufeed`, in a child process) and BENCHMARKS.md shows
its table; run alone it prints the same rows.

A GPU step, as pycaffe runs it, holds the GIL (Boost.Python does not release it) while the CPU
mostly waits for the GPU. The step is stood in for by libc ``usleep`` called through
``ctypes.PyDLL``, which keeps the GIL and leaves the cores idle: exactly what a feed thread
competes with. For each step time and feed mode, the loop is ``get a batch; copy it into the
net's blobs' stand-in arrays; step``; it reports the iteration time, the time the step waited
for the feed, the copy, and the pairs/s the feed delivered (pairs per batch over the median
iteration). Step 0 is the feed alone. Medians over the timed iterations, after 3 warm-up
batches (workers started, queue full). Last stdout line: a JSON object.

Step times to compare (published, Titan X Maxwell, soumith/convnet-benchmarks, AlexNet
"one weird trick" variant, forward + backward, 128 images): cuDNN-class 81 ms, Caffe's own
kernels 324 ms. An AlexNet-PVCNN step of 64 pairs is two towers of 64 images: 128 images, so
a Titan X consumes about 64 / 0.081 = 790 pairs/s with cuDNN and 200 pairs/s without.
The image store: synthetic 500 x 375 JPEGs stored at 256 px (as bench/feeds.py), in memory.
"""
import argparse
import ctypes
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import numpy as np  # noqa: E402

import feeds  # noqa: E402  (bench/feeds.py: the synthetic JPEGs)
from virality.data.imagestore import build_image_store  # noqa: E402
from virality.data.pair_batches import ImageSource, PairBatcher, Prefetcher  # noqa: E402
from virality.data.pair_workers import WorkerFeed  # noqa: E402

_LIBC = ctypes.PyDLL(None)          # PyDLL: the call keeps the GIL, as a pycaffe step does

#: Published AlexNet forward + backward, 128 images, Titan X Maxwell (soumith/convnet-benchmarks):
#: the size of an AlexNet-PVCNN step of 64 pairs (two towers of 64 images).
PUBLISHED_STEP_MS = {"TITAN X, cuDNN-class": 81.0, "TITAN X, Caffe's own kernels": 324.0}


def gil_step(ms):
    if ms > 0:
        _LIBC.usleep(ctypes.c_uint(int(ms * 1000)))


def make_feed(store, pairs, mode, batch, crop):
    batcher = PairBatcher(pairs.copy(), ImageSource(store, cache_mb=4096), batch, crop, mean=(104.0, 117.0, 123.0),
                          mirror=True, random_crop=True, shuffle=True, seed=1)
    if mode == 0:
        return Prefetcher(batcher.next_batch, depth=3)
    return WorkerFeed(batcher, workers=mode, depth=max(3, mode + 1))


def measure(store, pairs, mode, batch, crop, step_ms, iters):
    feed = make_feed(store, pairs, mode, batch, crop)
    blobs = [np.empty((batch, 3, crop, crop), np.float32) for _ in range(2)] + [np.empty(batch, np.float32)]
    waits, copies, totals = [], [], []
    try:
        for _ in range(3):                      # warm up: workers started, queue full
            feed.get()
        for _ in range(iters):
            a = time.perf_counter()
            out = feed.get()
            b = time.perf_counter()
            for dst, src in zip(blobs, out):    # the layer's top[i].data[...] = ...
                dst[...] = src
            c = time.perf_counter()
            gil_step(step_ms)
            waits.append(b - a)
            copies.append(c - b)
            totals.append(time.perf_counter() - a)
    finally:
        feed.close()
    iteration = statistics.median(totals)
    return {"mode": "thread" if mode == 0 else f"workers={mode}", "workers": mode, "step_ms": step_ms,
            "iters": iters, "iteration_ms": 1000 * iteration, "wait_ms": 1000 * statistics.median(waits),
            "copy_ms": 1000 * statistics.median(copies), "pairs_per_s": batch / iteration}


def measure_all(pairs_per_batch, crop, images, step_ms, workers, iters, log=print):
    """Every (step time, feed mode) row on one synthetic store: a dict for the report."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        items = feeds._jpegs(tmp / "jpg", images, np.random.default_rng(0))
        build_image_store(items, tmp / "store", 256, progress=False)
        rng = np.random.default_rng(1)
        ids = rng.integers(0, images, (20000, 2))
        pairs = np.column_stack([ids, rng.choice([-1, 1], len(ids))]).astype(np.int32)
        for ms in step_ms:
            for mode in [0, *workers]:
                row = measure(tmp / "store", pairs, mode, pairs_per_batch, crop, ms, iters)
                rows.append(row)
                log(f"step {ms:6.1f} ms  {row['mode']:10s}  iteration {row['iteration_ms']:7.1f} ms  "
                    f"waited {row['wait_ms']:6.1f} ms  copy {row['copy_ms']:5.1f} ms  "
                    f"{row['pairs_per_s']:7.0f} pairs/s")
    return {"pairs": pairs_per_batch, "crop": crop, "images": images, "cores": os.cpu_count(),
            "published_step_ms": dict(PUBLISHED_STEP_MS), "rows": rows}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer iterations and workers (as `make bench QUICK=1`)")
    p.add_argument("--pairs", type=int, default=64, help="pairs per batch (default 64)")
    p.add_argument("--crop", type=int, default=227)
    p.add_argument("--images", type=int, default=200, help="images in the synthetic store")
    p.add_argument("--step-ms", type=float, nargs="+", default=[0.0, *PUBLISHED_STEP_MS.values()],
                   help="stand-in step times, ms (default: 0, and the published TITAN X steps)")
    p.add_argument("--workers", type=int, nargs="+", default=None, help="worker counts (default 1 2 3; 1 2 --quick)")
    p.add_argument("--iters", type=int, default=None, help="timed iterations per row (default 20; 8 --quick)")
    args = p.parse_args()
    workers = args.workers or ([1, 2] if args.quick else [1, 2, 3])
    iters = args.iters or (8 if args.quick else 20)
    res = measure_all(args.pairs, args.crop, args.images, args.step_ms, workers, iters,
                      log=lambda msg: print(msg, file=sys.stderr, flush=True))
    res["cpu"] = platform.processor() or platform.machine()
    print(json.dumps(res))


if __name__ == "__main__":
    main()
