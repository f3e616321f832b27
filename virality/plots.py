"""Figures: training curves from a CSV log, and a parser for `caffe train` logs."""
import csv
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

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


def plot_training_curves(rows, png_path, title=""):
    """Loss and accuracy against iteration; rows as dicts with string or float values."""
    def series(key):
        pts = [(float(r["iteration"]), float(r[key])) for r in rows if r.get(key) not in (None, "")]
        return zip(*pts) if pts else ((), ())

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.6))
    x, y = series("loss")
    ax_loss.plot(list(x), list(y), label="train loss (E_p)")
    ax_loss.set_xlabel("iteration")
    ax_loss.set_ylabel("loss")
    ax_loss.set_yscale("symlog", linthresh=1e-3)
    for key, label in (("train_accuracy", "train"), ("val_accuracy", "validation")):
        x, y = series(key)
        if x:
            ax_acc.plot(list(x), list(y), marker="o" if key.startswith("val") else None, label=label)
    ax_acc.axhline(0.5, color="grey", linestyle=":", label="chance")
    ax_acc.set_xlabel("iteration")
    ax_acc.set_ylabel("pairwise accuracy")
    ax_acc.legend(loc="lower right")
    ax_loss.legend(loc="upper right")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    Path(png_path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
