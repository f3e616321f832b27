"""Deza & Parikh (CVPR 2015) image virality dataset -> :class:`Dataset`.

Reads the published metadata (datasets/deza2015/, README there) and, optionally,
a user-given directory of ``<img_id>.jpg`` images (the images are not shipped).

- ids: the dataset's ``img_id`` (also the image file name), in the order of
  viral_datasetV2.mat (ascending ``v_score``).
- scores: the published ``v_score``, checked against a recomputation from the raw
  per-submission files (:mod:`virality.datasets.virality_score`, |diff| <= 1e-9).
- topics: the dominant subreddit (most submissions among the 20 counted ones),
  mapped to :data:`TOPIC_NAMES`: the six largest subreddits plus "other"
  (funny 5288, pics 2684, WTF 843, aww 519, gaming 315, atheism 271, other 158).
- viral = the 5039 highest v_score images, non-viral = the 5039 lowest
  (seed paper Sec. 2.2, S_v and S \\ S_v).
- settings ``complete_fold0`` .. ``complete_fold4`` (the Complete Data column, one
  setting per fold of the published pairs), ``top_bottom``, ``random`` (seed paper
  Table 1 columns) and their image-disjoint variants ``<name>_disjoint``; exact
  definitions, the evidence for them and the counts are in docs/PROTOCOL.md.
"""
import hashlib
from pathlib import Path

import numpy as np

from virality.datasets.base import Dataset, Setting
from virality.datasets.virality_score import check_against_published, compute_scores, load_published
from virality.data.pairs import balanced_labels, orient_pairs
from virality.paths import ROOT

NAME = "deza2015"
DEFAULT_DIR = ROOT / "datasets" / "deza2015"

#: Topic-CNN classes: the six largest dominant subreddits, then "other".
TOPIC_NAMES = ["funny", "pics", "WTF", "aww", "gaming", "atheism", "other"]
NUM_VIRAL = 5039

#: complete: the 5039 published pairs in 5 seeded folds; setting complete_fold<k> tests fold k.
COMPLETE_FOLDS = 5
COMPLETE_SEED = 2015
#: top_bottom: each of the 250 most / least viral images in this many test pairs.
TOP_BOTTOM_PAIRS_PER_IMAGE = 4
TOP_BOTTOM_SEED = 2016
NUM_EXTREME = 250

#: seed paper, Table 1 (pairwise accuracy, %), per setting and model.
PAPER = {
    "complete": {"alexnet_pvcnn": 60.11, "alexnet_tpvcnn": 63.21, "vgg19_pvcnn": 64.47, "vgg19_tpvcnn": 65.28},
    "top_bottom": {"alexnet_pvcnn": 69.97, "alexnet_tpvcnn": 72.48, "vgg19_pvcnn": 72.25, "vgg19_tpvcnn": 75.88},
    "random": {"alexnet_pvcnn": 63.35, "alexnet_tpvcnn": 66.84, "vgg19_pvcnn": 71.03, "vgg19_tpvcnn": 75.19},
}

DESCRIPTIONS = {
    "complete": "Complete Data: fold {fold} of the 5039 published viral/non-viral pairs "
                "(pair_matrix.mat, 5 seeded folds), {n} test pairs",
    "top_bottom": "Top/Bottom Split: the 250 highest vs the 250 lowest v_score images (Top_Pairs.mat), "
                  "each in 4 seeded test pairs, {n} test pairs",
    "random": "Random Split: the {n} published test pairs of split_A*_Top.mat (Top_489_pair.mat), "
              "the pairs of Deza & Parikh's reported 68.10% deep-attribute baseline",
}


def _mat(data_dir, file, key):
    from scipy.io import loadmat

    path = Path(data_dir) / file
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: copy the Deza & Parikh metadata (datasets/deza2015/) there")
    try:
        return loadmat(str(path))[key]
    except KeyError:
        raise ValueError(f"{path}: no variable '{key}' (is this the published file? see SHA256SUMS)") from None


def verify_checksums(data_dir):
    """Check every file listed in SHA256SUMS; raise naming the first missing or changed file."""
    data_dir = Path(data_dir)
    sums = data_dir / "SHA256SUMS"
    if not sums.is_file():
        raise FileNotFoundError(f"{sums} is missing: copy datasets/deza2015/ completely, or pass verify=False")
    for line in sums.read_text().splitlines():
        if not line.strip():
            continue
        digest, name = line.split(maxsplit=1)
        path = data_dir / name.strip().lstrip("*")
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing (listed in {sums})")
        actual = hashlib.sha256(path.read_bytes()).hexdigest()
        if actual != digest:
            raise ValueError(f"{path}: sha256 {actual} differs from {sums} ({digest}); restore the published file")


def _complete_pairs(pair_matrix, labels, fold):
    perm = np.random.default_rng(COMPLETE_SEED).permutation(pair_matrix.shape[0])
    rows = np.sort(np.array_split(perm, COMPLETE_FOLDS)[fold])
    return orient_pairs(pair_matrix[rows, 0], pair_matrix[rows, 1], np.where(labels[rows] == 1, 1, -1))


def _top_bottom_pairs(top, bottom):
    """Each top image with TOP_BOTTOM_PAIRS_PER_IMAGE distinct bottom images (shifted
    matchings of one seeded permutation: every bottom image also appears that often)."""
    rng = np.random.default_rng(TOP_BOTTOM_SEED)
    perm = rng.permutation(bottom.size)
    idx = np.arange(top.size)
    viral = np.concatenate([top] * TOP_BOTTOM_PAIRS_PER_IMAGE)
    nonviral = np.concatenate([bottom[perm[(idx + k) % bottom.size]] for k in range(TOP_BOTTOM_PAIRS_PER_IMAGE)])
    return orient_pairs(viral, nonviral, balanced_labels(viral.size, rng))


