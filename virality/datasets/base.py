"""The one small interface every dataset adapter implements.

A dataset is a table of images with integer ids, plus the evaluation settings
that define which pairs are tested and which images training pairs may use.
Everything downstream (pair sampling, LMDB building, the pair-index layer,
training, evaluation) sees only this interface, so the same pipeline runs on the
real Deza & Parikh metadata, popularity tables, generic CSVs and the synthetic
world.

Conventions
- ``ids`` are non-negative integers, unique, and fit in int32 (pair arrays are
  int32 (N, 3): I1 id, I2 id, y with y = +1 when I1 is the more viral image).
- ``scores`` are float64 (higher = more viral / more of the attribute); NaN where
  unknown. ``topics`` are int32 class indices into ``topic_names``; -1 unknown.
  ``users`` are int64 user ids, or None when the dataset has no users.
- ``image_path(id)`` is where the image file is expected (it may not exist: the
  real images are not shipped; builders report missing files).
"""
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np


@dataclass(frozen=True)
class Setting:
    """One evaluation setting (docs/PROTOCOL.md).

    name:        selectable name, e.g. "top_bottom" or "top_bottom_disjoint".
    description: one line for reports: which pairs are tested, and why.
    metric:      "pairwise_accuracy" or "spearman".
    test_pairs:  int32 (M, 3) [I1, I2, y] (pairwise settings); empty for spearman.
    test_images: int ids scored for spearman settings (and the images of test_pairs).
    viral_pool / nonviral_pool: ids training pairs are drawn from (viral x non-viral).
    disjoint:    True when no test image may appear in any training pair.
    paper:       the seed paper's number for this setting per model, for reports
                 ({"alexnet_pvcnn": 69.97, ...}); empty when the paper has none.
    train_pairs: optional int32 (K, 3) [I1, I2, y]: when given (datasets that come
                 as labelled pairs, e.g. pairs-csv), training pairs are drawn from
                 these instead of viral_pool x nonviral_pool (virality.data.pairs).
    per_user:    spearman settings only: rho is computed per user over that user's
                 test images and averaged over users (popularity "user_specific").
    held_out_pairs: optional int32 (K, 3): pairs no training pair may equal (in either
                 order) besides the test pairs: the validation pairs of a setting that
                 is not image-disjoint (virality.data.splits).
    fold:        the cross-validation fold a setting tests (deza2015 ``complete_fold<k>``);
                 None when the setting has no folds.
    """

    name: str
    description: str
    metric: str
    test_pairs: np.ndarray
    test_images: np.ndarray
    viral_pool: np.ndarray
    nonviral_pool: np.ndarray
    disjoint: bool = False
    paper: dict = field(default_factory=dict)
    train_pairs: Optional[np.ndarray] = None
    per_user: bool = False
    held_out_pairs: Optional[np.ndarray] = None
    fold: Optional[int] = None


@dataclass
class Dataset:
    """A dataset: image table plus evaluation settings (see the module docstring)."""

    name: str
    ids: np.ndarray
    scores: np.ndarray
    topics: np.ndarray
    topic_names: list
    image_dir: Optional[Path]
    users: Optional[np.ndarray] = None
    synthetic: bool = False
    settings: dict = field(default_factory=dict)   # name -> Setting
    image_ext: str = ".jpg"
    #: file names relative to image_dir, aligned with ids; None means "<id><image_ext>".
    image_names: Optional[np.ndarray] = None

    def image_path(self, image_id):
        if self.image_dir is None:
            raise FileNotFoundError(
                f"dataset '{self.name}' has no image directory; pass one (e.g. IMAGES=<dir> to make data)")
        if self.image_names is None:
            return Path(self.image_dir) / f"{int(image_id)}{self.image_ext}"
        index = np.flatnonzero(self.ids == int(image_id))
        if index.size != 1:
            raise KeyError(f"dataset '{self.name}' has no image id {image_id}")
        return Path(self.image_dir) / str(self.image_names[index[0]])

    def setting(self, name):
        try:
            return self.settings[name]
        except KeyError:
            raise ValueError(f"dataset '{self.name}' has no setting '{name}'; "
                             f"settings: {', '.join(sorted(self.settings))}") from None
