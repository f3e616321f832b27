"""Evaluate trained models on a dataset's settings and write a Table-1-like report.

A *run* is one trained model on one setting: (setting name, model name, caffemodel).
Each run is scored once on its own setting's test set D_test, with the snapshot
chosen without it (training validates on D_val only; docs/PROTOCOL.md): pairwise
accuracy with a 95% interval (Wilson where every test image is in one pair, a
bootstrap over images where images repeat: virality.experiments.metrics.accuracy_interval),
Spearman's rho for popularity settings (per user and averaged for user_specific,
virality.experiments.metrics.setting_spearman). Scores come from the deploy net applied to the
image store (centre crop, the architecture's mean and scale: virality.deploy.preprocess),
one forward pass per test image.

Reports put each image-disjoint figure first and the paper-protocol figure beside
it, each labelled: in the paper's protocol every test image is also in training
pairs whose label is fixed by its pool, so memorising pool membership scores 100%
(docs/PROTOCOL.md). Where all 5 ``complete_fold<k>`` runs of a model exist, the
Complete Data number is their mean.
"""
import csv
import io
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from virality.files import write_text_atomic
from virality.experiments.metrics import WILSON, accuracy_interval, pair_scores, setting_spearman
from virality.model.nets import get_model
from virality.paths import PROTOTXT_DIR
from virality.deploy.preprocess import InputSpec, chw_to_input, forward_in_batches
from virality.train.snapshots import latest_snapshot  # noqa: F401  (skips incomplete snapshots)


@dataclass
class Run:
    setting: str
    model: str
    caffemodel: Path
    deploy: Optional[Path] = None     # default prototxt/<model>/deploy.prototxt


@dataclass
class Result:
    setting: str
    model: str
    metric: str
    value: float               # accuracy in [0, 1] or rho in [-1, 1]
    low: float                 # 95% interval (accuracy); nan for rho
    high: float
    n: int                     # test pairs (accuracy) or images (rho)
    paper: Optional[float]     # the paper's number for this model and setting, in %
    description: str
    caffemodel: str
    interval: str = ""         # "wilson", "image-bootstrap" or "" (rho, fold means)
    disjoint: bool = False     # image-disjoint setting (else the paper's protocol)
    fold: Optional[int] = None # complete_fold<k>: k
    users: Optional[int] = None  # per-user rho: users averaged


def score_images(net, store, ids, spec, batch_size=64):
    """{id: f_r} for the given image ids, read from an ImageStore."""
    ids = np.unique(np.asarray(ids, dtype=np.int64))
    scores = {}
    for start in range(0, ids.size, 1024):
        chunk = ids[start:start + 1024]
        inputs = chw_to_input(store.read_chw(chunk), spec)
        out = forward_in_batches(net, inputs, "score", batch_size)
        scores.update(zip(chunk.tolist(), out[:, 0].tolist()))
    return scores


def evaluate_run(run, dataset, store, net=None):
    import caffe
    model = get_model(run.model)
    if model.kind == "topic":
        raise ValueError(f"{run.model} is a Topic-CNN; evaluate ranking models (pvcnn, tpvcnn)")
    if model.kind == "tpvcnn" and not dataset.topic_names:
        raise ValueError(f"{run.model} on '{dataset.name}': this dataset has no topics, so it has no Topic-CNN "
                         f"and no TPVCNN; its TPVCNN cells are not applicable (docs/PROTOCOL.md)")
    setting = dataset.setting(run.setting)
    deploy = run.deploy or PROTOTXT_DIR / run.model / "deploy.prototxt"
    if not Path(run.caffemodel).is_file():
        raise FileNotFoundError(f"{run.caffemodel}: no such snapshot for {run.model} on {run.setting}")
    net = net or caffe.Net(str(deploy), str(run.caffemodel), caffe.TEST)
    spec = InputSpec.of_architecture(model.architecture)
    if store.size != spec.image_size:
        raise ValueError(f"{store.path} holds {store.size}px images; {run.model} needs {spec.image_size}px "
                         f"(make data --sizes {spec.image_size})")
    paper = setting.paper.get(run.model) if setting.paper else None
    common = dict(description=setting.description, caffemodel=str(run.caffemodel), disjoint=bool(setting.disjoint),
                  fold=setting.fold)
    if setting.metric == "spearman":
        ids = np.asarray(setting.test_images)
        scores = score_images(net, store, ids, spec)
        rho, users = setting_spearman(dataset, setting, [scores[int(i)] for i in ids])
        return Result(run.setting, run.model, "spearman", rho, float("nan"), float("nan"), int(ids.size),
                      paper, users=users, **common)
    pairs = np.asarray(setting.test_pairs)
    scores = score_images(net, store, pairs[:, :2].ravel(), spec)
    f1, f2 = pair_scores(scores, pairs)
    acc, low, high, method = accuracy_interval(f1, f2, pairs)
    return Result(run.setting, run.model, "pairwise_accuracy", acc, low, high, int(len(pairs)), paper,
                  interval=method, **common)


def trained_setting(train_val_path):
    """(dataset, setting) a train_val net reads, from its TRAIN data source path."""
    from virality.train.preflight import net_data_setting
    return net_data_setting(train_val_path)


# ---------------------------------------------------------------------------------- report

def _pct(x):
    return "-" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{100 * x:.2f}"


