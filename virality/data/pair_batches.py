"""Batches of image pairs assembled from the image store by pair index (pure numpy core).

The Caffe layer ``python_layers.pair_data.PairIndexData`` is a thin adapter over
this module. A training set is an int32 (N, 3) array [I1 id, I2 id, y]; 10M pairs
cost 120 MB of indices and nothing else: an epoch's shuffle permutes the rows in
place, and pixels are only ever held for the images of the store.

Decisions (docs/DATA_STORAGE.md has the measurements):
- Image source: the whole store is decoded into memory once (uint8 N x 3 x S x S)
  when it fits in ``cache_mb`` (default 1024 MB: 10k images at 256 do not, the
  synthetic world at 36 takes 12 MB); otherwise the LMDB is read per batch (it is
  memory-mapped, so the OS page cache does the caching).
- Order: the pair array's order, wrapping around at the end. ``shuffle`` permutes
  the rows at the start of every epoch with a generator seeded by (seed, epoch), so
  the order is deterministic per seed; without shuffle (TEST) it is the file order.
- Augmentation (``random_crop``, TRAIN): every image of a pair gets its own random
  crop offset and, when ``mirror``, its own coin flip (the pair LMDB feed instead
  crops and mirrors the 6-channel record as one). Otherwise the centre crop.
  Augmentation draws from a generator seeded by (seed, 1): deterministic per seed.
- Mean and scale: (pixel - mean) * scale, per-channel BGR mean, pixels in [0, 255], as
  Caffe's transform_param; output float32.
- Prefetch: ``Prefetcher`` runs the batcher in a background thread with a queue of
  ready batches; there is one producer, so the order does not depend on timing.
  Caveat (measured): the caffe tool and pycaffe hold the GIL while Caffe computes, so
  the thread mostly runs while the layer waits for it; assembly is ~serial with the step
  (25 ms per 64 pairs at 227 px, 0.3 ms per 32 pairs at 32 px).
- ``PairBatcher`` owns ``pairs`` and shuffles it in place.
"""
import queue
import threading
from pathlib import Path

import numpy as np

from virality.files import TruncatedFile, load_npy
from virality.data.imagestore import ImageStore


class PairDataError(ValueError):
    """Bad pair-index configuration or data; the message names the file or key."""


def load_pairs(path):
    """Load and check an int32 (N, 3) [I1, I2, y] pair array from a .npy file (a private copy)."""
    path = Path(path)
    if not path.is_file():
        raise PairDataError(f"pair file {path} does not exist (cwd {Path.cwd()}); "
                            "build it with `make data` (tools/make_data.py)")
    try:
        pairs = load_npy(path)
    except TruncatedFile as err:
        raise PairDataError(f"pair file {err}; rebuild it with `make data` (tools/make_data.py)") from None
    except (OSError, ValueError) as err:
        raise PairDataError(f"pair file {path} is not a readable .npy array ({err})") from None
    if pairs.ndim != 2 or pairs.shape[1] != 3 or not np.issubdtype(pairs.dtype, np.integer):
        raise PairDataError(f"pair file {path}: expected int (N, 3) [I1, I2, y], got {pairs.dtype} {pairs.shape}")
    if pairs.shape[0] == 0:
        raise PairDataError(f"pair file {path} holds no pairs")
    if not np.isin(pairs[:, 2], (-1, 1)).all():
        raise PairDataError(f"pair file {path}: labels (column 2) must be +1 or -1")
    return np.ascontiguousarray(pairs, dtype=np.int32)


class ImageSource:
    """Images of an image store by id, as uint8 (3, S, S) views; in memory when they fit in ``cache_mb``."""

    def __init__(self, store_path, cache_mb=1024):
        self.store = ImageStore(store_path)
        self.path = self.store.path
        self.size = self.store.size
        self.ids = self.store.ids
        need = len(self.store) * 3 * self.size * self.size
        self.in_memory = need <= cache_mb * (1 << 20)
        self.images = self.store.read_chw(self.ids) if self.in_memory else None

    def check_ids(self, ids, where):
        """Raise PairDataError naming ``where`` when some ids are not in the store."""
        missing = np.unique(ids[~np.isin(ids, self.ids)]) if len(ids) else np.zeros(0, int)
        if missing.size:
            raise PairDataError(f"{where}: {missing.size} image id(s) are not in the image store {self.path} "
                                f"(e.g. {missing[:5].tolist()}); see its manifest.csv, and rebuild the pairs "
                                "with `make data`")

    def fetch(self, ids):
        """(images, index): ``images[index[j]]`` is image ``ids[j]`` as uint8 (3, S, S)."""
        if self.in_memory:
            return self.images, np.searchsorted(self.ids, ids)
        uniq, inverse = np.unique(ids, return_inverse=True)
        return self.store.read_chw(uniq), inverse

    def close(self):
        self.store.close()

    def after_fork(self):
        """A source for a forked worker process: LMDB handles must not be used across fork().

        In memory, the decoded images are shared copy-on-write and the store is not touched;
        otherwise the worker opens the store itself.
        """
        if self.in_memory:
            return self
        return ImageSource(self.path, cache_mb=0)


