"""Pair sampling (virality/data/pairs.py): every constraint, on small hand-made settings
and at the paper's size (10M of the 25.4M Deza & Parikh pairs)."""
import time

import numpy as np
import pytest

from virality.data import pairs as pairs_mod
from virality.datasets import deza2015
from virality.datasets.base import Setting
from virality.data.pairs import (PairSamplingError, balanced_labels, check_pairs, max_pairs, sample_pairs,
                            split_by_median)


def make_setting(viral, nonviral, test_pairs=(), disjoint=False, train_pairs=None, name="toy"):
    tp = np.array(test_pairs, dtype=np.int32).reshape(-1, 3)
    images = np.unique(tp[:, :2]).astype(np.int64)
    v, n = np.array(viral, dtype=np.int64), np.array(nonviral, dtype=np.int64)
    if disjoint:
        v, n = np.setdiff1d(v, images), np.setdiff1d(n, images)
    return Setting(name=name, description="toy", metric="pairwise_accuracy", test_pairs=tp,
                   test_images=images, viral_pool=v, nonviral_pool=n, disjoint=disjoint,
                   train_pairs=None if train_pairs is None else np.array(train_pairs, dtype=np.int32))


def unordered(p):
    return {frozenset((int(a), int(b))) for a, b in p[:, :2]}


VIRAL = [10, 11, 12, 13]
NONVIRAL = [20, 21, 22, 23]
# (20, 10) is given non-viral first: it must be excluded in either order.
TEST = [(10, 20, 1), (21, 11, -1), (12, 22, 1)]


def test_all_allowed_pairs_exactly_once_and_labels_follow_pools():
    s = make_setting(VIRAL, NONVIRAL, TEST)
    assert max_pairs(s) == 16 - 3
    p = sample_pairs(s, 13, seed=0)
    assert p.dtype == np.int32 and p.shape == (13, 3)
    expected = {frozenset((v, n)) for v in VIRAL for n in NONVIRAL} - {frozenset(t[:2]) for t in TEST}
    assert unordered(p) == expected and len(unordered(p)) == 13
    for a, b, y in p:
        assert (a in VIRAL and b in NONVIRAL and y == 1) or (b in VIRAL and a in NONVIRAL and y == -1)
    assert sorted(p[:, 2].tolist()).count(1) in (6, 7)


def test_too_many_pairs_is_a_clear_error():
    s = make_setting(VIRAL, NONVIRAL, TEST)
    with pytest.raises(PairSamplingError, match="at most 13"):
        sample_pairs(s, 14, seed=0)


def test_disjoint_setting_uses_no_test_image():
    s = make_setting(VIRAL, NONVIRAL, TEST, disjoint=True)
    # viral pool {13}, non-viral pool {23}: pools already exclude the test images ...
    assert max_pairs(s) == 1
    p = sample_pairs(s, 1, seed=5)
    assert unordered(p) == {frozenset((13, 23))}
    # ... and the sampler removes them itself when a pool still holds them.
    leaky = Setting(name="leaky", description="", metric="pairwise_accuracy", test_pairs=s.test_pairs,
                    test_images=s.test_images, viral_pool=np.array(VIRAL), nonviral_pool=np.array(NONVIRAL),
                    disjoint=True)
    assert max_pairs(leaky) == 1
    assert unordered(sample_pairs(leaky, 1, seed=0)) == {frozenset((13, 23))}


def test_balanced_labels_even_and_odd():
    s = make_setting(range(0, 100), range(100, 200))
    for n in (2, 1000, 4096):
        y = sample_pairs(s, n, seed=n)[:, 2]
        assert (y == 1).sum() == n // 2 and (y == -1).sum() == n // 2
    counts = {int((sample_pairs(s, 7, seed=k)[:, 2] == 1).sum()) for k in range(40)}
    assert counts == {3, 4}
    rng = np.random.default_rng(0)
    assert (balanced_labels(10001, rng) == 1).sum() in (5000, 5001)


