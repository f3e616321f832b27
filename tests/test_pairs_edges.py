"""Pair sampling at its edges (virality/data/pairs.py), with counts worked out by hand: settings without test
pairs, test pairs that are not (viral, non-viral), pools of one image, ids 0 and 1, the membership
lookup on both of its paths."""
import re
import numpy as np
import pytest

from virality.data import pairs as pairs_mod
from virality.datasets.base import Setting
from virality.data.pairs import PairSamplingError, check_pairs, max_pairs, sample_pairs


def setting(viral, nonviral, test_pairs=(), disjoint=False, test_images=(), name="edge"):
    return Setting(name=name, description="", metric="pairwise_accuracy",
                   test_pairs=np.array(test_pairs, dtype=np.int32).reshape(-1, 3) if len(test_pairs) else
                   np.array([], dtype=np.int32),
                   test_images=np.array(test_images, dtype=np.int64), viral_pool=np.array(viral, np.int64),
                   nonviral_pool=np.array(nonviral, np.int64), disjoint=disjoint)


def unordered(p):
    return {frozenset((int(a), int(b))) for a, b in p[:, :2]}


def test_no_test_pairs_at_all_allows_every_pair():
    for disjoint in (False, True):
        s = setting([0, 1, 2], [3, 4], disjoint=disjoint)              # test_pairs is a 1-D empty array
        assert max_pairs(s) == 6                                       # 3 x 2, nothing excluded
        p = sample_pairs(s, 6, seed=0)
        assert unordered(p) == {frozenset((v, n)) for v in (0, 1, 2) for n in (3, 4)}
        check_pairs(p, s)


def test_test_pairs_must_have_three_columns():
    s = setting([0, 1], [2, 3])
    bad = Setting(**{**s.__dict__, "test_pairs": np.array([[0, 2], [1, 3]], np.int32)})
    with pytest.raises(PairSamplingError, match="test_pairs must be \\(M, 3\\), got \\(2, 2\\)"):
        max_pairs(bad)


def test_labels_are_not_image_ids_in_a_disjoint_setting():
    """Test pair (2, 3, +1) bans images 2 and 3; images 1 (a label's value) and 0 stay usable."""
    s = setting([0, 1, 2], [3, 4, 5], [(2, 3, 1)], disjoint=True)
    assert max_pairs(s) == 2 * 2                                     # {0, 1} x {4, 5}
    assert unordered(sample_pairs(s, 4, seed=1)) == {frozenset((v, n)) for v in (0, 1) for n in (4, 5)}


def test_pools_of_one_image_still_exclude_the_test_pair():
    s = setting([7], [8, 9], [(8, 7, -1)])
    assert max_pairs(s) == 1
    assert unordered(sample_pairs(s, 1, seed=0)) == {frozenset((7, 9))}
    t = setting([7, 6], [9], [(6, 9, 1)])
    assert max_pairs(t) == 1
    assert unordered(sample_pairs(t, 1, seed=0)) == {frozenset((7, 9))}


def test_test_pairs_outside_viral_by_nonviral_exclude_nothing():
    """(0, 1) joins two viral images and (2, 99) an image of no pool: neither is a possible training pair."""
    s = setting([0, 1, 2], [10, 11, 12], [(0, 1, 1), (2, 99, 1), (12, 2, -1)])
    assert max_pairs(s) == 9 - 1
    assert frozenset((2, 12)) not in unordered(sample_pairs(s, 8, seed=2))


@pytest.mark.parametrize("limit", [pairs_mod.TABLE_LIMIT, 0])
def test_membership_lookup_on_both_paths(monkeypatch, limit):
    monkeypatch.setattr(pairs_mod, "TABLE_LIMIT", limit)
    ref = np.array([0, 2, 3, 9], np.int64)
    values = np.array([-1, 0, 1, 2, 3, 4, 9, 10, 2 ** 30], np.int64)
    np.testing.assert_array_equal(pairs_mod._isin_sorted(values, ref),
                                  [False, True, False, True, True, False, True, False, False])
    np.testing.assert_array_equal(pairs_mod._isin_sorted(np.array([-1, 3, 9]), ref), [False, True, True])
    np.testing.assert_array_equal(pairs_mod._isin_sorted(np.array([5, 9, 2 ** 30]), np.array([5])),
                                  [True, False, False])             # past the end of a one-element reference
    assert pairs_mod._isin_sorted(np.array([], np.int64), ref).shape == (0,)
    assert not pairs_mod._isin_sorted(values, np.array([], np.int64)).any()


