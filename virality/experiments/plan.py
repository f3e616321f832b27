"""A plan of runs: the paper's Table 1 (or the demo) as one resumable command.

``table1_plan`` lists the runs of Table 1 for a dataset: the Topic-CNNs first (one per
architecture and per distinct topic training set: a setting whose Topic-CNN data differs
gets its own), then for each architecture PVCNN and TPVCNN on every setting (for
deza2015: complete, top_bottom, random, each also ``_disjoint``). ``PlanRunner`` runs
them in order under one plan directory (``runs/table1-<dataset>/<run>/``): a finished
run is skipped (after checking its data is unchanged), an interrupted one resumes from
its last snapshot, and progress is printed over the whole plan (which run, how far,
ETA). It ends in one table (``report.md``) beside the paper's numbers, with 95%
intervals and a link to each run's own report.
"""
import dataclasses
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

from virality.files import write_text_atomic
from virality.experiments.runs import DataChanged, RunDir, RunError, RunSpec

#: Table 1's setting columns, in the paper's order.
BASE_SETTINGS = ("complete", "top_bottom", "random")
DISJOINT = "_disjoint"


@dataclass(frozen=True)
class PlanEntry:
    name: str           # directory name under the plan directory
    spec: RunSpec
    serves: tuple = ()  # Topic-CNNs: the settings whose TPVCNNs take their frozen branch from this run


def topic_groups(source, arch, settings):
    """[(run name, [settings])]: settings whose Topic-CNN reads the same training data share one run."""
    from virality.model.solvers import default_data_config
    groups = {}
    for s in settings:
        cfg = default_data_config(f"{arch}_topic", dataset=source.dataset, setting=s, data_root=source.data_root)
        groups.setdefault(cfg.topic_lmdb("train"), []).append(s)
    if len(groups) == 1:
        return [(f"{arch}_topic", list(settings))]
    return [(f"{arch}_topic-{members[0]}", members) for members in groups.values()]


def table1_plan(source, settings, archs, out_dir, weights=None, kinds=("pvcnn", "tpvcnn"), max_iter=0,
                snapshot=0, feed=None, attribute="virality", topics=True):
    """The runs of one dataset's half of Table 1, Topic-CNNs first. ``weights``: {arch: ImageNet caffemodel}."""
    weights = weights or {}
    out_dir = Path(out_dir).resolve()
    entries, topic_of = [], {}
    common = dict(attribute=attribute, max_iter=max_iter, snapshot=snapshot)
    if topics and "tpvcnn" in kinds:
        for arch in archs:
            for name, members in topic_groups(source, arch, settings):
                entries.append(PlanEntry(name, RunSpec(f"{arch}_topic", members[0], source,
                                                       weights=weights.get(arch), **common), tuple(members)))
                topic_of.update({(arch, s): str(out_dir / name) for s in members})
    for arch in archs:
        for kind in kinds:
            if kind == "tpvcnn" and (arch, settings[0]) not in topic_of:
                continue
            for s in settings:
                spec = RunSpec(f"{arch}_{kind}", s, source, feed=feed, weights=weights.get(arch),
                               topic_run=topic_of.get((arch, s)) if kind == "tpvcnn" else None, **common)
                entries.append(PlanEntry(f"{arch}_{kind}-{s}", spec))
    return entries


def planned_iterations(spec):
    from virality.model.solvers import schedule_for
    return spec.max_iter or schedule_for(spec.model).max_iter


def _cost_class(spec):
    from virality.model.nets import get_model
    model = get_model(spec.model)
    return f"{model.arch} {'topic' if model.kind == 'topic' else model.kind}"


def fmt_seconds(s):
    if s is None:
        return "unknown"
    s = int(round(s))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{sec:02d}s" if m else f"{sec}s"


