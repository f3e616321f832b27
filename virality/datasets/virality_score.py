"""Recompute Deza & Parikh's virality score from the raw per-submission files.

The recipe (datasets/deza2015/README.md, verified there to 1e-14):

1. ``D1`` = the unique values of img_id.csv in order of first appearance; dataset id
   ``k`` (1-based) is SNAP image ``D1[k - 1]``.
2. For each id in final_names.csv take that image's submissions whose subreddit is
   one of :data:`SUBREDDITS`. Images with none are dropped.
3. ``n`` = number of those submissions, ``max_A`` = their largest normalised score A
   (authenticated_shift_score.csv), ``n_bar`` = mean of ``n`` over the kept images.
4. ``v_score = max_A * ln(n / n_bar)``.

The dominant subreddit of an image is the one (of :data:`SUBREDDITS`) it was
submitted to most; a tie goes to the subreddit of the earliest of the tied
submissions in file order (this reproduces the counts in the README exactly).

Files are read line by line, not as CSV: subreddit.csv holds a few free-text
lines with commas and quotes, and its row i must stay aligned with row i of the
other per-submission files.
"""
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: the 20 subreddits whose submissions count (Deza & Parikh), in their order.
SUBREDDITS = (
    "funny", "WTF", "aww", "atheism", "gaming", "pics", "gifs", "GifSound",
    "AdviceAnimals", "reactiongifs", "reddit.com", "gif", "trees",
    "fffffffuuuuuuuuuuuu", "woahdude", "photoshopbattles", "4chan", "space",
    "pokemon", "HIFW",
)

#: per-submission files, one row per Reddit submission, all aligned.
SUBMISSION_FILES = ("img_id.csv", "subreddit.csv", "authenticated_shift_score.csv")
#: the ids of the images that were downloaded.
NAMES_FILE = "final_names.csv"

#: largest tolerated |recomputed - published| v_score.
TOLERANCE = 1e-9


@dataclass
class ScoreTable:
    """Recomputed scores, one row per kept image, in final_names.csv order."""

    img_id: np.ndarray              # int64 dataset ids
    v_score: np.ndarray             # float64
    n_submissions: np.ndarray       # int64, submissions to the 20 subreddits
    max_a: np.ndarray               # float64, largest normalised score A
    dominant_subreddit: np.ndarray  # str, one of SUBREDDITS
    n_bar: float                    # mean n over the kept images
    dropped: np.ndarray             # int64 ids of final_names.csv with no counted submission


def _read_lines(path):
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: the Deza & Parikh metadata directory must hold "
            f"{', '.join(SUBMISSION_FILES + (NAMES_FILE,))} (see datasets/deza2015/README.md)")
    lines = path.read_text(encoding="utf-8").splitlines()
    while lines and lines[-1] == "":
        lines.pop()
    return lines


def _parse(lines, dtype, path):
    """Lines as numbers of ``dtype``; a clear error naming the first bad line."""
    try:
        return np.array(lines, dtype=dtype)
    except ValueError:
        for i, text in enumerate(lines):
            try:
                dtype(text)
            except ValueError:
                raise ValueError(f"{path}: line {i + 1} ({text!r}) is not a {dtype.__name__} number") from None
        raise


def load_submissions(data_dir):
    """The per-submission columns: (snap image id int64, subreddit str, A float64)."""
    data_dir = Path(data_dir)
    raw = {name: _read_lines(data_dir / name) for name in SUBMISSION_FILES}
    counts = {name: len(v) for name, v in raw.items()}
    if len(set(counts.values())) != 1:
        raise ValueError(f"{data_dir}: the per-submission files must have the same number of rows, got {counts}")
    img = _parse(raw["img_id.csv"], np.int64, data_dir / "img_id.csv")
    sub = np.array(raw["subreddit.csv"], dtype=object)
    a = _parse(raw["authenticated_shift_score.csv"], np.float64, data_dir / "authenticated_shift_score.csv")
    if np.isnan(a).any():
        raise ValueError(f"{data_dir / 'authenticated_shift_score.csv'}: NaN scores")
    return img, sub, a


