#!/usr/bin/env python3
"""Build the LMDBs the nets read: the image store, pair LMDBs and topic LMDBs.

    # image store from a dataset (virality.datasets.load_dataset) or from a CSV of id,path
    .venv/bin/python tools/build_lmdb.py images --dataset synthetic --size 36 --out data/synthetic/images_36_lmdb
    .venv/bin/python tools/build_lmdb.py images --list images.csv --size 256 --out /tmp/images_256_lmdb
    # one 6-channel Datum per pair (I1 BGR, I2 BGR; label y) from an int32 (N, 3) .npy
    .venv/bin/python tools/build_lmdb.py pairs --store data/synthetic/images_36_lmdb \
        --pairs data/synthetic/random/pairs_train.npy --out data/synthetic/random/pairs_train_lmdb
    # topic LMDBs (label = topic index), a seeded shuffled train/test split of a CSV of id,label
    .venv/bin/python tools/build_lmdb.py topics --store data/synthetic/images_36_lmdb --labels topics.csv \
        --out-train data/synthetic/topics_train_lmdb --out-test data/synthetic/topics_test_lmdb

Every build writes under a hidden temporary name and renames when complete. The image
store lists each converted or skipped image, with the reason, in <out>/manifest.csv;
the tool prints their counts. `make data` (tools/make_data.py) runs all of this for a
dataset, keyed by content. Formats: virality/data/imagestore.py, virality/data/pairlmdb.py.
"""
import argparse
import csv
import sys
from pathlib import Path

import numpy as np

from virality.files import load_npy
from virality.data.imagestore import ENCODINGS, MANIFEST_FILE, MAX_PIXELS, RESIZE_MODES, StoreError, build_image_store
from virality.data.pairlmdb import build_pair_lmdb, build_topic_lmdb, check_pairs, split_topic_ids


def read_id_csv(path, value_column):
    """Rows of a CSV with header ``id,<value_column>`` -> list of (int id, value)."""
    path = Path(path)
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None or "id" not in reader.fieldnames or value_column not in reader.fieldnames:
                raise ValueError(f"{path}: needs a header with columns id,{value_column}; got {reader.fieldnames}")
            return [(int(row["id"]), row[value_column]) for row in reader]
    except (OSError, ValueError) as err:
        raise SystemExit(f"build_lmdb: cannot read {path}: {err}") from None


def report_store(meta, out):
    print(f"build_lmdb: {out}: {meta['stored']}/{meta['images']} images stored "
          f"({meta['size']}x{meta['size']} {meta['resize']}, {meta['encoding']}) in {meta['seconds']} s")
    if meta["problems"]:
        print(f"build_lmdb: {meta['skipped']} skipped, {meta['converted']} converted: "
              + ", ".join(f"{k} {v}" for k, v in sorted(meta["problems"].items()))
              + f"; details in {Path(out) / MANIFEST_FILE}", file=sys.stderr)


def cmd_images(args):
    if (args.list is None) == (args.dataset is None):
        raise SystemExit("build_lmdb images: give exactly one of --list CSV or --dataset NAME")
    if args.list is not None:
        base = args.list.parent
        items = [(i, p if Path(p).is_absolute() else base / p) for i, p in read_id_csv(args.list, "path")]
    else:
        from virality.datasets import load_dataset   # noqa: deferred: the registry is optional here
        dataset = load_dataset(args.dataset, data_dir=args.data_dir, images=args.images)
        items = [(int(i), dataset.image_path(i)) for i in dataset.ids]
    print(f"build_lmdb images: {len(items)} images -> {args.out} (size {args.size}, resize {args.resize}, "
          f"encoding {args.encoding}, max_pixels {args.max_pixels}, workers {args.workers})")
    meta = build_image_store(items, args.out, args.size, resize=args.resize, encoding=args.encoding,
                             max_pixels=args.max_pixels, workers=args.workers, progress=not args.quiet)
    report_store(meta, args.out)
    return 0


def cmd_pairs(args):
    try:
        pairs = check_pairs(load_npy(args.pairs), where=str(args.pairs))
    except (OSError, ValueError) as err:
        raise SystemExit(f"build_lmdb pairs: {err}") from None
    print(f"build_lmdb pairs: {len(pairs)} pairs from {args.pairs} and {args.store} -> {args.out}")
    meta = build_pair_lmdb(args.store, pairs, args.out, progress=not args.quiet)
    print(f"build_lmdb: {args.out}: {meta['records']} records ({meta['positives']} with y=+1) in {meta['seconds']} s")
    return 0


def cmd_topics(args):
    rows = read_id_csv(args.labels, "label")
    ids = np.array([i for i, _ in rows], np.int64)
    labels = np.array([int(v) for _, v in rows], np.int64)
    known = labels >= 0
    train, test = split_topic_ids(ids[known], labels[known], args.test_fraction, args.seed)
    label_of = dict(zip(ids.tolist(), labels.tolist()))
    print(f"build_lmdb topics: {known.sum()} labelled images ({(~known).sum()} unknown dropped): "
          f"{train.size} train, {test.size} test (seed {args.seed})")
    for out, part in ((args.out_train, train), (args.out_test, test)):
        meta = build_topic_lmdb(args.store, part, np.array([label_of[i] for i in part.tolist()], np.int64), out,
                                progress=not args.quiet)
        print(f"build_lmdb: {out}: {meta['records']} records, label counts {meta['label_counts']}")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("images", help="the image store: one Datum per image id")
    p.add_argument("--list", type=Path, help="CSV with header id,path (relative paths: from the CSV's folder)")
    p.add_argument("--dataset", help="a dataset name for virality.datasets.load_dataset")
    p.add_argument("--data-dir", type=Path, help="the dataset's metadata directory (adapter default if omitted)")
    p.add_argument("--images", type=Path, help="the dataset's image directory")
    p.add_argument("--size", type=int, required=True,
                   help="side of the stored square images (256 alexnet/vgg, 36 tiny)")
    p.add_argument("--resize", choices=RESIZE_MODES, default="warp",
                   help="warp: plain resize (default); crop: shorter side then centre crop")
    p.add_argument("--encoding", choices=ENCODINGS, default="raw", help="Datum payload (docs/DATA_STORAGE.md)")
    p.add_argument("--max-pixels", type=int, default=MAX_PIXELS, help="refuse images with more pixels (header)")
    p.add_argument("--workers", type=int, default=2, help="decoding processes")
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=cmd_images)

    p = sub.add_parser("pairs", help="a pair LMDB: one 6-channel Datum per pair")
    p.add_argument("--store", type=Path, required=True, help="the image store to read")
    p.add_argument("--pairs", type=Path, required=True, help="int32 (N, 3) .npy: I1, I2, y")
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=cmd_pairs)

    p = sub.add_parser("topics", help="topic LMDBs (train/test) for the Topic-CNN")
    p.add_argument("--store", type=Path, required=True)
    p.add_argument("--labels", type=Path, required=True, help="CSV with header id,label (topic index; -1 unknown)")
    p.add_argument("--test-fraction", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=1701)
    p.add_argument("--out-train", type=Path, required=True)
    p.add_argument("--out-test", type=Path, required=True)
    p.set_defaults(func=cmd_topics)

    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (StoreError, ValueError, OSError) as err:     # OSError: FileNotFoundError, DiskError
        print(f"build_lmdb {args.command}: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
