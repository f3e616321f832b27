"""Evaluation metrics and Eq. 4 against independent references: scipy.stats and the formulas written out.

Test data are chosen so that a near miss fails: rankings that are not affine transforms of the
truth (Pearson differs from Spearman), ties on both sides, and tolerances far below the gap
between Wilson and Wald intervals.
"""
import math
import warnings

import numpy as np
import pytest
from scipy import stats

from virality.experiments.metrics import pair_scores, rankdata, spearman, wilson_interval
from virality.model.ranking import pair_probability, pairwise_accuracy


# ------------------------------------------------------------------ Spearman's rho

def test_spearman_is_not_pearson_on_a_monotone_but_curved_ranking():
    truth = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    predicted = np.exp(3 * truth)                  # same order, far from affine
    assert spearman(predicted, truth) == 1.0
    assert stats.pearsonr(predicted, truth)[0] < 0.9


def test_spearman_hand_computed_without_ties():
    # ranks of predicted: [2, 1, 4, 3, 5]; d = [1, -1, 1, -1, 0]; rho = 1 - 6 * 4 / (5 * 24) = 0.8
    assert spearman([20.0, 10.0, 45.0, 30.0, 99.0], [1, 2, 3, 4, 5]) == pytest.approx(0.8, abs=1e-15)


@pytest.mark.parametrize("seed", range(6))
def test_spearman_equals_scipy_with_ties(seed):
    rng = np.random.default_rng(seed)
    n = 50 + 10 * seed
    actual = rng.integers(0, 12, n).astype(float)                       # many ties
    predicted = np.round(np.exp(actual / 2.5) + rng.normal(0, 2, n), 0)   # curved, noisy, tied
    want = stats.spearmanr(predicted, actual).statistic
    assert spearman(predicted, actual) == pytest.approx(want, abs=1e-12)
    assert abs(want - stats.pearsonr(predicted, actual)[0]) > 1e-3         # the case tells them apart


