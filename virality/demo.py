"""`make demo`: the whole pipeline on the embedded synthetic virality world, on CPU.

1. data: the synthetic world, its image store, pairs and LMDBs (tools/make_data.py);
2. nets for each evaluation setting (tools/make_nets.py's generator), under demo/nets/;
3. for each setting: tiny_topic (the setting's Topic-CNN, trained only on images the
   ranking model may train on; one run serves settings whose topic training images are
   the same), then tiny_pvcnn and tiny_tpvcnn (its frozen topic branch initialised from
   that tiny_topic snapshot), each validated on the setting's D_val;
4. evaluate every run once on its own setting's test pairs D_test, write the report and
   figures under demo/ and print the headline table.

Everything lands in git-ignored demo/ and data/; nothing else is touched.
"""
import subprocess
import sys
import time
from pathlib import Path

from virality.paths import DEMO_DIR, ROOT

SETTINGS = ("random", "random_disjoint")
DATASET = "synthetic"


def _say(msg):
    print(f"demo: {msg}", flush=True)


def build_data(num_pairs=None):
    cmd = [sys.executable, str(ROOT / "tools/make_data.py"), "--dataset", DATASET]
    if num_pairs:
        cmd += ["--num-pairs", str(num_pairs)]
    subprocess.run(cmd, check=True, cwd=ROOT)


def _generate(out_root, setting, models):
    """Nets of ``models`` reading data/synthetic/<setting>, written under out_root."""
    from virality.generated import generate
    for model in models:
        generate(model, Path(out_root), "pair_lmdb", dict(dataset=DATASET, setting=setting))


def train(model, solver, out_dir, weights=(), max_iter=0):
    from virality.training import TrainConfig, Trainer
    from virality.plots import plot_training_curves, read_csv
    config = TrainConfig(solver_path=Path(solver), out_dir=Path(out_dir), workdir=ROOT,
                         weights=[Path(w) for w in weights], max_iter=max_iter)
    started = time.time()
    trainer = Trainer(config, log=lambda m: _say(f"  [{model}] {m}"))
    trainer.run()
    plot_training_curves(read_csv(Path(out_dir) / "train_log.csv"), Path(out_dir) / "train_curves.png",
                         title=f"{model} on {DATASET} (SYNTHETIC): training", n_val=getattr(trainer, "num_test", None))
    return time.time() - started


def run(out=DEMO_DIR, max_iter=0, num_pairs=None):
    """Run the demo; return the path of the report."""
    import caffe
    from virality.datasets import load_dataset
    from virality.evaluation import Run, evaluate_run, latest_snapshot, write_report
    from virality.imagestore import ImageStore
    from virality.paths import DATA_DIR
    from virality.weights import make_tpvcnn_init

    out = Path(out)
    t0 = time.time()
    caffe.set_mode_cpu()
    _say("1/4 data: the synthetic virality world (SYNTHETIC, not the paper's data)")
    build_data(num_pairs)

    _say("2/4 nets for settings " + ", ".join(SETTINGS))
    for setting in SETTINGS:
        _generate(out / "nets" / setting, setting, ["tiny_topic", "tiny_pvcnn", "tiny_tpvcnn"])

    _say("3/4 training on CPU: per setting tiny_topic, tiny_pvcnn and tiny_tpvcnn")
    timings = {}
    topic_runs = {}      # topic training set digest -> snapshot
    runs = []
    for setting in SETTINGS:
        nets = out / "nets" / setting
        topic_key = topic_training_digest(DATA_DIR / DATASET / setting)
        if topic_key not in topic_runs:
            topic_dir = out / "models" / setting / "tiny_topic"
            timings[f"tiny_topic/{setting}"] = train("tiny_topic", nets / "solvers/tiny_topic.prototxt", topic_dir,
                                                     max_iter=max_iter)
            topic_runs[topic_key] = latest_snapshot(topic_dir, "tiny_topic")
        else:
            _say(f"  [tiny_topic] {setting}: the same topic training images as an earlier setting; its "
                 "Topic-CNN is reused")
        topic_snapshot = topic_runs[topic_key]
        pv_dir = out / "models" / setting / "tiny_pvcnn"
        timings[f"tiny_pvcnn/{setting}"] = train("tiny_pvcnn", nets / "solvers/tiny_pvcnn.prototxt", pv_dir,
                                                 max_iter=max_iter)
        runs.append(Run(setting, "tiny_pvcnn", latest_snapshot(pv_dir, "tiny_pvcnn"),
                        nets / "prototxt/tiny_pvcnn/deploy.prototxt"))
        tp_dir = out / "models" / setting / "tiny_tpvcnn"
        tp_dir.mkdir(parents=True, exist_ok=True)
        init = tp_dir / "init.caffemodel"
        with open(tp_dir / "init_report.txt", "w") as report:
            make_tpvcnn_init("tiny_tpvcnn", None, topic_snapshot, init, stream=report)
        timings[f"tiny_tpvcnn/{setting}"] = train("tiny_tpvcnn", nets / "solvers/tiny_tpvcnn.prototxt", tp_dir,
                                                  weights=[init], max_iter=max_iter)
        runs.append(Run(setting, "tiny_tpvcnn", latest_snapshot(tp_dir, "tiny_tpvcnn"),
                        nets / "prototxt/tiny_tpvcnn/deploy.prototxt"))

    _say("4/4 evaluation on held-out pairs")
    dataset = load_dataset(DATASET)
    store = ImageStore(DATA_DIR / DATASET / "images_36_lmdb")
    results = [evaluate_run(r, dataset, store) for r in runs]
    from virality.gallery import write_run_page
    pages = [write_run_page(r, dataset, store, out / "report" / "pages") for r in runs]
    notes = [topic_note(results)]
    notes += [f"test pairs right and wrong, and nearest neighbours: {p.relative_to(out / 'report')}" for p in pages]
    notes += [f"training time {name}: {secs:.0f} s" for name, secs in timings.items()]
    notes.append(f"whole demo: {time.time() - t0:.0f} s on this machine (CPU)")
    md, _, png = write_report(results, dataset, out / "report",
                              title="make demo: tiny PVCNN / TPVCNN on the synthetic virality world", notes=notes)
    print(md.read_text())
    _say(f"report: {md}")
    _say(f"figures: {png}, training curves under {out / 'models'}")
    return md, results


def topic_training_digest(setting_dir):
    """sha256 of the image ids of a setting's Topic-CNN training LMDB (ids.npy beside the records)."""
    import hashlib

    import numpy as np
    from virality.imagestore import IDS_FILE

    ids = np.load(Path(setting_dir) / "topics_train_lmdb" / IDS_FILE)
    return hashlib.sha256(np.sort(ids).astype(np.int64).tobytes()).hexdigest()


def topic_note(results):
    """Say whether the frozen topic branch helped, setting by setting."""
    by = {(r.model, r.setting): r for r in results}
    parts = []
    for setting in dict.fromkeys(r.setting for r in results):
        pv, tp = by.get(("tiny_pvcnn", setting)), by.get(("tiny_tpvcnn", setting))
        if pv and tp:
            diff = 100 * (tp.value - pv.value)
            overlap = tp.low <= pv.high and pv.low <= tp.high
            if overlap:
                verdict = "no significant difference (the 95% intervals overlap)"
            else:
                verdict = "the topic branch helped" if diff > 0 else "the topic branch hurt"
            parts.append(f"{setting}: TPVCNN - PVCNN = {diff:+.2f} points, {verdict}")
    return "Topic branch: " + "; ".join(parts) if parts else "Topic branch: no comparison available"