def test_one_pair_from_a_large_space():
    s = setting(range(0, 300), range(300, 600))
    p = sample_pairs(s, 1, seed=4)
    assert p.shape == (1, 3)
    check_pairs(p, s)


@pytest.mark.parametrize("mask_limit", [pairs_mod.MASK_LIMIT, 0])        # byte mask, then sorted keys
def test_every_pair_of_a_sparse_request_is_reachable(monkeypatch, mask_limit):
    monkeypatch.setattr(pairs_mod, "MASK_LIMIT", mask_limit)
    """40 x 40 pairs, 100 per sample (the drawing path, not the enumerating one), 60 seeds: each pair is
    expected 60 * 100 / 1600 = 3.75 times; the first and the last key of the space must both come up."""
    s = setting(range(0, 40), range(40, 80))
    seen = set()
    for seed in range(60):
        seen |= unordered(sample_pairs(s, 100, seed=seed))
    assert frozenset((0, 40)) in seen and frozenset((39, 79)) in seen
    assert len(seen) > 1500                                          # 1600 * (1 - exp(-3.75)) = 1563


def test_ids_up_to_the_int32_maximum():
    top = np.iinfo(np.int32).max
    p = pairs_mod.orient_pairs(np.array([top]), np.array([0]), np.array([1]))
    assert p.tolist() == [[top, 0, 1]]
    with pytest.raises(PairSamplingError, match="int32"):
        pairs_mod.orient_pairs(np.array([top + 1]), np.array([0]), np.array([1]))


def test_a_pair_list_drops_test_pairs_given_in_either_order():
    train = [(3, 4, 1), (5, 6, 1), (8, 7, -1), (9, 10, 1)]
    s = Setting(name="list", description="", metric="pairwise_accuracy",
                test_pairs=np.array([(3, 4, 1), (7, 8, 1)], np.int32), test_images=np.array([3, 4, 7, 8]),
                viral_pool=np.zeros(0, np.int64), nonviral_pool=np.zeros(0, np.int64), disjoint=False,
                train_pairs=np.array(train, np.int32))
    assert max_pairs(s) == 2
    assert unordered(sample_pairs(s, 2, seed=0)) == {frozenset((5, 6)), frozenset((9, 10))}


def test_pools_may_use_the_largest_int32_id():
    top = int(np.iinfo(np.int32).max)
    p = sample_pairs(setting([top], [0, 1]), 2, seed=0)
    assert unordered(p) == {frozenset((top, 0)), frozenset((top, 1))}
    with pytest.raises(PairSamplingError, match="fit in int32"):
        sample_pairs(setting([top + 1], [0]), 1, seed=0)


def test_too_many_from_a_pair_list_names_the_usable_count():
    s = Setting(name="list", description="", metric="pairwise_accuracy", test_pairs=np.zeros((0, 3), np.int32),
                test_images=np.zeros(0, np.int64), viral_pool=np.zeros(0, np.int64),
                nonviral_pool=np.zeros(0, np.int64), disjoint=False,
                train_pairs=np.array([(0, 1, 1), (2, 3, -1), (4, 5, 1), (6, 7, 1), (8, 9, -1)], np.int32))
    with pytest.raises(PairSamplingError, match="has 5 usable training pairs .* ask for at most 5"):
        sample_pairs(s, 6, seed=0)


@pytest.mark.parametrize("bad", [np.zeros((4, 3), np.int64), np.zeros((4, 2), np.int32), np.zeros(12, np.int32)])
def test_check_pairs_wants_int32_rows_of_three(bad):
    with pytest.raises(ValueError, match="pairs must be int32 \\(N, 3\\)"):
        check_pairs(bad, setting([0, 1], [2, 3]))


def test_check_pairs_finds_a_test_pair_in_either_order():
    s = setting([0, 1, 2], [3, 4, 5], [(4, 1, -1), (2, 5, 1)])            # not disjoint: only the pairs are banned
    good = np.array([(0, 3, 1), (4, 2, -1)], np.int32)
    check_pairs(good, s)
    for leak in ([(1, 4, 1), (0, 3, -1)], [(5, 2, -1), (0, 3, 1)]):
        with pytest.raises(ValueError, match=re.escape("equals a test (or held-out validation) pair of setting 'edge'")):
            check_pairs(np.array(leak, np.int32), s)


def test_negative_ids_are_refused():
    with pytest.raises(PairSamplingError, match="non-negative"):
        sample_pairs(setting([-3, 1], [5, 6]), 1, seed=0)


def test_a_pair_list_drops_a_test_pair_with_its_largest_id():
    s = Setting(name="list", description="", metric="pairwise_accuracy",
                test_pairs=np.array([(10, 9, -1)], np.int32), test_images=np.array([9, 10]),
                viral_pool=np.zeros(0, np.int64), nonviral_pool=np.zeros(0, np.int64), disjoint=False,
                train_pairs=np.array([(3, 4, 1), (9, 10, 1)], np.int32))
    assert max_pairs(s) == 1


def test_check_pairs_reports_unbalanced_labels_and_pools():
    s = setting([0, 1, 2], [3, 4, 5])
    with pytest.raises(ValueError, match="labels are not balanced: 3 of 4 are \\+1"):
        check_pairs(np.array([(0, 3, 1), (1, 4, 1), (2, 5, 1), (3, 2, -1)], np.int32), s)
    with pytest.raises(ValueError, match="labels are not balanced: 1 of 4 are \\+1"):
        check_pairs(np.array([(0, 3, 1), (4, 1, -1), (5, 2, -1), (3, 2, -1)], np.int32), s)
    with pytest.raises(ValueError, match="disagrees with the pools"):
        check_pairs(np.array([(0, 1, 1), (4, 2, -1)], np.int32), s)      # (0, 1): two viral images


@pytest.mark.parametrize("draws", ["_distinct_draws_mask", "_distinct_draws_sorted"])
def test_distinct_draws_are_free_keys_of_the_space_only(draws):
    """Keys 0..9 with 0, 3 and 7 excluded leave the 7 free keys {1, 2, 4, 5, 6, 8, 9}: every draw is
    sorted, distinct, at least n of them, and all free (never an excluded key nor one outside 0..9)."""
    free = {1, 2, 4, 5, 6, 8, 9}
    excluded = np.array([0, 3, 7], np.int64)
    for seed in range(20):
        for n in (1, 4, 7):
            have = getattr(pairs_mod, draws)(np.random.default_rng(seed), 10, excluded, n)
            assert have.size >= n and np.all(np.diff(have) > 0)
            assert set(have.tolist()) <= free, (seed, n, have)


def test_a_setting_without_held_out_pairs_excludes_only_its_test_pairs():
    s = setting(range(0, 3), range(3, 6), test_pairs=[(0, 3, 1)])
    assert s.held_out_pairs is None
    assert pairs_mod._pair_array(s, "held_out_pairs").shape == (0, 3)
    assert pairs_mod._test_pairs(s).tolist() == [[0, 3, 1]]


@pytest.mark.parametrize("train", [np.array([[3, 4, 1, 0], [5, 6, 1, 0]], np.int32), np.array([3, 4, 1], np.int32)])
def test_a_pair_list_that_is_not_k_by_3_is_refused(train):
    s = Setting(name="list", description="", metric="pairwise_accuracy", test_pairs=np.empty((0, 3), np.int32),
                test_images=np.zeros(0, np.int64), viral_pool=np.zeros(0, np.int64),
                nonviral_pool=np.zeros(0, np.int64), disjoint=False, train_pairs=train)
    with pytest.raises(PairSamplingError, match=r"setting 'list': train_pairs must be \(K, 3\), got "):
        max_pairs(s)
