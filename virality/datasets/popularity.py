"""Popularity tables (Khosla et al. 2014; TPIC2017 / SMP Flickr data) -> :class:`Dataset`.

On disk: one table, comma- or tab-separated with a header, one row per image:
``image,user,score`` (aliases accepted: ``pid``/``uid``/``logview`` as in the
TPIC2017 files, ``popularity``). ``image`` is a file name relative to the image
directory; a name without an extension gets ``image_ext`` (default ``.jpg``).
``score`` is the popularity (Khosla et al.: log of views normalised by upload age).

Settings (seed paper Table 1, Popularity columns; Khosla et al. Sec. 3; exact
construction in docs/PROTOCOL.md), all seeded, evaluated by Spearman's rank
correlation between predicted and actual scores of the test images:

- ``one_per_user``:  one random image per user; those split at random into
  train / test (``test_fraction``, default 0.5).
- ``user_mix``:      all images split at random into train / test, so a user's
  images fall on both sides.
- ``user_specific``: users with at least ``min_user_images`` images; each user's
  images split into train / test; rho is computed per user over that user's test
  images and averaged over users (``Setting.per_user``).

Training pairs come from the training images only (every setting is image
disjoint): the training images are split at the median score
(:func:`virality.data.pairs.split_by_median`) into a high and a low pool, and pairs
are drawn from high x low, as for the virality data. The paper's numbers are
rho x 100 (PAPER.md).
"""
from pathlib import Path

import numpy as np

from virality.datasets.base import Dataset, Setting
from virality.datasets.csvs import check_image_names, parse_floats, read_table, user_ids
from virality.experiments.metrics import setting_spearman, spearman  # noqa: F401  (spearman: one definition, re-exported)
from virality.data.pairs import split_by_median

NAME = "popularity"
TABLE_NAMES = ("popularity.csv", "popularity.tsv", "popularity.txt")
ALIASES = {"image": ("pid", "photo", "photo_id"), "user": ("uid", "user_id", "owner"),
           "score": ("logview", "popularity")}

#: seed paper, Table 1 (Popularity Dataset), Spearman rho x 100.
PAPER = {
    "one_per_user": {"alexnet_pvcnn": 27.78, "alexnet_tpvcnn": 30.56, "vgg19_pvcnn": 29.92, "vgg19_tpvcnn": 31.57},
    "user_mix": {"alexnet_pvcnn": 32.91, "alexnet_tpvcnn": 36.86, "vgg19_pvcnn": 35.64, "vgg19_tpvcnn": 38.21},
    "user_specific": {"alexnet_pvcnn": 29.55, "alexnet_tpvcnn": 33.75, "vgg19_pvcnn": 34.81,
                      "vgg19_tpvcnn": 38.85},
}


def _table_path(data_dir):
    if data_dir is None:
        raise ValueError("popularity: pass data_dir, the table (image,user,score) or a directory holding "
                         f"one of {', '.join(TABLE_NAMES)}")
    path = Path(data_dir)
    if path.is_dir():
        for name in TABLE_NAMES:
            if (path / name).is_file():
                return path / name
        raise FileNotFoundError(f"popularity: {path} holds none of {', '.join(TABLE_NAMES)}; "
                                f"pass the table file itself")
    if not path.is_file():
        raise FileNotFoundError(f"popularity: {path} does not exist; pass the image,user,score table")
    return path


def _split(images, test_fraction, rng):
    """Random train / test split of ``images``: (train, test), test = round(fraction * n)."""
    perm = rng.permutation(images)
    n_test = int(round(test_fraction * perm.size))
    return perm[n_test:], perm[:n_test]


