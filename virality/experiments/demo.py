"""`make demo`: the Table 1 plan (virality/experiments/plan.py) on the embedded synthetic world, tiny models, CPU.

1. data: the synthetic world, its image store, pairs and LMDBs (tools/make_data.py);
2. runs under demo/<run>/ (virality/experiments/runs.py): tiny_topic (the Topic-CNN), then tiny_pvcnn and
   tiny_tpvcnn (its frozen topic branch from the tiny_topic run) on ``random_disjoint`` and
   ``random``, each trained, evaluated on its own setting's held-out pairs and released;
3. demo/report.md: the table (each number linking to its run), results.json, accuracy.png.

It is the same runner as `make table1`: a second call skips the finished runs and resumes an
interrupted one. Everything lands in git-ignored demo/ and data/; nothing else is touched.
"""
import shutil
import time
from pathlib import Path

from virality.paths import DATA_DIR, DEMO_DIR

SETTINGS = ("random_disjoint", "random")
DATASET = "synthetic"


def _say(msg):
    print(f"demo: {msg}", flush=True)


def plan(out=DEMO_DIR, max_iter=0, num_pairs=None):
    from virality.experiments.plan import table1_plan
    from virality.experiments.runs import DataSource
    source = DataSource(DATASET, data_root=str(DATA_DIR), num_pairs=num_pairs)
    return table1_plan(source, list(SETTINGS), ["tiny"], out, max_iter=max_iter)


def run(out=DEMO_DIR, max_iter=0, num_pairs=None, restart=False, verbose=False):
    """Run the demo; return the path of the report. Caffe's whole log goes to <out>/caffe.log
    (the console keeps its warnings and errors; ``verbose`` prints it all)."""
    from virality.console import caffe_logging
    out = Path(out)
    if restart and out.exists():
        if not (out / "plan.json").is_file():
            raise SystemExit(f"demo: {out} holds no plan.json: not a demo directory; not removing it")
        shutil.rmtree(out)
    caffe_log = caffe_logging(out.resolve() / "caffe.log", verbose)      # before Caffe loads
    from virality.experiments.plan import PlanRunner
    if caffe_log:
        _say(f"Caffe's full log: {caffe_log}")
    t0 = time.time()
    _say("the Table 1 plan on the synthetic virality world (SYNTHETIC, not the paper's data), tiny models, CPU")
    report = PlanRunner(plan(out, max_iter, num_pairs), out,
                        title="make demo: tiny PVCNN / TPVCNN on the synthetic virality world", log=_say).run()
    print(report.read_text())
    _say(f"report: {report} (each run: {out}/<run>/, with eval/, train/ curves and release/)")
    _say(f"whole demo: {time.time() - t0:.0f} s on this machine (CPU)")
    return report
