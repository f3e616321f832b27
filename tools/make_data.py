#!/usr/bin/env python3
"""Build everything a model needs under data/<dataset>/ (`make data DATASET=<name> [IMAGES=<dir>]`).

    .venv/bin/python tools/make_data.py --dataset synthetic
    .venv/bin/python tools/make_data.py --dataset deza2015 --images /path/to/jpgs --sizes 256 36

Outputs (paths as virality.model.nets.DataConfig reads them):

    data/<name>/raw/                          synthetic only: the SYNTHETIC world, generated if missing
    data/<name>/images_<size>_lmdb/           image store per --sizes (manifest.csv lists problems)
    data/<name>/<setting>/pairs_train.npy     D_train: int32 (N, 3) training pairs (virality.data.pairs.sample_pairs)
    data/<name>/<setting>/pairs_val.npy       D_val: validation pairs from the training pools (virality.data.splits)
    data/<name>/<setting>/pairs_test.npy      D_test: the setting's test pairs (read by evaluation only)
    data/<name>/<setting>/pairs_{train,val}_lmdb    6-channel pair Datums (--pair-lmdb)
    data/<name>/<setting>/topics_{train,val}_lmdb   the setting's Topic-CNN records: training images the
                                              ranking model may train on (no test or validation image),
                                              validation = the setting's validation images
    data/<name>/data.json                     what was built, from what, with counts and sizes

Every output has a ``<output>.stamp`` beside it holding a content hash of its inputs
(input files, arrays, options and the builder's source code) and the output's own
fingerprint (sizes and content hashes, virality.outputs): an output is kept only when
both match, so a changed input, or an output truncated or edited since, rebuilds it.
One make_data at a time writes to an output directory (a lock, data/<name>/.lock);
docs/FAILURES.md says what a killed run or a full disk leaves. Pair and topic LMDBs are built from the
image store of the first --sizes entry. Images missing from the store (missing or
broken files, listed in its manifest.csv) are left out of every setting's pools
and test pairs (and pairs-csv comparisons naming them are left out of training), and the
counts are printed and written to data.json.
"""
import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

from virality import outputs
from virality.files import disk_error, file_digest, load_npy, save_npy_atomic
from virality.outputs import Digest, OutputLock, OutputLocked, stamp_path, write_stamp

from virality.data.imagestore import ENCODINGS, MAX_PIXELS, RESIZE_MODES, ImageStore, StoreError, build_image_store, \
    write_json
from virality.paths import DATA_DIR

#: image store sizes per dataset: 36 = tiny nets, 256 = AlexNet / VGG-19 (virality.model.architectures).
DEFAULT_SIZES = {"synthetic": [36]}
FALLBACK_SIZES = [256]
#: training pairs per setting: synthetic small; otherwise the paper's 10M (Sec. 2.1).
DEFAULT_NUM_PAIRS = {"synthetic": 20000}
FALLBACK_NUM_PAIRS = 10_000_000
#: which pair LMDBs to build: a 10M-pair training LMDB at 256 px would be 3.9 TB, so full-size
#: models read pairs through the pair_index feed, which needs none.
DEFAULT_PAIR_LMDB = {"synthetic": "all"}
FALLBACK_PAIR_LMDB = "none"
PAIR_LMDB_SPLITS = {"all": ("train", "val"), "val": ("val",), "none": ()}
DEFAULT_SEED = 1701


def say(msg):
    print(f"make_data: {msg}", flush=True)


# --------------------------------------------------------------------------- content stamps

def is_fresh(output, digest, force=False):
    """virality.outputs.is_fresh, saying so when an output changed on disk since it was stamped."""
    if outputs.is_fresh(output, digest, force):
        return True
    reason = None if force else outputs.stale_reason(output, digest)
    if reason and reason.startswith("changed on disk"):
        say(f"{output}: {reason}: rebuilding it")
    return False


save_npy = save_npy_atomic