def _setting(name, description, train, test, ids, scores, per_user=False):
    if test.size < 2 or train.size < 2:
        raise ValueError(f"popularity setting '{name}': {train.size} training and {test.size} test images; "
                         f"both need at least 2 (more images, or another test_fraction / min_user_images)")
    pos = np.searchsorted(ids, train)
    high, low = split_by_median(train, scores[pos])
    if high.size == 0 or low.size == 0:
        raise ValueError(f"popularity setting '{name}': the training images' scores are all equal")
    return Setting(name=name, description=description, metric="spearman",
                   test_pairs=np.empty((0, 3), dtype=np.int32), test_images=np.sort(test),
                   viral_pool=high, nonviral_pool=low, disjoint=True, paper=dict(PAPER[name]),
                   per_user=per_user)


def _settings(ids, scores, users, seed, test_fraction, min_user_images):
    rng = np.random.default_rng(seed)
    out = {}
    # one_per_user: first image of each user in a random order = one random image per user.
    perm = rng.permutation(ids.size)
    _, first = np.unique(users[perm], return_index=True)
    chosen = ids[perm[first]]
    train, test = _split(chosen, test_fraction, rng)
    out["one_per_user"] = _setting("one_per_user", f"one random image of each of {chosen.size} users, "
                                   f"{test.size} test images (seed {seed}); Spearman", train, test, ids, scores)
    train, test = _split(ids, test_fraction, rng)
    out["user_mix"] = _setting("user_mix", f"all {ids.size} images split at random, {test.size} test images "
                               f"(seed {seed}); Spearman", train, test, ids, scores)
    # user_specific: split each eligible user's images; rank within user in a random order.
    uniq, counts = np.unique(users, return_counts=True)
    eligible = np.isin(users, uniq[counts >= min_user_images])
    sel = rng.permutation(np.flatnonzero(eligible))
    sel = sel[np.argsort(users[sel], kind="stable")]
    u, start, n_u = np.unique(users[sel], return_index=True, return_counts=True)
    rank = np.arange(sel.size) - np.repeat(start, n_u)
    is_test = rank < np.repeat(np.round(test_fraction * n_u).astype(np.int64), n_u)
    if u.size == 0:
        raise ValueError(f"popularity setting 'user_specific': no user has {min_user_images} or more images; "
                         f"lower min_user_images")
    out["user_specific"] = _setting(
        "user_specific", f"{u.size} users with >= {min_user_images} images, each split at random, "
        f"{int(is_test.sum())} test images (seed {seed}); Spearman per user, averaged",
        ids[sel[~is_test]], ids[sel[is_test]], ids, scores, per_user=True)
    return out


def load(data_dir, images=None, image_ext=".jpg", seed=0, test_fraction=0.5, min_user_images=10):
    """A popularity table (module docstring) as a Dataset with its three settings."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"popularity: test_fraction must be in (0, 1), got {test_fraction}")
    path = _table_path(data_dir)
    t = read_table(path, ("image", "user", "score"), aliases=ALIASES)
    lines = t["_line"]
    names = [n if Path(n).suffix else n + image_ext for n in t["image"]]
    names = check_image_names(names, lines, path)
    scores = parse_floats(t["score"], lines, path, "score")
    users = user_ids(t["user"], path)
    order = sorted(range(len(names)), key=names.__getitem__)
    names = np.array([names[i] for i in order], dtype=object)
    scores, users = scores[order], users[order]
    ids = np.arange(names.size, dtype=np.int64)
    image_dir = Path(images) if images is not None else path.parent / "images"
    if images is not None and not image_dir.is_dir():
        raise FileNotFoundError(f"image directory {images} does not exist")
    return Dataset(name=NAME, ids=ids, scores=scores, topics=np.full(ids.size, -1, dtype=np.int32),
                   topic_names=[], image_dir=image_dir, users=users,
                   settings=_settings(ids, scores, users, seed, test_fraction, min_user_images),
                   image_ext=image_ext, image_names=names)


def evaluate(dataset, setting, predicted):
    """Spearman rho (not x 100) of ``predicted`` (aligned with ``setting.test_images``)
    against the dataset's scores; per user and averaged for a ``per_user`` setting
    (virality.experiments.metrics.setting_spearman, the one path evaluation uses too)."""
    return setting_spearman(dataset, setting, predicted)[0]
