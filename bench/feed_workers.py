#!/usr/bin/env python3
"""Does the pair-index feed keep up with a GPU step? Thread vs worker processes.

    .venv/bin/python bench/feed_workers.py [--pairs 64] [--crop 227] [--step-ms 81 ...] [--workers 1 2 3]

A GPU step, as pycaffe runs it, holds the GIL (Boost.Python does not release it) while the CPU
mostly waits for the GPU. The step is stood in for by libc ``usleep`` called through
``ctypes.PyDLL``, which keeps the GIL and leaves the cores idle: exactly what a feed thread
competes with. For each step time and feed mode, the loop is ``get a batch; copy it into the
net's blobs' stand-in arrays; step``; it reports the iteration time, the time the step waited
for the feed (iteration - step - copy), and the pairs/s the feed delivered. ``feed alone`` is
the rate with no step at all. Last stdout line: a JSON object.

Step times to compare (published, Titan X Maxwell, soumith/convnet-benchmarks, AlexNet
"one weird trick" variant, forward + backward, 128 images): cuDNN-class 81 ms, Caffe's own
kernels 324 ms. An AlexNet-PVCNN step of 64 pairs is two towers of 64 images: 128 images, so
a Titan X consumes about 64 / 0.081 = 790 pairs/s with cuDNN and 200 pairs/s without.
The image store: synthetic 500 x 375 JPEGs stored at 256 px (as bench/feeds.py), in memory.
"""
import argparse
import ctypes
import json
import platform
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
    try:
        for _ in range(3):                      # warm up: workers started, queue full
            feed.get()
        t_copy = t_wait = 0.0
        t0 = time.perf_counter()
        for _ in range(iters):
            a = time.perf_counter()
            out = feed.get()
            b = time.perf_counter()
            for dst, src in zip(blobs, out):    # the layer's top[i].data[...] = ...
                dst[...] = src
            c = time.perf_counter()
            gil_step(step_ms)
            t_wait += b - a
            t_copy += c - b
        total = time.perf_counter() - t0
    finally:
        feed.close()
    return {"mode": "thread" if mode == 0 else f"workers={mode}", "step_ms": step_ms,
            "iteration_ms": 1000 * total / iters, "wait_ms": 1000 * t_wait / iters,
            "copy_ms": 1000 * t_copy / iters, "pairs_per_s": batch * iters / total}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", type=int, default=64, help="pairs per batch (default 64)")
    p.add_argument("--crop", type=int, default=227)
    p.add_argument("--images", type=int, default=200, help="images in the synthetic store")
    p.add_argument("--step-ms", type=float, nargs="+", default=[0.0, 81.0, 324.0])
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--iters", type=int, default=20)
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        items = feeds._jpegs(tmp / "jpg", args.images, np.random.default_rng(0))
        build_image_store(items, tmp / "store", 256, progress=False)
        rng = np.random.default_rng(1)
        ids = rng.integers(0, args.images, (20000, 2))
        pairs = np.column_stack([ids, rng.choice([-1, 1], len(ids))]).astype(np.int32)
        for step_ms in args.step_ms:
            for mode in [0, *args.workers]:
                row = measure(tmp / "store", pairs, mode, args.pairs, args.crop, step_ms, args.iters)
                rows.append(row)
                print(f"step {step_ms:6.1f} ms  {row['mode']:10s}  iteration {row['iteration_ms']:7.1f} ms  "
                      f"waited {row['wait_ms']:6.1f} ms  copy {row['copy_ms']:5.1f} ms  "
                      f"{row['pairs_per_s']:7.0f} pairs/s", flush=True)
    print(json.dumps({"bench": "feed_workers", "cpu": platform.processor() or platform.machine(),
                      "pairs": args.pairs, "crop": args.crop, "rows": rows}))


if __name__ == "__main__":
    main()