# --------------------------------------------------------------------------- steps

def ensure_synthetic_raw(raw, force):
    """Generate the SYNTHETIC world at ``raw`` if missing (or made by an older generator)."""
    from virality.data.synthetic import WorldConfig, generate_world

    config = WorldConfig()
    digest = Digest("synthetic-raw").value("config", dataclasses.asdict(config)).code("virality/data/synthetic.py")
    digest = digest.hexdigest()
    if raw.exists() and not stamp_path(raw).exists() and not force:
        say(f"{raw}: kept as it is (not made by make_data: no stamp); delete it to regenerate")
        return
    if is_fresh(raw, digest, force):
        say(f"{raw}: up to date (SYNTHETIC world)")
        return
    start = time.time()
    summary = generate_world(raw, config, overwrite=True)
    write_stamp(raw, digest, config=dataclasses.asdict(config))
    say(f"{raw}: generated the SYNTHETIC world, {summary['images']} images, {time.time() - start:.1f} s")


def image_items(dataset):
    """[(id, path)] of every image, and a content digest of the files (missing ones included)."""
    digest = Digest("images")
    items = []
    for image_id in dataset.ids:
        path = Path(dataset.image_path(int(image_id)))
        items.append((int(image_id), path))
        digest.value("image", [int(image_id), path.name, file_digest(path) if path.is_file() else "missing"])
    return items, digest.hexdigest()


def build_stores(items, images_digest, root, sizes, args):
    stores = {}
    for size in sizes:
        out = root / f"images_{size}_lmdb"
        options = dict(size=size, resize=args.resize, encoding=args.encoding, max_pixels=args.max_pixels)
        digest = Digest("image-store").value("images", images_digest).value("options", options) \
            .code("virality/data/imagestore.py").hexdigest()
        if is_fresh(out, digest, args.force):
            say(f"{out}: up to date")
        else:
            meta = build_image_store(items, out, size, resize=args.resize, encoding=args.encoding,
                                     max_pixels=args.max_pixels, workers=args.workers, progress=not args.quiet)
            write_stamp(out, digest, images=images_digest, **options)
            say(f"{out}: {meta['stored']}/{meta['images']} images in {meta['seconds']} s")
            if meta["problems"]:
                say(f"  {meta['skipped']} skipped, {meta['converted']} converted: "
                    + ", ".join(f"{k} {v}" for k, v in sorted(meta["problems"].items()))
                    + f" (details: {out / 'manifest.csv'})")
        stores[size] = (out, digest)
    return stores


def restrict_setting(setting, available):
    """The setting with every image that is not in ``available`` (sorted ids) removed; and counts."""
    def keep_ids(ids):
        ids = np.asarray(ids)
        return ids[np.isin(ids, available)]

    def keep_pairs(pairs):
        if pairs is None:
            return None
        pairs = np.asarray(pairs)
        return pairs[np.isin(pairs[:, 0], available) & np.isin(pairs[:, 1], available)] if pairs.size else pairs

    new = dataclasses.replace(setting, test_pairs=keep_pairs(setting.test_pairs),
                              test_images=keep_ids(setting.test_images), viral_pool=keep_ids(setting.viral_pool),
                              nonviral_pool=keep_ids(setting.nonviral_pool),
                              train_pairs=keep_pairs(setting.train_pairs))
    dropped = dict(test_pairs=len(setting.test_pairs) - len(new.test_pairs),
                   viral_pool=len(setting.viral_pool) - len(new.viral_pool),
                   nonviral_pool=len(setting.nonviral_pool) - len(new.nonviral_pool))
    if setting.train_pairs is not None:
        dropped["train_pairs"] = len(setting.train_pairs) - len(new.train_pairs)
    return new, {k: int(v) for k, v in dropped.items() if v}


