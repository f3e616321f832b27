"""The user's workflow: metrics, the training driver (NaN stop, plateau drops, exact validation),
prediction on broken files, and the evaluation report."""
import csv
import os
import dataclasses
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from virality.experiments.evaluation import Result, report_markdown
from virality.experiments.metrics import pairwise_accuracy, spearman, wilson_interval
from virality.train.training import PlateauDropper, validate


# --- metrics on hand-made rankings ----------------------------------------------------------

def test_pairwise_accuracy_on_hand_made_rankings():
    scores = {1: 3.0, 2: 2.0, 3: 1.0, 4: 0.0}          # 1 > 2 > 3 > 4
    pairs = np.array([[1, 4, 1], [3, 2, -1], [2, 3, 1], [4, 1, -1]])
    f1 = np.array([scores[i] for i in pairs[:, 0]])
    f2 = np.array([scores[i] for i in pairs[:, 1]])
    assert pairwise_accuracy(f1, f2, pairs[:, 2]) == 1.0            # perfect ranking
    assert pairwise_accuracy(-f1, -f2, pairs[:, 2]) == 0.0          # reversed ranking
    assert pairwise_accuracy(np.zeros(4), np.zeros(4), pairs[:, 2]) == 0.5   # all ties: half each


def test_spearman_on_hand_made_rankings():
    truth = np.array([5.0, 3.0, 9.0, 1.0, 7.0])
    assert spearman(truth * 2 + 1, truth) == pytest.approx(1.0)
    assert spearman(-truth, truth) == pytest.approx(-1.0)
    # ties get average ranks: [1, 1, 2] vs [1, 2, 3] -> ranks [1.5, 1.5, 3]
    assert spearman([1, 1, 2], [1, 2, 3]) == pytest.approx(np.sqrt(3) / 2)
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))


def test_wilson_interval_for_the_papers_test_size():
    low, high = wilson_interval(0.70 * 489, 489)
    assert low < 0.70 < high
    assert (high - low) / 2 == pytest.approx(0.041, abs=0.003)      # "about +-4 points"


# --- the training driver --------------------------------------------------------------------

def test_plateau_dropper_drops_at_most_three_times():
    d = PlateauDropper(patience=2, min_delta=0.01)
    history = [0.6, 0.7, 0.7, 0.705, 0.71, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8]
    drops = [i for i, acc in enumerate(history) if d.update(acc)]
    assert drops == [3, 7, 9]                  # 2 validations without a 0.01 gain, then again, then again
    assert d.drops == 3


class FakeTestNet:
    """Cycles through n records in batches, like Caffe's Data layer (wrapping around)."""

    def __init__(self, n, batch):
        self.f1 = np.arange(n, dtype=np.float32)
        self.n, self.batch, self.pos = n, batch, 0
        self.blobs = {k: type("Blob", (), {"data": None})() for k in ("score", "score_p", "label")}
        self.seen = []

    def forward(self):
        idx = (self.pos + np.arange(self.batch)) % self.n
        self.pos = (self.pos + self.batch) % self.n
        self.seen.append(idx)
        # Records with an even index are ordered right, odd ones wrong.
        self.blobs["score"].data = np.where(idx % 2 == 0, 1.0, -1.0).reshape(-1, 1)
        self.blobs["score_p"].data = np.zeros((self.batch, 1))
        self.blobs["label"].data = np.ones(self.batch)


@pytest.mark.parametrize("start", [0, 3, 5])
def test_validation_counts_every_record_exactly_once(start):
    net = FakeTestNet(n=7, batch=3)
    net.pos = start
    acc = validate(net, 7)
    assert acc == pytest.approx(4 / 7)          # records 0, 2, 4, 6 are right
    counted = np.concatenate(net.seen)[:7]
    assert sorted(counted.tolist()) == list(range(7))


@pytest.fixture(scope="module")
def toy_project(root, tmp_path_factory):
    from toy_data import make_toy_data
    work = tmp_path_factory.mktemp("workflow")
    subprocess.run([sys.executable, str(root / "tools/make_nets.py"), "--out", str(work), "--models", "tiny_pvcnn"],
                   check=True, capture_output=True)
    make_toy_data(work)
    return work