class PlanRunner:
    """Run a plan's entries in order (module docstring)."""

    def __init__(self, entries, out_dir, title, gpu=None, log=None):
        self.entries = list(entries)
        self.out_dir = Path(out_dir).resolve()
        self.title = title
        self.gpu = gpu
        self.log = log or (lambda m: print(f"plan: {m}", flush=True))
        self.rate = {}                 # cost class -> seconds per iteration (measured)
        self.done_iters = {}           # entry name -> iterations done

    # -- progress over the whole plan -----------------------------------------------------------
    def _eta(self, current=None):
        remaining, unknown = 0.0, set()
        for e in self.entries:
            left = planned_iterations(e.spec) - self.done_iters.get(e.name, 0)
            if left <= 0:
                continue
            rate = self.rate.get(_cost_class(e.spec))
            if rate is None:
                unknown.add(_cost_class(e.spec))
            else:
                remaining += left * rate
        return remaining, unknown

    def _progress_line(self, index, entry, done, max_iter):
        total = sum(planned_iterations(e.spec) for e in self.entries)
        finished = sum(self.done_iters.values())
        eta, unknown = self._eta()
        line = (f"[{index}/{len(self.entries)}] {entry.name}: iteration {done}/{max_iter}; plan "
                f"{finished}/{total} iterations ({100 * finished / max(total, 1):.0f}%), ETA {fmt_seconds(eta)}")
        if unknown:
            line += f" + the {', '.join(sorted(unknown))} runs (not timed yet)"
        return line

    # -- running -------------------------------------------------------------------------------------
    def build_data(self):
        """make_data once per data source, for the image sizes, settings and feeds the plan needs."""
        from virality.model.nets import get_model
        from virality.model.solvers import DEFAULT_DATA
        summaries, by_source = {}, {}
        for e in self.entries:
            by_source.setdefault(source_key(e.spec.data), (e.spec.data, []))[1].append(e.spec)
        for key, (source, specs) in by_source.items():
            archs = {get_model(s.model).architecture for s in specs}
            sizes = sorted({a.image_size for a in archs})
            settings = list(dict.fromkeys(s.setting for s in specs))
            feeds = {s.feed or DEFAULT_DATA[get_model(s.model).arch]["feed"]
                     for s in specs if get_model(s.model).kind != "topic"}
            self.log(f"data: {source.dataset} ({source.data_dir or 'default metadata'}) for settings "
                     f"{', '.join(settings)}, image sizes {sizes}")
            summaries[key] = source.build(sizes, settings, "all" if "pair_lmdb" in feeds else "none")
        return summaries

    def run(self):
        """Every entry (skipping finished ones), then the table. Returns the report path."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        started = time.time()
        runs = [RunDir.open(self.out_dir / e.name, e.spec) for e in self.entries]   # conflicts fail first
        for e, r in zip(self.entries, runs):
            if r.finished:
                self.done_iters[e.name] = planned_iterations(e.spec)
                self._learn_rate(e, r)
        pending = [r for r in runs if not r.finished]
        summaries = self.build_data() if pending else {}
        self._write_plan(runs)
        stale = set()
        from virality.progress import progress as progress_bar
        total = sum(planned_iterations(e.spec) for e in self.entries)
        bar = progress_bar(total=total, desc=f"plan ({len(self.entries)} runs)", unit="iter", enabled=bool(pending))
        bar.update(sum(self.done_iters.values()))
        try:
            self._run_entries(runs, summaries, stale, bar)
        finally:
            bar.close()
        notes = [f"this call: {time.time() - started:.0f} s"]
        if stale:
            notes.append(f"{STALE_MARK} the data these runs read has been rebuilt since they ran (a changed input or "
                         f"builder: {', '.join(sorted(stale))}); their numbers are for the data they were trained on "
                         "(run.json holds its digests). A new plan directory (--out) retrains on the current data.")
        report = write_table(runs, self.entries, self.out_dir, self.title, notes=notes, stale=stale)
        self.log(f"table: {report}")
        return report

    def _advance(self, bar, name, done):
        """Record ``done`` iterations of run ``name`` and move the whole plan's bar by the difference."""
        bar.update(max(done - self.done_iters.get(name, 0), 0))
        self.done_iters[name] = done

    def _run_entries(self, runs, summaries, stale, bar):
        """Each entry in order: a finished one is checked and skipped, the others run (or resume)."""
        for index, (e, r) in enumerate(zip(self.entries, runs), 1):
            if r.finished:
                try:
                    r.check_data()
                except DataChanged as err:
                    # Its numbers stand for the data it was trained on; the table marks them.
                    stale.add(e.name)
                    self.log(f"WARNING: {err}")
                self.log(f"[{index}/{len(runs)}] {e.name}: finished, skipped ({_headline(r)})")
                continue
            self.log(f"[{index}/{len(runs)}] {e.name}: {e.spec.model} on {e.spec.data.dataset}/{e.spec.setting}")
            began, first = time.time(), r.last_state()[0] if r.done("prepared") else 0
            self._advance(bar, e.name, first)

            def progress(done, max_iter, e=e, index=index, began=began, first=first):
                self._advance(bar, e.name, done)
                if done > first:
                    self.rate[_cost_class(e.spec)] = (time.time() - began) / (done - first)
                self.log(self._progress_line(index, e, done, max_iter))

            r.run(summaries[source_key(e.spec.data)], gpu=self.gpu, progress=progress,
                  log=lambda m: self.log(f"    {m}"))
            self._advance(bar, e.name, planned_iterations(e.spec))
            self.log(f"[{index}/{len(runs)}] {e.name}: done ({_headline(r)})")

    def _learn_rate(self, entry, run):
        per = run.status().get("trained", {}).get("seconds_per_iteration")
        if per:
            self.rate.setdefault(_cost_class(entry.spec), per)

    def _write_plan(self, runs):
        plan = [dict(name=e.name, dir=str(r.path), spec=e.spec.to_json()) for e, r in zip(self.entries, runs)]
        write_text_atomic(self.out_dir / "plan.json", json.dumps(plan, indent=2, default=str) + "\n")


