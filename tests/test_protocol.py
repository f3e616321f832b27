"""The evaluation protocol (docs/PROTOCOL.md): D_train / D_val / D_test per setting, no leakage
in the image-disjoint settings (ranking pairs and the Topic-CNN alike), one update for any
iter_size, Caffe's test phase reading D_val once, the --from-scratch refusal, and metrics as
defined (per-user Spearman, an interval that respects repeated test images)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format
from scipy.stats import spearmanr

from virality.datasets import load_dataset
from virality.data.pairs import check_pairs, sample_pairs
from virality.data.splits import split_setting, setting_test_images, topic_split

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


def assert_no_leak(dataset, setting, split, train_pairs, topic_train):
    """The Done-when property of a *_disjoint setting, and D_val's own rules."""
    test = setting_test_images(setting)
    val = split.val_images
    assert val.size and test.size and not np.intersect1d(val, test).size
    assert not np.isin(split.val_pairs[:, :2], test).any(), "a validation pair holds a test image"
    assert set(np.unique(split.val_pairs[:, :2]).tolist()) <= set(val.tolist())
    held = np.union1d(test, val)
    assert not np.isin(train_pairs[:, :2], held).any(), f"{setting.name}: a training pair holds a test/val image"
    assert not np.isin(topic_train, held).any(), f"{setting.name}: the Topic-CNN trains on a test/val image"
    if split.train.train_pairs is None:   # pools themselves are clean, not only this sample
        pools = np.union1d(split.train.viral_pool, split.train.nonviral_pool)
        assert not np.isin(pools, np.union1d(val, np.asarray(setting.test_images))).any()


def test_every_deza2015_disjoint_setting_keeps_test_and_validation_images_out_of_training():
    d = load_dataset("deza2015", verify=False)
    disjoint = sorted(n for n in d.settings if n.endswith("_disjoint"))
    assert len(disjoint) == 7      # 5 complete folds, top_bottom, random
    for name in disjoint:
        s = d.setting(name)
        split = split_setting(s, 1000, 250, seed=1701)
        assert split.val_pairs.shape == (1000, 3) and split.val_images.size == 500
        train = sample_pairs(split.train, 200_000, seed=3)
        check_pairs(train, split.train)
        topic_train, topic_val = topic_split(split, d.ids, d.topics)
        assert_no_leak(d, s, split, train, topic_train)
        np.testing.assert_array_equal(topic_val, split.val_images)      # every deza2015 image has a topic
        assert topic_train.size == 2 * 5039 - setting_test_images(s).size - 500


def test_paper_protocol_validation_avoids_test_images_and_is_kept_out_of_training_pairs():
    d = load_dataset("deza2015", verify=False)
    s = d.setting("top_bottom")
    split = split_setting(s, 1000, 250, seed=1701)
    assert not np.isin(split.val_pairs[:, :2], s.test_images).any()
    train = sample_pairs(split.train, 500_000, seed=5)
    val = {frozenset(p) for p in split.val_pairs[:, :2].tolist()}
    assert not val & {frozenset(p) for p in train[:, :2].tolist()}
    # the paper's protocol: validation (like test) images are still in training pairs
    assert np.isin(train[:, :2], split.val_images).any()
    topic_train, _ = topic_split(split, d.ids, d.topics)
    assert not np.isin(topic_train, np.union1d(split.val_images, s.test_images)).any()
    # deterministic for the seed, different for another
    again = split_setting(s, 1000, 250, seed=1701)
    np.testing.assert_array_equal(again.val_pairs, split.val_pairs)
    assert not np.array_equal(split_setting(s, 1000, 250, seed=1702).val_pairs, split.val_pairs)


def _popularity_table(path, rng):
    rows = ["image,user,score"]
    for i in range(800):
        rows.append(f"img{i:04d}.jpg,u{i % 40},{rng.normal():.6f}")
    path.write_text("\n".join(rows) + "\n")


def _pairs_table(path, rng):
    rows = ["image_a,image_b,label"]
    seen = set()
    while len(rows) < 1500:
        a, b = rng.choice(200, size=2, replace=False)
        if (a, b) in seen or (b, a) in seen:
            continue
        seen.add((a, b))
        rows.append(f"i{a:03d}.jpg,i{b:03d}.jpg,{1 if a < b else -1}")
    path.write_text("\n".join(rows) + "\n")


