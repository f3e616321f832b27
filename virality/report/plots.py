"""Figures a person reads: training curves, the Table-1 accuracy figure, and a `caffe train` log parser.

Rules every figure here follows: axes labelled with their units; tick labels readable as plain
numbers (a loss spanning decades gets a log axis labelled 0.01, 0.02, 0.05, ..., never a
single "10^-2"); the number of test pairs n on every accuracy figure; the attribute and the
data set in the title; a run too short for a curve still draws its points, and an empty log
says so in the panel instead of drawing empty axes.
"""
import csv
import math
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter, ScalarFormatter  # noqa: E402

_ITER = re.compile(r"Iteration (\d+) \(.*?\), loss = (\S+)")
_TEST = re.compile(r"Iteration (\d+), Testing net")
_TEST_OUT = re.compile(r"Test net output #\d+: (\w+) = (\S+)")


def parse_caffe_log(text):
    """Rows {iteration, loss} and {iteration, val_<name>} from a `caffe train` log."""
    rows, test_iter = [], None
    for line in text.splitlines():
        m = _ITER.search(line)
        if m:
            rows.append(dict(iteration=int(m.group(1)), loss=float(m.group(2))))
            continue
        m = _TEST.search(line)
        if m:
            test_iter = int(m.group(1))
            continue
        m = _TEST_OUT.search(line)
        if m and test_iter is not None:
            rows.append({"iteration": test_iter, f"val_{m.group(1)}": float(m.group(2))})
    return rows


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def plain_number(value, _pos=None):
    """A tick label as a plain number: 0.002, 0.05, 1, 20, 300 (no powers of ten)."""
    if value == 0:
        return "0"
    digits = max(0, -int(math.floor(math.log10(abs(value)))) + 1) if abs(value) < 1 else 0
    text = f"{value:.{digits}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def readable_loss_axis(ax, values):
    """Log axis with 1-2-5 labels when the values span more than 1.5 decades, else linear."""
    positive = [v for v in values if v > 0 and math.isfinite(v)]
    if len(positive) == len(values) and positive and max(positive) / min(positive) > 10 ** 1.5:
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(plain_number))
        ax.yaxis.set_minor_formatter(NullFormatter())
        return "log scale"
    # Plain numbers with as many digits as the tick spacing needs (no "1e-3 + 0.317" offset).
    ax.yaxis.set_major_formatter(ScalarFormatter(useOffset=False))
    ax.ticklabel_format(axis="y", style="plain")
    return "linear scale"


def _series(rows, key):
    pts = [(float(r["iteration"]), float(r[key])) for r in rows if r.get(key) not in (None, "")]
    return [p[0] for p in pts], [p[1] for p in pts]


def _empty(ax, what):
    ax.text(0.5, 0.5, f"no {what} logged", ha="center", va="center", transform=ax.transAxes, color="grey")


def figure_title(model, dataset=None, attribute="virality", setting=None):
    where = f" on {dataset}" + (f"/{setting}" if setting else "") if dataset else ""
    return f"{model}{where}: pairwise {attribute} ranking"