def left_out_images(items, available, stores):
    """Count, by reason, the images that are in no store (from each store's manifest.csv)."""
    import csv

    gone = {i for i, _ in items} - set(np.asarray(available).tolist())
    reasons = {}
    for path, _ in stores.values():
        with open(path / "manifest.csv", newline="") as f:
            for row in csv.DictReader(f):
                if row["status"] == "skipped" and int(row["id"]) in gone:
                    gone.discard(int(row["id"]))
                    reasons[row["kind"]] = reasons.get(row["kind"], 0) + 1
    if gone:
        reasons["not in every store"] = len(gone)
    count = sum(reasons.values())
    return dict(count=count, reasons=dict(sorted(reasons.items())),
                manifests=[str(p / "manifest.csv") for p, _ in stores.values()])


def setting_digest(setting):
    d = Digest("setting").value("name", setting.name).value("disjoint", setting.disjoint)
    for name in ("test_pairs", "test_images", "viral_pool", "nonviral_pool"):
        d.array(name, np.asarray(getattr(setting, name)))
    if setting.train_pairs is not None:
        d.array("train_pairs", np.asarray(setting.train_pairs))
    return d.hexdigest()


def build_pair_files(split, root, num_pairs, seed, force):
    """pairs_{train,val,test}.npy of one (restricted) setting's Split; returns {part: (path, digest)}."""
    from virality.data.pairs import sample_pairs

    setting = split.test
    out_dir = root / setting.name
    sd = setting_digest(setting)
    files = {}
    train = out_dir / "pairs_train.npy"
    val_pairs = np.asarray(split.val_pairs, np.int32).reshape(-1, 3)
    digest = Digest("train-pairs").value("setting", sd).array("val_pairs", val_pairs) \
        .value("num_pairs", num_pairs).value("seed", seed).code("virality/data/pairs.py").hexdigest()
    if is_fresh(train, digest, force):
        say(f"{train}: up to date")
    else:
        start = time.time()
        pairs = sample_pairs(split.train, num_pairs, seed)
        save_npy(train, pairs.astype(np.int32))
        write_stamp(train, digest, setting=sd, num_pairs=num_pairs, seed=seed)
        say(f"{train}: {len(pairs)} pairs sampled in {time.time() - start:.2f} s")
    files["train"] = (train, digest)
    for part, arr, what in (("val", val_pairs, "validation pairs"),
                            ("test", np.asarray(setting.test_pairs, np.int32).reshape(-1, 3), "test pairs")):
        path = out_dir / f"pairs_{part}.npy"
        digest = Digest(f"{part}-pairs").array("pairs", arr).hexdigest()
        if is_fresh(path, digest, force):
            say(f"{path}: up to date")
        else:
            save_npy(path, arr)
            write_stamp(path, digest)
            say(f"{path}: {len(arr)} {what}")
        files[part] = (path, digest)
    return files


def build_pair_lmdbs(files, store, splits, force, quiet):
    from virality.data.pairlmdb import build_pair_lmdb

    store_path, store_digest = store
    for split in splits:
        path, pairs_digest = files[split]
        out = path.parent / f"pairs_{split}_lmdb"
        digest = Digest("pair-lmdb").value("pairs", pairs_digest).value("store", store_digest) \
            .code("virality/data/pairlmdb.py", "virality/data/imagestore.py").hexdigest()
        pairs = load_npy(path)
        if len(pairs) == 0:
            say(f"{out}: not built: {path.name} holds no pairs (a spearman setting is evaluated by image)")
            continue
        if is_fresh(out, digest, force):
            say(f"{out}: up to date")
            continue
        meta = build_pair_lmdb(store_path, pairs, out, progress=not quiet)
        write_stamp(out, digest, pairs=pairs_digest, store=store_digest)
        say(f"{out}: {meta['records']} pair records in {meta['seconds']} s")


