"""D_train / D_val / D_test of one evaluation setting (docs/PROTOCOL.md, "Validation").

The seed paper (Sec. 2.2) splits its pairs "into D_train, D_val, D_test"; it does
not say how D_val is made. Our decision, one rule for every dataset:

- D_test is the setting's test set (``Setting.test_pairs`` / ``test_images``);
  nothing here reads it except to keep it out.
- D_val comes from the training pools only: ``images_per_side`` validation images
  are drawn (seeded) from each pool with every test image removed, and
  ``num_pairs`` validation pairs are sampled from val-viral x val-non-viral, labels
  balanced, like training pairs (:func:`virality.data.pairs.sample_pairs`).
- Paper protocol (a setting that is not disjoint): the validation images stay in
  the training pools (as the paper's test images do) and only the validation pairs
  are kept out of training (``Setting.held_out_pairs``), so validation accuracy
  estimates the paper-protocol test accuracy.
- Image-disjoint settings (``*_disjoint``, every popularity setting): the validation
  images leave the training pools, so no validation image is in any training pair
  and validation accuracy estimates the image-disjoint test accuracy.
- Pair-list settings (pairs-csv): ``2 * images_per_side`` validation images are drawn
  from the non-test images of the training pairs; D_val is the given pairs with both
  images among them (at most ``num_pairs``); a disjoint setting trains on the pairs
  with neither image among them, the other setting on every other pair.

The Topic-CNN of a setting (Sec. 2.5) trains only on images the ranking model may
train on, less the validation images (:func:`topic_split`): never a test image, and
in a disjoint setting never a validation image either. Its validation images are
the setting's validation images, so its test phase is as honest as the ranking
model's.
"""
import dataclasses
from dataclasses import dataclass

import numpy as np

from virality.data.pairs import PairSamplingError, sample_pairs

#: validation sizes per dataset (documented in docs/PROTOCOL.md; make_data options
#: --val-pairs / --val-images-per-side). They make Caffe's test phase exact:
#: val pairs = test_iter x test batch of the generated solvers (virality.model.solvers).
DEFAULT_VALIDATION = {
    "deza2015": dict(num_pairs=1000, images_per_side=250),
    "synthetic": dict(num_pairs=300, images_per_side=150),
}
FALLBACK_VALIDATION = dict(num_pairs=1000, images_per_side=250)
#: validation is seeded apart from the training pairs' seed.
VAL_SEED_OFFSET = 104729


class SplitError(ValueError):
    """The setting cannot give the validation set asked for."""


@dataclass(frozen=True)
class Split:
    """One setting's three parts.

    train:      the Setting to sample D_train from (validation held out as above).
    val_pairs:  int32 (V, 3) [I1, I2, y], D_val.
    val_images: int64 sorted ids drawn for validation (the Topic-CNN's validation images).
    test:       the original Setting (D_test: its test_pairs / test_images).
    """

    train: object
    val_pairs: np.ndarray
    val_images: np.ndarray
    test: object

    def sizes(self):
        return dict(val_pairs=int(len(self.val_pairs)), val_images=int(self.val_images.size),
                    test_pairs=int(len(self.test.test_pairs)), test_images=int(np.asarray(self.test.test_images).size))


def default_validation(dataset_name):
    """{num_pairs, images_per_side} used when make_data is given no sizes."""
    return dict(DEFAULT_VALIDATION.get(dataset_name, FALLBACK_VALIDATION))


def has_documented_sizes(dataset_name):
    """True for datasets whose default validation sizes are fixed (the generated solvers match them)."""
    return dataset_name in DEFAULT_VALIDATION


def setting_test_images(setting):
    pairs = np.asarray(setting.test_pairs).reshape(-1, 3)
    return np.unique(np.concatenate([pairs[:, :2].ravel().astype(np.int64),
                                     np.asarray(setting.test_images, np.int64).ravel()]))


def _choose(rng, ids, k, what, setting):
    if k > ids.size:
        raise SplitError(f"setting '{setting.name}': {what} has {ids.size} images without a test image; "
                         f"{k} validation images were asked for: lower --val-images-per-side")
    return np.sort(rng.choice(ids, size=k, replace=False))


