"""The real Deza & Parikh metadata: recomputed scores, topics, settings (docs/PROTOCOL.md)."""
import csv
import shutil
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
from scipy.io import loadmat

from virality.datasets import deza2015, load_dataset
from virality.datasets.virality_score import check_against_published, compute_scores, load_published
from virality.data.pairs import sample_pairs
from virality.paths import ROOT

DATA = ROOT / "datasets" / "deza2015"
BASES = tuple(f"complete_fold{k}" for k in range(5)) + ("top_bottom", "random")
# test pairs, test images, pool size per side in the disjoint variant
COUNTS = {"top_bottom": (1000, 500, 5039 - 250), "random": (489, 978, 5039 - 489),
          **{f"complete_fold{k}": (1008, 2016, 5039 - 1008) for k in range(4)},
          "complete_fold4": (1007, 2014, 5039 - 1007)}


@pytest.fixture(scope="module")
def dataset():
    return load_dataset("deza2015")


@pytest.fixture(scope="module")
def published():
    return load_published(DATA / "viral_datasetV2.mat")


def score_of(dataset):
    return dict(zip(dataset.ids.tolist(), dataset.scores.tolist()))


def test_recomputed_scores_equal_the_published_ones(published):
    ids, v = published
    table = compute_scores(DATA)
    assert table.img_id.size == 10078 and ids.size == 10078
    assert abs(table.n_bar - 6.6513) < 1e-4
    recomputed = dict(zip(table.img_id.tolist(), table.v_score.tolist()))
    assert set(recomputed) == set(ids.tolist())
    assert max(abs(recomputed[i] - s) for i, s in zip(ids.tolist(), v.tolist())) <= 1e-9
    assert check_against_published(table, DATA / "viral_datasetV2.mat") <= 1e-9


def test_a_score_mismatch_is_a_clear_error():
    table = compute_scores(DATA)
    table.v_score = table.v_score.copy()
    table.v_score[10] += 1e-6
    with pytest.raises(ValueError, match=f"img_id {table.img_id[10]}"):
        check_against_published(table, DATA / "viral_datasetV2.mat")


