"""scores-csv, pairs-csv, popularity and synthetic adapters on small files; bad input."""
import json

import numpy as np
import pytest
from scipy.stats import spearmanr

from virality.datasets import load_dataset
from virality.datasets.popularity import evaluate, spearman
from virality.datasets.registry import default_setting
from virality.data.pairs import PairSamplingError, check_pairs, sample_pairs


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def scores_table(tmp_path, n=20, sep=","):
    """Rows in reverse name order; score = index, topics cycle, users by index // 5."""
    rows = [sep.join(["image", "score", "topic", "user"])]
    for i in reversed(range(n)):
        rows.append(sep.join([f"img_{i:02d}.png", str(float(i)), ["cat", "dog", "meme"][i % 3], f"u{i // 5}"]))
    return write(tmp_path / "scores.csv", "\n".join(rows) + "\n")


# ---------------------------------------------------------------- scores-csv

def test_scores_csv_ids_names_topics_users(tmp_path):
    scores_table(tmp_path)
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "img_00.png").write_bytes(b"x")
    d = load_dataset("scores-csv", data_dir=tmp_path)
    assert d.ids.tolist() == list(range(20))
    assert d.image_names[0] == "img_00.png" and d.image_names[19] == "img_19.png"
    assert d.scores.tolist() == [float(i) for i in range(20)]
    assert d.topic_names == ["cat", "dog", "meme"] and d.topics[:4].tolist() == [0, 1, 2, 0]
    assert d.users.tolist() == [i // 5 for i in range(20)]
    assert d.image_dir == tmp_path / "images" and d.image_path(3) == tmp_path / "images" / "img_03.png"
    assert d.synthetic is False and default_setting("scores-csv") == "random"


def test_scores_csv_settings(tmp_path):
    scores_table(tmp_path)
    d = load_dataset("scores-csv", data_dir=tmp_path / "scores.csv", seed=3)
    s, dj = d.setting("random"), d.setting("random_disjoint")
    assert s.viral_pool.tolist() == list(range(10, 20)) and s.nonviral_pool.tolist() == list(range(10))
    assert s.test_pairs.shape == (2, 3)     # round(0.2 * 10) high x low test images
    for a, b, y in s.test_pairs.tolist():
        assert y == (1 if a > b else -1) and (a >= 10) != (b >= 10)
    assert np.array_equal(dj.test_pairs, s.test_pairs) and dj.disjoint and not s.disjoint
    assert not np.isin(dj.viral_pool, s.test_images).any() and dj.viral_pool.size == 8
    p = sample_pairs(dj, 64, seed=0)       # 8 x 8: all of them
    check_pairs(p, dj)
    assert not np.isin(p[:, :2], s.test_images).any()
    assert not np.array_equal(load_dataset("scores-csv", data_dir=tmp_path, seed=4).setting("random").test_pairs,
                              s.test_pairs)


def test_scores_csv_tab_separated_and_image_dir_fallback(tmp_path):
    scores_table(tmp_path, sep="\t")
    d = load_dataset("scores-csv", data_dir=tmp_path)
    assert d.scores.size == 20 and d.image_dir == tmp_path
    other = tmp_path / "elsewhere"
    other.mkdir()
    assert load_dataset("scores-csv", data_dir=tmp_path, images=other).image_dir == other


@pytest.mark.parametrize("text, match", [
    ("image,value\na.png,1\n", "no column 'score'"),
    ("image,score\na.png,1\nb.png,high\n", "line 3: score 'high'"),
    ("image,score\na.png,1\na.png,2\n", "listed twice"),
    ("image,score\n/etc/a.png,1\n", "relative"),
    ("image,score\n../a.png,1\n", "relative"),
    ("image,score\na.png,nan\n", "finite"),
    ("image,score\n", "no data rows"),
    ("", "empty file"),
    ("image,score\na.png,1,extra\n", "line 2 has 3 fields"),
])
def test_scores_csv_bad_input(tmp_path, text, match):
    path = write(tmp_path / "scores.csv", text)
    with pytest.raises(ValueError, match=match) as err:
        load_dataset("scores-csv", data_dir=tmp_path)
    assert str(path) in str(err.value)


def test_scores_csv_too_few_images_and_bad_fraction(tmp_path):
    write(tmp_path / "scores.csv", "image,score\na.png,1\nb.png,2\nc.png,3\n")
    with pytest.raises(ValueError, match="at least 4 images"):
        load_dataset("scores-csv", data_dir=tmp_path)
    scores_table(tmp_path)
    with pytest.raises(ValueError, match="test_fraction"):
        load_dataset("scores-csv", data_dir=tmp_path, test_fraction=1.5)


def test_registry_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'nope'.*deza2015"):
        load_dataset("nope")
    with pytest.raises(ValueError, match="needs data_dir"):
        load_dataset("scores-csv")
    with pytest.raises(FileNotFoundError, match="scores.csv"):
        load_dataset("scores-csv", data_dir=tmp_path)
    with pytest.raises(ValueError, match="no option colour.*seed"):
        load_dataset("scores-csv", data_dir=tmp_path, colour=1)
    with pytest.raises(FileNotFoundError, match="image directory"):
        scores_table(tmp_path)
        load_dataset("scores-csv", data_dir=tmp_path, images=tmp_path / "missing")


# ---------------------------------------------------------------- synthetic

def test_synthetic_is_a_labelled_scores_csv(tmp_path):
    raw = tmp_path / "raw"
    rows = ["image,score,topic"] + [f"syn_{i:06d}.png,{(i * 7) % 11 + 0.5 * i},{['animals', 'memes', 'other'][i % 3]}"
                                    for i in range(30)]
    write(raw / "scores.csv", "\n".join(rows) + "\n")
    write(raw / "images" / "syn_000000.png", "x")
    write(raw / "world.json", json.dumps({"topics": ["animals", "memes", "gaming", "pics", "other"]}))
    d = load_dataset("synthetic", data_dir=raw)
    assert d.synthetic and d.name == "synthetic"
    assert d.topic_names == ["animals", "memes", "gaming", "pics", "other"]   # the generator's order
    assert d.topics[:3].tolist() == [0, 1, 4]
    assert d.image_dir == raw / "images" and d.image_path(2) == raw / "images" / "syn_000002.png"
    assert set(d.settings) == {"random", "random_disjoint"}
    with pytest.raises(FileNotFoundError, match="make_synthetic"):
        load_dataset("synthetic", data_dir=tmp_path / "absent")


# ---------------------------------------------------------------- pairs-csv

def pairs_table(tmp_path, n=30):
    """A chain-ish comparison graph: image i beats image j when i > j."""
    rng = np.random.default_rng(0)
    rows, seen = ["image_a,image_b,label"], set()
    while len(seen) < 150:
        i, j = (int(x) for x in rng.choice(n, 2, replace=False))
        if frozenset((i, j)) in seen:
            continue
        seen.add(frozenset((i, j)))
        rows.append(f"p{i:02d}.jpg,p{j:02d}.jpg,{'+1' if i > j else '-1'}")
    return write(tmp_path / "pairs.csv", "\n".join(rows) + "\n")


def test_pairs_csv_settings_and_sampling(tmp_path):
    pairs_table(tmp_path)
    d = load_dataset("pairs-csv", data_dir=tmp_path)
    assert d.ids.tolist() == list(range(30)) and d.image_names[5] == "p05.jpg"
    assert np.isnan(d.scores).all()
    s, dj = d.setting("random"), d.setting("random_disjoint")
    held = set(s.test_images.tolist())
    for a, b, y in s.test_pairs.tolist():
        assert a in held and b in held and y == (1 if a > b else -1)
    assert s.train_pairs.shape[0] + s.test_pairs.shape[0] == 150
    assert not np.isin(dj.train_pairs[:, :2], s.test_images).any()
    p = sample_pairs(s, s.train_pairs.shape[0], seed=0)
    check_pairs(p, s)
    for a, b, y in p.tolist():
        assert y == (1 if a > b else -1)     # turned round, never relabelled
    q = sample_pairs(dj, dj.train_pairs.shape[0], seed=0)
    assert not np.isin(q[:, :2], s.test_images).any()
    with pytest.raises(PairSamplingError, match="at most"):
        sample_pairs(dj, dj.train_pairs.shape[0] + 1, seed=0)


def test_pairs_csv_repeats(tmp_path):
    base = "image_a,image_b,label\n" + "".join(f"x{i}.jpg,x{i + 1}.jpg,-1\n" for i in range(10))
    write(tmp_path / "pairs.csv", base + "x1.jpg,x0.jpg,1\nx0.jpg,x1.jpg,-1\n")   # agreeing repeats
    d = load_dataset("pairs-csv", data_dir=tmp_path, test_fraction=0.5, seed=1)
    s = d.setting("random")
    assert s.train_pairs.shape[0] + s.test_pairs.shape[0] == 10
    write(tmp_path / "pairs.csv", base + "x1.jpg,x0.jpg,-1\n")
    with pytest.raises(ValueError, match="lines 2 and 12 .*opposite labels"):
        load_dataset("pairs-csv", data_dir=tmp_path)


@pytest.mark.parametrize("row, match", [
    ("a.jpg,b.jpg,0", "label '0' must be"),
    ("a.jpg,b.jpg,yes", "label 'yes' must be"),
    ("a.jpg,a.jpg,1", "with itself"),
])
def test_pairs_csv_bad_rows(tmp_path, row, match):
    write(tmp_path / "pairs.csv", "image_a,image_b,label\nc.jpg,d.jpg,1\n" + row + "\n")
    with pytest.raises(ValueError, match=match):
        load_dataset("pairs-csv", data_dir=tmp_path)


# ---------------------------------------------------------------- popularity

def popularity_table(tmp_path, sep=",", header=("image", "user", "score")):
    """12 users with 3..14 images each; score = user effect + noise."""
    rng = np.random.default_rng(1)
    rows, k = [sep.join(header)], 0
    for u in range(12):
        for _ in range(3 + u):
            rows.append(sep.join([f"{k:05d}", f"{u}@N0{u % 3}", f"{u * 0.3 + rng.normal():.5f}"]))
            k += 1
    return write(tmp_path / "popularity.tsv", "\n".join(rows) + "\n"), k


def test_popularity_settings(tmp_path):
    _, n = popularity_table(tmp_path, sep="\t", header=("pid", "uid", "logview"))   # TPIC2017 shape
    d = load_dataset("popularity", data_dir=tmp_path, min_user_images=10, seed=2)
    assert d.ids.size == n and d.image_names[0] == "00000.jpg" and d.users.size == n
    assert np.unique(d.users).size == 12 and d.image_path(4) == tmp_path / "images" / "00004.jpg"
    for name, s in d.settings.items():
        assert s.metric == "spearman" and s.disjoint and s.test_pairs.shape == (0, 3)
        train = np.concatenate([s.viral_pool, s.nonviral_pool])
        assert not np.isin(train, s.test_images).any()
        assert d.scores[s.viral_pool].min() > d.scores[s.nonviral_pool].max()
        assert set(s.paper) == {"alexnet_pvcnn", "alexnet_tpvcnn", "vgg19_pvcnn", "vgg19_tpvcnn"}
    one = d.setting("one_per_user")
    used = np.concatenate([one.test_images, one.viral_pool, one.nonviral_pool])
    assert used.size == 12 and np.unique(d.users[used]).size == 12     # one image of each user
    assert one.test_images.size == 6
    mix = d.setting("user_mix")
    assert mix.test_images.size == round(0.5 * n)
    spec = d.setting("user_specific")
    assert spec.per_user and not mix.per_user
    test_users = set(d.users[spec.test_images].tolist())
    assert test_users == {u for u in np.unique(d.users).tolist() if (d.users == u).sum() >= 10}
    assert d.setting("user_mix").paper["vgg19_tpvcnn"] == 38.21
    assert d.setting("user_specific").paper["alexnet_pvcnn"] == 29.55
    p = sample_pairs(mix, 50, seed=0)
    check_pairs(p, mix)


def test_popularity_spearman_evaluation(tmp_path):
    popularity_table(tmp_path)
    d = load_dataset("popularity", data_dir=tmp_path / "popularity.tsv", min_user_images=10)
    mix = d.setting("user_mix")
    truth = d.scores[mix.test_images]
    assert evaluate(d, mix, truth) == pytest.approx(1.0)
    assert evaluate(d, mix, -truth) == pytest.approx(-1.0)
    noisy = truth + np.random.default_rng(0).normal(size=truth.size)
    assert evaluate(d, mix, noisy) == pytest.approx(spearmanr(noisy, truth).correlation)
    spec = d.setting("user_specific")
    users = d.users[spec.test_images]
    truth = d.scores[spec.test_images]
    pred = truth.copy()
    first = users == users[0]
    pred[first] = -pred[first]           # one user ranked backwards
    expected = np.mean([-1.0 if u == users[0] else 1.0 for u in np.unique(users)])
    assert evaluate(d, spec, pred) == pytest.approx(expected)
    with pytest.raises(ValueError, match="predictions"):
        evaluate(d, mix, truth[:3])
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(spearmanr([1, 2, 2, 3], [1, 2, 3, 4]).correlation)


def test_popularity_bad_input(tmp_path):
    with pytest.raises(FileNotFoundError, match="popularity.csv"):
        load_dataset("popularity", data_dir=tmp_path)
    write(tmp_path / "popularity.csv", "image,score\na,1\n")
    with pytest.raises(ValueError, match="no column 'user or uid"):
        load_dataset("popularity", data_dir=tmp_path)
    write(tmp_path / "popularity.csv", "image,user,score\na,,1\n")
    with pytest.raises(ValueError, match="empty user"):
        load_dataset("popularity", data_dir=tmp_path)
    popularity_table(tmp_path)
    (tmp_path / "popularity.csv").unlink()
    with pytest.raises(ValueError, match="min_user_images"):
        load_dataset("popularity", data_dir=tmp_path, min_user_images=100)