def test_spearman_edge_cases():
    assert math.isnan(spearman([1.0], [2.0]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")                       # NaN by decision, not by a 0/0
        assert math.isnan(spearman([3.0, 3.0, 3.0], [1.0, 2.0, 3.0]))
        assert math.isnan(spearman([1.0, 2.0, 3.0], [5.0, 5.0, 5.0]))
    assert spearman([[1.0], [2.0]], [1.0, 2.0]) == 1.0                  # column vectors are flattened
    with pytest.raises(ValueError, match="3 predictions for 2 values"):
        spearman([1, 2, 3], [1, 2])


def test_rankdata_equals_scipy_average_ranks():
    values = np.array([3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0, 5.0, 3.0, 5.0])
    np.testing.assert_array_equal(rankdata(values), stats.rankdata(values, method="average"))
    np.testing.assert_array_equal(rankdata([7.0, 7.0, 7.0]), [2.0, 2.0, 2.0])
    np.testing.assert_array_equal(rankdata([2.0]), [1.0])


# ------------------------------------------------------------------ Wilson interval

@pytest.mark.parametrize("k, n", [(342, 489), (245, 489), (1, 20), (19, 20), (0, 10), (10, 10), (50, 100)])
def test_wilson_interval_equals_scipy(k, n):
    low, high = wilson_interval(k, n)
    want = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert low == pytest.approx(want.low, abs=1e-12)
    assert high == pytest.approx(want.high, abs=1e-12)


def test_wilson_is_not_wald():
    """For 342 of 489 pairs (70%) the Wald interval p +- z sqrt(p(1-p)/n) is off by more than 1e-3."""
    low, high = wilson_interval(342, 489)
    p, z = 342 / 489, 1.959963984540054
    wald = z * math.sqrt(p * (1 - p) / 489)
    assert abs(low - (p - wald)) > 1e-3 and abs(high - (p + wald)) > 1e-4
    # Written out (Wilson 1927): (p + z^2/2n -+ z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)
    centre = (p + z * z / (2 * 489)) / (1 + z * z / 489)
    half = z * math.sqrt(p * (1 - p) / 489 + z * z / (4 * 489 ** 2)) / (1 + z * z / 489)
    assert (low, high) == pytest.approx((centre - half, centre + half), abs=1e-15)


def test_wilson_interval_of_nothing_is_nan():
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


# ------------------------------------------------------------------ Eq. 4 and pairwise accuracy

@pytest.mark.parametrize("f1, f2", [(1.0, 0.0), (0.0, 2.0), (0.3, -0.45), (-1.5, -1.5), (4.0, 1.0)])
def test_pair_probability_is_eq4_written_out(f1, f2):
    g1 = math.exp(f1) / (math.exp(f1) + math.exp(f2))          # Eq. 4
    assert float(pair_probability(f1, f2)) == pytest.approx(g1, abs=1e-15)


def test_pair_probability_hand_values():
    assert float(pair_probability(1.0, 0.0)) == pytest.approx(1 / (1 + math.e ** -1), abs=1e-15)   # 0.7311
    np.testing.assert_allclose(pair_probability([0.0, 2.0], [2.0, 0.0]),
                               [1 / (1 + math.e ** 2), 1 / (1 + math.e ** -2)], atol=1e-15)


def test_pairwise_accuracy_equals_a_counting_loop():
    rng = np.random.default_rng(3)
    f1, f2 = rng.integers(-3, 4, 500).astype(float), rng.integers(-3, 4, 500).astype(float)
    y = rng.choice([-1, 1], 500)
    right = sum(0.5 if a == b else float((a > b) == (t == 1)) for a, b, t in zip(f1, f2, y))
    assert pairwise_accuracy(f1, f2, y) == pytest.approx(right / 500, abs=1e-15)
    assert math.isnan(pairwise_accuracy([], [], []))
    assert pairwise_accuracy([1.0], [0.0], [1]) == 1.0 and pairwise_accuracy([1.0], [0.0], [-1]) == 0.0
    assert pairwise_accuracy([[2.0], [0.0]], [[1.0], [1.0]], [1, -1]) == 1.0   # (N, 1) score blobs
    with pytest.raises(ValueError, match="labels"):
        pairwise_accuracy([1.0], [0.0], [0])


def test_pair_scores_looks_up_both_images():
    scores = {3: 0.5, 7: -1.0, 9: 2.0}
    f1, f2 = pair_scores(scores, [[3, 7, 1], [9, 3, -1]])
    np.testing.assert_array_equal(f1, [0.5, 2.0])
    np.testing.assert_array_equal(f2, [-1.0, 0.5])
    with pytest.raises(KeyError, match="no score for 2 test image.*e.g. id 4"):
        pair_scores(scores, [[3, 4, 1], [5, 9, 1]])


# ------------------------------------------------------------------ per-pair correctness, intervals, per-user rho

def test_pair_correctness_by_hand():
    # d = f1 - f2: +0.5 agrees with y=+1 (1), -2 disagrees with y=+1 (0), a tie (0.5), -1 agrees with y=-1 (1)
    from virality.experiments.metrics import pair_correctness
    got = pair_correctness([1.0, -1.0, 3.0, 0.0], [0.5, 1.0, 3.0, 1.0], [1, 1, -1, -1])
    np.testing.assert_array_equal(got, [1.0, 0.0, 0.5, 1.0])


def test_images_repeat_looks_at_the_two_image_columns_only():
    from virality.experiments.metrics import images_repeat
    assert not images_repeat(np.array([[0, 1, 1], [2, 3, 1]]))      # the label 1 equals an id: not an image
    assert images_repeat(np.array([[0, 1, 1], [2, 0, -1]]))         # image 0 in two pairs


def test_image_bootstrap_edges_and_documented_defaults():
    """docs/PROTOCOL.md: 2000 rounds, a 95% percentile interval. One pair (a, b): a round keeps it only
    when a and b are both drawn once (weight 1 x 1 = 1), so every kept round gives its one value."""
    from virality.experiments.metrics import image_bootstrap_interval
    assert image_bootstrap_interval([1.0], [[0, 1, 1]], rounds=50) == (1.0, 1.0)
    assert image_bootstrap_interval([0.0], [[0, 1, 1]], rounds=50) == (0.0, 0.0)
    assert all(math.isnan(v) for v in image_bootstrap_interval([], np.empty((0, 3), np.int64)))
    # pairs (0, 1) right and (2, 1) wrong share image 1: a round's value is m0 / (m0 + m2) (the m1 factors
    # cancel), which is 0 or 1 with probability 6/27 each of the 3-image draws: the 95% interval is [0, 1].
    # Weighting by m1 * m1 instead of m0 * m1 would give 0.5 in every round.
    assert image_bootstrap_interval([1.0, 0.0], [[0, 1, 1], [2, 1, 1]]) == (0.0, 1.0)
    # the kept rounds give 0, 0.5 and 1 with probability 1/3 each (6 of the 18 kept draws of 27): the 20%
    # interval, from the 40% to the 60% quantile, lies inside the 0.5 block
    assert image_bootstrap_interval([1.0, 0.0], [[0, 1, 1], [2, 1, 1]], level=0.2) == (0.5, 0.5)
    rng = np.random.default_rng(2)
    pairs = np.array([[i, 20 + (i * 7) % 20, 1] for i in range(20)] + [[i, 20 + (i * 3) % 20, 1] for i in range(20)])
    correct = rng.random(len(pairs))          # continuous values: 2000 or 2001 rounds give other quantiles
    low, high = image_bootstrap_interval(correct, pairs)
    assert (low, high) == image_bootstrap_interval(correct, pairs, rounds=2000, level=0.95)
    assert low < correct.mean() < high
    narrow = image_bootstrap_interval(correct, pairs, level=0.5)
    assert low < narrow[0] < correct.mean() < narrow[1] < high


def test_spearman_per_user_counts_users_with_two_images_and_checks_sizes():
    from virality.experiments.metrics import spearman_per_user
    # user 0: 2 images ranked right (rho +1); user 1: 3 images in reverse (rho -1); user 2: one image (no rho)
    predicted = [1.0, 2.0, 3.0, 2.0, 1.0, 5.0]
    actual = [10.0, 20.0, 1.0, 2.0, 3.0, 7.0]
    users = [0, 0, 1, 1, 1, 2]
    assert spearman_per_user(predicted, actual, users) == (0.0, 2)
    assert spearman_per_user(predicted[:2], actual[:2], users[:2]) == (1.0, 1)
    for bad in ((predicted[:5], actual, users), (predicted, actual[:5], users), (predicted, actual, users[:5])):
        with pytest.raises(ValueError, match="spearman_per_user: "):
            spearman_per_user(*bad)
    with pytest.raises(ValueError, match="no user has a defined rank correlation"):
        spearman_per_user([1.0, 2.0], [1.0, 2.0], [0, 1])


def test_setting_spearman_refuses_a_wrong_count_and_a_per_user_setting_without_users():
    from virality.datasets.base import Dataset, Setting
    from virality.experiments.metrics import setting_spearman
    ids = np.arange(4)
    d = Dataset("toy", ids=ids, scores=np.array([1.0, 3.0, 2.0, 4.0]), topics=np.full(4, -1), topic_names=[],
                image_dir=None, users=None)
    empty = np.empty((0, 3), np.int32)
    pooled = Setting("mix", "", "spearman", empty, ids, ids[:0], ids[:0])
    # predictions 1, 2, 3, 4 against scores 1, 3, 2, 4: rho = 1 - 6 * (0 + 1 + 1 + 0) / (4 * 15) = 0.8
    assert setting_spearman(d, pooled, [1.0, 2.0, 3.0, 4.0]) == (pytest.approx(0.8), None)
    with pytest.raises(ValueError, match="setting 'mix': 3 predictions for 4 test images"):
        setting_spearman(d, pooled, [1.0, 2.0, 3.0])
    per_user = Setting("user_specific", "", "spearman", empty, ids, ids[:0], ids[:0], per_user=True)
    with pytest.raises(ValueError, match="per user but dataset 'toy' has no users"):
        setting_spearman(d, per_user, [1.0, 2.0, 3.0, 4.0])