def test_tool_writes_the_scores(tmp_path, published):
    out = tmp_path / "scores.csv"
    run = subprocess.run([sys.executable, str(ROOT / "tools" / "virality_score.py"), "--data-dir", str(DATA),
                          "--out", str(out)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    with open(out) as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["img_id", "v_score", "n_submissions", "max_a", "dominant_subreddit"]
    written = {int(r["img_id"]): float(r["v_score"]) for r in rows}
    ids, v = published
    assert max(abs(written[i] - s) for i, s in zip(ids.tolist(), v.tolist())) <= 1e-9
    mat = loadmat(str(DATA / "viral_datasetV2.mat"))["viral_dataset"].ravel()
    subs = {int(c["img_id"][0, 0][0, 0]): int(c["submissions"][0, 0][0, 0]) for c in mat}
    assert all(int(r["n_submissions"]) == subs[int(r["img_id"])] for r in rows)


def test_tool_fails_on_a_changed_file(tmp_path):
    bad = tmp_path / "deza"
    shutil.copytree(DATA, bad)
    lines = (bad / "authenticated_shift_score.csv").read_text().splitlines()
    lines = [repr(float(a) * 1.001) for a in lines]     # every max_A, so every v_score, moves
    (bad / "authenticated_shift_score.csv").write_text("\n".join(lines) + "\n")
    run = subprocess.run([sys.executable, str(ROOT / "tools" / "virality_score.py"), "--data-dir", str(bad),
                          "--out", str(tmp_path / "s.csv")], capture_output=True, text=True)
    assert run.returncode == 1 and "differs from" in run.stderr and not (tmp_path / "s.csv").exists()
    with pytest.raises(ValueError, match="authenticated_shift_score.csv"):
        deza2015.load(bad)          # the checksum names the changed file


def test_missing_file_is_named(tmp_path):
    bad = tmp_path / "deza"
    shutil.copytree(DATA, bad)
    (bad / "pair_matrix.mat").unlink()
    with pytest.raises(FileNotFoundError, match="pair_matrix.mat"):
        deza2015.load(bad)
    with pytest.raises(FileNotFoundError, match="pair_matrix.mat"):
        deza2015.load(bad, verify=False)


def test_ids_scores_and_topics_match_the_readme(dataset, published):
    ids, v = published
    assert np.array_equal(dataset.ids, ids) and np.array_equal(dataset.scores, v)
    assert dataset.topic_names == ["funny", "pics", "WTF", "aww", "gaming", "atheism", "other"]
    assert np.bincount(dataset.topics, minlength=7).tolist() == [5288, 2684, 843, 519, 315, 271, 158]
    dominant = Counter(compute_scores(DATA).dominant_subreddit)
    assert dominant["AdviceAnimals"] == 41 and dominant["fffffffuuuuuuuuuuuu"] == 40
    assert dataset.synthetic is False and dataset.image_dir is None
    with pytest.raises(FileNotFoundError, match="image directory"):
        dataset.image_path(dataset.ids[0])


def test_image_paths_with_an_image_dir(tmp_path):
    d = deza2015.load(images=tmp_path, verify=False)
    assert d.image_path(8773) == tmp_path / "8773.jpg"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        deza2015.load(images=tmp_path / "nope", verify=False)


def test_settings_counts_pools_and_paper_numbers(dataset):
    assert sorted(dataset.settings) == sorted(BASES + tuple(f"{b}_disjoint" for b in BASES))
    scores = score_of(dataset)
    order = np.argsort(dataset.scores)
    viral, nonviral = set(dataset.ids[order[-5039:]].tolist()), set(dataset.ids[order[:5039]].tolist())
    for base in BASES:
        n_pairs, n_images, disjoint_pool = COUNTS[base]
        for name in (base, f"{base}_disjoint"):
            s = dataset.setting(name)
            assert s.metric == "pairwise_accuracy" and s.disjoint == name.endswith("_disjoint")
            assert s.test_pairs.dtype == np.int32 and s.test_pairs.shape == (n_pairs, 3)
            assert np.unique(s.test_pairs[:, :2]).size == n_images == s.test_images.size
            for a, b, y in s.test_pairs.tolist():
                assert ({a, b} & viral) and ({a, b} & nonviral)
                assert y == (1 if scores[a] > scores[b] else -1)
            pool = 5039 if not s.disjoint else disjoint_pool
            assert s.viral_pool.size == pool and s.nonviral_pool.size == pool
            assert set(s.viral_pool.tolist()) <= viral and set(s.nonviral_pool.tolist()) <= nonviral
        assert set(dataset.setting(base).paper) == {"alexnet_pvcnn", "alexnet_tpvcnn", "vgg19_pvcnn",
                                                    "vgg19_tpvcnn"}
        assert dataset.setting(f"{base}_disjoint").paper == {}
    assert dataset.setting("top_bottom").paper["vgg19_tpvcnn"] == 75.88
    assert dataset.setting("random").paper["alexnet_pvcnn"] == 63.35
    assert dataset.setting("complete_fold3").paper["vgg19_pvcnn"] == 64.47
    assert [dataset.setting(f"complete_fold{k}_disjoint").fold for k in range(5)] == list(range(5))


def test_random_split_is_the_published_489_pairs(dataset):
    top489 = loadmat(str(DATA / "Top_489_pair.mat"))["top_pair_matrix_489"].astype(int)
    s = dataset.setting("random")
    got = {frozenset(p) for p in s.test_pairs[:, :2].tolist()}
    assert got == {frozenset(p) for p in top489.tolist()}
    labels = loadmat(str(DATA / "virality_label.mat"))["virality_label_spot"].ravel()
    rows = loadmat(str(DATA / "unique_250.mat"))["indx_u_250"].ravel().astype(int) - 1
    assert (s.test_pairs[:, 2] == 1).sum() == int(labels[rows].sum()) == 249


def test_top_bottom_pairs_the_250_extremes(dataset):
    s = dataset.setting("top_bottom")
    order = np.argsort(dataset.scores)
    top, bottom = set(dataset.ids[order[-250:]].tolist()), set(dataset.ids[order[:250]].tolist())
    extremes = set(loadmat(str(DATA / "Top_Pairs.mat"))["Top_Pairs"].ravel().astype(int).tolist())
    assert top | bottom == extremes
    uses = Counter(s.test_pairs[:, :2].ravel().tolist())
    assert set(uses) == extremes and set(uses.values()) == {4}
    assert len({frozenset(p) for p in s.test_pairs[:, :2].tolist()}) == 1000
    assert (s.test_pairs[:, 2] == 1).sum() == 500


def test_complete_folds_partition_the_published_pairs():
    pm = loadmat(str(DATA / "pair_matrix.mat"))["pair_matrix_spot"].astype(int)
    seen = []
    d = deza2015.load(verify=False)
    for fold in range(5):
        s = d.setting(f"complete_fold{fold}")
        assert s.fold == fold and f"fold {fold}" in s.description
        seen += [frozenset(p) for p in s.test_pairs[:, :2].tolist()]
    assert len(seen) == len(set(seen)) == 5039
    assert set(seen) == {frozenset(p) for p in pm.tolist()}
    with pytest.raises(ValueError, match="complete_fold5"):
        d.setting("complete_fold5")


@pytest.mark.parametrize("base", ("complete_fold0", "top_bottom", "random"))
def test_training_pairs_avoid_the_test_set(dataset, base):
    s = dataset.setting(base)
    test = {frozenset(p) for p in s.test_pairs[:, :2].tolist()}
    train = sample_pairs(s, 300_000, seed=11)
    assert not test & {frozenset(p) for p in train[:, :2].tolist()}
    # the paper's protocol leaks images: test images do appear in training pairs ...
    assert np.isin(train[:, :2], s.test_images).any()
    # ... the disjoint variant has none of them
    d = dataset.setting(f"{base}_disjoint")
    train = sample_pairs(d, 300_000, seed=11)
    assert not np.isin(train[:, :2], d.test_images).any()
    assert d.test_images.size == COUNTS[base][1]
