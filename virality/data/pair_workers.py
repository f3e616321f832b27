"""Pair batches assembled in worker processes, into shared memory, delivered in order.

``WorkerFeed`` is the worker-process alternative to ``pair_batches.Prefetcher`` (a thread):
Caffe holds the GIL while it computes, so a thread assembles batches only while the layer
waits for it (25 ms per 64 pairs at 227 px, serial with the step). Worker processes have their
own interpreters, so assembly overlaps the step (docs/GPU.md has the decision and the numbers).

How it works:
- The main process keeps the order: it takes each batch's rows from the batcher
  (``PairBatcher.next_rows``: index arithmetic only) and hands (slot, batch index, rows) to the
  workers. ``PairBatcher.assemble`` is a pure function of (rows, batch index), so which worker
  assembles a batch, and when, changes nothing: order and augmentation are those of the thread
  feed, batch for batch (tested), and ``seek`` (exact resume) is the batcher's.
- Pixels go through shared memory: one anonymous shared mapping (``mmap(-1, ...)``, MAP_SHARED)
  with ``depth + 1`` slots of (data, data_p, label) float32, made before the workers are forked.
  It has no name in /dev/shm, so nothing can leak: the kernel frees it with the last process.
  ``get()`` returns views of a slot that stay valid until the next ``get()``.
- Workers are forked (not spawned): ``caffe train`` embeds Python, so ``sys.executable`` is not
  a Python to spawn, and forking shares the decoded image cache copy-on-write. A worker uses
  numpy and LMDB only (never Caffe, BLAS or CUDA), reopens the store when it is not in memory
  (LMDB handles do not survive fork), ignores SIGINT (the main process stops the feed), and exits
  when the main process is gone.
- An exception in a worker reaches the main process as ``WorkerError`` carrying the worker's
  traceback; a worker that dies (killed, out of memory) is named with its exit code. After an
  error the feed is closed; nothing is retried silently.
"""
import mmap
import atexit
import multiprocessing as mp
import multiprocessing.util  # noqa: F401  (its exit handler registered now, before ours: see below)
import os
import queue
import signal
import traceback
import weakref

import numpy as np

#: seconds between checks that the other side is alive
POLL_S = 0.5

#: feeds not closed yet: closed at exit, so a process that never called close() still ends
#: (its workers joined, or killed) instead of waiting on them forever.
_LIVE_FEEDS = weakref.WeakSet()


def close_live_feeds():
    """Close every feed of this process that is still open; returns how many there were."""
    feeds = list(_LIVE_FEEDS)
    for feed in feeds:
        feed.close()
    return len(feeds)


# Registered after multiprocessing's own exit handler (multiprocessing.util, imported above: it is
# otherwise imported at the first Process.start, after this line), so it runs before it (atexit is
# LIFO): the workers are asked to stop and joined, not SIGTERMed as daemons.
atexit.register(close_live_feeds)


class WorkerError(RuntimeError):
    """A pair-feed worker failed; the message holds the worker's traceback or exit code."""


def _slot_views(buf, shapes, slot):
    """The (data, data_p, label) float32 arrays of ``slot`` in the shared buffer."""
    sizes = [int(np.prod(s)) for s in shapes]
    offset = slot * sum(sizes) * 4
    views = []
    for shape, size in zip(shapes, sizes):
        views.append(np.frombuffer(buf, np.float32, size, offset).reshape(shape))
        offset += size * 4
    return tuple(views)