def base_setting(name):
    """The Table 1 column a setting belongs to: 'complete_fold3_disjoint' -> 'complete'."""
    return re.sub(r"_fold\d+$", "", re.sub(r"_disjoint$", "", name))


def protocol_label(disjoint):
    return "image-disjoint" if disjoint else "paper protocol"


def fold_means(results, folds=5):
    """A Result per (model, protocol) whose complete_fold0..4 runs all exist: their mean."""
    groups = {}
    for r in results:
        if r.fold is not None:
            groups.setdefault((r.model, r.disjoint, base_setting(r.setting), r.metric), []).append(r)
    out = []
    for (model, disjoint, base, metric), rs in groups.items():
        if sorted(r.fold for r in rs) != list(range(folds)):
            continue
        name = f"{base}_mean{folds}" + ("_disjoint" if disjoint else "")
        values = [r.value for r in rs]
        out.append(Result(name, model, metric, float(np.mean(values)), float(min(values)), float(max(values)),
                          int(sum(r.n for r in rs)), rs[0].paper,
                          f"mean of the {folds} folds' accuracies (range: lowest-highest fold), "
                          f"{sum(r.n for r in rs)} test pairs in all", "; ".join(r.caffemodel for r in rs),
                          interval="fold range", disjoint=disjoint))
    return out


def ordered_settings(results):
    """Settings in report order: per Table 1 column, the image-disjoint setting first and the
    paper-protocol one beside it."""
    names = list(dict.fromkeys(r.setting for r in results))
    disjoint = {r.setting: r.disjoint for r in results}
    columns = list(dict.fromkeys(base_setting(n) for n in names))
    key = {n: (columns.index(base_setting(n)), re.sub(r"_disjoint$", "", n), not disjoint[n]) for n in names}
    return sorted(names, key=key.__getitem__)


def _cell(r):
    if r.metric == "spearman":
        cell = f"rho {_pct(r.value)}" + (f" (mean of {r.users} users)" if r.users else "")
    else:
        cell = f"{_pct(r.value)} ({_pct(r.low)}-{_pct(r.high)})"
    if r.paper is not None and not r.disjoint:
        cell += f" [paper {r.paper:.2f}]"
    return cell


INTERVAL_NOTES = {
    "wilson": "Wilson score interval (every test image in one test pair)",
    "image-bootstrap": "bootstrap over images, 2000 rounds (test images repeat across pairs, so pairs are "
                       "not independent)",
    "fold range": "lowest and highest of the 5 folds",
}


def report_markdown(results, dataset, title, notes=()):
    results = list(results) + fold_means(results)
    settings = ordered_settings(results)
    models = list(dict.fromkeys(r.model for r in results))
    by = {(r.model, r.setting): r for r in results}
    first = {s: next(r for r in results if r.setting == s) for s in settings}
    lines = [f"# {title}", ""]
    if dataset.synthetic:
        lines += ["**SYNTHETIC DATA.** These numbers come from the embedded synthetic virality world, "
                  "not from the paper's dataset; the paper's numbers do not apply to it.", ""]
    lines += ["Pairwise accuracy in % (95% interval), or Spearman's rho x 100; the paper's Table 1 number in "
              "brackets beside the paper-protocol figure. Each image-disjoint figure comes first: in the paper's "
              "protocol the test images are also in training pairs, whose label is fixed by the image's pool, so "
              "a model can score by memorising pool membership (docs/PROTOCOL.md).", ""]
    lines.append("| model | " + " | ".join(f"{s} ({protocol_label(first[s].disjoint)})" for s in settings) + " |")
    lines.append("| --- |" + " --- |" * len(settings))
    for model in models:
        cells = [_cell(by[(model, s)]) if (model, s) in by else "" for s in settings]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    if not dataset.topic_names:
        lines += ["", f"TPVCNN: not applicable on '{dataset.name}' (no topics, so no Topic-CNN; docs/PROTOCOL.md)."]
    lines += ["", "| setting | protocol | test size | interval | what is tested |", "| --- | --- | --- | --- | --- |"]
    for s in settings:
        r = first[s]
        unit = "images" if r.metric == "spearman" else "pairs"
        interval = INTERVAL_NOTES.get(r.interval, "-") if r.metric != "spearman" else "-"
        lines.append(f"| {s} | {protocol_label(r.disjoint)} | {r.n} {unit} | {interval} | {r.description} |")
    lines += [""] + [f"- {n}" for n in notes]
    return "\n".join(lines).rstrip() + "\n"


def write_report(results, dataset, out_dir, title, notes=()):
    """report.md, results.csv, results.json and accuracy.png in out_dir; returns the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md = write_text_atomic(out_dir / "report.md", report_markdown(results, dataset, title, notes))
    rows = [asdict(r) for r in list(results) + fold_means(results)]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else ["setting"])
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(out_dir / "results.csv", buffer.getvalue())
    write_text_atomic(out_dir / "results.json", json.dumps(rows, indent=2, default=str) + "\n")
    png = out_dir / "accuracy.png"
    plot_results(results, png, f"{title} ({dataset.name}{', SYNTHETIC' if dataset.synthetic else ''})")
    return md, out_dir / "results.csv", png


def plot_results(results, png, title, attribute="virality"):
    """The Table-1 figure (virality.report.plots.plot_accuracy: intervals, n, the paper's numbers), in report order."""
    from virality.report.plots import plot_accuracy
    return plot_accuracy(results, png, title, attribute, settings=ordered_settings(results))