def build_topic_lmdbs(dataset, split, store, root, seed, force, quiet):
    """topics_{train,val}_lmdb of one setting (virality.data.splits.topic_split); returns counts or None."""
    from virality.data.pairlmdb import build_topic_lmdb
    from virality.data.splits import topic_split

    store_path, store_digest = store
    ids, topics = np.asarray(dataset.ids, np.int64), np.asarray(dataset.topics, np.int64)
    if not (topics >= 0).any():
        return None
    train, val = topic_split(split, ids, topics)
    # Caffe's Data layer reads records in order: the training records are shuffled (seeded).
    train = np.random.default_rng([seed, 7]).permutation(train)
    label_of = dict(zip(ids.tolist(), topics.tolist()))
    info = {}
    for part, chosen in (("train", train), ("val", val)):
        out = root / split.test.name / f"topics_{part}_lmdb"
        labels = np.array([label_of[i] for i in chosen.tolist()], np.int64)
        digest = Digest("topic-lmdb").array("ids", chosen).array("labels", labels).value("store", store_digest) \
            .code("virality/data/pairlmdb.py", "virality/data/imagestore.py").hexdigest()
        info[part] = int(chosen.size)
        if chosen.size == 0:
            raise ValueError(f"setting {split.test.name}: no {part} image with a known topic for the Topic-CNN")
        if is_fresh(out, digest, force):
            say(f"{out}: up to date")
            continue
        meta = build_topic_lmdb(store_path, chosen, labels, out, progress=not quiet)
        write_stamp(out, digest, store=store_digest, seed=seed)
        say(f"{out}: {meta['records']} records, label counts {meta['label_counts']}")
    return info


# --------------------------------------------------------------------------- main