def _worker_main(batcher, buf, shapes, tasks, results, parent_pid):
    signal.signal(signal.SIGINT, signal.SIG_IGN)     # Ctrl-C reaches the whole process group: the parent decides
    # pycaffe's init_log installed glog's failure handler for SIGTERM (and inherited by fork it would
    # print a stack trace of this worker): a worker uses no Caffe, and a SIGTERM just ends it.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        batcher.source = batcher.source.after_fork()
    except BaseException:
        results.put((None, None, traceback.format_exc()))
        return
    while True:
        try:
            task = tasks.get(timeout=POLL_S)
        except queue.Empty:
            if os.getppid() != parent_pid:          # the main process is gone: nobody will read
                return
            continue
        if task is None:
            return
        slot, index, rows = task
        try:
            batcher.assemble(rows, index, out=_slot_views(buf, shapes, slot))
        except BaseException:
            results.put((slot, index, traceback.format_exc()))
            return
        results.put((slot, index, None))


class WorkerFeed:
    """``get()`` returns the batcher's batches in order, assembled by ``workers`` processes.

    Keeps up to ``depth`` batches in flight. The batcher is the main process's: its state
    (cursor, epoch, batch index) advances here, as with the thread feed.
    """

    def __init__(self, batcher, workers=2, depth=3):
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.batcher = batcher
        self.depth = max(1, int(depth))
        self.shapes = batcher.out_shapes()
        slot_bytes = sum(int(np.prod(s)) for s in self.shapes) * 4
        self._buf = mmap.mmap(-1, slot_bytes * (self.depth + 1))       # anonymous, MAP_SHARED
        ctx = mp.get_context("fork")
        self._tasks, self._results = ctx.Queue(), ctx.Queue()
        self._free = list(range(self.depth + 1))
        self._in_flight, self._ready, self._held = 0, {}, None
        self._next = batcher.batch_index      # the index get() returns next
        self._closed = False
        self._procs = [ctx.Process(target=_worker_main, name=f"pair-worker-{i}", daemon=True,
                                   args=(batcher, self._buf, self.shapes, self._tasks, self._results, os.getpid()))
                       for i in range(int(workers))]
        for proc in self._procs:
            proc.start()
        _LIVE_FEEDS.add(self)
        self._fill()

    @property
    def pids(self):
        return [p.pid for p in self._procs]

    def _fill(self):
        while self._in_flight < self.depth and self._free:
            rows = self.batcher.next_rows()
            index = self.batcher.batch_index
            self.batcher.batch_index += 1
            self._tasks.put((self._free.pop(), index, rows))
            self._in_flight += 1

    def _fail(self, message):
        self.close()
        raise WorkerError(message)

    def get(self):
        """The next batch (data, data_p, label): views valid until the next ``get()``."""
        if self._closed:
            raise WorkerError("the pair feed's workers were closed")
        if self._held is not None:
            self._free.append(self._held)
            self._held = None
        self._fill()
        while self._next not in self._ready:
            try:
                slot, index, error = self._results.get(timeout=POLL_S)
            except queue.Empty:
                dead = [p for p in self._procs if p.exitcode is not None]
                if dead:
                    self._fail(f"pair feed worker {dead[0].name} (pid {dead[0].pid}) died with exit code "
                               f"{dead[0].exitcode} before delivering batch {self._next}")
                continue
            if error is not None:
                where = f"batch {index}" if index is not None else "start-up"
                self._fail(f"pair feed worker failed at {where}; the worker's traceback:\n{error}")
            self._ready[index] = slot
            self._in_flight -= 1
        self._held = self._ready.pop(self._next)
        self._next += 1
        return _slot_views(self._buf, self.shapes, self._held)

    def close(self):
        """Stop the workers (joined, killed if they do not stop); idempotent."""
        if self._closed:
            return
        self._closed = True
        _LIVE_FEEDS.discard(self)
        for _ in self._procs:
            try:
                self._tasks.put(None)
            except (OSError, ValueError):
                pass
        for proc in self._procs:
            proc.join(timeout=5)
            if proc.exitcode is None:
                proc.kill()
                proc.join(timeout=5)
        for q in (self._tasks, self._results):
            q.close()
            q.cancel_join_thread()   # a dead worker's unread tasks must not block the close

    def __del__(self):
        try:
            self.close()
        except Exception:   # interpreter shutdown: the daemon workers end with the process
            pass