def source_key(source):
    return json.dumps(dataclasses.asdict(source), sort_keys=True, default=str)


def _headline(run):
    ev = run.status().get("evaluated", {})
    if ev.get("value") is None:
        return "no score"
    if ev["metric"] == "topic_accuracy":
        return f"topic accuracy {100 * ev['value']:.2f}%"
    if ev["metric"] == "spearman":
        return f"rho {ev['value']:.3f}"
    return f"{100 * ev['value']:.2f}% ({100 * ev['low']:.1f}-{100 * ev['high']:.1f}) on {ev['n']} pairs"


# ------------------------------------------------------------------------------------- the table

STALE_MARK = "(data rebuilt since)"


def _cell(run, rel, stale=()):
    ev = run.status().get("evaluated") if run is not None else None
    if not ev or ev.get("value") is None:
        return "not run"
    if ev["metric"] == "spearman":
        text = f"rho {100 * ev['value']:.2f}"
    else:
        text = f"{100 * ev['value']:.2f} ({100 * ev['low']:.2f}-{100 * ev['high']:.2f})"
    return f"[{text}]({rel}/eval/report.md)" + (f" {STALE_MARK}" if rel in stale else "")


def _pct(x):
    return "-" if x is None else f"{x:.2f}"


def base_setting(name):
    return name[:-len(DISJOINT)] if name.endswith(DISJOINT) else name


INTERVAL_LABELS = {"wilson": "Wilson", "image-bootstrap": "image bootstrap", "fold range": "fold range"}
FOLDS = 5


def _interval_label(*evs):
    names = [INTERVAL_LABELS.get(ev.get("interval"), ev.get("interval")) for ev in evs if ev and ev.get("interval")]
    return " / ".join(dict.fromkeys(names)) or "-"


def _fold_mean(runs_of_folds):
    """The mean over the 5 complete folds (virality.experiments.evaluation.fold_means' rule), or None until all 5 are scored."""
    evs = [r.status().get("evaluated") if r is not None else None for r in runs_of_folds]
    if len(evs) != FOLDS or any(not ev or ev.get("value") is None for ev in evs):
        return None
    values = [ev["value"] for ev in evs]
    return dict(metric=evs[0]["metric"], value=sum(values) / FOLDS, low=min(values), high=max(values),
                n=sum(ev["n"] for ev in evs), interval="fold range", paper=evs[0].get("paper"))


def _mean_cell(ev):
    if ev is None:
        return "not all 5 folds run"
    return f"{100 * ev['value']:.2f} ({100 * ev['low']:.2f}-{100 * ev['high']:.2f})"


