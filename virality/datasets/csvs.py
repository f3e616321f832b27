"""Generic tables for any relative attribute (memorability, aesthetics, ...).

``scores-csv``: one row per image, columns ``image,score[,topic][,user]``.
  ``image`` is a file name relative to the image directory; ids are row indices
  after sorting by image name (``Dataset.image_names`` holds the names).
  Settings (docs/PROTOCOL.md): ``random`` and ``random_disjoint``: images are split
  at the median score into a high and a low half (like Deza & Parikh's viral /
  non-viral halves, :func:`virality.data.pairs.split_by_median`); a seeded
  ``test_fraction`` of each half is held out and matched at random into test pairs
  (one high, one low image, each test image in one pair, labels balanced).
  ``random`` keeps only the test pairs out of training (the seed paper's
  protocol); ``random_disjoint`` keeps the test images out too.

``pairs-csv``: one row per labelled comparison, columns ``image_a,image_b,label``
  with label ``+1`` when image_a has more of the attribute, ``-1`` when image_b
  has. Ids are indices of the sorted distinct image names; scores are unknown
  (NaN). A pair listed twice (in either order) must agree (then it counts once).
  Settings ``random`` and ``random_disjoint``: a seeded ``test_fraction`` of the
  images is held out; the test pairs are the pairs with both images held out.
  ``random`` trains on every other pair, ``random_disjoint`` only on pairs with
  no held-out image. Training pairs come from the file (``Setting.train_pairs``).

Both accept comma- or tab-separated files (the header decides) with a header row.
"""
import csv
import io
import json
import posixpath
from pathlib import Path, PurePosixPath

import numpy as np

from virality.datasets.base import Dataset, Setting
from virality.data.pairs import balanced_labels, orient_pairs, split_by_median

SCORES_FILE = "scores.csv"
PAIRS_FILE = "pairs.csv"
#: the csv module's field limit (characters): a longer field is an error naming its line.
MAX_FIELD = csv.field_size_limit()


def resolve_table(data_dir, default_name, what):
    """(table path, its directory): ``data_dir`` is the table itself or a directory holding it."""
    if data_dir is None:
        raise ValueError(f"{what}: pass data_dir, a {default_name} file or the directory holding it")
    path = Path(data_dir)
    if path.is_dir():
        path = path / default_name
    if not path.is_file():
        raise FileNotFoundError(f"{what}: {path} does not exist; pass the table file or a directory "
                                f"that holds {default_name}")
    return path, path.parent


def read_rows(path):
    """All rows of a UTF-8 comma- or tab-separated file (the header line decides), as lists of str.

    Raises a ValueError naming the file and line for bytes that are not UTF-8, a field
    longer than MAX_FIELD characters, or malformed quoting."""
    path = Path(path)
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise ValueError(f"{path}: line {line}: not UTF-8 text (byte {data[err.start]:#04x} at offset "
                         f"{err.start}); save the table as UTF-8") from None
    header_line = text.split("\n", 1)[0]
    delimiter = "\t" if "\t" in header_line else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    rows = []
    try:
        for row in reader:
            rows.append(row)
    except csv.Error as err:
        raise ValueError(f"{path}: line {reader.line_num}: {err} (fields are limited to {MAX_FIELD} characters)") \
            from None
    return rows


def read_table(path, required, optional=(), aliases=None):
    """Read a header + rows table into {column: list of str} with 1-based line numbers.

    Columns are matched case-insensitively; ``aliases`` maps a canonical name to
    accepted alternatives (e.g. TPIC2017's ``pid``/``uid``/``logview``). Raises a
    ValueError naming the file when a required column is missing, a column name is
    repeated, a row has the wrong number of fields, or the table has no rows
    (and, from ``read_rows``, the line of bad bytes or an over-long field).
    """
    aliases = aliases or {}
    path = Path(path)
    rows = read_rows(path)
    if not rows or not any(c.strip() for c in rows[0]):
        raise ValueError(f"{path}: empty file; expected a header row with columns {', '.join(required)}")
    header = [h.strip().lower() for h in rows[0]]
    repeated = sorted({h for h in header if h and header.count(h) > 1})
    if repeated:
        raise ValueError(f"{path}: line 1: the header names column(s) {', '.join(map(repr, repeated))} more than "
                         "once; rename or remove the repeats")
    columns = {}
    for name in tuple(required) + tuple(optional):
        for candidate in (name,) + tuple(aliases.get(name, ())):
            if candidate.lower() in header:
                columns[name] = header.index(candidate.lower())
                break
        else:
            if name in required:
                accepted = " or ".join((name,) + tuple(aliases.get(name, ())))
                raise ValueError(f"{path}: no column '{accepted}' in the header {rows[0]}; "
                                 f"required columns: {', '.join(required)}")
    body = [(i + 2, r) for i, r in enumerate(rows[1:]) if any(c.strip() for c in r)]
    if not body:
        raise ValueError(f"{path}: no data rows after the header")
    table = {name: [] for name in columns}
    table["_line"] = []
    for line, r in body:
        if len(r) != len(header):
            raise ValueError(f"{path}: line {line} has {len(r)} fields, the header has {len(header)}")
        for name, col in columns.items():
            table[name].append(r[col].strip())
        table["_line"].append(line)
    return table