def dataset_option(text):
    """KEY=VALUE -> (key, value); VALUE as JSON when it parses (0.25, 3, true), else the text."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--dataset-option wants KEY=VALUE, got '{text}'")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def parse_args(argv):
    from virality.datasets.registry import dataset_names

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True, choices=dataset_names())
    p.add_argument("--images", type=Path, help="image directory (IMAGES=...; default: the dataset's)")
    p.add_argument("--data-dir", type=Path, help="the dataset's metadata (default: the dataset's own)")
    p.add_argument("--out-root", type=Path, default=DATA_DIR, help="where data/<dataset>/ goes (default data/)")
    p.add_argument("--sizes", type=int, nargs="+", help="image store sizes (default: 36 synthetic, 256 otherwise)")
    p.add_argument("--settings", nargs="+", help="settings to build (default: all of the dataset's)")
    p.add_argument("--num-pairs", type=int, help="training pairs per setting (default: 20000 synthetic, 10M otherwise)")
    p.add_argument("--cap-pairs", action="store_true",
                   help="cap --num-pairs at what each setting allows (said in one line) instead of refusing")
    p.add_argument("--dataset-option", action="append", default=[], metavar="KEY=VALUE", type=dataset_option,
                   help="an option of the dataset's adapter, e.g. test_fraction=0.25 (docs/DATASETS.md; "
                        "VALUE is read as JSON when it parses, else as text); repeatable")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="pair sampling and topic split seed")
    p.add_argument("--pair-lmdb", choices=tuple(PAIR_LMDB_SPLITS),
                   help="pair LMDBs to build: all = train + val, val, none (default: all for synthetic, none "
                        "otherwise: full-size models read pairs through the pair_index feed)")
    p.add_argument("--max-lmdb-gb", type=float, default=100.0, help="refuse pair LMDBs larger than this")
    p.add_argument("--val-pairs", type=int,
                   help="validation pairs per setting (default: 300 synthetic, 1000 deza2015 and otherwise, fitted "
                        "to small tables; virality.data.splits)")
    p.add_argument("--val-images-per-side", type=int,
                   help="validation images drawn from each training pool (default: 150 synthetic, 250 otherwise, "
                        "at most a fifth of a pool when fitted)")
    p.add_argument("--resize", choices=RESIZE_MODES, default="warp")
    p.add_argument("--encoding", choices=ENCODINGS, default="raw")
    p.add_argument("--max-pixels", type=int, default=MAX_PIXELS)
    p.add_argument("--workers", type=int, default=2, help="image decoding threads")
    p.add_argument("--force", action="store_true", help="rebuild everything")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    args.sizes = args.sizes or DEFAULT_SIZES.get(args.dataset, FALLBACK_SIZES)
    args.num_pairs = args.num_pairs or DEFAULT_NUM_PAIRS.get(args.dataset, FALLBACK_NUM_PAIRS)
    args.pair_lmdb = args.pair_lmdb or DEFAULT_PAIR_LMDB.get(args.dataset, FALLBACK_PAIR_LMDB)
    from virality.data.splits import default_validation, has_documented_sizes
    val = default_validation(args.dataset)
    # sizes fitted to a small table only when none was given and the dataset has no documented ones
    args.fit_validation = not (args.val_pairs or args.val_images_per_side or has_documented_sizes(args.dataset))
    args.val_pairs = args.val_pairs or val["num_pairs"]
    args.val_images_per_side = args.val_images_per_side or val["images_per_side"]
    if any(s < 1 for s in args.sizes) or min(args.num_pairs, args.val_pairs, args.val_images_per_side) < 1:
        p.error("--sizes, --num-pairs, --val-pairs and --val-images-per-side must be positive")
    return args


def build(args):
    """Build everything under <out-root>/<dataset>/ (the caller holds its lock)."""
    from virality.datasets.registry import load_dataset
    from virality.data.pairs import PairSamplingError, max_pairs
    from virality.data.splits import split_setting

    start = time.time()
    root = args.out_root / args.dataset
    root.mkdir(parents=True, exist_ok=True)
    say(f"dataset={args.dataset} images={args.images} out={root} sizes={args.sizes} num_pairs={args.num_pairs} "
        f"val_pairs={args.val_pairs} val_images_per_side={args.val_images_per_side} seed={args.seed} "
        f"pair_lmdb={args.pair_lmdb} resize={args.resize} encoding={args.encoding}")
    data_dir = args.data_dir
    try:
        if args.dataset == "synthetic" and data_dir is None:
            data_dir = root / "raw"
            ensure_synthetic_raw(data_dir, args.force)
        options = dict(args.dataset_option)
        dataset = load_dataset(args.dataset, data_dir=data_dir, images=args.images, **options)
        if dataset.synthetic:
            say("NOTE: this dataset is SYNTHETIC (virality/data/synthetic.py), not real virality data")
        names = args.settings or sorted(dataset.settings)
        settings = [dataset.setting(n) for n in names]
        items, images_digest = image_items(dataset)
        missing = sum(1 for _, p in items if not p.is_file())
        say(f"{len(items)} images in {dataset.image_dir}" + (f", {missing} missing" if missing else ""))
        if missing == len(items):
            raise FileNotFoundError(f"none of the {len(items)} images of '{args.dataset}' exist under "
                                    f"{dataset.image_dir}; pass the image directory: make data DATASET={args.dataset} "
                                    "IMAGES=<dir>")
        stores = build_stores(items, images_digest, root, args.sizes, args)
        available = None
        for path, _ in stores.values():
            store = ImageStore(path)
            available = store.ids if available is None else np.intersect1d(available, store.ids)
            store.close()
        lmdb_store = stores[args.sizes[0]]
        left_out = left_out_images(items, available, stores)
        if left_out["count"]:
            say(f"{left_out['count']} of {len(items)} images are not in the image store(s), so every pair naming "
                f"one is left out: {left_out['reasons']} (each listed with its reason in "
                f"{', '.join(left_out['manifests'])})")
        summary = dict(dataset=args.dataset, synthetic=bool(dataset.synthetic), topic_names=list(dataset.topic_names),
                       images=len(items), available=int(available.size), sizes=args.sizes, seed=args.seed,
                       num_pairs=args.num_pairs, val_pairs=args.val_pairs,
                       val_images_per_side=args.val_images_per_side, pair_lmdb=args.pair_lmdb,
                       lmdb_size=args.sizes[0], dataset_options=options, left_out_images=left_out, settings={})
        from virality.progress import progress
        for setting in progress(settings, desc="settings (validation split, pairs, LMDBs)", unit="setting",
                                enabled=not args.quiet):
            restricted, dropped = restrict_setting(setting, available)
            if dropped:
                say(f"setting {setting.name}: left out for images not in the store: {dropped}")
            split = split_setting(restricted, args.val_pairs, args.val_images_per_side, args.seed,
                                  fit=args.fit_validation)
            if args.fit_validation and (len(split.val_pairs), split.val_images.size) != \
                    (args.val_pairs, 2 * args.val_images_per_side):
                say(f"setting {setting.name}: validation fitted to the dataset's size: {len(split.val_pairs)} pairs "
                    f"of {split.val_images.size} images (--val-pairs / --val-images-per-side set them; give the nets "
                    f"that validation size: tools/make_nets.py --help)")
            possible = max_pairs(split.train)
            if possible == 0:
                raise PairSamplingError(f"setting {setting.name} has no training pairs left ({dropped or 'none'} "
                                        "dropped for images missing from the store): supply the images, or "
                                        "choose other --settings")
            num_pairs = args.num_pairs
            if num_pairs > possible and args.cap_pairs:
                num_pairs = possible
                say(f"setting {setting.name}: {possible:,} training pairs, all the data allows "
                    f"(--num-pairs {args.num_pairs:,} capped)")
            if num_pairs > possible:
                raise PairSamplingError(f"setting {setting.name} allows only {possible} training pairs; "
                                        f"pass --num-pairs {possible} or fewer (or --cap-pairs)")
            files = build_pair_files(split, root, num_pairs, args.seed, args.force)
            splits = PAIR_LMDB_SPLITS[args.pair_lmdb]
            record = 6 * args.sizes[0] ** 2
            need_gb = sum(len(load_npy(files[s][0], mmap=True)) for s in splits) * record / 1e9
            if need_gb > args.max_lmdb_gb:
                raise ValueError(f"setting {setting.name}: the pair LMDBs would take {need_gb:.0f} GB "
                                 f"(> --max-lmdb-gb {args.max_lmdb_gb}); use --pair-lmdb val and the pair_index "
                                 "feed, or fewer --num-pairs")
            build_pair_lmdbs(files, lmdb_store, splits, args.force, args.quiet)
            topics = build_topic_lmdbs(dataset, split, lmdb_store, root, args.seed, args.force, args.quiet)
            summary["settings"][setting.name] = dict(
                train_pairs=num_pairs, **split.sizes(), possible_pairs=possible, dropped=dropped,
                disjoint=bool(setting.disjoint), fold=setting.fold, pair_lmdbs=list(splits), topics=topics)
        if not (np.asarray(dataset.topics) >= 0).any():
            say(f"no topic LMDBs: dataset '{dataset.name}' has no image with a known topic")
    except (OSError, ValueError, KeyError, StoreError) as err:
        if isinstance(err, OSError):
            err = disk_error(err, err.filename or root)
        print(f"make_data: error: {err}", file=sys.stderr)
        return 2
    summary["seconds"] = round(time.time() - start, 1)
    write_json(root / "data.json", summary)
    say(f"done in {summary['seconds']} s: {root / 'data.json'}")
    return 0


def main(argv=None):
    args = parse_args(argv)
    try:
        with OutputLock(args.out_root / args.dataset):     # one writer at a time (docs/FAILURES.md)
            return build(args)
    except (OutputLocked, OSError) as err:
        if isinstance(err, OSError):
            err = disk_error(err, err.filename or args.out_root)
        print(f"make_data: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("make_data: interrupted: the outputs finished so far are kept, the one being built was dropped; "
              "rerun the same command to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