def compute_scores(data_dir):
    """Recompute v_score (module docstring) for every image of final_names.csv."""
    data_dir = Path(data_dir)
    img, sub, a = load_submissions(data_dir)
    names_path = data_dir / NAMES_FILE
    names = _parse(_read_lines(names_path), np.int64, names_path)
    if np.unique(names).size != names.size:
        raise ValueError(f"{names_path}: an id is listed twice")

    # 1. dataset id k (1-based) = position of the SNAP id in order of first appearance.
    uniq, first, inverse = np.unique(img, return_index=True, return_inverse=True)
    rank_of_uniq = np.empty(uniq.size, dtype=np.int64)
    rank_of_uniq[np.argsort(first, kind="stable")] = np.arange(1, uniq.size + 1)
    k_of_row = rank_of_uniq[inverse]
    if names.min() < 1 or names.max() > uniq.size:
        raise ValueError(f"{names_path}: ids must lie in 1..{uniq.size} (the distinct images of img_id.csv)")

    # 2. submissions of the wanted images to one of the 20 subreddits.
    sub_index = {s: i for i, s in enumerate(SUBREDDITS)}
    s_of_row = np.array([sub_index.get(s, -1) for s in sub], dtype=np.int64)
    wanted = np.zeros(uniq.size + 1, dtype=bool)
    wanted[names] = True
    keep = (s_of_row >= 0) & wanted[k_of_row]
    rows = np.flatnonzero(keep)
    k, s, a_kept = k_of_row[rows], s_of_row[rows], a[rows]

    # 3. n, max_A per image; per-(image, subreddit) counts and first row for the dominant one.
    size = uniq.size + 1
    n = np.bincount(k, minlength=size)
    max_a = np.full(size, -np.inf)
    np.maximum.at(max_a, k, a_kept)
    cell = k * len(SUBREDDITS) + s
    counts = np.bincount(cell, minlength=size * len(SUBREDDITS)).reshape(size, len(SUBREDDITS))
    first_row = np.full(size * len(SUBREDDITS), np.iinfo(np.int64).max)
    np.minimum.at(first_row, cell, rows)
    first_row = first_row.reshape(size, len(SUBREDDITS))
    is_max = counts == counts.max(axis=1, keepdims=True)
    dominant = np.argmin(np.where(is_max & (counts > 0), first_row, np.iinfo(np.int64).max), axis=1)

    kept_ids = names[n[names] > 0]
    dropped = names[n[names] == 0]
    if kept_ids.size == 0:
        raise ValueError(f"{data_dir}: no image of {NAMES_FILE} has a submission to the 20 subreddits")
    n_kept = n[kept_ids]
    n_bar = float(n_kept.mean())
    # 4. the score.
    v = max_a[kept_ids] * np.log(n_kept / n_bar)
    return ScoreTable(
        img_id=kept_ids, v_score=v, n_submissions=n_kept, max_a=max_a[kept_ids],
        dominant_subreddit=np.array([SUBREDDITS[i] for i in dominant[kept_ids]], dtype=object),
        n_bar=n_bar, dropped=dropped)


def load_published(mat_path):
    """(img_id int64, v_score float64) of viral_datasetV2.mat, in its order (ascending v_score)."""
    from scipy.io import loadmat

    mat_path = Path(mat_path)
    if not mat_path.is_file():
        raise FileNotFoundError(f"{mat_path} is missing: it holds the published v_score (datasets/deza2015/)")
    try:
        cells = loadmat(str(mat_path))["viral_dataset"].ravel()
        ids = np.array([int(c["img_id"][0, 0].ravel()[0]) for c in cells], dtype=np.int64)
        v = np.array([float(c["v_score"][0, 0].ravel()[0]) for c in cells], dtype=np.float64)
    except (KeyError, ValueError, IndexError, TypeError) as exc:
        raise ValueError(f"{mat_path}: expected the struct cell 'viral_dataset' with fields img_id and v_score "
                         f"({exc})") from exc
    return ids, v


def check_against_published(table, mat_path, tol=TOLERANCE):
    """Raise ValueError unless ``table`` has the .mat's images and v_scores within ``tol``."""
    ids, v = load_published(mat_path)
    missing = np.setdiff1d(ids, table.img_id)
    extra = np.setdiff1d(table.img_id, ids)
    if missing.size or extra.size:
        raise ValueError(
            f"recomputed scores do not cover the images of {mat_path}: {missing.size} missing "
            f"(e.g. {missing[:5].tolist()}), {extra.size} extra (e.g. {extra[:5].tolist()}); "
            f"check that the per-submission files and final_names.csv belong to this .mat (SHA256SUMS)")
    order = np.argsort(table.img_id)
    pos = order[np.searchsorted(table.img_id[order], ids)]
    diff = np.abs(table.v_score[pos] - v)
    worst = int(np.argmax(diff))
    if not diff[worst] <= tol:
        raise ValueError(
            f"recomputed v_score differs from {mat_path} by {diff[worst]:.3g} (> {tol:g}) for img_id "
            f"{ids[worst]} (recomputed {table.v_score[pos][worst]!r}, published {v[worst]!r}); "
            f"check the raw files against SHA256SUMS")
    return float(diff.max())


def write_csv(table, path):
    """Write img_id,v_score,n_submissions,max_a,dominant_subreddit (repr floats: exact)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("img_id,v_score,n_submissions,max_a,dominant_subreddit\n")
        for i, v, n, a, s in zip(table.img_id, table.v_score, table.n_submissions, table.max_a,
                                 table.dominant_subreddit):
            f.write(f"{int(i)},{float(v)!r},{int(n)},{float(a)!r},{s}\n")
    tmp.replace(path)