class PairBatcher:
    """Produces (data, data_p, label) batches: float32 (B, 3, C, C) twice and float32 (B,)."""

    def __init__(self, pairs, source, batch_size, crop_size, mean=(0.0, 0.0, 0.0), scale=1.0, mirror=False,
                 random_crop=False, shuffle=False, seed=1701, rank=0, world=1):
        if batch_size < 1:
            raise PairDataError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < world:
            raise PairDataError(f"rank {rank} must be in [0, {world}) (the number of solvers)")
        if not 1 <= crop_size <= source.size:
            raise PairDataError(f"crop_size {crop_size} must be in [1, {source.size}] (the image store's size)")
        if len(mean) != 3:
            raise PairDataError(f"mean must have 3 values (B, G, R), got {mean!r}")
        self.pairs = np.ascontiguousarray(pairs)
        self.source = source
        self.batch_size, self.crop = int(batch_size), int(crop_size)
        self.mean = np.asarray(mean, np.float32).reshape(1, 3, 1, 1)
        self.scale = np.float32(scale)
        self.mirror, self.random_crop, self.shuffle, self.seed = mirror, random_crop, shuffle, seed
        # Data-parallel sharding (docs/GPU.md): each of ``world`` solvers reads its own disjoint share of every
        # global batch of world x batch_size rows, and draws the augmentation of the whole global batch, so the
        # ranks together see exactly what one solver with the global batch would.
        self.rank, self.world = int(rank), int(world)
        self.global_batch = self.batch_size * self.world
        self.epoch, self.cursor, self.batch_index = 0, 0, 0
        if shuffle:
            self._shuffle()

    def seek(self, batch_index, original_pairs):
        """Continue as if ``batch_index`` batches had been produced since construction.

        The order of epoch e is the original order shuffled by the seeds of epochs
        0..e in turn, and each batch's augmentation is seeded by its index, so the
        state after k batches is rebuilt from the original pair file alone (exact
        resume of training, docs/TRAINING.md).
        """
        if batch_index < 0:
            raise PairDataError(f"cannot seek to batch {batch_index}")
        self.pairs[...] = original_pairs
        consumed = batch_index * self.global_batch
        target_epoch, self.cursor = divmod(consumed, len(self.pairs))
        if self.shuffle:
            for self.epoch in range(target_epoch + 1):
                self._shuffle()
        self.epoch = target_epoch
        self.batch_index = batch_index

    def _shuffle(self):
        # In place, with no permutation array, so N pairs cost only the N x 3 int32 index. The rows are
        # viewed as 12-byte records: Generator.shuffle of a 2-D array is ~80x slower (45 s for 10M rows).
        rows = self.pairs.view(np.dtype((np.void, self.pairs.dtype.itemsize * 3))).reshape(-1)
        np.random.default_rng([self.seed, 0, self.epoch]).shuffle(rows)

    def next_rows(self):
        """This rank's batch_size rows of the next global batch (wrapping, reshuffling at each new epoch)."""
        rows = self._next_global_rows()
        return rows[self.rank * self.batch_size:(self.rank + 1) * self.batch_size].copy() if self.world > 1 else rows

    def _next_global_rows(self):
        parts, need, n = [], self.global_batch, len(self.pairs)
        while need:
            take = min(need, n - self.cursor)
            parts.append(self.pairs[self.cursor:self.cursor + take].copy())
            self.cursor += take
            need -= take
            if self.cursor == n:
                self.cursor, self.epoch = 0, self.epoch + 1
                if self.shuffle:
                    self._shuffle()
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def next_batch(self):
        rows = self.next_rows()
        self.batch_index += 1
        return self.assemble(rows, self.batch_index - 1)

    def out_shapes(self):
        """Shapes of (data, data_p, label), all float32."""
        b, c = self.batch_size, self.crop
        return (b, 3, c, c), (b, 3, c, c), (b,)

    def assemble(self, rows, batch_index, out=None):
        """The batch of ``rows`` (from next_rows) as batch ``batch_index``; into ``out`` arrays when given.

        A pure function of (rows, batch_index) and the configuration, so worker processes
        (virality/data/pair_workers.py) assemble batches in any order with the same result.
        """
        aug_rng = np.random.default_rng([self.seed, 1, batch_index])   # a function of the batch index
        b, c, s = len(rows), self.crop, self.source.size
        g, lo = b * self.world, 2 * b * self.rank          # this rank's images within the global batch
        ids = rows[:, :2].reshape(-1)                      # I1, I2, I1, I2, ...
        images, index = self.source.fetch(ids)
        if self.random_crop:
            offsets = aug_rng.integers(0, s - c + 1, size=(2 * g, 2))[lo:lo + 2 * b]
        else:
            offsets = np.full((2 * b, 2), (s - c) // 2)
        flips = (aug_rng.random(2 * g) < 0.5)[lo:lo + 2 * b] if self.mirror else np.zeros(2 * b, bool)
        crops = np.empty((2, b, 3, c, c), np.uint8)       # [0] = I1 crops, [1] = I2 crops
        for j in range(2 * b):
            y, x = offsets[j]
            patch = images[index[j], :, y:y + c, x:x + c]
            crops[j % 2, j // 2] = patch[:, :, ::-1] if flips[j] else patch
        if out is None:
            out = (np.empty((b, 3, c, c), np.float32), np.empty((b, 3, c, c), np.float32), np.empty(b, np.float32))
        for k in range(2):
            dest = out[k]
            np.subtract(crops[k], self.mean, out=dest, dtype=np.float32)
            if self.scale != 1:
                dest *= self.scale
        out[2][...] = rows[:, 2]
        return out


class _Failure:
    def __init__(self, error):
        self.error = error


class Prefetcher:
    """Runs ``produce()`` in a background thread, keeping up to ``depth`` results ready, in order."""

    def __init__(self, produce, depth=3, name="pair-prefetch"):
        self._produce = produce
        self._queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                item = self._produce()
            except BaseException as err:  # handed to the consumer, which raises it
                item = _Failure(err)
            while not self._stop.is_set():
                try:
                    self._queue.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if isinstance(item, _Failure):
                return

    def get(self):
        item = self._queue.get()
        if isinstance(item, _Failure):
            raise RuntimeError(f"pair prefetch thread failed: {item.error}") from item.error
        return item

    def close(self):
        self._stop.set()
        self._thread.join(timeout=5)