def parse_floats(values, lines, path, column):
    """Floats of a column; a clear error naming the line of the first bad value."""
    out = np.empty(len(values), dtype=np.float64)
    for i, (v, line) in enumerate(zip(values, lines)):
        try:
            out[i] = float(v)
        except ValueError:
            raise ValueError(f"{path}: line {line}: {column} {v!r} is not a number") from None
        if not np.isfinite(out[i]):
            raise ValueError(f"{path}: line {line}: {column} {v!r} is not a finite number")
    return out


def image_name(name, line, path):
    """An image name as a normalised relative POSIX path (``./a.jpg`` and ``a//a.jpg`` -> ``a.jpg``).

    Raises a ValueError naming the file and line for an empty or absolute name or one with '..'."""
    p = PurePosixPath(name.replace("\\", "/"))
    if not name or p.is_absolute() or ".." in p.parts:
        raise ValueError(f"{path}: line {line}: image {name!r} must be a file name relative to the image "
                         f"directory (no absolute path, no '..')")
    normal = posixpath.normpath(p.as_posix())
    if normal in (".", ""):
        raise ValueError(f"{path}: line {line}: image {name!r} names the image directory, not a file")
    return normal


def check_image_names(names, lines, path):
    """Image names must be relative paths inside the image directory, each listed once (after
    normalisation, so ``./a.jpg`` and ``a.jpg`` are one image). Returns the normalised names."""
    seen = {}
    out = []
    for name, line in zip(names, lines):
        normal = image_name(name, line, path)
        if normal in seen:
            first, where = seen[normal]
            same = f"{first!r} and {name!r} name the same file" if first != name else f"image {name!r} is listed twice"
            raise ValueError(f"{path}: {same} (lines {where} and {line})")
        seen[normal] = (name, line)
        out.append(normal)
    return out


def label_index(values, names=None):
    """Map label strings to int indices: (index array, sorted names).

    Empty strings map to -1. Names are sorted numerically when they all are
    integers, else as strings; an explicit ``names`` list fixes the order (and
    any value outside it is an error the caller reports)."""
    present = sorted({v for v in values if v != ""}, key=_natural)
    if names is None:
        names = present
    index = {n: i for i, n in enumerate(names)}
    unknown = [v for v in present if v not in index]
    if unknown:
        raise KeyError(unknown[0])
    return np.array([index.get(v, -1) for v in values], dtype=np.int64), list(names)


def _natural(text):
    try:
        return (0, int(text), "")
    except ValueError:
        return (1, 0, text)


def user_ids(values, path):
    """int64 user ids: the values themselves when all are integers, else indices of sorted names."""
    if any(v == "" for v in values):
        raise ValueError(f"{path}: a row has an empty user; give every image its user")
    try:
        return np.array([int(v) for v in values], dtype=np.int64)
    except ValueError:
        idx, _ = label_index(values)
        return idx


def resolve_image_dir(images, base, first_name):
    """The image directory: ``images`` when given, else ``<base>/images`` or ``base``,
    whichever holds the first listed image (``<base>/images`` if it exists, when neither does)."""
    if images is not None:
        images = Path(images)
        if not images.is_dir():
            raise FileNotFoundError(f"image directory {images} does not exist")
        return images
    for candidate in (base / "images", base):
        if (candidate / first_name).is_file():
            return candidate
    return base / "images" if (base / "images").is_dir() else base