def test_disjoint_settings_of_the_table_datasets_keep_test_and_validation_images_out(tmp_path):
    rng = np.random.default_rng(0)
    _popularity_table(tmp_path / "popularity.csv", rng)
    _pairs_table(tmp_path / "pairs.csv", rng)
    pop = load_dataset("popularity", data_dir=tmp_path / "popularity.csv")
    pc = load_dataset("pairs-csv", data_dir=tmp_path / "pairs.csv")
    for d, names in ((pop, ("one_per_user", "user_mix", "user_specific")), (pc, ("random_disjoint",))):
        for name in names:
            s = d.setting(name)
            assert s.disjoint
            split = split_setting(s, 12, 4, seed=1)
            from virality.data.pairs import max_pairs
            train = sample_pairs(split.train, max_pairs(split.train), seed=2)     # every allowed pair
            topic_train, _ = topic_split(split, d.ids, d.topics)
            assert topic_train.size == 0          # no topics in these tables: no Topic-CNN
            assert_no_leak(d, s, split, train, np.union1d(split.train.viral_pool, split.train.nonviral_pool))


@pytest.fixture(scope="module")
def synthetic_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("protocol") / "data"
    run = subprocess.run([PY, str(ROOT / "tools/make_data.py"), "--dataset", "synthetic", "--out-root", str(out),
                          "--num-pairs", "5000", "--quiet"], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    return out / "synthetic"


def test_make_data_writes_three_parts_per_setting_and_no_leak_in_the_disjoint_one(synthetic_data):
    summary = json.loads((synthetic_data / "data.json").read_text())
    assert summary["val_pairs"] == 300 and summary["val_images_per_side"] == 150
    d = load_dataset("synthetic", data_dir=synthetic_data / "raw")
    for name in ("random", "random_disjoint"):
        parts = {p: np.load(synthetic_data / name / f"pairs_{p}.npy") for p in ("train", "val", "test")}
        np.testing.assert_array_equal(parts["test"], d.setting(name).test_pairs)
        assert parts["val"].shape == (300, 3) and parts["train"].shape == (5000, 3)
        record = summary["settings"][name]
        assert (record["val_pairs"], record["val_images"], record["test_pairs"]) == (300, 300, 300)
        topic_train = np.load(synthetic_data / name / "topics_train_lmdb" / "ids.npy")
        topic_val = np.load(synthetic_data / name / "topics_val_lmdb" / "ids.npy")
        test = setting_test_images(d.setting(name))
        val_images = np.unique(parts["val"][:, :2])
        assert not np.isin(parts["val"][:, :2], test).any()
        assert not np.isin(topic_train, np.union1d(test, topic_val)).any()
        assert set(val_images.tolist()) <= set(topic_val.tolist())
        if name.endswith("_disjoint"):
            assert not np.isin(parts["train"][:, :2], np.union1d(test, topic_val)).any()
        else:
            val = {frozenset(p) for p in parts["val"][:, :2].tolist()}
            assert not val & {frozenset(p) for p in parts["train"][:, :2].tolist()}


# ----------------------------------------------------------------------------- Caffe's test phase

def test_every_committed_solver_reads_the_default_validation_set_exactly_once(root):
    from caffe.proto import caffe_pb2

    from virality.model.nets import MODELS
    from virality.train.preflight import test_batch_size
    from virality.data.splits import default_validation
    from virality.pretrained.weights import read_net_param

    for model in sorted(MODELS):
        solver = caffe_pb2.SolverParameter()
        text_format.Merge((root / f"solvers/{model}.prototxt").read_text(), solver)
        net = read_net_param(root / solver.net)
        dataset = "synthetic" if model.startswith("tiny") else "deza2015"
        val = default_validation(dataset)
        records = 2 * val["images_per_side"] if model.endswith("_topic") else val["num_pairs"]
        assert solver.test_iter[0] * test_batch_size(net) == records, model
        text = (root / solver.net).read_text()
        assert "pairs_test" not in text and "topics_test" not in text, f"{model}: the test phase reads D_test"


def test_coverage_check_refuses_a_test_phase_that_misses_or_repeats_records(root, synthetic_data, tmp_path):
    from virality.model.generated import generate
    from virality.train.preflight import RunError, check_test_coverage
    from virality.train.training import read_solver
    from virality.pretrained.weights import read_net_param

    os.symlink(synthetic_data.parent, tmp_path / "data")
    generate("tiny_pvcnn", tmp_path, "pair_index", {})
    solver = read_solver(tmp_path / "solvers/tiny_pvcnn.prototxt")
    net = read_net_param(tmp_path / "prototxt/tiny_pvcnn/train_val.prototxt")
    assert check_test_coverage(solver, net, tmp_path) == 300
    solver.test_iter[0] = 2
    with pytest.raises(RunError, match="--val-records 300"):
        check_test_coverage(solver, net, tmp_path)
    with pytest.raises(ValueError, match="does not divide"):
        generate("tiny_pvcnn", tmp_path / "other", "pair_index", {"test_batch": 7})


# ----------------------------------------------------------------------------- iter_size

def _one_update(work, pairs_file, batch, iter_size):
    """Weights after one real Caffe SGD step of tiny_pvcnn (dropout removed, crops = whole image)."""
    import caffe
    from caffe.proto import caffe_pb2

    from virality.model.nets import train_val_net
    from virality.model.solvers import default_data_config, solver

    cfg = default_data_config("tiny_pvcnn", feed="pair_index", train_batch=batch, iter_size=iter_size)
    net = train_val_net("tiny_pvcnn", cfg)
    keep = [layer for layer in net.layer if layer.type != "Dropout"]
    del net.layer[:]
    net.layer.extend(keep)
    for layer in net.layer:
        if layer.type == "Python" and layer.python_param.layer == "PairIndexData":
            params = json.loads(layer.python_param.param_str)
            params.update(image_store=str(work / "store32"), pairs=str(pairs_file), mirror=False, shuffle=False)
            layer.python_param.param_str = json.dumps(params)
    net_path = work / f"net_{batch}_{iter_size}.prototxt"
    net_path.write_text(text_format.MessageToString(net))
    sp = solver("tiny_pvcnn", str(net_path), str(work / "snap"), cfg, val_records=300)
    sp.test_interval, sp.test_initialization = 10 ** 6, False
    sp.base_lr = 0.5                      # a visible step (the equivalence holds at any rate)
    solver_path = work / f"solver_{batch}_{iter_size}.prototxt"
    solver_path.write_text(text_format.MessageToString(sp))
    caffe.set_mode_cpu()
    caffe.set_random_seed(7)
    s = caffe.get_solver(str(solver_path))
    before = {k: [b.data.copy() for b in v] for k, v in s.net.params.items()}
    s.step(1)
    after = {k: [b.data.copy() for b in v] for k, v in s.net.params.items()}
    loss_weight = [layer.loss_weight[0] for layer in net.layer if layer.type == "Python" and layer.loss_weight]
    s = None
    return before, after, loss_weight


def test_one_update_with_iter_size_k_equals_one_pass_over_the_same_pairs(synthetic_data, tmp_path):
    from virality.data.imagestore import build_image_store

    d = load_dataset("synthetic", data_dir=synthetic_data / "raw")
    items = [(int(i), d.image_path(int(i))) for i in d.ids[:400]]
    build_image_store(items, tmp_path / "store32", 32, progress=False)
    pairs = np.load(synthetic_data / "random" / "pairs_train.npy")
    pairs = pairs[np.isin(pairs[:, 0], d.ids[:400]) & np.isin(pairs[:, 1], d.ids[:400])][:32]
    assert len(pairs) == 32
    np.save(tmp_path / "pairs.npy", pairs)
    b0, one_pass, w1 = _one_update(tmp_path, tmp_path / "pairs.npy", 32, 1)
    b1, four_passes, w4 = _one_update(tmp_path, tmp_path / "pairs.npy", 8, 4)
    assert w1 == [1.0] and w4 == [4.0]
    moved = 0.0
    for name in one_pass:
        for start, start_k, x, y in zip(b0[name], b1[name], one_pass[name], four_passes[name]):
            np.testing.assert_array_equal(start_k, start)      # the same initial weights
            np.testing.assert_allclose(y, x, rtol=2e-4, atol=1e-6, err_msg=name)
            moved = max(moved, float(np.abs(x - start).max()))
    assert moved > 1e-3, "the step must move the weights for the comparison to mean something"


# ----------------------------------------------------------------------------- --from-scratch

def test_make_train_refuses_an_imagenet_model_without_weights_unless_from_scratch(root):
    from virality.train.preflight import RunError, check_initialisation

    run = subprocess.run([PY, str(root / "tools/caffe_train.py"), "alexnet_pvcnn"], cwd=root,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode != 0 and "FROM_SCRATCH=1" in run.stderr and "WEIGHTS=" in run.stderr
    assert not (root / "models/alexnet_pvcnn/run.json").exists()
    with pytest.raises(RunError, match="--from-scratch"):
        check_initialisation("vgg19_pvcnn", None, False)
    assert check_initialisation("vgg19_pvcnn", None, True) is True
    assert check_initialisation("vgg19_pvcnn", "w.caffemodel", False) is False
    assert check_initialisation("tiny_pvcnn", None, False) is False      # tiny nets have no ImageNet weights
    makefile = (root / "Makefile").read_text()
    assert "$(if $(FROM_SCRATCH),--from-scratch)" in makefile


# ----------------------------------------------------------------------------- metrics

def test_user_specific_rho_is_the_mean_of_per_user_spearman_not_the_pooled_one():
    from virality.datasets.base import Dataset, Setting
    from virality.experiments.metrics import setting_spearman, spearman_per_user

    rng = np.random.default_rng(3)
    users = np.repeat(np.arange(6), 12)
    # each user's popularity sits at its own level; predictions rank within a user well but
    # put the levels in reverse, so the pooled rho is negative while every user's is positive
    actual = users * 10.0 + rng.normal(size=users.size)
    predicted = actual - 20.0 * users + 0.3 * rng.normal(size=users.size)
    expected = np.mean([spearmanr(predicted[users == u], actual[users == u]).correlation for u in range(6)])
    pooled = spearmanr(predicted, actual).correlation
    assert expected > 0.5 and pooled < 0 and abs(expected - pooled) > 0.5
    rho, n = spearman_per_user(predicted, actual, users)
    assert rho == pytest.approx(expected, abs=1e-12) and n == 6
    ids = np.arange(users.size)
    d = Dataset("toy", ids=ids, scores=actual, topics=np.full(ids.size, -1), topic_names=[], image_dir=None,
                users=users)
    empty = np.empty((0, 3), np.int32)
    per_user = Setting("user_specific", "", "spearman", empty, ids, ids[:0], ids[:0], per_user=True)
    pooled_setting = Setting("user_mix", "", "spearman", empty, ids, ids[:0], ids[:0])
    assert setting_spearman(d, per_user, predicted) == (pytest.approx(expected, abs=1e-12), 6)
    assert setting_spearman(d, pooled_setting, predicted)[0] == pytest.approx(pooled, abs=1e-12)
    from virality.datasets.popularity import evaluate
    assert evaluate(d, per_user, predicted) == pytest.approx(expected, abs=1e-12)


def test_repeated_test_images_get_an_image_bootstrap_as_wide_as_the_clustered_variance():
    from virality.experiments.metrics import IMAGE_BOOTSTRAP, WILSON, accuracy_interval, wilson_interval

    rng = np.random.default_rng(11)
    n = 250                                   # top_bottom's design: every image in 4 pairs
    top, bottom = np.arange(n), np.arange(n, 2 * n)
    perm = rng.permutation(n)
    pairs = np.array([[top[i], bottom[perm[(i + k) % n]], 1] for k in range(4) for i in range(n)])
    # strong image effects: a pair is right with probability set by its two images
    skill = rng.uniform(0.05, 0.95, size=2 * n)
    p_right = (skill[pairs[:, 0]] + skill[pairs[:, 1]]) / 2
    right = rng.random(len(pairs)) < p_right
    f1 = np.where(right, 1.0, -1.0)
    f2 = np.zeros(len(pairs))
    acc, low, high, method = accuracy_interval(f1, f2, pairs)
    assert method == IMAGE_BOOTSTRAP and acc == pytest.approx(right.mean())
    # independent reference, written out: with image effects the variance of a mean over N pairs
    # is V_top + V_bottom - V_pair (sums of the centred correctness over each image's pairs,
    # squared, / N^2); the pigeonhole bootstrap (Owen 2007; product weights m_a m_b) has the
    # expectation V_top + V_bottom + V_pair, conservative by 2 V_pair. Wilson assumes V_pair only.
    c = right.astype(float) - right.mean()
    v_images = sum(float((np.bincount(pairs[:, side], weights=c, minlength=2 * n) ** 2).sum())
                   for side in (0, 1)) / len(pairs) ** 2
    v_pair = float((c ** 2).sum()) / len(pairs) ** 2
    se_boot = (high - low) / (2 * 1.959964)
    assert se_boot == pytest.approx(np.sqrt(v_images + v_pair), rel=0.1)
    assert se_boot > np.sqrt(v_images - v_pair) > 1.2 * np.sqrt(v_pair)     # pairs are not independent
    w_low, w_high = wilson_interval(right.sum(), len(pairs))
    assert (high - low) > 1.3 * (w_high - w_low), "the Wilson interval ignores the shared images"
    # every image in one pair: Wilson
    single = pairs[:n]
    acc1, l1, h1, m1 = accuracy_interval(f1[:n], f2[:n], single)
    assert m1 == WILSON and (l1, h1) == wilson_interval(right[:n].sum(), n)


def test_small_tables_get_validation_fitted_only_when_asked(tmp_path):
    from virality.data.splits import SplitError

    rows = "image,score\n" + "".join(f"im{i:03d}.png,{i}\n" for i in range(60))
    (tmp_path / "scores.csv").write_text(rows)
    s = load_dataset("scores-csv", data_dir=tmp_path / "scores.csv").setting("random_disjoint")
    with pytest.raises(SplitError, match="--val-images-per-side"):
        split_setting(s, 1000, 250, seed=0)                   # documented sizes are never shrunk silently
    split = split_setting(s, 1000, 250, seed=0, fit=True)
    pool = np.setdiff1d(s.viral_pool, setting_test_images(s)).size    # 30 high images, 6 of them test images
    assert split.val_images.size == 2 * (pool // 5) and len(split.val_pairs) == (pool // 5) ** 2
    assert not np.isin(sample_pairs(split.train, 50, seed=1)[:, :2], split.val_images).any()