def _settings(ids, scores, data_dir):
    order = np.argsort(scores, kind="stable")
    nonviral, viral = np.sort(ids[order[:NUM_VIRAL]]), np.sort(ids[order[-NUM_VIRAL:]])
    pair_matrix = _mat(data_dir, "pair_matrix.mat", "pair_matrix_spot").astype(np.int64)
    labels = _mat(data_dir, "virality_label.mat", "virality_label_spot").ravel()
    if pair_matrix.shape != (NUM_VIRAL, 2) or labels.shape != (NUM_VIRAL,):
        raise ValueError(f"{data_dir}: pair_matrix.mat must be {NUM_VIRAL}x2 and virality_label.mat {NUM_VIRAL}")
    if not (np.array_equal(np.sort(pair_matrix[:, 0]), viral)
            and np.array_equal(np.sort(pair_matrix[:, 1]), nonviral)):
        raise ValueError(f"{data_dir / 'pair_matrix.mat'}: column 1 must be the {NUM_VIRAL} highest-v_score "
                         f"images and column 2 the {NUM_VIRAL} lowest (restore the published file)")

    extremes = _mat(data_dir, "Top_Pairs.mat", "Top_Pairs").astype(np.int64).ravel()
    top = np.intersect1d(extremes, viral)
    bottom = np.intersect1d(extremes, nonviral)
    if not (np.array_equal(top, np.sort(ids[order[-NUM_EXTREME:]]))
            and np.array_equal(bottom, np.sort(ids[order[:NUM_EXTREME]]))):
        raise ValueError(f"{data_dir / 'Top_Pairs.mat'}: must list the {NUM_EXTREME} highest and "
                         f"{NUM_EXTREME} lowest v_score images")

    rows = _mat(data_dir, "unique_250.mat", "indx_u_250").astype(np.int64).ravel() - 1
    top489 = _mat(data_dir, "Top_489_pair.mat", "top_pair_matrix_489").astype(np.int64)
    if not np.array_equal(pair_matrix[rows], top489):
        raise ValueError(f"{data_dir}: Top_489_pair.mat must be the rows unique_250.mat lists of pair_matrix.mat")

    # (setting name, Table 1 column, fold, test pairs)
    test = [(f"complete_fold{k}", "complete", k, _complete_pairs(pair_matrix, labels, k))
            for k in range(COMPLETE_FOLDS)]
    test += [("top_bottom", "top_bottom", None, _top_bottom_pairs(top, bottom)),
             # Orientation as shown to the human raters: viral on the left where the label is 1.
             ("random", "random", None, orient_pairs(top489[:, 0], top489[:, 1], np.where(labels[rows] == 1, 1, -1)))]
    settings = {}
    for name, column, fold, pairs in test:
        images = np.unique(pairs[:, :2]).astype(np.int64)
        desc = DESCRIPTIONS[column].format(n=pairs.shape[0], fold=fold)
        settings[name] = Setting(
            name=name, description=desc, metric="pairwise_accuracy", test_pairs=pairs,
            test_images=images, viral_pool=viral, nonviral_pool=nonviral, disjoint=False,
            paper=dict(PAPER[column]), fold=fold)
        settings[f"{name}_disjoint"] = Setting(
            name=f"{name}_disjoint", description=desc + "; no test image in any training pair",
            metric="pairwise_accuracy", test_pairs=pairs, test_images=images,
            viral_pool=np.setdiff1d(viral, images), nonviral_pool=np.setdiff1d(nonviral, images),
            disjoint=True, paper={}, fold=fold)
    return settings


def load(data_dir=None, images=None, verify=True):
    """The Deza & Parikh dataset.

    data_dir:      the metadata directory (default datasets/deza2015 of this repository).
    images:        a directory of ``<img_id>.jpg`` files, or None (no images).
    verify:        check SHA256SUMS and the recomputed v_score against viral_datasetV2.mat.
    """
    data_dir = Path(data_dir) if data_dir is not None else DEFAULT_DIR
    if not data_dir.is_dir():
        raise FileNotFoundError(f"{data_dir} is not a directory: pass the Deza & Parikh metadata "
                                f"directory (a copy of datasets/deza2015/)")
    if images is not None and not Path(images).is_dir():
        raise FileNotFoundError(f"image directory {images} does not exist: pass a directory of <img_id>.jpg")
    if verify:
        verify_checksums(data_dir)
    mat = data_dir / "viral_datasetV2.mat"
    ids, scores = load_published(mat)
    table = compute_scores(data_dir)
    if verify:
        check_against_published(table, mat)
    missing = np.setdiff1d(ids, table.img_id)
    if missing.size:
        raise ValueError(f"{data_dir}: images {missing[:5].tolist()} of {mat.name} have no counted submission")
    pos = np.argsort(table.img_id)
    where = pos[np.searchsorted(table.img_id[pos], ids)]
    dominant = table.dominant_subreddit[where]
    topic_index = {name: i for i, name in enumerate(TOPIC_NAMES)}
    topics = np.array([topic_index.get(s, topic_index["other"]) for s in dominant], dtype=np.int32)
    return Dataset(
        name=NAME, ids=ids, scores=scores, topics=topics, topic_names=list(TOPIC_NAMES),
        image_dir=Path(images) if images is not None else None,
        settings=_settings(ids, scores, data_dir), image_ext=".jpg")