def test_non_finite_loss_stops_and_keeps_the_last_good_snapshot(root, toy_project, tmp_path):
    from google.protobuf import text_format
    from virality.train.training import read_solver
    solver = read_solver(toy_project / "solvers/tiny_pvcnn.prototxt")
    # The rate explodes to 1e36 after iteration 6: weights overflow and the loss turns NaN.
    del solver.stepvalue[:]
    solver.stepvalue.extend([6])
    solver.gamma = 1e38
    solver.net = str(toy_project / "prototxt/tiny_pvcnn/train_val.prototxt")
    path = tmp_path / "exploding.prototxt"
    path.write_text(text_format.MessageToString(solver))
    out = subprocess.run([sys.executable, str(root / "tools/train.py"), "--model", "tiny_pvcnn",
                          "--solver", str(path), "--workdir", str(toy_project), "--out", str(tmp_path / "run"),
                          "--max-iter", "40", "--snapshot-interval", "3", "--val-interval", "100"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 3, out.stdout + out.stderr
    assert "non-finite" in out.stderr and "iteration" in out.stderr
    good = sorted((tmp_path / "run").glob("tiny_pvcnn_iter_*.caffemodel"))
    assert good, "a snapshot before the explosion must be kept"
    last = max(int(p.stem.split("_iter_")[1]) for p in good)
    assert last <= 7 and f"tiny_pvcnn_iter_{last}.solverstate" in out.stderr
    # The kept snapshot is finite.
    import caffe
    net = caffe.Net(str(toy_project / "prototxt/tiny_pvcnn/deploy.prototxt"),
                    str(tmp_path / "run" / f"tiny_pvcnn_iter_{last}.caffemodel"), caffe.TEST)
    assert all(np.all(np.isfinite(b.data)) for blobs in net.params.values() for b in blobs)


def test_train_driver_validates_and_writes_log_and_curves(root, toy_project, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("GLOG_")}   # as a user runs it
    out = subprocess.run([sys.executable, str(root / "tools/train.py"), "--model", "tiny_pvcnn",
                          "--workdir", str(toy_project), "--out", str(tmp_path / "run"),
                          "--max-iter", "60", "--val-interval", "30"], capture_output=True, text=True, timeout=600,
                         env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    # Caffe's net dumps go to the run's caffe.log, not the console; the configuration is readable lines.
    assert "Network initialization done" in (tmp_path / "run/caffe.log").read_text()
    assert "Network initialization done" not in out.stdout + out.stderr
    assert "TrainConfig(" not in out.stdout and re.search(r"\n  max_iter: +60\n", out.stdout)
    assert len((out.stdout + out.stderr).splitlines()) < 60
    with open(tmp_path / "run/train_log.csv") as f:
        rows = list(csv.DictReader(f))
    vals = [float(r["val_accuracy"]) for r in rows if r["val_accuracy"]]
    assert [int(r["iteration"]) for r in rows if r["val_accuracy"]] == [30, 60]
    assert vals[-1] > 0.8                       # the toy set is learnable
    assert (tmp_path / "run/train_curves.png").stat().st_size > 1000
    assert (tmp_path / "run/tiny_pvcnn_iter_60.caffemodel").exists()


# --- prediction -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_release(root, tmp_path_factory):
    import caffe
    from virality.deploy.release import make_release
    work = tmp_path_factory.mktemp("release")
    net = caffe.Net(str(root / "prototxt/tiny_pvcnn/deploy.prototxt"), caffe.TEST)
    rng = np.random.default_rng(0)
    for blobs in net.params.values():
        for b in blobs:
            b.data[...] = rng.normal(0, 0.1, b.data.shape)
    net.save(str(work / "random.caffemodel"))
    release, _ = make_release("tiny_pvcnn", snapshot=work / "random.caffemodel", out_dir=work / "release",
                              trained_on="random weights (test)", stream=open("/dev/null", "w"))
    return release.dir


# --- the report -----------------------------------------------------------------------------

def test_report_contains_every_setting_and_the_papers_numbers():
    from virality.datasets.base import Dataset
    dataset = Dataset("deza2015", np.arange(3), np.zeros(3), np.zeros(3, np.int32), ["x"], None)
    settings = ["complete_fold0", "complete_fold0_disjoint", "top_bottom", "top_bottom_disjoint", "random",
                "random_disjoint"]
    paper = {"complete_fold0": 60.11, "top_bottom": 69.97, "random": 63.35}
    results = [Result(s, "alexnet_pvcnn", "pairwise_accuracy", 0.6 + 0.01 * i, 0.55, 0.65, 489,
                      paper.get(s), f"pairs of {s}", "x.caffemodel", interval="wilson",
                      disjoint=s.endswith("_disjoint")) for i, s in enumerate(settings)]
    md = report_markdown(results, dataset, "Table 1")
    header = next(line for line in md.splitlines() if line.startswith("| model |"))
    # each image-disjoint figure first, the paper-protocol one beside it, each labelled
    assert header.split(" | ")[1:] == ["complete_fold0_disjoint (image-disjoint)", "complete_fold0 (paper protocol)",
                                       "top_bottom_disjoint (image-disjoint)", "top_bottom (paper protocol)",
                                       "random_disjoint (image-disjoint)", "random (paper protocol) |"]
    for s in settings:
        protocol = "image-disjoint" if s.endswith("_disjoint") else "paper protocol"
        assert f"| {s} | {protocol} | 489 pairs | Wilson score interval" in md
    assert "[paper 69.97]" in md and "[paper 63.35]" in md and "[paper 60.11]" in md
    assert md.count("[paper") == 3            # never beside an image-disjoint figure
    assert "60.00 (55.00-65.00)" in md
    assert "SYNTHETIC" not in md
    dataset.synthetic = True
    assert "SYNTHETIC" in report_markdown(results, dataset, "t")


def test_report_gives_the_mean_of_the_five_complete_folds_when_all_exist():
    from virality.datasets.base import Dataset
    from virality.experiments.evaluation import fold_means
    dataset = Dataset("deza2015", np.arange(3), np.zeros(3), np.zeros(3, np.int32), ["x"], None)
    values = [0.60, 0.62, 0.64, 0.66, 0.68]
    results = [Result(f"complete_fold{k}", "vgg19_pvcnn", "pairwise_accuracy", v, v - 0.03, v + 0.03, 1008,
                      64.47, "d", f"f{k}.caffemodel", interval="wilson", fold=k) for k, v in enumerate(values)]
    assert fold_means(results[:4]) == []      # 4 of 5 folds: no whole-data number
    (mean,) = fold_means(results)
    assert mean.setting == "complete_mean5" and mean.value == pytest.approx(0.64) and mean.n == 5040
    assert (mean.low, mean.high) == (pytest.approx(0.60), pytest.approx(0.68))
    md = report_markdown(results, dataset, "t")
    assert "complete_mean5 (paper protocol)" in md and "64.00 (60.00-68.00) [paper 64.47]" in md
    assert "lowest and highest of the 5 folds" in md


# --- exact resume ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def synthetic_project(root, tmp_path_factory):
    """A small synthetic world with the pair-index feed's inputs, and tiny nets reading it."""
    work = tmp_path_factory.mktemp("synthetic_project")
    subprocess.run([sys.executable, str(root / "tools/make_data.py"), "--dataset", "synthetic",
                    "--out-root", str(work / "data"), "--settings", "random", "--num-pairs", "2000",
                    "--pair-lmdb", "none", "--quiet"], check=True, capture_output=True, timeout=600)
    subprocess.run([sys.executable, str(root / "tools/make_nets.py"), "--out", str(work), "--models", "tiny_pvcnn",
                    "--feed", "pair_index"], check=True, capture_output=True)
    return work


def _train(root, work, out, *extra):
    cmd = [sys.executable, str(root / "tools/train.py"), "--model", "tiny_pvcnn", "--workdir", str(work),
           "--out", str(out), "--max-iter", "24", "--val-interval", "12", *extra]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    return res


def test_resume_follows_the_same_trajectory(root, synthetic_project, tmp_path):
    import caffe
    straight, split = tmp_path / "straight", tmp_path / "split"
    _train(root, synthetic_project, straight)
    _train(root, synthetic_project, split, "--max-iter", "10", "--snapshot-interval", "5")
    _train(root, synthetic_project, split, "--resume", str(split / "tiny_pvcnn_iter_10.solverstate"))
    deploy = str(synthetic_project / "prototxt/tiny_pvcnn/deploy.prototxt")
    a = caffe.Net(deploy, str(straight / "tiny_pvcnn_iter_24.caffemodel"), caffe.TEST)
    b = caffe.Net(deploy, str(split / "tiny_pvcnn_iter_24.caffemodel"), caffe.TEST)
    mid = caffe.Net(deploy, str(split / "tiny_pvcnn_iter_10.caffemodel"), caffe.TEST)
    for name in a.params:
        for x, y in zip(a.params[name], b.params[name]):
            np.testing.assert_array_equal(x.data, y.data, err_msg=name)
        # Weights moved after the resume (the score bias cannot: the loss depends on f1 - f2 only).
        assert not np.array_equal(a.params[name][0].data, mid.params[name][0].data), name
    with open(split / "train_log.csv") as f:
        iterations = [int(r["iteration"]) for r in csv.DictReader(f)]
    assert iterations[-1] == 24 and 10 in iterations


def test_training_validation_agrees_with_evaluation(root, synthetic_project, tmp_path):
    """The driver's validation (test net sharing the training weights) and tools/evaluate's deploy-net
    scoring of the same snapshot give the same pairwise accuracy on the same test pairs."""
    from virality.datasets import load_dataset
    from virality.experiments.evaluation import Run, evaluate_run
    from virality.data.imagestore import ImageStore
    out = tmp_path / "run"
    _train(root, synthetic_project, out)
    with open(out / "train_log.csv") as f:
        val = [float(r["val_accuracy"]) for r in csv.DictReader(f) if r["val_accuracy"]][-1]
    dataset = load_dataset("synthetic", data_dir=synthetic_project / "data/synthetic/raw")
    store = ImageStore(synthetic_project / "data/synthetic/images_36_lmdb")
    # the driver validates on D_val: scoring the snapshot on D_val's pairs gives the same number
    val_pairs = np.load(synthetic_project / "data/synthetic/random/pairs_val.npy")
    on_val = dataclasses.replace(dataset.setting("random"), test_pairs=val_pairs)
    dataset.settings["random (D_val)"] = dataclasses.replace(on_val, name="random (D_val)")
    run = Run("random (D_val)", "tiny_pvcnn", out / "tiny_pvcnn_iter_24.caffemodel",
              synthetic_project / "prototxt/tiny_pvcnn/deploy.prototxt")
    result = evaluate_run(run, dataset, store)
    assert result.n == len(val_pairs) == 300
    assert result.value == pytest.approx(val, abs=1e-9)
    assert result.value > 0.5                   # 24 iterations already beat chance on the synthetic world
    test = evaluate_run(dataclasses.replace(run, setting="random"), dataset, store)   # D_test, once
    assert test.n == len(np.load(synthetic_project / "data/synthetic/random/pairs_test.npy"))


# --- explanation (Fig. 2) -------------------------------------------------------------------

def test_nearest_neighbours_by_cosine_similarity():
    from virality.deploy.neighbours import nearest
    features = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [-1.0, 0.0]])
    order, dist = nearest(features, [0, 2], k=2)
    np.testing.assert_array_equal(order, [[1, 3], [3, 1]])
    cos = lambda a, b: a @ b / np.linalg.norm(a) / np.linalg.norm(b)       # noqa: E731
    np.testing.assert_allclose(dist[0], [1 - cos(features[0], features[1]), 1 - cos(features[0], features[3])])
    assert 0 not in nearest(features, [0], k=4)[0][0]       # a query is never its own neighbour
    order, dist = nearest(features, None, k=1, query_features=[[-2.0, 0.1]])   # a query from outside
    assert order[0, 0] == 4 and dist[0, 0] == pytest.approx(1 - cos(np.array([-2.0, 0.1]), features[4]), abs=1e-6)


def test_neighbours_tool_writes_a_grid_and_a_page(root, synthetic_project, tmp_path):
    import cv2
    out = tmp_path / "run"
    _train(root, synthetic_project, out, "--max-iter", "6", "--val-interval", "6")
    store = synthetic_project / "data/synthetic/images_36_lmdb"
    common = [sys.executable, str(root / "tools/neighbours.py"), "--model", "tiny_pvcnn",
              "--snapshot", str(out / "tiny_pvcnn_iter_6.caffemodel"),
              "--deploy", str(synthetic_project / "prototxt/tiny_pvcnn/deploy.prototxt"),
              "--dataset", "synthetic", "--data-dir", str(synthetic_project / "data/synthetic/raw"),
              "--store", str(store), "--k", "4", "--limit", "300"]
    png, page = tmp_path / "grid.png", tmp_path / "grid.html"
    res = subprocess.run(common + ["--num-queries", "2", "--out", str(png), "--html", str(page)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "4 queries over 300 images" in res.stdout
    image = cv2.imread(str(png))
    assert image is not None and image.shape[0] > 4 * 200 and image.shape[1] > 5 * 150    # 4 rows x 5 readable tiles
    text = page.read_text()
    assert text.count('class="tile query"') == 4 and text.count("cosine distance") == 16
    assert "highest f_r #1" in text and "lowest f_r #2" in text
    # Queries given as files: a folder of two images outside the store.
    from virality.data.imagestore import ImageStore
    folder = tmp_path / "queries"
    folder.mkdir()
    st = ImageStore(store)
    for i in st.ids[:2]:
        cv2.imwrite(str(folder / f"q{i}.png"), st.get(i))
    res = subprocess.run(common + ["--query-files", str(folder), "--out", str(tmp_path / "files.png"),
                                   "--html", str(tmp_path / "files.html")], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    text = (tmp_path / "files.html").read_text()
    assert f"q{st.ids[0]}.png" in text and f"q{st.ids[1]}.png" in text
    assert "cosine distance 0.000" in text          # the store's own copy of each query is its nearest neighbour


def test_make_train_refuses_weights_that_do_not_fit_before_training(root, tiny_release):
    """`make train MODEL=alexnet_pvcnn WEIGHTS=<wrong file>` fails with a message, and no training starts."""
    wrong = next(tiny_release.glob("*.caffemodel"))      # tiny weights: no conv1..fc7 of AlexNet's shapes
    res = subprocess.run([sys.executable, str(root / "tools/caffe_train.py"), "alexnet_pvcnn", "--weights", str(wrong)],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode != 0
    assert "does not initialise alexnet_pvcnn" in res.stderr
    assert "caffe train" not in res.stdout


def test_release_preprocessing_matches_the_architecture(root, tiny_release, tmp_path):
    """predict (release metadata) and evaluation (the architecture) prepare an image identically."""
    import caffe
    import cv2
    from virality.model.architectures import ARCHITECTURES
    from virality.deploy.predict import predict_files
    from virality.deploy.preprocess import InputSpec, forward_in_batches, to_input
    from virality.deploy.release import read_release
    release = read_release(tiny_release)
    assert InputSpec.of_release(release.metadata) == InputSpec.of_architecture(ARCHITECTURES["tiny"])
    image = np.random.default_rng(3).integers(0, 255, (60, 45, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "x.png"), image)
    (pred,) = predict_files(release, [tmp_path / "x.png"])
    net = caffe.Net(str(root / "prototxt/tiny_pvcnn/deploy.prototxt"), str(release.caffemodel), caffe.TEST)
    direct = forward_in_batches(net, to_input([image], InputSpec.of_architecture(ARCHITECTURES["tiny"])), "score")
    assert pred.score == pytest.approx(float(direct[0, 0]), rel=1e-5)
