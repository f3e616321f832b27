"""Experiments as run directories (virality/experiments/runs.py, virality/experiments/plan.py, tools/experiment.py, tools/table1.py).

Two small scores-csv datasets of toy photos (brighter = higher score), trained for a few
iterations of the tiny model: what is checked is where things go and what is refused, not accuracy.
"""
import csv
import json
import os
import re
import signal
import subprocess
import sys
import time

from pathlib import Path

import numpy as np
import pytest

from toy_data import toy_image
from virality.paths import ROOT


def write_photos(folder, n, seed, reverse=False):
    """n toy PNGs and a scores.csv beside the folder: score = brightness (or minus it)."""
    import cv2
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    rows = []
    for i, level in enumerate(np.linspace(30, 225, n)):
        name = f"img{i:03d}.png"
        cv2.imwrite(str(folder / name), toy_image(rng, level).transpose(1, 2, 0))
        rows.append((name, -level if reverse else level))
    table = folder.parent / "scores.csv"
    with open(table, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "score"])
        w.writerows(rows)
    return table


@pytest.fixture(scope="module")
def two_datasets(tmp_path_factory):
    base = tmp_path_factory.mktemp("own_data")
    a = write_photos(base / "a" / "photos", 40, seed=1)
    b = write_photos(base / "b" / "photos", 40, seed=2, reverse=True)
    return base, a, b


def experiment(root, runs, table, attribute, *extra):
    cmd = [sys.executable, str(root / "tools/experiment.py"), "--scores", str(table), "--images",
           str(table.parent / "photos"), "--model", "tiny_pvcnn", "--attribute", attribute,
           "--runs-dir", str(runs), "--max-iter", "20", *extra]
    env = {k: v for k, v in os.environ.items() if not k.startswith("GLOG_")}   # as a user runs it
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)


@pytest.fixture(scope="module")
def two_runs(root, two_datasets):
    base, a, b = two_datasets
    runs = base / "runs"
    outs = [experiment(root, runs, a, "brightness", "--name", "tiny-a"),
            experiment(root, runs, b, "darkness", "--name", "tiny-b")]
    for out in outs:
        assert out.returncode == 0, out.stdout + out.stderr
    return runs, outs


def test_two_runs_of_one_model_on_two_datasets_keep_separate_complete_directories(two_runs, two_datasets):
    from virality.files import file_digest
    from virality.deploy.release import read_release
    runs, outs = two_runs
    _, a, b = two_datasets
    for name, table, attribute in (("tiny-a", a, "brightness"), ("tiny-b", b, "darkness")):
        d = runs / name
        for rel in ("run.json", "status.json", "train_val.prototxt", "deploy.prototxt", "solver.prototxt",
                    "train/tiny_pvcnn_iter_20.caffemodel", "train/train_log.csv", "train/train_curves.png",
                    "eval/report.md", "eval/results.json", "eval/accuracy.png", "release/SHA256SUMS"):
            assert (d / rel).is_file(), f"{d / rel} missing"
        record = json.loads((d / "run.json").read_text())
        assert record["dataset"]["files"] == {str(table): file_digest(table)}
        assert record["setting"] == "random_disjoint"
        assert record["split"]["train_pairs"] > 0 and record["split"]["test_pairs"] > 0
        assert record["seeds"]["training"] == 1701 and record["spec"]["attribute"] == attribute
        # Every path the nets read or write is inside this run's directory.
        for f in ("train_val.prototxt", "solver.prototxt"):
            text = (d / f).read_text()
            paths = [p for p in (s.split('"')[0] for s in text.split('"/')[1:])]
            assert paths and all(f"/{p}".startswith(str(d)) for p in paths), (f, paths)
        release = read_release(d / "release")
        assert release.metadata["attribute"] == attribute
        assert attribute in (d / "eval/report.md").read_text()
    # The two runs hold different weights and were trained on different tables.
    assert file_digest(runs / "tiny-a/train/tiny_pvcnn_iter_20.caffemodel") != \
        file_digest(runs / "tiny-b/train/tiny_pvcnn_iter_20.caffemodel")
    # The pair cap is said in one line, and the small test set warned about.
    assert "all the data allows" in outs[0].stdout
    assert "WARNING: only" in outs[0].stderr
    # make_data's stages have a progress bar (one setting here); Caffe's net dumps go to the run's caffe.log.
    assert "settings (validation split, pairs, LMDBs): 100%" in outs[0].stderr
    assert "Network initialization done" not in outs[0].stdout + outs[0].stderr
    assert (runs / "tiny-a/caffe.log").is_file()