def table_markdown(runs, entries, title, notes=(), stale=()):
    """One table: per ranking model and setting, the image-disjoint run first and the paper-protocol
    run beside it (ours, 95% interval of the type named in the row) beside the paper's number; the
    complete setting's 5 folds each, then their mean; then the Topic-CNNs."""
    by = {(e.spec.model, e.spec.setting, e.spec.data.dataset): (e, r) for e, r in zip(entries, runs)}
    ranking = [(e, r) for e, r in zip(entries, runs) if not e.spec.model.endswith("_topic")]
    synthetic = any(r.done("prepared") and r.provenance()["dataset"].get("synthetic") for _, r in ranking)
    lines = [f"# {title}", ""]
    if synthetic:
        lines += ["**SYNTHETIC DATA.** These numbers come from the embedded synthetic world, not the paper's "
                  "data: the paper's numbers do not apply to it.", ""]
    lines += ["Pairwise accuracy in % with its 95% interval (Spearman's rho x 100 for popularity settings); each "
              "number links to its run's report. *image-disjoint*: no test or validation image in any training "
              "pair (the `_disjoint` setting); *paper protocol*: test pairs held out, their images not, so a model "
              "can score by memorising which pool each test image is in (docs/PROTOCOL.md). The interval column "
              "names each row's interval: Wilson where every test image is in one test pair, a bootstrap over "
              "images where test images repeat (top_bottom), the lowest-highest fold for the mean of the 5 "
              "complete folds.", "",
              "| model | dataset | setting | image-disjoint (ours) | paper protocol (ours) | interval | paper |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    seen = []
    for e, _ in ranking:
        key = (e.spec.model, e.spec.data.dataset, base_setting(e.spec.setting))
        if key not in seen:
            seen.append(key)
    folds_of = {}
    for model, dataset, name in seen:
        cells, evs, paper = [], [], None
        for setting in (name + DISJOINT, name):
            e, r = by.get((model, setting, dataset), (None, None))
            cells.append(_cell(r, e.name, stale) if e else "-")
            ev = r.status().get("evaluated") if r is not None else None
            evs.append(ev)
            if ev and ev.get("paper") is not None:
                paper = ev["paper"]
        if cells[0] == "-" and evs[1] and evs[1].get("disjoint"):
            cells, evs = [cells[1], "-"], [evs[1], None]     # image-disjoint by design (every popularity setting)
        lines.append(f"| {model} | {dataset} | {name} | {cells[0]} | {cells[1]} | {_interval_label(*evs)} | "
                     f"{_pct(paper)} |")
        fold = re.fullmatch(r"(.+)_fold(\d+)", name)
        if fold:
            folds_of.setdefault((model, dataset, fold.group(1)), []).append(name)
            if len(folds_of[(model, dataset, fold.group(1))]) == FOLDS:
                base = fold.group(1)
                means = [_fold_mean([by.get((model, f"{base}_fold{k}{suffix}", dataset), (None, None))[1]
                                     for k in range(FOLDS)]) for suffix in (DISJOINT, "")]
                paper_mean = next((m.get("paper") for m in means if m and m.get("paper") is not None), paper)
                lines.append(f"| {model} | {dataset} | **{base}: mean of the {FOLDS} folds** | {_mean_cell(means[0])} | "
                             f"{_mean_cell(means[1])} | fold range | {_pct(paper_mean)} |")
    topics = [(e, r) for e, r in zip(entries, runs) if e.spec.model.endswith("_topic")]
    if topics:
        lines += ["", "| Topic-CNN | dataset | frozen branch of the TPVCNNs on | accuracy on held-out topic images | run |",
                  "| --- | --- | --- | --- | --- |"]
        for e, r in topics:
            ev = r.status().get("evaluated", {})
            acc = "not run" if ev.get("value") is None else f"{100 * ev['value']:.2f}"
            if e.name in stale:
                acc += f" {STALE_MARK}"
            lines.append(f"| {e.spec.model} | {e.spec.data.dataset} | {', '.join(e.serves) or e.spec.setting} | {acc} | "
                         f"[{e.name}]({e.name}/run.json) |")
    lines += [""] + [f"- {n}" for n in notes]
    return "\n".join(lines).rstrip() + "\n"


def write_table(runs, entries, out_dir, title, notes=(), stale=()):
    """report.md (the table), results.json (every run's evaluation) and accuracy.png in out_dir."""
    from virality.experiments.evaluation import Result, plot_results
    out_dir = Path(out_dir)
    results, rows = [], []
    for e, r in zip(entries, runs):
        ev = r.status().get("evaluated")
        rows.append(dict(name=e.name, dir=str(r.path), model=e.spec.model, dataset=e.spec.data.dataset,
                         setting=e.spec.setting, evaluation=ev))
        path = r.eval_dir / "results.json"
        if ev and ev.get("metric") != "topic_accuracy" and path.is_file():
            results += [Result(**row) for row in json.loads(path.read_text())]
    notes = list(notes) + [topic_note(results)] if results else list(notes)
    md = write_text_atomic(out_dir / "report.md", table_markdown(runs, entries, title, notes, stale))
    write_text_atomic(out_dir / "results.json", json.dumps(rows, indent=2, default=str) + "\n")
    if results:
        plot_results(results, out_dir / "accuracy.png", title)
    return md


def topic_note(results):
    """Say whether the frozen topic branch helped, setting by setting."""
    by = {(r.model.rsplit("_", 1)[0], r.model.rsplit("_", 1)[1], r.setting): r for r in results}
    parts = []
    for (arch, kind, setting), tp in by.items():
        pv = by.get((arch, "pvcnn", setting))
        if kind != "tpvcnn" or pv is None:
            continue
        diff = 100 * (tp.value - pv.value)
        if tp.low <= pv.high and pv.low <= tp.high:
            verdict = "no significant difference (the 95% intervals overlap)"
        else:
            verdict = "the topic branch helped" if diff > 0 else "the topic branch hurt"
        parts.append(f"{arch} {setting}: TPVCNN - PVCNN = {diff:+.2f} points, {verdict}")
    return "Topic branch: " + "; ".join(parts) if parts else "Topic branch: no comparison available"


def check_plan(entries):
    names = [e.name for e in entries]
    if len(set(names)) != len(names):
        raise RunError(f"the plan names a run twice: {names}")
    return entries