def split_setting(setting, num_pairs, images_per_side, seed, fit=False):
    """The :class:`Split` of ``setting`` (module docstring); deterministic for ``seed``.

    fit: shrink the sizes to what a small dataset allows (at most a fifth of each pool's
         non-test images, at most all their pairs) instead of raising :class:`SplitError`;
         make_data does so for datasets without documented defaults when no size is given,
         and says so (the sizes used are in ``Split.sizes()``).
    """
    if num_pairs < 1 or images_per_side < 1:
        raise SplitError(f"validation sizes must be positive, got {num_pairs} pairs, {images_per_side} per side")
    rng = np.random.default_rng([int(seed), VAL_SEED_OFFSET])
    banned = setting_test_images(setting)
    if setting.train_pairs is not None:
        if not fit:
            return _split_pair_list(setting, num_pairs, 2 * images_per_side, banned, rng)
        # fitted: the fewest validation images (from a tenth of the images up) that hold a given pair
        candidates = np.setdiff1d(np.unique(np.asarray(setting.train_pairs)[:, :2]), banned)
        k = max(2, min(2 * images_per_side, candidates.size // 10))
        while True:
            try:
                return _split_pair_list(setting, num_pairs, k, banned, np.random.default_rng([int(seed), VAL_SEED_OFFSET]))
            except SplitError:
                if k >= candidates.size // 2:
                    raise
                k = min(2 * k, candidates.size // 2)
    viral = np.setdiff1d(np.asarray(setting.viral_pool, np.int64), banned)
    nonviral = np.setdiff1d(np.asarray(setting.nonviral_pool, np.int64), banned)
    if fit:
        images_per_side = max(1, min(images_per_side, min(viral.size, nonviral.size) // 5))
        num_pairs = min(num_pairs, images_per_side ** 2)
    val_viral = _choose(rng, viral, images_per_side, "the viral pool", setting)
    val_nonviral = _choose(rng, nonviral, images_per_side, "the non-viral pool", setting)
    pool = dataclasses.replace(setting, name=f"{setting.name} (validation)", viral_pool=val_viral,
                               nonviral_pool=val_nonviral, test_pairs=np.empty((0, 3), np.int32),
                               test_images=np.empty(0, np.int64), disjoint=False, train_pairs=None,
                               held_out_pairs=None)
    try:
        val_pairs = sample_pairs(pool, num_pairs, int(rng.integers(2 ** 31)))
    except PairSamplingError as err:
        raise SplitError(f"setting '{setting.name}': {err}; lower --val-pairs or raise --val-images-per-side") \
            from None
    images = np.union1d(val_viral, val_nonviral)
    if setting.disjoint:
        train = dataclasses.replace(setting, viral_pool=np.setdiff1d(setting.viral_pool, images),
                                    nonviral_pool=np.setdiff1d(setting.nonviral_pool, images))
    else:
        train = dataclasses.replace(setting, held_out_pairs=val_pairs)
    return Split(train=train, val_pairs=val_pairs, val_images=images, test=setting)


def _split_pair_list(setting, num_pairs, num_images, banned, rng):
    pairs = np.asarray(setting.train_pairs, np.int64).reshape(-1, 3)
    clean = ~(np.isin(pairs[:, 0], banned) | np.isin(pairs[:, 1], banned))
    candidates = np.unique(pairs[clean, :2])
    images = _choose(rng, candidates, min(num_images, candidates.size), "the training pairs", setting)
    inside = np.isin(pairs[:, 0], images) & np.isin(pairs[:, 1], images)
    chosen = np.flatnonzero(inside & clean)
    if chosen.size == 0:
        raise SplitError(f"setting '{setting.name}': no given pair has both images among the {images.size} "
                         "validation images; raise --val-images-per-side")
    chosen = np.sort(rng.permutation(chosen)[:num_pairs])
    val_pairs = pairs[chosen].astype(np.int32)
    if setting.disjoint:
        keep = ~(np.isin(pairs[:, 0], images) | np.isin(pairs[:, 1], images))
    else:
        keep = np.ones(len(pairs), dtype=bool)
        keep[chosen] = False
    train = dataclasses.replace(setting, train_pairs=pairs[keep].astype(np.int32))
    return Split(train=train, val_pairs=val_pairs, val_images=images, test=setting)


def ranking_train_images(split):
    """The images the ranking model may see in training pairs (sorted ids)."""
    s = split.train
    if s.train_pairs is not None:
        imgs = np.unique(np.asarray(s.train_pairs, np.int64)[:, :2])
    else:
        imgs = np.union1d(np.asarray(s.viral_pool, np.int64), np.asarray(s.nonviral_pool, np.int64))
    if s.disjoint:
        imgs = np.setdiff1d(imgs, setting_test_images(s))
    return imgs


def topic_split(split, ids, topics):
    """(train_ids, val_ids) of the setting's Topic-CNN, images with a known topic only.

    train: the ranking model's training images minus every test and validation image;
    val:   the setting's validation images. Both sorted.
    """
    ids, topics = np.asarray(ids, np.int64), np.asarray(topics, np.int64)
    known = ids[topics >= 0]
    train = np.setdiff1d(np.intersect1d(ranking_train_images(split), known),
                         np.union1d(split.val_images, setting_test_images(split.test)))
    val = np.intersect1d(split.val_images, known)
    return train, val