def test_a_run_name_holding_another_experiment_is_refused_and_the_same_one_continues(root, two_runs, two_datasets):
    runs, _ = two_runs
    _, a, b = two_datasets
    before = (runs / "tiny-a/run.json").read_text()
    clash = experiment(root, runs, b, "brightness", "--name", "tiny-a")
    assert clash.returncode == 2
    assert "already holds another experiment" in clash.stderr and "data.data_dir" in clash.stderr
    assert (runs / "tiny-a/run.json").read_text() == before
    again = experiment(root, runs, a, "brightness", "--name", "tiny-a")
    assert again.returncode == 0, again.stderr
    assert "is finished; nothing to do" in again.stdout


def test_a_finished_run_whose_data_changed_is_not_reused(two_runs, tmp_path):
    import shutil
    from virality.experiments.runs import DataChanged, RunDir
    runs, _ = two_runs
    copy = tmp_path / "copy"
    shutil.copytree(runs / "tiny-a", copy)
    run = RunDir.read(copy)
    run.check_data()                                 # unchanged: fine
    stamp = next(p for p in json.loads((copy / "run.json").read_text())["data_digests"])
    record = json.loads((copy / "run.json").read_text())
    record["data_digests"][stamp] = "0" * 64           # as if the data had been rebuilt since
    (copy / "run.json").write_text(json.dumps(record))
    with pytest.raises(DataChanged, match="trained on other data"):
        RunDir.read(copy).check_data()


