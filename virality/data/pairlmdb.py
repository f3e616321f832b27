"""Caffe-native LMDB feeds built from an image store: pair LMDBs and topic LMDBs.

Pair LMDB (``prototxt/*pvcnn/train_val.prototxt`` with the default ``pair_lmdb``
feed): one record per pair, in the order of the pair array, key b"%010d" % row.
Each record is a raw 6-channel Datum: channels 0-2 = I1 (BGR), 3-5 = I2 (BGR),
size x size of the store, label = y (+1 when I1 is the more viral image, -1
otherwise). The net's Data layer crops/mirrors the 6 channels together and
subtracts the per-channel mean (transform_param); a Slice at channel 3 gives
``data`` and ``data_p``. Caffe cannot decode 6-channel encoded Datums, so these
records are raw: 6 * size^2 bytes each (7.8 kB at 36, 393 kB at 256).

Topic LMDB (the Topic-CNN's feed): one record per image, label = topic index,
in a seeded shuffled order (Caffe's Data layer reads in key order and does not
shuffle), key b"%010d" % position. ``ids.npy`` beside the data lists the image id
of every record, in key order. Records reuse the store's Datum as it is (raw or
encoded) with the label set.

Both are built under a temporary name and renamed when complete
(:func:`virality.data.imagestore.atomic_dir`), with a ``store.json`` of what they hold.
"""
import time
from pathlib import Path

import numpy as np

from virality.files import check_free_space
from virality.data.imagestore import (IDS_FILE, META_FILE, ImageStore, LmdbWriter, StoreError, atomic_dir,
                                 check_records, key, lmdb_bytes, open_lmdb, parse_datum, read_meta, spread,
                                 write_json)
from virality.progress import progress as progress_bar

PAIR_FORMAT = "virality-pair-lmdb/1"
TOPIC_FORMAT = "virality-topic-lmdb/1"


def check_pairs(pairs, where="pairs"):
    """Validate a pair array: int (N, 3) with y in {+1, -1}. Returns it as int32."""
    pairs = np.asarray(pairs)
    if pairs.ndim != 2 or pairs.shape[1] != 3 or not np.issubdtype(pairs.dtype, np.integer):
        raise ValueError(f"{where}: expected an int array of shape (N, 3) [I1, I2, y], got {pairs.dtype} {pairs.shape}")
    if pairs.size and not np.isin(pairs[:, 2], (-1, 1)).all():
        raise ValueError(f"{where}: labels (column 2) must be +1 or -1")
    return pairs.astype(np.int32, copy=False)


def _missing_ids(store, ids):
    ids = np.unique(ids)
    return ids[~np.isin(ids, store.ids)]


def build_pair_lmdb(store_path, pairs, out, progress=True, extra_meta=None):
    """Write one 6-channel Datum per row of ``pairs`` (int (N, 3): I1, I2, y) to ``out``."""
    from caffe.proto import caffe_pb2

    pairs = check_pairs(pairs)
    store = ImageStore(store_path)
    try:
        missing = _missing_ids(store, pairs[:, :2])
        if missing.size:
            raise StoreError(f"{store_path}: {missing.size} image id(s) of the pairs are not in the store "
                             f"(e.g. {missing[:5].tolist()}); see its {store.path / 'manifest.csv'} and "
                             "drop those pairs first")
        s = store.size
        check_free_space(Path(out).parent, lmdb_bytes(len(pairs), 6 * s * s + 32), f"the pair LMDB {out}")
        start = time.time()
        bar = progress_bar(total=len(pairs), desc=f"pair lmdb {Path(out).name}", unit="pair", enabled=progress)
        with atomic_dir(out) as tmp:
            writer = LmdbWriter(tmp, expected_bytes=len(pairs) * (6 * s * s + 64), final=out)
            buf = np.empty((6, s, s), np.uint8)
            chunk = 512
            for lo in range(0, len(pairs), chunk):
                rows = pairs[lo:lo + chunk]
                uniq, inverse = np.unique(rows[:, :2], return_inverse=True)
                images = store.read_chw(uniq)
                inverse = inverse.reshape(-1, 2)
                for j, (a, b) in enumerate(inverse):
                    buf[:3], buf[3:] = images[a], images[b]
                    datum = caffe_pb2.Datum(channels=6, height=s, width=s, data=buf.tobytes(),
                                            label=int(rows[j, 2]))
                    writer.put(key(lo + j), datum.SerializeToString())
                bar.update(len(rows))
            writer.close()
            bar.close()
            meta = dict(format=PAIR_FORMAT, records=int(len(pairs)), size=s, channels=6, color="BGR,BGR",
                        image_store=str(store_path), positives=int((pairs[:, 2] == 1).sum()),
                        seconds=round(time.time() - start, 2), complete=True, **(extra_meta or {}))
            write_json(tmp / META_FILE, meta)
    finally:
        store.close()
    return meta