def scores_settings(ids, scores, seed=0, test_fraction=0.2, what="scores-csv"):
    """The ``random`` / ``random_disjoint`` settings of a score table (module docstring)."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"{what}: test_fraction must be in (0, 1), got {test_fraction}")
    high, low = split_by_median(ids, scores)
    half = min(high.size, low.size)
    if half < 2:
        raise ValueError(f"{what}: at least 4 images with distinct scores are needed "
                         f"(the median split leaves {high.size} high and {low.size} low)")
    k = min(max(1, int(round(test_fraction * half))), half - 1)
    rng = np.random.default_rng(seed)
    test_high = rng.choice(high, size=k, replace=False)
    test_low = rng.choice(low, size=k, replace=False)
    pairs = orient_pairs(test_high, test_low, balanced_labels(k, rng))
    images = np.unique(pairs[:, :2]).astype(np.int64)
    desc = (f"seeded held-out split (seed {seed}): {k} high x {k} low test images of the median split, "
            f"matched into {k} test pairs")
    return {
        "random": Setting(name="random", description=desc, metric="pairwise_accuracy",
                          test_pairs=pairs, test_images=images, viral_pool=high, nonviral_pool=low),
        "random_disjoint": Setting(
            name="random_disjoint", description=desc + "; no test image in any training pair",
            metric="pairwise_accuracy", test_pairs=pairs, test_images=images,
            viral_pool=np.setdiff1d(high, images), nonviral_pool=np.setdiff1d(low, images), disjoint=True),
    }


def load_scores_csv(data_dir, images=None, name="scores-csv", synthetic=False, table=SCORES_FILE,
                    seed=0, test_fraction=0.2, topic_names=None):
    """A ``scores-csv`` dataset (module docstring).

    data_dir:      the table, or a directory holding ``table`` (default scores.csv).
    images:        the image directory (default: ``<dir>/images`` or the table's directory).
    seed, test_fraction: the held-out split of the ``random`` settings.
    topic_names:   fixes the order of topic classes (default: sorted names).
    """
    path, base = resolve_table(data_dir, table, name)
    t = read_table(path, ("image", "score"), ("topic", "user"))
    lines = t["_line"]
    t["image"] = check_image_names(t["image"], lines, path)
    scores = parse_floats(t["score"], lines, path, "score")
    order = sorted(range(len(lines)), key=lambda i: t["image"][i])
    names = np.array([t["image"][i] for i in order], dtype=object)
    lines_sorted = [lines[i] for i in order]
    scores = scores[order]
    if "topic" in t:
        values = [t["topic"][i] for i in order]
        try:
            topics, topic_list = label_index(values, topic_names)
        except KeyError as exc:
            line = lines_sorted[values.index(exc.args[0])]
            raise ValueError(f"{path}: line {line}: topic {exc.args[0]!r} is not one of {topic_names}") from None
    else:
        topics, topic_list = np.full(len(order), -1, dtype=np.int64), []
    users = user_ids([t["user"][i] for i in order], path) if "user" in t else None
    ids = np.arange(len(order), dtype=np.int64)
    return Dataset(
        name=name, ids=ids, scores=scores, topics=topics.astype(np.int32), topic_names=topic_list,
        image_dir=resolve_image_dir(images, base, names[0]), users=users, synthetic=synthetic,
        settings=scores_settings(ids, scores, seed, test_fraction, what=str(path)),
        image_ext=Path(names[0]).suffix or ".jpg", image_names=names)


def load_synthetic(data_dir, images=None, **options):
    """The embedded synthetic world (virality/data/synthetic.py's output), read as a scores-csv.

    Its topic classes keep the generator's order when world.json lists them."""
    base = Path(data_dir)
    table = base / SCORES_FILE if base.is_dir() or not base.suffix else base
    if not table.is_file():
        raise FileNotFoundError(
            f"{table} does not exist: generate the synthetic world first "
            f"(.venv/bin/python tools/make_synthetic.py --out {table.parent}, or make data DATASET=synthetic)")
    world = table.parent / "world.json"
    if "topic_names" not in options and world.is_file():
        try:
            options["topic_names"] = list(json.loads(world.read_text())["topics"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{world}: expected JSON with a 'topics' list ({exc})") from None
    return load_scores_csv(table, images=images, name="synthetic", synthetic=True, **options)


def _parse_label(value, line, path):
    try:
        label = int(value)
    except ValueError:
        label = None
    if label not in (1, -1):
        raise ValueError(f"{path}: line {line}: label {value!r} must be +1 (image_a has more) or -1 "
                         f"(image_b has more); drop ties")
    return label


def load_pairs_csv(data_dir, images=None, name="pairs-csv", table=PAIRS_FILE, seed=0, test_fraction=0.3):
    """A ``pairs-csv`` dataset (module docstring).

    data_dir:      the table, or a directory holding ``table`` (default pairs.csv).
    images:        the image directory (default: ``<dir>/images`` or the table's directory).
    seed, test_fraction: the fraction of images held out (seeded).
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"{name}: test_fraction must be in (0, 1), got {test_fraction}")
    path, base = resolve_table(data_dir, table, name)
    t = read_table(path, ("image_a", "image_b", "label"))
    lines = t["_line"]
    for col in ("image_a", "image_b"):
        t[col] = [image_name(v, line, path) for v, line in zip(t[col], lines)]
    names = np.array(sorted(set(t["image_a"]) | set(t["image_b"])), dtype=object)
    index = {n: i for i, n in enumerate(names)}
    a = np.array([index[v] for v in t["image_a"]], dtype=np.int64)
    b = np.array([index[v] for v in t["image_b"]], dtype=np.int64)
    y = np.array([_parse_label(v, line, path) for v, line in zip(t["label"], lines)], dtype=np.int64)
    same = np.flatnonzero(a == b)
    if same.size:
        raise ValueError(f"{path}: line {lines[same[0]]} compares image {names[a[same[0]]]!r} with itself")
    # One entry per unordered pair; repeats must agree once turned the same way round.
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    canon = np.where(a == lo, y, -y)
    seen = {}
    keep = []
    for i, key in enumerate(zip(lo.tolist(), hi.tolist())):
        if key in seen:
            j = seen[key]
            if canon[j] != canon[i]:
                raise ValueError(f"{path}: lines {lines[j]} and {lines[i]} compare {names[key[0]]!r} and "
                                 f"{names[key[1]]!r} with opposite labels; resolve them (e.g. majority vote) first")
            continue
        seen[key] = i
        keep.append(i)
    pairs = np.stack([a[keep], b[keep], y[keep]], axis=1)
    ids = np.arange(names.size, dtype=np.int64)
    rng = np.random.default_rng(seed)
    n_test = max(2, int(round(test_fraction * ids.size)))
    held = np.zeros(ids.size, dtype=bool)
    held[rng.choice(ids, size=min(n_test, ids.size), replace=False)] = True
    both = held[pairs[:, 0]] & held[pairs[:, 1]]
    neither = ~held[pairs[:, 0]] & ~held[pairs[:, 1]]
    if not both.any():
        raise ValueError(f"{path}: no pair has both images among the {held.sum()} held-out images "
                         f"(seed {seed}, test_fraction {test_fraction}); raise test_fraction or add pairs")
    test = pairs[both].astype(np.int32)
    test_images = np.unique(test[:, :2]).astype(np.int64)
    desc = (f"seeded held-out images (seed {seed}, {held.sum()} of {ids.size}); "
            f"{test.shape[0]} test pairs have both images held out")
    empty = np.empty(0, dtype=np.int64)
    settings = {
        "random": Setting(name="random", description=desc + "; training: every other pair",
                          metric="pairwise_accuracy", test_pairs=test, test_images=test_images,
                          viral_pool=empty, nonviral_pool=empty,
                          train_pairs=pairs[~both].astype(np.int32)),
        "random_disjoint": Setting(name="random_disjoint",
                                   description=desc + "; training: pairs without a held-out image",
                                   metric="pairwise_accuracy", test_pairs=test, test_images=test_images,
                                   viral_pool=empty, nonviral_pool=empty, disjoint=True,
                                   train_pairs=pairs[neither].astype(np.int32)),
    }
    return Dataset(
        name=name, ids=ids, scores=np.full(ids.size, np.nan), topics=np.full(ids.size, -1, dtype=np.int32),
        topic_names=[], image_dir=resolve_image_dir(images, base, names[0]), settings=settings,
        image_ext=Path(names[0]).suffix or ".jpg", image_names=names)
