"""Evaluate trained models on a dataset's settings and write a Table-1-like report.

A *run* is one trained model on one setting: (setting name, model name, caffemodel).
Each run is scored on its own setting's test set: pairwise accuracy with a 95%
Wilson interval for pairwise settings, Spearman's rho for popularity settings.
Scores come from the deploy net applied to the image store (centre crop, the
architecture's mean and scale: virality.preprocess), one forward pass per test image.
"""
import csv
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from virality.metrics import pair_scores, pairwise_accuracy, spearman, wilson_interval
from virality.nets import get_model
from virality.paths import PROTOTXT_DIR
from virality.preprocess import InputSpec, chw_to_input, forward_in_batches
from virality.snapshots import latest_snapshot  # noqa: F401  (skips incomplete snapshots)


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
    if setting.metric == "spearman":
        ids = np.asarray(setting.test_images)
        scores = score_images(net, store, ids, spec)
        truth = dict(zip(dataset.ids.tolist(), dataset.scores.tolist()))
        rho = spearman([scores[int(i)] for i in ids], [truth[int(i)] for i in ids])
        return Result(run.setting, run.model, "spearman", rho, float("nan"), float("nan"), int(ids.size),
                      paper, setting.description, str(run.caffemodel))
    pairs = np.asarray(setting.test_pairs)
    scores = score_images(net, store, pairs[:, :2].ravel(), spec)
    f1, f2 = pair_scores(scores, pairs)
    acc = pairwise_accuracy(f1, f2, pairs[:, 2])
    low, high = wilson_interval(acc * len(pairs), len(pairs))
    return Result(run.setting, run.model, "pairwise_accuracy", acc, low, high, int(len(pairs)), paper,
                  setting.description, str(run.caffemodel))


def trained_setting(train_val_path):
    """(dataset, setting) a train_val net reads, from its TRAIN data source path."""
    text = Path(train_val_path).read_text()
    m = re.search(r'data/([^/"]+)/([^/"]+)/pairs_train', text)
    if not m:
        raise ValueError(f"{train_val_path}: cannot tell which dataset/setting it trains on")
    return m.group(1), m.group(2)


# ---------------------------------------------------------------------------------- report

def _pct(x):
    return "-" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{100 * x:.2f}"


def report_markdown(results, dataset, title, notes=()):
    settings = list(dict.fromkeys(r.setting for r in results))
    models = list(dict.fromkeys(r.model for r in results))
    by = {(r.model, r.setting): r for r in results}
    lines = [f"# {title}", ""]
    if dataset.synthetic:
        lines += ["**SYNTHETIC DATA.** These numbers come from the embedded synthetic virality world, "
                  "not from the paper's dataset; the paper's numbers do not apply to it.", ""]
    lines += ["Pairwise accuracy in % (95% Wilson interval), or Spearman's rho x 100; "
              "the paper's Table 1 number in brackets where it has one.", ""]
    lines.append("| model | " + " | ".join(settings) + " |")
    lines.append("| --- |" + " --- |" * len(settings))
    for model in models:
        cells = []
        for s in settings:
            r = by.get((model, s))
            if r is None:
                cells.append("")
                continue
            if r.metric == "spearman":
                cell = f"rho {_pct(r.value)}"
            else:
                cell = f"{_pct(r.value)} ({_pct(r.low)}-{_pct(r.high)})"
            if r.paper is not None:
                cell += f" [paper {r.paper:.2f}]"
            cells.append(cell)
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    lines += ["", "| setting | test size | what is tested |", "| --- | --- | --- |"]
    for s in settings:
        r = next(r for r in results if r.setting == s)
        unit = "images" if r.metric == "spearman" else "pairs"
        lines.append(f"| {s} | {r.n} {unit} | {r.description} |")
    lines += [""] + [f"- {n}" for n in notes]
    return "\n".join(lines).rstrip() + "\n"


def write_report(results, dataset, out_dir, title, notes=()):
    """report.md, results.csv, results.json and accuracy.png in out_dir; returns the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md = out_dir / "report.md"
    md.write_text(report_markdown(results, dataset, title, notes))
    rows = [asdict(r) for r in results]
    with open(out_dir / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["setting"])
        writer.writeheader()
        writer.writerows(rows)
    (out_dir / "results.json").write_text(json.dumps(rows, indent=2, default=str) + "\n")
    png = out_dir / "accuracy.png"
    plot_results(results, png, title)
    return md, out_dir / "results.csv", png


def plot_results(results, png, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    settings = list(dict.fromkeys(r.setting for r in results))
    models = list(dict.fromkeys(r.model for r in results))
    by = {(r.model, r.setting): r for r in results}
    width = 0.8 / max(1, len(models))
    fig, ax = plt.subplots(figsize=(max(6, 1.8 * len(settings)), 3.8))
    for k, model in enumerate(models):
        xs, ys, errs = [], [], [[], []]
        for i, s in enumerate(settings):
            r = by.get((model, s))
            if r is None:
                continue
            xs.append(i + k * width)
            ys.append(100 * r.value)
            lo = 0 if np.isnan(r.low) else 100 * (r.value - r.low)
            hi = 0 if np.isnan(r.high) else 100 * (r.high - r.value)
            errs[0].append(lo)
            errs[1].append(hi)
        ax.bar(xs, ys, width, yerr=errs, capsize=3, label=model)
    ax.axhline(50, color="grey", linestyle=":", label="chance")
    ax.set_xticks([i + width * (len(models) - 1) / 2 for i in range(len(settings))])
    ax.set_xticklabels(settings)
    ax.set_ylabel("pairwise accuracy (%) / rho x 100")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
