"""Figures a person can read: plain tick labels, n on accuracy figures, titles, very short runs."""
import math

import pytest

from virality.report.plots import accuracy_figure, plain_number, training_figure


@pytest.mark.parametrize("value, text", [(0.002, "0.002"), (0.05, "0.05"), (0.0015, "0.0015"), (1.0, "1"),
                                         (20.0, "20"), (300.0, "300"), (0.25, "0.25"), (0.0, "0")])
def test_tick_labels_are_plain_numbers(value, text):
    assert plain_number(value) == text


def _tick_texts(fig, ax):
    fig.canvas.draw()
    lo, hi = ax.get_ylim()
    return [t.get_text() for t, v in zip(ax.get_yticklabels(), ax.get_yticks()) if lo <= v <= hi and t.get_text()]


def test_a_loss_spanning_decades_gets_several_readable_log_ticks():
    rows = [dict(iteration=i * 10, loss=3.0 * 10 ** (-i / 10)) for i in range(40)]   # 3 .. 0.0004
    fig = training_figure(rows, "t")
    ax_loss = fig.axes[0]
    assert ax_loss.get_yscale() == "log"
    labels = _tick_texts(fig, ax_loss)
    assert len(labels) >= 5, labels                       # not one "10^-2" label
    assert all(float(t) > 0 and "^" not in t and "e" not in t for t in labels), labels


def test_a_loss_in_a_narrow_range_gets_distinct_plain_labels():
    rows = [dict(iteration=i * 50, loss=0.3196 - 0.00009 * i) for i in range(20)]    # 0.3196 .. 0.3179
    fig = training_figure(rows, "t")
    labels = _tick_texts(fig, fig.axes[0])
    assert fig.axes[0].get_yscale() == "linear"
    assert len(labels) >= 3 and len(set(labels)) == len(labels), labels          # not seven "0.32"
    assert all(0.317 <= float(t) <= 0.32 for t in labels), labels                # the values, no offset


def test_a_five_iteration_run_draws_points_and_empty_panels_say_so():
    fig = training_figure([dict(iteration=5, loss=0.31, train_accuracy=0.6, val_accuracy=0.7)], "t", n_val=300)
    ax_loss, ax_acc = fig.axes
    assert len(ax_loss.lines[0].get_xdata()) == 1 and ax_loss.lines[0].get_marker() == "o"
    assert ax_loss.get_xlim()[1] >= 5
    assert any("n = 300 pairs" in t.get_text() for t in ax_acc.get_legend().get_texts())
    assert "%" in ax_acc.get_ylabel() and "iteration" in ax_acc.get_xlabel()
    empty = training_figure([], "t")
    assert any("no loss logged" in t.get_text() for t in empty.axes[0].texts)
    assert any("no accuracy logged" in t.get_text() for t in empty.axes[1].texts)


def test_the_accuracy_figure_shows_n_intervals_and_the_papers_number():
    from virality.experiments.evaluation import Result
    results = [Result("random", "alexnet_pvcnn", "pairwise_accuracy", 0.64, 0.60, 0.68, 489, 63.35, "d", "x"),
               Result("top_bottom", "alexnet_pvcnn", "pairwise_accuracy", 0.7, 0.66, 0.74, 300, 69.97, "d", "x")]
    fig = accuracy_figure(results, "Table 1 on deza2015")
    ax = fig.axes[0]
    texts = [t.get_text() for t in ax.texts]
    assert "n=489" in texts and "n=300" in texts
    assert "deza2015" in ax.get_title() and "%" in ax.get_ylabel()
    bars = [p for p in ax.patches]
    assert [round(b.get_height(), 6) for b in bars] == [64.0, 70.0]
    paper = [line for line in ax.lines if line.get_marker() == "D"]
    assert sorted(float(line.get_ydata()[0]) for line in paper) == [63.35, 69.97]
    errs = [c for c in ax.containers if hasattr(c, "errorbar") and c.errorbar is not None]
    segments = errs[0].errorbar.lines[2][0].get_segments()
    assert [tuple(round(float(v), 6) for v in (s[0][1], s[1][1])) for s in segments] == [(60.0, 68.0), (66.0, 74.0)]
    assert not any(math.isnan(b.get_height()) for b in bars)