def plot_training_curves(rows, png_path, title="", n_val=None, attribute="virality"):
    """train_curves.png: ``training_figure`` saved; returns the path."""
    fig = training_figure(rows, title, n_val, attribute)
    Path(png_path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return png_path


def training_figure(rows, title="", n_val=None, attribute="virality"):
    """Loss and pairwise accuracy (%) against iteration; rows as dicts with string or float values.

    ``n_val``: the number of validation pairs, printed in the legend (unknown when None).
    """
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    x, y = _series(rows, "loss")
    if x:
        style = dict(marker="o") if len(x) < 20 else {}
        ax_loss.plot(x, y, label="training loss E_p (Eq. 1), mean per logged batch", **style)
        scale = readable_loss_axis(ax_loss, y)
        ax_loss.set_ylabel(f"loss E_p (no unit; {scale})")
        ax_loss.legend(loc="upper right", fontsize=8)
    else:
        _empty(ax_loss, "loss")
        ax_loss.set_ylabel("loss E_p (no unit)")
    any_acc = False
    for key, label in (("train_accuracy", "training batches"),
                       ("val_accuracy", "validation, n = " + (f"{n_val} pairs" if n_val else "not recorded"))):
        x, y = _series(rows, key)
        if x:
            any_acc = True
            marker = "o" if key.startswith("val") or len(x) < 20 else None
            ax_acc.plot(x, [100 * v for v in y], marker=marker, label=label)
    if any_acc:
        ax_acc.axhline(50, color="grey", linestyle=":", label="chance (50%)")
        ax_acc.set_ylim(0, 100)
        ax_acc.legend(loc="lower right", fontsize=8)
    else:
        _empty(ax_acc, "accuracy")
    ax_acc.set_ylabel(f"pairwise {attribute} accuracy (%)")
    last = max((float(r["iteration"]) for r in rows), default=0.0)
    for ax in (ax_loss, ax_acc):
        ax.set_xlabel("iteration (solver steps)")
        ax.set_xlim(0, max(1.0, last) * 1.03)
        ax.xaxis.set_major_formatter(ScalarFormatter(useOffset=False))
        ax.ticklabel_format(axis="x", style="plain")
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_accuracy(results, png, title, attribute="virality", settings=None):
    """accuracy.png: ``accuracy_figure`` saved; returns the path."""
    fig = accuracy_figure(results, title, attribute, settings)
    fig.savefig(png, dpi=100, bbox_inches="tight")       # the legend sits outside the axes
    plt.close(fig)
    return png


def accuracy_figure(results, title, attribute="virality", settings=None):
    """Table 1 as a figure: ours (bars, 95% intervals, n on each) beside the paper's number (a black
    diamond, on the paper-protocol settings only), by setting (``settings``: their order; default
    as they come); results are virality.experiments.evaluation.Result rows."""
    settings = settings or list(dict.fromkeys(r.setting for r in results))
    models = list(dict.fromkeys(r.model for r in results))
    by = {(r.model, r.setting): r for r in results}
    width = 0.8 / max(1, len(models))
    fig, ax = plt.subplots(figsize=(max(7, 2.2 * len(settings) * max(1, len(models)) / 2), 4.4))
    paper_drawn = False
    for k, model in enumerate(models):
        xs, ys, errs, ns = [], [], [[], []], []
        for i, s in enumerate(settings):
            r = by.get((model, s))
            if r is None:
                continue
            x = i + k * width
            xs.append(x)
            ys.append(100 * r.value)
            lo = 0 if math.isnan(r.low) else 100 * (r.value - r.low)
            hi = 0 if math.isnan(r.high) else 100 * (r.high - r.value)
            errs[0].append(lo)
            errs[1].append(hi)
            ns.append(f"n={r.n}")
            if r.paper is not None and not getattr(r, "disjoint", False):
                ax.plot([x], [r.paper], "kD", markersize=6, label=None if paper_drawn else "paper (Table 1)")
                paper_drawn = True
        bars = ax.bar(xs, ys, width, yerr=errs, capsize=3, label=f"{model} (ours, 95% interval)")
        for bar, n, y, hi in zip(bars, ns, ys, errs[1]):
            ax.text(bar.get_x() + bar.get_width() / 2, 2, n, ha="center", va="bottom", fontsize=7, rotation=90,
                    color="white")
            ax.text(bar.get_x() + bar.get_width() / 2, y + hi + 1, f"{y:.1f}", ha="center", va="bottom", fontsize=7)
    spearman = any(r.metric == "spearman" for r in results)
    ax.axhline(50, color="grey", linestyle=":", label="chance (50%)")
    ax.set_xticks([i + width * (len(models) - 1) / 2 for i in range(len(settings))])
    ax.set_xticklabels(settings)
    ax.set_xlabel("evaluation setting (each model tested on its own setting's held-out pairs)")
    ax.set_ylabel(f"pairwise {attribute} accuracy (%)" + (" / Spearman rho x 100" if spearman else ""))
    ax.set_ylim(0, 105)
    import textwrap
    ax.set_title("\n".join(textwrap.wrap(title, 70)), fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig
