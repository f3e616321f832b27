"""Training-pair sampling, pure numpy (docs/PROTOCOL.md, "Training pairs").

The seed paper (Sec. 2.2) feeds the network "a randomly generated ordered pair of
images (I1, I2) from S - one from S \\ S_v, the other from S_v" and (Sec. 2.1)
"randomly select[s] 10M of the potential 25M pairs", "distinct from the existing
pairs in the test set". :func:`sample_pairs` does exactly that for one evaluation
:class:`~virality.datasets.base.Setting`:

- each pair is one image of ``viral_pool`` and one of ``nonviral_pool``, in random
  order; ``y = +1`` iff I1 is the viral image, else ``-1``;
- labels are balanced: exactly ``N // 2`` of each sign (an odd N gets its extra
  label by a coin flip);
- no pair twice, in either order; no pair equal to a test pair (or a held-out
  validation pair, ``Setting.held_out_pairs``) of the setting, in either order; in a
  disjoint setting no test image at all;
- deterministic for a seed (numpy PCG64).

Memory and time are bounded: a pair (v, n) is the int64 key ``v * |nonviral| + n``
over pool positions. Keys are drawn uniformly in chunks (at most :data:`CHUNK`),
test keys rejected, and deduplicated (a byte-per-pair mask when the space is at
most :data:`MASK_LIMIT` pairs, 25 MB for Deza & Parikh's 25.4M; ``np.union1d``
beyond) until enough distinct keys exist; a uniformly random subset of them is
kept, in random order. Only a request for more than half of all possible pairs
enumerates the keys (one int64 per possible pair, no more than the output).

Datasets that come as labelled pairs (``Setting.train_pairs``, e.g. pairs-csv) are
sampled from that list instead: a random subset, each pair turned around where
needed so that labels are balanced.

For score-only datasets without a viral / non-viral split, :func:`split_by_median`
makes the two pools the way Deza & Parikh made theirs (top half vs bottom half by
score).
"""
import numpy as np

#: most random keys drawn per round (2**24 int64 = 128 MiB).
CHUNK = 1 << 24
#: largest pair space sampled with a byte-per-pair mask (128 MiB); larger ones sort.
MASK_LIMIT = 1 << 27
#: membership tests use a lookup table when all ids are below this (16 MiB of bool).
TABLE_LIMIT = 1 << 24


class PairSamplingError(ValueError):
    """The request cannot be met (too many pairs, bad pools, bad arguments)."""


def split_by_median(ids, scores):
    """Split images into a high and a low half by score, like Deza & Parikh's
    viral (top half by v_score) and non-viral (bottom half) sets.

    Images are ordered by score (descending, ties by id); the first ``n // 2`` are
    high, the last ``n // 2`` low (the middle image of an odd count is in neither).
    Images whose score equals the boundary score are removed from both halves when
    that score occurs on both sides, so that every high image scores strictly above
    every low image and a pair's label is never a tie. NaN scores are an error.

    Returns (high_ids, low_ids), int64, sorted ascending.
    """
    ids = np.asarray(ids, dtype=np.int64).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if ids.shape != scores.shape:
        raise ValueError(f"split_by_median: {ids.size} ids but {scores.size} scores")
    if np.isnan(scores).any():
        raise ValueError("split_by_median: some scores are NaN; drop those images first")
    order = np.lexsort((ids, -scores))
    half = ids.size // 2
    high, low = order[:half], order[ids.size - half:]
    if half and scores[high].min() == scores[low].max():
        tie = scores[high].min()
        high = high[scores[high] != tie]
        low = low[scores[low] != tie]
    return np.sort(ids[high]), np.sort(ids[low])


def _unique_ids(values, what):
    arr = np.asarray(values)
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise PairSamplingError(f"{what} must hold integer ids, got dtype {arr.dtype}")
    arr = arr.astype(np.int64).ravel()
    if np.unique(arr).size != arr.size:
        raise PairSamplingError(f"{what} lists an id more than once")
    return arr


def _pair_array(setting, field):
    tp = getattr(setting, field)
    tp = np.asarray(tp) if tp is not None else np.empty((0, 3))
    if tp.size == 0:
        return np.empty((0, 3), dtype=np.int64)
    if tp.ndim != 2 or tp.shape[1] != 3:
        raise PairSamplingError(f"setting '{setting.name}': {field} must be (M, 3), got {tp.shape}")
    return tp.astype(np.int64)


def _test_pairs(setting):
    """The pairs no training pair may equal (either order): the test pairs and, when the
    setting has them, its held-out (validation) pairs."""
    return np.concatenate([_pair_array(setting, "test_pairs"), _pair_array(setting, "held_out_pairs")])


def _excluded_images(setting):
    """Images no training pair may use: the test images of a disjoint setting."""
    if not setting.disjoint:
        return np.empty(0, dtype=np.int64)
    tp = _pair_array(setting, "test_pairs")
    imgs = np.concatenate([tp[:, :2].ravel(), np.asarray(setting.test_images, dtype=np.int64).ravel()])
    return np.unique(imgs)


def _isin_sorted(values, sorted_ref):
    """Vectorised membership of ``values`` in the sorted array ``sorted_ref`` (a lookup
    table when all ids are small non-negative integers, else a binary search)."""
    values = np.asarray(values)
    if sorted_ref.size == 0 or values.size == 0:
        return np.zeros(values.shape, dtype=bool)
    lo, hi = min(values.min(), sorted_ref[0]), max(values.max(), sorted_ref[-1])
    if lo >= 0 and hi < TABLE_LIMIT:
        table = np.zeros(int(hi) + 1, dtype=bool)
        table[sorted_ref] = True
        return table[values]
    pos = np.searchsorted(sorted_ref, values)
    pos[pos == sorted_ref.size] = 0
    return sorted_ref[pos] == values


def _pools(setting):
    """Sorted viral / non-viral pools, test images removed in a disjoint setting."""
    viral = np.sort(_unique_ids(setting.viral_pool, f"setting '{setting.name}' viral_pool"))
    nonviral = np.sort(_unique_ids(setting.nonviral_pool, f"setting '{setting.name}' nonviral_pool"))
    if np.intersect1d(viral, nonviral).size:
        raise PairSamplingError(f"setting '{setting.name}': an image is in both the viral and the non-viral pool")
    banned = _excluded_images(setting)
    viral = viral[~_isin_sorted(viral, banned)]
    nonviral = nonviral[~_isin_sorted(nonviral, banned)]
    return viral, nonviral


def _excluded_keys(setting, viral, nonviral):
    """Keys (over sorted pool positions) of the test pairs, in either order, sorted."""
    tp = _test_pairs(setting)
    if tp.size == 0 or viral.size == 0 or nonviral.size == 0:
        return np.empty(0, dtype=np.int64)
    keys = []
    for v_col, n_col in ((0, 1), (1, 0)):
        v, n = tp[:, v_col], tp[:, n_col]
        ok = _isin_sorted(v, viral) & _isin_sorted(n, nonviral)
        vi = np.searchsorted(viral, v[ok])
        ni = np.searchsorted(nonviral, n[ok])
        keys.append(vi * nonviral.size + ni)
    return np.unique(np.concatenate(keys))


def balanced_labels(n, rng):
    """+1 / -1 labels in random order, exactly n // 2 of each (odd n: coin flip).

    Fair coin flips, then a random subset of the surplus sign flipped: the result is
    permutation-invariant with a fixed count, hence uniform over balanced vectors,
    without shuffling n values.
    """
    n_pos = n // 2 + (int(rng.integers(2)) if n % 2 else 0)
    y = np.where(rng.integers(0, 2, size=n, dtype=np.int8) > 0, 1, -1).astype(np.int32)
    surplus = int((y > 0).sum()) - n_pos
    if surplus:
        sign = 1 if surplus > 0 else -1
        where = np.flatnonzero(y == sign)
        y[rng.choice(where, size=abs(surplus), replace=False)] = -sign
    return y


def orient_pairs(viral, nonviral, y):
    """int32 (N, 3) pairs from aligned viral / non-viral ids and labels: I1 is the
    viral image where y = +1, the non-viral one where y = -1."""
    viral, nonviral, y = (np.asarray(a).ravel() for a in (viral, nonviral, y))
    top = np.iinfo(np.int32).max
    if max(viral.max(initial=0), nonviral.max(initial=0)) > top:
        raise PairSamplingError("image ids must fit in int32")
    viral, nonviral = viral.astype(np.int32, copy=False), nonviral.astype(np.int32, copy=False)
    first = y > 0
    out = np.empty((y.size, 3), dtype=np.int32)
    out[:, 0] = np.where(first, viral, nonviral)
    out[:, 1] = np.where(first, nonviral, viral)
    out[:, 2] = np.where(first, 1, -1)
    return out


def _sample_keys(rng, space, excluded, n):
    """n distinct keys of [0, space) \\ excluded, uniformly at random, random order."""
    available = space - excluded.size
    if 2 * n > available:
        # Dense request: draw the (fewer) keys to leave out, enumerate the rest.
        drop = _sample_keys(rng, space, excluded, available - n) if available > n else np.empty(0, np.int64)
        keep = np.ones(space, dtype=bool)
        keep[excluded] = False
        keep[drop] = False
        return rng.permutation(np.flatnonzero(keep).astype(np.int64))
    if space <= MASK_LIMIT:
        have = _distinct_draws_mask(rng, space, excluded, n)
    else:
        have = _distinct_draws_sorted(rng, space, excluded, n)
    # Every n-subset of the distinct keys is equally likely: a uniform random sample.
    return have[rng.permutation(have.size)[:n]]


def _draw_count(space, free, need):
    """Uniform draws expected to hit ``need`` new keys when ``free`` of ``space`` are
    new: space * ln(free / (free - need)), plus a 3% margin so one round is the rule."""
    expect = space * np.log(free / max(free - need, 0.5))
    return int(min(CHUNK, expect * 1.03 + 1024))


def _distinct_draws_mask(rng, space, excluded, n):
    """At least n distinct non-excluded keys drawn uniformly, sorted (a byte per key)."""
    mask = np.zeros(space, dtype=np.uint8)      # 0 free, 1 drawn, 2 excluded
    mask[excluded] = 2
    have = 0
    while have < n:
        draws = rng.integers(0, space, size=_draw_count(space, space - excluded.size - have, n - have),
                             dtype=np.int64)
        mask[draws[mask[draws] == 0]] = 1
        have = int(np.count_nonzero(mask == 1))
    return np.flatnonzero(mask == 1).astype(np.int64)


def _distinct_draws_sorted(rng, space, excluded, n):
    """Same as _distinct_draws_mask, for spaces too large for a byte per key."""
    have = np.empty(0, dtype=np.int64)
    while have.size < n:
        draws = rng.integers(0, space, size=_draw_count(space, space - excluded.size - have.size, n - have.size),
                             dtype=np.int64)
        have = np.union1d(have, draws[~_isin_sorted(draws, excluded)])
    return have


def max_pairs(setting):
    """How many distinct training pairs ``setting`` allows."""
    if setting.train_pairs is not None:
        return int(_train_pair_list(setting).shape[0])
    viral, nonviral = _pools(setting)
    return int(viral.size) * int(nonviral.size) - int(_excluded_keys(setting, viral, nonviral).size)


def _train_pair_list(setting):
    """Validated training pairs of a pair-list setting, test pairs and (disjoint) test images removed."""
    tp = np.asarray(setting.train_pairs)
    if tp.ndim != 2 or tp.shape[1] != 3:
        raise PairSamplingError(f"setting '{setting.name}': train_pairs must be (K, 3), got {tp.shape}")
    tp = tp.astype(np.int64)
    if not np.isin(tp[:, 2], (-1, 1)).all():
        raise PairSamplingError(f"setting '{setting.name}': train_pairs labels must be +1 or -1")
    if (tp[:, 0] == tp[:, 1]).any():
        raise PairSamplingError(f"setting '{setting.name}': a training pair compares an image with itself")
    lo, hi = np.minimum(tp[:, 0], tp[:, 1]), np.maximum(tp[:, 0], tp[:, 1])
    width = int(max(hi.max(initial=0), 0)) + 1
    keys = lo * width + hi
    if np.unique(keys).size != keys.size:
        raise PairSamplingError(f"setting '{setting.name}': train_pairs lists a pair twice (in some order)")
    test = _test_pairs(setting)
    keep = np.ones(tp.shape[0], dtype=bool)
    if test.size:
        tlo, thi = np.minimum(test[:, 0], test[:, 1]), np.maximum(test[:, 0], test[:, 1])
        ok = thi < width
        keep &= ~_isin_sorted(keys, np.unique(tlo[ok] * width + thi[ok]))
    banned = _excluded_images(setting)
    keep &= ~(_isin_sorted(tp[:, 0], banned) | _isin_sorted(tp[:, 1], banned))
    return tp[keep]