def test_evaluating_a_run_on_another_dataset_needs_the_explicit_option(root, two_runs, two_datasets):
    runs, _ = two_runs
    _, _, b = two_datasets
    own_report = (runs / "tiny-a/eval/report.md").read_text()
    cmd = [sys.executable, str(root / "tools/evaluate.py"), "--run-dir", str(runs / "tiny-a"),
           "--dataset", "scores-csv", "--data-dir", str(b), "--images", str(b.parent / "photos"),
           "--data-root", str(runs / "tiny-b/data")]
    refused = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and "needs --other-data" in refused.stderr
    assert not list((runs / "tiny-a").glob("eval-*"))
    done = subprocess.run(cmd + ["--other-data"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = (runs / "tiny-a/eval-scores-csv-random_disjoint/report.md").read_text()
    assert "OTHER DATA" in report and str(b) in report
    assert (runs / "tiny-a/eval/report.md").read_text() == own_report
    # The run scored on its own data needs no option, and says so.
    own = subprocess.run(cmd[:4], capture_output=True, text=True, timeout=300)
    assert own.returncode == 0, own.stderr
    assert "the run's own data and setting" in (runs / "tiny-a/eval/report.md").read_text()


def test_evaluating_a_model_directory_on_another_dataset_needs_the_explicit_option(root):
    out = subprocess.run([sys.executable, str(root / "tools/evaluate.py"), "--model", "tiny_pvcnn",
                          "--dataset", "scores-csv", "--data-dir", "/nonexistent.csv"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and "needs --other-data" in out.stderr


def test_a_runs_solver_trains_from_another_working_directory(root, caffe_cli, two_datasets, tmp_path):
    from virality.experiments.runs import DataSource, RunDir, RunSpec
    _, a, _ = two_datasets
    source = DataSource("scores-csv", data_dir=str(a), images=str(a.parent / "photos"),
                        data_root=str(tmp_path / "data"))
    run = RunDir.open(tmp_path / "cli-run", RunSpec("tiny_pvcnn", "random_disjoint", source, feed="pair_index",
                                                    max_iter=4, snapshot=2))
    run.prepare(source.build([36], ["random_disjoint"], "none"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = dict(os.environ, GLOG_minloglevel="0", GLOG_logtostderr="1")
    out = subprocess.run([str(caffe_cli), "train", "-solver", str(run.solver)], cwd=elsewhere, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"net file: {run.train_val}" in out.stderr
    assert (run.train_dir / "tiny_pvcnn_iter_4.caffemodel").is_file()
    assert (run.train_dir / "tiny_pvcnn_iter_2.solverstate").is_file()
    assert not list(elsewhere.iterdir()), "nothing may be written to the working directory"


def test_ctrl_c_stops_an_experiment_with_a_snapshot_and_says_how_to_continue(root, two_datasets):
    """SIGINT during `tools/experiment.py`'s training: the driver snapshots the iteration it finished, and the
    tool says so in one line and exits 128 + SIGINT (no traceback)."""
    base, a, _ = two_datasets
    runs = base / "runs-stop"
    cmd = [sys.executable, str(root / "tools/experiment.py"), "--scores", str(a), "--images", str(a.parent / "photos"),
           "--model", "tiny_pvcnn", "--runs-dir", str(runs), "--name", "tiny-stop", "--max-iter", "100000"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    for line in proc.stdout:
        if "train: 100000 iterations from 0" in line:
            break
    time.sleep(1.5)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGINT, stderr[-3000:]
    m = re.search(r"experiment: stopped by SIGINT at iteration (\d+); snapshot (\S+); the same command continues "
                  r"from that snapshot", stderr)
    assert m, stderr[-3000:]
    assert "Traceback" not in stderr
    assert Path(m.group(2)) == runs / "tiny-stop/train" / f"tiny_pvcnn_iter_{m.group(1)}.solverstate"
    assert Path(m.group(2)).is_file()


PLAN_SCRIPT = """
import sys
from virality.experiments.plan import PlanRunner, table1_plan
from virality.experiments.runs import DataSource
table, out, data = sys.argv[1:4]
source = DataSource("scores-csv", data_dir=table, images=table.rsplit("/", 1)[0] + "/photos", data_root=data)
entries = table1_plan(source, ["random_disjoint", "random"], ["tiny"], out, kinds=("pvcnn",), max_iter=150,
                      snapshot=10, feed="pair_index")
PlanRunner(entries, out, title="test plan").run()
"""


def test_plan_runner_skips_finished_runs_and_resumes_an_interrupted_one(root, two_datasets, tmp_path):
    _, a, _ = two_datasets
    out, data = tmp_path / "plan", tmp_path / "data"
    cmd = [sys.executable, "-c", PLAN_SCRIPT, str(a), str(out), str(data)]
    second = out / "tiny_pvcnn-random" / "train"
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    deadline = time.time() + 300
    while not (second / "tiny_pvcnn_iter_10.solverstate").exists():
        assert proc.poll() is None, proc.stdout.read()
        assert time.time() < deadline, "the second run never reached its first snapshot"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)                 # killed mid-run
    proc.wait()
    assert not (second / "tiny_pvcnn_iter_150.caffemodel").exists(), "killed too late to test a resume"
    first_done = json.loads((out / "tiny_pvcnn-random_disjoint/status.json").read_text())
    assert "released" in first_done

    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "[1/2] tiny_pvcnn-random_disjoint: finished, skipped" in again.stdout
    # One progress bar over the whole plan's iterations (150 + 150), counting the finished run's too.
    assert re.search(r"plan \(2 runs\): 100%.*300/300", again.stderr), again.stderr[-2000:]
    resumed = [line for line in again.stdout.splitlines() if "resuming from its snapshot at iteration" in line]
    assert len(resumed) == 1 and "tiny_pvcnn-random:" in resumed[0]
    start = int(resumed[0].split("iteration ")[1].split()[0])
    assert 10 <= start < 150
    assert "train: 150 iterations from 0" not in again.stdout
    with open(second / "train_log.csv") as f:
        iterations = [int(r["iteration"]) for r in csv.DictReader(f)]
    assert iterations == sorted(iterations) and iterations[-1] == 150
    assert json.loads((out / "tiny_pvcnn-random_disjoint/status.json").read_text()) == first_done
    table = (out / "report.md").read_text()
    assert "tiny_pvcnn-random_disjoint/eval/report.md" in table and "tiny_pvcnn-random/eval/report.md" in table

    third = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert third.returncode == 0, third.stderr
    assert third.stdout.count("finished, skipped") == 2
    assert "make_data" not in third.stdout and "train:" not in third.stdout
    assert "plan (2 runs)" not in third.stderr                 # nothing left to run: no bar

    # Data rebuilt since a run finished: it is still skipped, but said loudly and marked in the table.
    record = json.loads((out / "tiny_pvcnn-random/run.json").read_text())
    record["data_digests"][next(iter(record["data_digests"]))] = "0" * 64
    (out / "tiny_pvcnn-random/run.json").write_text(json.dumps(record))
    fourth = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert fourth.returncode == 0, fourth.stderr
    assert "WARNING" in fourth.stdout and "trained on other data" in fourth.stdout
    marked = [line for line in (out / "report.md").read_text().splitlines()
              if line.startswith("| ") and "(data rebuilt since)" in line]
    assert len(marked) == 1 and "tiny_pvcnn-random/eval/report.md) (data rebuilt since)" in marked[0]


def test_small_test_sets_are_warned_about():
    from virality.experiments.runs import small_test_warning
    # 1.96 * 0.5 / sqrt(n): n = 3 -> 0.566 (+-57 points); n = 96 -> 0.100; n = 100 -> 0.098 (no warning)
    assert "only 3 test pairs" in small_test_warning(3) and "+-57 points" in small_test_warning(3)
    assert small_test_warning(96) is not None
    assert small_test_warning(100) is None


def test_test_phase_batch_covers_the_validation_set_exactly_once():
    from virality.model.solvers import covering_test_batch, test_iterations
    assert covering_test_batch(300, 100) == 100
    assert covering_test_batch(299, 100) == 23        # 299 = 13 x 23
    assert covering_test_batch(7, 100) == 7
    assert covering_test_batch(13, 5) == 1
    for n in (300, 299, 7, 13, 489):
        batch = covering_test_batch(n, 50)
        assert test_iterations(n, batch) * batch == n
    with pytest.raises(ValueError):
        covering_test_batch(0, 5)


def test_table1_plan_lists_topic_cnns_first_then_every_model_and_setting(tmp_path):
    import importlib.util
    from virality.experiments.plan import table1_plan
    from virality.experiments.runs import DataSource
    spec = importlib.util.spec_from_file_location("table1", ROOT / "tools/table1.py")
    table1 = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(table1)
    settings = table1._settings(DataSource("deza2015"))
    folds = [f"complete_fold{k}{d}" for k in range(5) for d in ("_disjoint", "")]
    assert settings == folds + ["top_bottom_disjoint", "top_bottom", "random_disjoint", "random"]
    entries = table1_plan(DataSource("deza2015"), settings, ["alexnet", "vgg19"], tmp_path,
                          weights={"alexnet": "/w/a.caffemodel", "vgg19": "/w/v.caffemodel"})
    names = [e.name for e in entries]
    # One Topic-CNN per architecture and setting: each trains only on images its setting's ranking
    # model may train on (its topic LMDB data/deza2015/<setting>/topics_train_lmdb).
    assert names[:28] == [f"{a}_topic-{s}" for a in ("alexnet", "vgg19") for s in settings]
    assert len(names) == 28 + 2 * 2 * 14 and len(set(names)) == len(names)
    assert {f"{a}_{k}-{s}" for a in ("alexnet", "vgg19") for k in ("pvcnn", "tpvcnn") for s in settings} \
        == set(names[28:])
    tp = next(e for e in entries if e.name == "vgg19_tpvcnn-random")
    assert tp.spec.topic_run == str(tmp_path / "vgg19_topic-random") and tp.spec.weights == "/w/v.caffemodel"


def test_a_setting_without_validation_pairs_is_refused_before_training(tmp_path):
    from virality.experiments.runs import DataSource, RunDir, RunError, RunSpec
    run = RunDir.open(tmp_path / "pop", RunSpec("tiny_pvcnn", "user_mix", DataSource("popularity", data_dir="t.csv")))
    with pytest.raises(RunError, match="no validation pairs"):
        run.prepare({"settings": {"user_mix": {"test_pairs": 0, "val_pairs": 0, "train_pairs": 10}}})
    assert not (tmp_path / "pop" / "run.json").exists()


class _ScoredRun:
    """A run directory's answers that table_markdown reads: its status.json, as the runner writes it."""

    def __init__(self, evaluated):
        self._status = {"evaluated": evaluated} if evaluated else {}

    def status(self):
        return self._status

    def done(self, stage):
        return stage in self._status

    def provenance(self):
        return {"dataset": {"synthetic": False}}


def test_table_puts_disjoint_first_names_intervals_and_means_the_five_complete_folds(tmp_path):
    from virality.experiments.plan import PlanEntry, table_markdown
    from virality.experiments.runs import DataSource, RunSpec
    source = DataSource("deza2015")
    entries, runs = [], []
    disjoint = [0.60, 0.70, 0.80, 0.90, 1.00]        # mean 0.80, range 0.60-1.00
    paper = [0.75, 0.75, 0.75, 0.75, 0.65]           # mean 0.73, range 0.65-0.75
    for k in range(5):
        for suffix, value in (("_disjoint", disjoint[k]), ("", paper[k])):
            setting = f"complete_fold{k}{suffix}"
            entries.append(PlanEntry(f"alexnet_pvcnn-{setting}", RunSpec("alexnet_pvcnn", setting, source)))
            runs.append(_ScoredRun(dict(metric="pairwise_accuracy", value=value, low=value - 0.05,
                                        high=value + 0.05, n=100, paper=60.0, interval="wilson")))
    entries.append(PlanEntry("alexnet_pvcnn-top_bottom_disjoint", RunSpec("alexnet_pvcnn", "top_bottom_disjoint", source)))
    runs.append(_ScoredRun(dict(metric="pairwise_accuracy", value=0.9, low=0.85, high=0.95, n=1000, paper=None,
                                interval="image-bootstrap")))
    entries.append(PlanEntry("alexnet_pvcnn-top_bottom", RunSpec("alexnet_pvcnn", "top_bottom", source)))
    runs.append(_ScoredRun(None))                    # not run yet
    # A popularity setting is image-disjoint by design, though its name has no _disjoint.
    entries.append(PlanEntry("alexnet_pvcnn-user_mix", RunSpec("alexnet_pvcnn", "user_mix", DataSource("popularity"))))
    runs.append(_ScoredRun(dict(metric="spearman", value=0.18, low=None, high=None, n=150, paper=None,
                                interval="", disjoint=True)))
    table = table_markdown(runs, entries, "t").splitlines()
    pop = [line for line in table if "| popularity |" in line]
    assert len(pop) == 1 and pop[0].split(" | ")[3].startswith("[rho 18.00]") and pop[0].split(" | ")[4] == "-"
    rows = [line for line in table if line.startswith("| alexnet_pvcnn") and "| popularity |" not in line]
    assert [r.split(" | ")[2] for r in rows] == [f"complete_fold{k}" for k in range(5)] + [
        "**complete: mean of the 5 folds**", "top_bottom"]
    fold0 = rows[0].split(" | ")
    assert fold0[3].startswith("[60.00 (55.00-65.00)](alexnet_pvcnn-complete_fold0_disjoint/")   # disjoint first
    assert fold0[4].startswith("[75.00 (70.00-80.00)](alexnet_pvcnn-complete_fold0/")
    assert fold0[5] == "Wilson" and fold0[6].rstrip(" |") == "60.00"
    mean = rows[5].split(" | ")
    assert mean[3:6] == ["80.00 (60.00-100.00)", "73.00 (65.00-75.00)", "fold range"]
    tb = rows[6].split(" | ")
    assert tb[3].startswith("[90.00 (85.00-95.00)]") and tb[4] == "not run" and tb[5] == "image bootstrap"
    # Four folds only: no mean row yet.
    four = table_markdown(runs[2:], entries[2:], "t")
    assert "mean of the 5 folds" not in four