def split_topic_ids(ids, topics, test_fraction=0.1, seed=1701):
    """Seeded split of the images with a known topic (>= 0) into shuffled (train_ids, test_ids).

    The test part takes ``test_fraction`` of each topic (at least one image of a
    topic with two or more), so every class is represented on both sides.
    """
    ids, topics = np.asarray(ids, np.int64), np.asarray(topics, np.int64)
    if ids.shape != topics.shape:
        raise ValueError(f"ids {ids.shape} and topics {topics.shape} differ in shape")
    if not 0 <= test_fraction < 1:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    rng = np.random.default_rng([seed, 7])
    train, test = [], []
    for t in np.unique(topics[topics >= 0]):
        members = rng.permutation(ids[topics == t])
        n_test = int(round(test_fraction * members.size))
        if test_fraction > 0 and members.size >= 2:
            n_test = min(max(n_test, 1), members.size - 1)
        test.append(members[:n_test])
        train.append(members[n_test:])
    train = rng.permutation(np.concatenate(train)) if train else np.zeros(0, np.int64)
    test = rng.permutation(np.concatenate(test)) if test else np.zeros(0, np.int64)
    return train, test


def build_topic_lmdb(store_path, ids, labels, out, progress=True, extra_meta=None):
    """Write one 3-channel Datum per image, label = topic index, in the order of ``ids``."""
    from caffe.proto import caffe_pb2

    ids, labels = np.asarray(ids, np.int64), np.asarray(labels, np.int64)
    if ids.shape != labels.shape or ids.ndim != 1:
        raise ValueError(f"ids {ids.shape} and labels {labels.shape} must be equal-length vectors")
    if labels.size and labels.min() < 0:
        raise ValueError("topic labels must be >= 0 (drop images with an unknown topic first)")
    store = ImageStore(store_path)
    try:
        missing = _missing_ids(store, ids)
        if missing.size:
            raise StoreError(f"{store_path}: {missing.size} image id(s) are not in the store (e.g. "
                             f"{missing[:5].tolist()}); see {store.path / 'manifest.csv'}")
        if store.meta.get("encoding") == "raw":
            check_free_space(Path(out).parent, lmdb_bytes(len(ids), 3 * store.size ** 2 + 32),
                             f"the topic LMDB {out}")
        start = time.time()
        bar = progress_bar(total=len(ids), desc=f"topic lmdb {Path(out).name}", unit="img", enabled=progress)
        with atomic_dir(out) as tmp:
            writer = LmdbWriter(tmp, expected_bytes=len(ids) * (3 * store.size ** 2 + 64), final=out)
            datum = caffe_pb2.Datum()
            with store.env.begin(buffers=False) as txn:
                for position, (image_id, label) in enumerate(zip(ids, labels)):
                    value = txn.get(key(image_id))
                    datum.ParseFromString(value)
                    datum.label = int(label)
                    writer.put(key(position), datum.SerializeToString())
                    bar.update()
            writer.close()
            bar.close()
            np.save(tmp / IDS_FILE, ids)
            counts = np.bincount(labels, minlength=int(labels.max()) + 1 if labels.size else 0)
            meta = dict(format=TOPIC_FORMAT, records=int(ids.size), size=store.size, channels=3, color="BGR",
                        image_store=str(store_path), label_counts=counts.tolist(),
                        seconds=round(time.time() - start, 2), complete=True, **(extra_meta or {}))
            write_json(tmp / META_FILE, meta)
    finally:
        store.close()
    return meta


def open_records(path, expected_format):
    """(meta, lmdb Environment) of a pair or topic LMDB, after checking it is whole
    (store.json, file size, record count, a few records: virality.data.imagestore.open_lmdb)."""
    meta = read_meta(path, expected_format)
    env = open_lmdb(path, entries=meta.get("records"))
    channels = meta.get("channels")

    def check(value):
        chw, _ = parse_datum(value)
        if chw.shape[0] != channels:
            raise ValueError(f"{chw.shape[0]} channels, expected {channels}")

    try:
        check_records(env, path, [key(i) for i in spread(int(meta.get("records", 0)))], check)
    except BaseException:
        env.close()
        raise
    return meta, env


def read_records(path, expected_format):
    """Iterate (C x H x W uint8, label) over a pair or topic LMDB in key order (for checks and tests)."""
    _, env = open_records(path, expected_format)
    try:
        with env.begin(buffers=False) as txn:
            for _, value in txn.cursor():
                yield parse_datum(value)
    finally:
        env.close()