def _check_request(num_pairs, seed):
    if isinstance(num_pairs, bool) or not isinstance(num_pairs, (int, np.integer)) or num_pairs < 1:
        raise PairSamplingError(f"num_pairs must be a positive integer, got {num_pairs!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise PairSamplingError(f"seed must be a non-negative integer, got {seed!r}")


def sample_pairs(setting, num_pairs, seed):
    """Sample ``num_pairs`` training pairs for ``setting``, deterministically for ``seed``.

    Returns an int32 array (num_pairs, 3): I1 id, I2 id, y (+1 iff I1 is the viral /
    higher image). See the module docstring for the constraints. Raises
    :class:`PairSamplingError` when more pairs are asked for than the setting allows.
    """
    _check_request(num_pairs, seed)
    num_pairs = int(num_pairs)
    rng = np.random.default_rng(int(seed))
    if setting.train_pairs is not None:
        return _sample_from_list(setting, num_pairs, rng)
    viral, nonviral = _pools(setting)
    for ids in (viral, nonviral):
        if ids.size and (ids.max() > np.iinfo(np.int32).max or ids.min() < 0):
            raise PairSamplingError(f"setting '{setting.name}': ids must be non-negative and fit in int32")
    excluded = _excluded_keys(setting, viral, nonviral)
    space = int(viral.size) * int(nonviral.size)
    available = space - excluded.size
    if num_pairs > available:
        raise PairSamplingError(
            f"setting '{setting.name}' allows {available} distinct training pairs "
            f"({viral.size} viral x {nonviral.size} non-viral images, {excluded.size} test pairs excluded); "
            f"{num_pairs} were asked for: ask for at most {available}")
    keys = _sample_keys(rng, space, excluded, num_pairs)
    vi, ni = np.divmod(keys, nonviral.size)
    v, n = viral.astype(np.int32)[vi], nonviral.astype(np.int32)[ni]
    return orient_pairs(v, n, balanced_labels(num_pairs, rng))


def _sample_from_list(setting, num_pairs, rng):
    pool = _train_pair_list(setting)
    if num_pairs > pool.shape[0]:
        raise PairSamplingError(
            f"setting '{setting.name}' has {pool.shape[0]} usable training pairs "
            f"(test pairs{' and test images' if setting.disjoint else ''} removed); "
            f"{num_pairs} were asked for: ask for at most {pool.shape[0]}")
    chosen = pool[rng.permutation(pool.shape[0])[:num_pairs]]
    y = balanced_labels(num_pairs, rng)
    flip = chosen[:, 2] != y
    out = chosen.copy()
    out[flip, 0], out[flip, 1] = chosen[flip, 1], chosen[flip, 0]
    out[:, 2] = y
    return out.astype(np.int32)


def check_pairs(pairs, setting):
    """Raise ValueError unless ``pairs`` meets every constraint of :func:`sample_pairs`
    for ``setting`` (shape, dtype, labels, pools, no repeats, no test pair, and in a
    disjoint setting no test image). Returns None."""
    p = np.asarray(pairs)
    if p.ndim != 2 or p.shape[1] != 3 or p.dtype != np.int32:
        raise ValueError(f"pairs must be int32 (N, 3), got {p.dtype} {p.shape}")
    p = p.astype(np.int64)
    if not np.isin(p[:, 2], (-1, 1)).all():
        raise ValueError("pair labels must be +1 or -1")
    n_pos = int((p[:, 2] == 1).sum())
    if abs(2 * n_pos - p.shape[0]) > 1:
        raise ValueError(f"labels are not balanced: {n_pos} of {p.shape[0]} are +1")
    lo, hi = np.minimum(p[:, 0], p[:, 1]), np.maximum(p[:, 0], p[:, 1])
    width = int(hi.max(initial=0)) + 1
    keys = lo * width + hi
    keys.sort()
    if (keys[1:] == keys[:-1]).any():
        raise ValueError("a pair occurs twice (in some order)")
    test = _test_pairs(setting)
    if test.size:
        tlo, thi = np.minimum(test[:, 0], test[:, 1]), np.maximum(test[:, 0], test[:, 1])
        ok = thi < width
        if _isin_sorted(tlo[ok] * width + thi[ok], keys).any():
            raise ValueError(f"a training pair equals a test (or held-out validation) pair of setting '{setting.name}'")
    banned = _excluded_images(setting)
    if banned.size and _isin_sorted(p[:, :2], banned).any():
        raise ValueError(f"a training pair uses a test image of disjoint setting '{setting.name}'")
    if setting.train_pairs is None:
        winner = np.where(p[:, 2] > 0, p[:, 0], p[:, 1])
        loser = np.where(p[:, 2] > 0, p[:, 1], p[:, 0])
        viral, nonviral = _pools(setting)
        if not (_isin_sorted(winner, viral).all() and _isin_sorted(loser, nonviral).all()):
            raise ValueError(f"a pair's label disagrees with the pools of setting '{setting.name}'")