def test_deterministic_for_a_seed_and_different_across_seeds():
    s = make_setting(range(0, 300), range(300, 600), [(0, 300, 1)])
    a, b, c = (sample_pairs(s, 5000, seed=k) for k in (7, 7, 8))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_order_is_random_and_labels_are_interleaved():
    s = make_setting(range(0, 300), range(300, 600))
    p = sample_pairs(s, 20000, seed=1)
    assert not np.all(np.diff(p[:, 0]) >= 0)
    first_half = p[:10000, 2]
    assert 0.45 < (first_half == 1).mean() < 0.55
    # label runs look like fair coin flips: about n/2 changes of sign
    changes = (p[1:, 2] != p[:-1, 2]).mean()
    assert 0.47 < changes < 0.53


def test_sampling_is_uniform_over_allowed_pairs_and_orientations():
    s = make_setting([0, 1, 2, 3, 4, 5], [6, 7, 8, 9, 10], [(0, 6, 1)])
    counts, plus = {}, {}
    trials = 2000
    for seed in range(trials):
        for a, b, y in sample_pairs(s, 10, seed=seed):
            key = frozenset((int(a), int(b)))
            counts[key] = counts.get(key, 0) + 1
            plus[key] = plus.get(key, 0) + (y == 1)
    assert len(counts) == 29 and frozenset((0, 6)) not in counts
    expected = trials * 10 / 29
    assert all(abs(c - expected) < 0.15 * expected for c in counts.values())
    assert all(0.4 < plus[k] / counts[k] < 0.6 for k in counts)


def test_large_space_path_without_a_mask(monkeypatch):
    monkeypatch.setattr(pairs_mod, "MASK_LIMIT", 0)
    s = make_setting(range(0, 400), range(400, 800), [(0, 400, 1), (401, 1, -1)])
    p = sample_pairs(s, 50000, seed=2)
    check_pairs(p, s)
    assert len(unordered(p)) == 50000
    assert not unordered(p) & {frozenset((0, 400)), frozenset((1, 401))}
    assert np.array_equal(p, sample_pairs(s, 50000, seed=2))


def test_dense_request_more_than_half_the_space():
    s = make_setting(range(0, 60), range(60, 120), [(0, 60, 1)], disjoint=False)
    n = max_pairs(s) - 3
    p = sample_pairs(s, n, seed=4)
    check_pairs(p, s)
    assert len(unordered(p)) == n and frozenset((0, 60)) not in unordered(p)


def test_bad_arguments_and_pools():
    s = make_setting(VIRAL, NONVIRAL)
    for n in (0, -1, 2.5, True):
        with pytest.raises(PairSamplingError, match="num_pairs"):
            sample_pairs(s, n, seed=0)
    with pytest.raises(PairSamplingError, match="seed"):
        sample_pairs(s, 2, seed=-1)
    overlap = make_setting([1, 2, 3], [3, 4])
    with pytest.raises(PairSamplingError, match="both"):
        sample_pairs(overlap, 1, seed=0)


def test_pair_list_settings_sample_from_the_list():
    train = [(0, 1, 1), (2, 1, -1), (3, 4, 1), (5, 6, -1), (0, 4, 1), (7, 8, 1), (9, 8, 1)]
    test = [(1, 0, -1)]   # equals the first training pair, reversed: must be skipped
    s = make_setting([], [], test, train_pairs=train)
    assert max_pairs(s) == 6
    p = sample_pairs(s, 6, seed=3)
    assert (p[:, 2] == 1).sum() == 3
    given = {frozenset(t[:2]): (t[0] if t[2] == 1 else t[1]) for t in train}
    for a, b, y in p:
        winner = a if y == 1 else b
        assert given[frozenset((int(a), int(b)))] == winner   # turned round, never relabelled
    assert frozenset((0, 1)) not in unordered(p)
    disjoint = make_setting([], [], test, train_pairs=train, disjoint=True)
    assert max_pairs(disjoint) == 4   # drops (0,1), (2,1), (0,4)
    assert not {0, 1} & set(sample_pairs(disjoint, 4, seed=0)[:, :2].ravel().tolist())
    with pytest.raises(PairSamplingError, match="at most 4"):
        sample_pairs(disjoint, 5, seed=0)


