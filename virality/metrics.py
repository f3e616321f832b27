"""Evaluation metrics (pure numpy): pairwise accuracy with a confidence interval, Spearman's rho.

Pairwise accuracy (Table 1, Image Virality Dataset): the share of test pairs whose
predicted order (I1 more viral iff f1 > f2) agrees with the label; a tie counts
half (virality.ranking.pairwise_accuracy). Test sets are small (489 pairs give a
95% interval of about +-4 points), so every accuracy is reported with a Wilson
score interval.

Spearman's rho (Table 1, Popularity Dataset): rank correlation between predicted
scores and true popularity, with average ranks for ties (PAPER.md explains why the
table's "accuracies" are read as rho x 100).
"""
import math

import numpy as np

from virality.ranking import pairwise_accuracy  # noqa: F401  (one definition, re-exported)


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
