"""Evaluation metrics (pure numpy): pairwise accuracy with a confidence interval, Spearman's rho.

Pairwise accuracy (Table 1, Image Virality Dataset): the share of test pairs whose
predicted order (I1 more viral iff f1 > f2) agrees with the label; a tie counts
half (virality.model.ranking.pairwise_accuracy). Test sets are small (489 pairs give a
95% interval of about +-4 points), so every accuracy is reported with a 95%
interval, chosen by :func:`accuracy_interval`:

- every test image in one test pair (deza2015 ``random``, ``complete_fold<k>``, the csv
  settings): the pairs are independent given the images, and the Wilson score
  interval is used;
- some image in several test pairs (deza2015 ``top_bottom``: each extreme image in 4
  pairs): the pairs are not independent (one badly scored image spoils all its
  pairs), so a Wilson interval would be too narrow; a bootstrap over images is used
  (:func:`image_bootstrap_interval`: images resampled with replacement, each pair
  weighted by the product of its two images' multiplicities, percentile interval).

Spearman's rho (Table 1, Popularity Dataset): rank correlation between predicted
scores and true popularity, with average ranks for ties (PAPER.md explains why the
table's "accuracies" are read as rho x 100). ``user_specific`` averages rho per user
(Khosla et al.): :func:`setting_spearman` is the one path for every spearman setting.
"""
import math

import numpy as np

from virality.model.ranking import pairwise_accuracy  # noqa: F401  (one definition, re-exported)


def wilson_interval(successes, n, z=1.959963984540054):
    """95% Wilson score interval for a proportion; (nan, nan) when n == 0."""
    if n == 0:
        return float("nan"), float("nan")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def rankdata(values):
    """Ranks 1..n with ties given their average rank."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(values.size, dtype=np.float64)
    sorted_vals = values[order]
    boundaries = np.flatnonzero(np.diff(sorted_vals)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [values.size]])
    for start, end in zip(starts, ends):
        ranks[order[start:end]] = (start + end + 1) / 2.0
    return ranks


def spearman(predicted, actual):
    """Spearman's rank correlation; NaN when either side is constant or n < 2."""
    predicted = np.asarray(predicted, dtype=np.float64).reshape(-1)
    actual = np.asarray(actual, dtype=np.float64).reshape(-1)
    if predicted.size != actual.size:
        raise ValueError(f"spearman: {predicted.size} predictions for {actual.size} values")
    if predicted.size < 2:
        return float("nan")
    a, b = rankdata(predicted), rankdata(actual)
    a -= a.mean()
    b -= b.mean()
    denom = math.sqrt(float(np.dot(a, a) * np.dot(b, b)))
    return float(np.dot(a, b) / denom) if denom > 0 else float("nan")


def pair_scores(scores_by_id, pairs):
    """Look up f1, f2 for int (N, 3) pairs [I1, I2, y] from a {id: score} mapping."""
    pairs = np.asarray(pairs)
    missing = [int(i) for i in np.unique(pairs[:, :2]) if int(i) not in scores_by_id]
    if missing:
        raise KeyError(f"no score for {len(missing)} test image(s), e.g. id {missing[0]}")
    f1 = np.array([scores_by_id[int(i)] for i in pairs[:, 0]])
    f2 = np.array([scores_by_id[int(i)] for i in pairs[:, 1]])
    return f1, f2


WILSON = "wilson"
IMAGE_BOOTSTRAP = "image-bootstrap"
BOOTSTRAP_ROUNDS = 2000
BOOTSTRAP_SEED = 0


def pair_correctness(f1, f2, y):
    """Per pair: 1 when the predicted order agrees with y, 0 when not, 0.5 for a tie."""
    d = np.sign(np.asarray(f1, np.float64).ravel() - np.asarray(f2, np.float64).ravel())
    y = np.asarray(y, np.float64).ravel()
    return np.where(d == 0, 0.5, (d == y).astype(np.float64))


def images_repeat(pairs):
    """True when some image is in more than one of the (N, 3) pairs."""
    ids = np.asarray(pairs)[:, :2].ravel()
    return np.unique(ids).size < ids.size