def test_split_by_median():
    high, low = split_by_median([5, 1, 2, 3, 4, 0, 6], [0.1, 0.7, 0.3, 0.9, 0.5, 0.2, 0.4])
    assert high.tolist() == [1, 3, 4] and low.tolist() == [0, 2, 5]   # middle image (6, 0.4) in neither
    # ties across the boundary are removed from both halves
    high, low = split_by_median(range(6), [3, 2, 2, 2, 1, 0])
    assert high.tolist() == [0] and low.tolist() == [4, 5]
    with pytest.raises(ValueError, match="NaN"):
        split_by_median([0, 1], [0.0, np.nan])


@pytest.fixture(scope="module")
def deza():
    return deza2015.load(verify=False)


def test_ten_million_pairs_every_constraint(deza):
    """The paper's size: 10M of the 25.4M (viral, non-viral) pairs, checked independently."""
    s = deza.setting("random")
    assert max_pairs(s) == 5039 * 5039 - 489
    start = time.perf_counter()
    p = sample_pairs(s, 10_000_000, seed=0)
    took = time.perf_counter() - start
    assert took < 20, f"10M pairs took {took:.1f} s"
    assert p.dtype == np.int32 and p.shape == (10_000_000, 3)
    y = p[:, 2]
    assert (y == 1).sum() == 5_000_000 and (y == -1).sum() == 5_000_000
    viral = np.zeros(20000, bool)
    viral[s.viral_pool] = True
    nonviral = np.zeros(20000, bool)
    nonviral[s.nonviral_pool] = True
    first, second = p[:, 0], p[:, 1]
    assert np.array_equal(viral[first], y == 1) and np.array_equal(nonviral[second], y == 1)
    assert np.array_equal(nonviral[first], y == -1) and np.array_equal(viral[second], y == -1)
    keys = np.minimum(first, second).astype(np.int64) * 20000 + np.maximum(first, second)
    keys.sort()
    assert not (keys[1:] == keys[:-1]).any()
    test = s.test_pairs.astype(np.int64)
    test_keys = np.minimum(test[:, 0], test[:, 1]) * 20000 + np.maximum(test[:, 0], test[:, 1])
    pos = np.minimum(np.searchsorted(keys, test_keys), keys.size - 1)
    assert not (keys[pos] == test_keys).any()
    # order random: labels are not blocked, ids are not sorted
    assert 0.49 < (y[:5_000_000] == 1).mean() < 0.51


def test_ten_million_pairs_disjoint_and_deterministic(deza):
    s = deza.setting("random_disjoint")
    a = sample_pairs(s, 10_000_000, seed=1)
    test_images = np.zeros(20000, bool)
    test_images[s.test_pairs[:, :2].ravel()] = True
    assert test_images.sum() == 978
    assert not test_images[a[:, :2]].any()
    check_pairs(a, s)
    b = sample_pairs(s, 10_000_000, seed=1)
    assert np.array_equal(a, b)


def test_check_pairs_catches_each_violation(deza):
    s = deza.setting("random_disjoint")
    good = sample_pairs(s, 1000, seed=0)
    check_pairs(good, s)
    dup = good.copy()
    dup[1] = [good[0, 1], good[0, 0], -good[0, 2]]
    with pytest.raises(ValueError, match="twice"):
        check_pairs(dup, s)
    leak = good.copy()
    a, b, y = s.test_pairs[0]
    leak[0] = (a, b, y) if y == good[0, 2] else (b, a, -y)   # keep the label balance
    with pytest.raises(ValueError, match="test"):
        check_pairs(leak, s)
    wrong = good.copy()
    wrong[:, 2] *= -1
    with pytest.raises(ValueError, match="pools"):
        check_pairs(wrong, s)