def image_bootstrap_interval(correct, pairs, rounds=BOOTSTRAP_ROUNDS, seed=BOOTSTRAP_SEED, level=0.95):
    """Percentile bootstrap interval of the mean of ``correct`` over pairs, resampling images.

    Each round draws as many images as there are, with replacement, from the test images;
    a pair (a, b) counts m_a * m_b times (m = how often each image was drawn), so pairs
    that share an image move together, as they do between test sets. Rounds in which no
    pair survives are redrawn. Returns (low, high).
    """
    correct = np.asarray(correct, np.float64).ravel()
    pairs = np.asarray(pairs)
    if correct.size == 0:
        return float("nan"), float("nan")
    images, index = np.unique(pairs[:, :2], return_inverse=True)
    index = index.reshape(-1, 2)
    rng = np.random.default_rng(seed)
    stats = []
    while len(stats) < rounds:
        counts = rng.multinomial(images.size, np.full(images.size, 1.0 / images.size), size=256).astype(np.float64)
        weights = counts[:, index[:, 0]] * counts[:, index[:, 1]]
        total = weights.sum(axis=1)
        ok = total > 0
        stats.extend((weights[ok] @ correct / total[ok]).tolist())
    stats = np.asarray(stats[:rounds])
    alpha = (1 - level) / 2
    return float(np.quantile(stats, alpha)), float(np.quantile(stats, 1 - alpha))


def accuracy_interval(f1, f2, pairs):
    """(accuracy, low, high, method) for test pairs (N, 3); method is WILSON or IMAGE_BOOTSTRAP
    (module docstring: the bootstrap where an image is in several pairs)."""
    pairs = np.asarray(pairs)
    correct = pair_correctness(f1, f2, pairs[:, 2])
    acc = float(correct.mean()) if correct.size else float("nan")
    if images_repeat(pairs):
        low, high = image_bootstrap_interval(correct, pairs)
        return acc, low, high, IMAGE_BOOTSTRAP
    low, high = wilson_interval(correct.sum(), correct.size)
    return acc, low, high, WILSON


def spearman_per_user(predicted, actual, users):
    """Mean over users of Spearman's rho within each user's images (Khosla et al.'s user-specific
    metric), and the number of users averaged. Users with fewer than 2 images, or constant
    scores or predictions, have no rho and are left out; none left is an error."""
    predicted = np.asarray(predicted, np.float64).ravel()
    actual = np.asarray(actual, np.float64).ravel()
    users = np.asarray(users).ravel()
    if not predicted.size == actual.size == users.size:
        raise ValueError(f"spearman_per_user: {predicted.size} predictions, {actual.size} values, {users.size} users")
    rhos = []
    for u in np.unique(users):
        mine = users == u
        if mine.sum() >= 2:
            r = spearman(predicted[mine], actual[mine])
            if np.isfinite(r):
                rhos.append(r)
    if not rhos:
        raise ValueError("spearman_per_user: no user has a defined rank correlation (>= 2 images, not constant)")
    return float(np.mean(rhos)), len(rhos)


def setting_spearman(dataset, setting, predicted):
    """The rho of a spearman setting: ``predicted`` aligned with ``setting.test_images``, against
    the dataset's scores; per user and averaged when ``setting.per_user``. Returns (rho, users)
    with users None for a pooled rho."""
    predicted = np.asarray(predicted, dtype=np.float64).ravel()
    test = np.asarray(setting.test_images, dtype=np.int64)
    if predicted.size != test.size:
        raise ValueError(f"setting '{setting.name}': {predicted.size} predictions for {test.size} test images")
    order = np.argsort(dataset.ids)
    pos = order[np.searchsorted(dataset.ids[order], test)]
    actual = np.asarray(dataset.scores, np.float64)[pos]
    if not setting.per_user:
        return spearman(predicted, actual), None
    if dataset.users is None:
        raise ValueError(f"setting '{setting.name}' is per user but dataset '{dataset.name}' has no users")
    try:
        return spearman_per_user(predicted, actual, np.asarray(dataset.users)[pos])
    except ValueError as err:
        raise ValueError(f"setting '{setting.name}': {err}") from None
