"""Experiments as run directories: everything about one trained model in one place.

A *run* is one model trained on one setting of one dataset. Its directory
(``runs/<name>/`` by default; git-ignored) holds:

    run.json             what the run is (its RunSpec) and what it was built from: the dataset,
                         its metadata files with sha256, the content digests of every data file
                         the nets read (make_data's stamps), the setting's split sizes, seeds,
                         dataset options (fold, fractions), engine, code commit, the caffe command
    status.json          the stages done (prepared, trained, evaluated, released) and their results
    train_val.prototxt   the nets and solver of this run, every path absolute: from any working
    deploy.prototxt      directory, ``caffe train -solver runs/<name>/solver.prototxt`` trains this run
    solver.prototxt      (CPU; add ``-gpu N`` for a GPU; a TPVCNN also ``-weights runs/<name>/init.caffemodel``)
    init.caffemodel      TPVCNN only: ImageNet (if any) + the Topic-CNN run's snapshot (virality.weights)
    train/               snapshots <model>_iter_<N>.{caffemodel,solverstate}, train_log.csv, train_curves.png
    eval/                report.md, results.json/csv, accuracy.png: the run scored on its own data
    eval-<dataset>-<setting>/   scored on other data (only when asked for explicitly)
    release/             the model for tools/predict.py (virality.release)

A run directory is never overwritten by another experiment: opening an existing
directory whose run.json describes another spec raises RunConflict (choose a new
name). Opening it with the same spec continues it: an unfinished training resumes
from its last snapshot, and finished stages are skipped. A finished run whose data
changed since (its recorded digests no longer match) raises DataChanged.
"""
import dataclasses
import datetime as _dt
import json
import math
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from virality.files import file_digest, write_text_atomic
from virality.paths import DATA_DIR, ROOT

RUNS_DIR = ROOT / "runs"
RUN_FORMAT = "virality-run/1"
STAGES = ("prepared", "trained", "evaluated", "released")
#: a test set whose 95% interval at 50% accuracy is wider than this (+- points) gets a loud warning.
WARN_HALF_WIDTH = 0.10


class RunError(Exception):
    """A run that cannot be made, continued or read; the message names the directory and what to do."""


class RunConflict(RunError):
    """The run directory already holds another experiment."""


class DataChanged(RunError):
    """The data a finished run was trained on has changed since."""


def say(msg):
    print(f"run: {msg}", flush=True)


# ------------------------------------------------------------------------------------- specs

@dataclass(frozen=True)
class DataSource:
    """A dataset as make_data builds it: adapter name, its files, options, and where the build goes."""

    dataset: str                       # adapter name (virality.datasets.registry)
    data_dir: Optional[str] = None     # its metadata: table file or directory (None: the adapter's default)
    images: Optional[str] = None       # image directory (None: the adapter's default)
    options: dict = field(default_factory=dict)   # adapter options (test_fraction, complete_fold, ...)
    data_root: str = str(DATA_DIR)     # make_data writes <data_root>/<dataset>/
    num_pairs: Optional[int] = None    # training pairs per setting (None: make_data's default), capped
    seed: int = 1701                   # make_data's pair sampling / topic split seed

    @property
    def root(self):
        return Path(self.data_root) / self.dataset

    def effective_data_dir(self):
        """The metadata make_data reads: data_dir, or the adapter's default (synthetic: its generated world)."""
        if self.data_dir:
            return Path(self.data_dir)
        if self.dataset == "synthetic":
            return self.root / "raw"
        from virality.datasets.registry import DEFAULT_DATA_DIRS
        return DEFAULT_DATA_DIRS.get(self.dataset)

    def load(self):
        from virality.datasets import load_dataset
        return load_dataset(self.dataset, data_dir=self.data_dir, images=self.images, **self.options)

    def build(self, sizes, settings, pair_lmdb, quiet=True):
        """Run tools/make_data.py for these image sizes and settings (a no-op when up to date)."""
        cmd = [sys.executable, str(ROOT / "tools/make_data.py"), "--dataset", self.dataset,
               "--out-root", str(self.data_root), "--sizes", *map(str, sizes), "--settings", *settings,
               "--pair-lmdb", pair_lmdb, "--seed", str(self.seed), "--cap-pairs"]
        if self.data_dir:
            cmd += ["--data-dir", str(self.data_dir)]
        if self.images:
            cmd += ["--images", str(self.images)]
        if self.num_pairs:
            cmd += ["--num-pairs", str(self.num_pairs)]
        for key, value in sorted(self.options.items()):
            cmd += ["--dataset-option", f"{key}={json.dumps(value)}"]
        if quiet:
            cmd.append("--quiet")
        if subprocess.run(cmd, cwd=ROOT).returncode != 0:
            raise RunError(f"building the data of '{self.dataset}' failed (tools/make_data.py said why, above)")
        return self.summary()

    def summary(self):
        path = self.root / "data.json"
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise RunError(f"{path}: cannot read make_data's summary ({err}); build the data first") from None


@dataclass(frozen=True)
class RunSpec:
    """Everything that defines a run; two runs with equal specs are the same experiment."""

    model: str
    setting: str
    data: DataSource
    feed: Optional[str] = None         # ranking models: pair_lmdb / pair_index (None: the architecture's)
    attribute: str = "virality"        # what the score ranks (reports, release, predict)
    max_iter: int = 0                  # 0: the schedule's (virality.solvers.SCHEDULES)
    snapshot: int = 0                  # 0: the schedule's snapshot interval
    weights: Optional[str] = None      # ImageNet weights for alexnet/vgg19 towers (copy_from)
    topic_run: Optional[str] = None    # TPVCNN: the Topic-CNN run directory its frozen branch comes from
    seed: int = 1701                   # Caffe / numpy seed of training

    def to_json(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, obj):
        obj = dict(obj)
        obj["data"] = DataSource(**obj["data"])
        return cls(**obj)


def _differences(a, b, prefix=""):
    out = []
    for key in sorted(set(a) | set(b)):
        if isinstance(a.get(key), dict) and isinstance(b.get(key), dict):
            out += _differences(a[key], b[key], f"{prefix}{key}.")
        elif a.get(key) != b.get(key):
            out.append(f"{prefix}{key}: {a.get(key)!r} there, {b.get(key)!r} asked")
    return out


# ---------------------------------------------------------------------------------- helpers

def covering_batch(n, largest):
    """The largest batch <= ``largest`` that divides ``n``: test_iter x batch covers n records exactly once."""
    if n < 1:
        raise RunError("the test phase has no records")
    return max(b for b in range(1, min(n, largest) + 1) if n % b == 0)


def snapshot_iterations(train_dir, prefix, suffix):
    """{iteration: path} of ``<prefix>_iter_<N>.<suffix>`` files (named, never by mtime)."""
    out = {}
    for path in Path(train_dir).glob(f"{prefix}_iter_*.{suffix}"):
        m = re.fullmatch(rf"{re.escape(prefix)}_iter_(\d+)\.{suffix}", path.name)
        if m:
            out[int(m.group(1))] = path
    return out


def _git_commit():
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("+local-changes" if dirty.stdout.strip() else "")


def _now():
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def _write_json(path, obj):
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path, what):
    try:
        obj = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise RunError(f"{path}: missing; {what}") from None
    except ValueError as err:
        raise RunError(f"{path}: not valid JSON ({err}); {what}") from None
    if not isinstance(obj, dict):
        raise RunError(f"{path}: must hold a JSON object; {what}")
    return obj


def dataset_files(data_dir):
    """{path: sha256} of a dataset's metadata: the table file, or the files of its directory."""
    if data_dir is None:
        return {}
    path = Path(data_dir)
    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else []
    return {str(p): file_digest(p) for p in files}


def data_digests(sources):
    """{source: digest} from make_data's ``<output>.stamp`` files (a content hash of each output's inputs)."""
    out = {}
    for source in sources:
        stamp = Path(f"{source}.stamp")
        try:
            out[str(source)] = json.loads(stamp.read_text())["digest"]
        except (OSError, ValueError, KeyError):
            raise RunError(f"{stamp}: missing or unreadable: {source} was not built by tools/make_data.py; "
                           "rebuild the data (make data)") from None
    return out


def net_sources(net_param):
    """Every data file a train_val net reads (Data layer sources, Python feed files), any phase."""
    sources = []
    for layer in net_param.layer:
        if layer.type == "Data" and layer.data_param.source:
            sources.append(layer.data_param.source)
        elif layer.type == "Python" and layer.python_param.param_str:
            try:
                params = json.loads(layer.python_param.param_str)
            except ValueError:
                continue
            sources += [str(params[k]) for k in ("image_store", "pairs", "source") if k in params]
    return list(dict.fromkeys(sources))


# ---------------------------------------------------------------------------------- the run

class RunDir:
    """One run directory (module docstring). ``RunDir.open(path, spec)`` creates or continues it."""

    def __init__(self, path, spec):
        self.path = Path(path).resolve()
        self.spec = spec
        from virality.nets import get_model
        self.model = get_model(spec.model)

    # -- layout ---------------------------------------------------------------------------
    @property
    def name(self):
        return self.path.name

    train_val = property(lambda self: self.path / "train_val.prototxt")
    deploy = property(lambda self: self.path / "deploy.prototxt")
    solver = property(lambda self: self.path / "solver.prototxt")
    train_dir = property(lambda self: self.path / "train")
    eval_dir = property(lambda self: self.path / "eval")
    release_dir = property(lambda self: self.path / "release")
    init_weights = property(lambda self: self.path / "init.caffemodel")
    run_json = property(lambda self: self.path / "run.json")
    status_json = property(lambda self: self.path / "status.json")

    @property
    def prefix(self):
        return self.spec.model

    # -- create / open --------------------------------------------------------------------
    @classmethod
    def open(cls, path, spec):
        """The run at ``path`` for ``spec``: created when absent, continued when it holds ``spec``.

        Raises RunConflict when the directory holds anything else."""
        path = Path(path).resolve()
        run = cls(path, spec)
        if path.exists():
            if not run.run_json.is_file() and {p.name for p in path.iterdir()} - {"data"}:
                raise RunConflict(f"{path} exists but is not a run directory (no run.json); choose another "
                                  "run name, or remove it")
            if not run.run_json.is_file():
                return run                      # only its own data so far (tools/experiment.py)
            there = read_json(run.run_json, "a run directory's run.json").get("spec", {})
            diff = _differences(there, spec.to_json())
            if diff:
                raise RunConflict(f"{path} already holds another experiment ({'; '.join(diff)}); choose another "
                                  "run name (--name), or remove that directory to redo it")
        return run

    @classmethod
    def read(cls, path):
        """An existing run, from its run.json (for evaluation and reports)."""
        path = Path(path).resolve()
        meta = read_json(path / "run.json", "is this a run directory (runs/<name>/)?")
        if meta.get("format") != RUN_FORMAT:
            raise RunError(f"{path / 'run.json'}: format {meta.get('format')!r}, this code reads {RUN_FORMAT!r}")
        return cls(path, RunSpec.from_json(meta["spec"]))

    def status(self):
        if not self.status_json.is_file():
            return {}
        return read_json(self.status_json, "remove it to redo the run's stages")

    def provenance(self):
        return read_json(self.run_json, "the run's record")

    def _mark(self, stage, **info):
        status = self.status()
        status[stage] = dict(info, at=_now())
        _write_json(self.status_json, status)

    def done(self, stage):
        return stage in self.status()

    @property
    def finished(self):
        return all(self.done(s) for s in STAGES)

    # -- prepare: nets, solver, provenance -----------------------------------------------
    def data_config(self, summary, test_batch=None):
        from virality.solvers import default_data_config
        spec = self.spec
        overrides = dict(dataset=spec.data.dataset, setting=spec.setting, data_root=str(Path(spec.data.data_root)),
                         seed=spec.seed)
        if self.model.kind in ("topic", "tpvcnn"):
            topics = summary.get("topic_names") or []
            if not topics:
                raise RunError(f"{spec.model} needs image topics, and '{spec.data.dataset}' has none "
                               f"({spec.data.data_dir or 'its default data'}): add a topic column, or train a "
                               f"{self.model.arch}_pvcnn")
            overrides["num_topics"] = len(topics)
        if test_batch:
            overrides["test_batch"] = test_batch
        return default_data_config(spec.model, feed=spec.feed, **overrides)

    def _nets(self, summary):
        """train_val, deploy and solver messages with absolute paths; test phase covered exactly once."""
        from virality.nets import deploy_net, train_val_net
        from virality.solvers import schedule_for, solver
        from virality.training import count_test_records

        cfg = self.data_config(summary)
        net = train_val_net(self.spec.model, cfg)
        num_test = count_test_records(net, self.path)
        batch = covering_batch(num_test, cfg.test_batch)
        if batch != cfg.test_batch:
            cfg = self.data_config(summary, test_batch=batch)
            net = train_val_net(self.spec.model, cfg)
        deploy = deploy_net(self.spec.model, num_topics=cfg.num_topics)
        msg = solver(self.spec.model, str(self.train_val), str(self.train_dir / self.prefix))
        del msg.test_iter[:]
        msg.test_iter.append(num_test // batch)
        from caffe.proto import caffe_pb2
        # CPU unless Caffe is given -gpu N (caffe train) or --gpu (the driver): one solver for both.
        msg.solver_mode = caffe_pb2.SolverParameter.CPU
        if self.spec.max_iter:
            msg.max_iter = self.spec.max_iter
        if self.spec.snapshot:
            msg.snapshot = self.spec.snapshot
        return cfg, net, deploy, msg, num_test, schedule_for(self.spec.model)

    def prepare(self, summary):
        """Write run.json and the run's nets (once); later calls check the data is unchanged."""
        from google.protobuf import text_format
        from virality.generated import HEADER

        if self.done("prepared"):
            self.check_data()
            return
        self.path.mkdir(parents=True, exist_ok=True)
        self.train_dir.mkdir(exist_ok=True)
        cfg, net, deploy, msg, num_test, sched = self._nets(summary)
        what = f"{self.spec.model}, run {self.name}"
        write_text_atomic(self.train_val, HEADER.format(what="train/val net", model=what)
                          + text_format.MessageToString(net))
        write_text_atomic(self.deploy, HEADER.format(what="deploy net", model=what)
                          + text_format.MessageToString(deploy))
        write_text_atomic(self.solver, HEADER.format(what="solver", model=what) + text_format.MessageToString(msg))
        sources = net_sources(net) + [cfg.image_store(self.model.architecture.image_size)]
        sources = list(dict.fromkeys(str(Path(s)) for s in sources if Path(s).exists()))
        setting_summary = summary.get("settings", {}).get(self.spec.setting, {})
        caffe_cmd = f"{ROOT / '.venv/bin/caffe'} train -solver {self.solver}"
        if self.model.kind == "tpvcnn":
            caffe_cmd += f" -weights {self.init_weights}"
        elif self.spec.weights:
            caffe_cmd += f" -weights {self.spec.weights}"
        record = {
            "format": RUN_FORMAT,
            "name": self.name,
            "spec": self.spec.to_json(),
            "created": _now(),
            "code": _git_commit(),
            "engine": _engine(),
            "dataset": {
                "name": self.spec.data.dataset,
                "synthetic": bool(summary.get("synthetic")),
                "data_dir": str(self.spec.data.effective_data_dir() or ""),
                "images": self.spec.data.images,
                "options": self.spec.data.options,
                "files": dataset_files(self.spec.data.effective_data_dir()),
                "data_json": str(self.spec.data.root / "data.json"),
                "images_listed": summary.get("images"),
                "images_available": summary.get("available"),
                "topic_names": summary.get("topic_names"),
            },
            "setting": self.spec.setting,
            # Split sizes as make_data recorded them (train/test pairs today; the protocol's
            # validation split adds its own keys here), plus the records the test phase reads.
            "split": dict(setting_summary, test_phase_records=num_test, topics=summary.get("topics")),
            "seeds": {"data": self.spec.data.seed, "data_json": summary.get("seed"), "training": self.spec.seed,
                      "solver": int(msg.random_seed), "dataset_options": self.spec.data.options},
            "fold": self.spec.data.options.get("complete_fold"),
            "data_digests": data_digests(sources),
            "schedule": {"max_iter": int(msg.max_iter), "test_iter": int(msg.test_iter[0]),
                         "test_batch": cfg.test_batch, "train_batch": cfg.train_batch, "iter_size": sched.iter_size,
                         "feed": cfg.feed},
            "caffe_command": caffe_cmd,
        }
        _write_json(self.run_json, record)
        self._mark("prepared")
        say(f"{self.name}: prepared {self.path} ({self.spec.model} on {self.spec.data.dataset}/{self.spec.setting}, "
            f"{setting_summary.get('train_pairs', '?')} training pairs, {num_test} test-phase records)")

    def check_data(self):
        """Raise DataChanged when a data file the run read has changed since it was prepared."""
        record = self.provenance()
        recorded = record.get("data_digests", {})
        missing = [s for s in recorded if not Path(s).exists()]
        if missing:
            raise DataChanged(f"{self.path}: its data {missing[0]} no longer exists; rebuild it (make data) or "
                              "use another run name")
        now = data_digests(recorded)
        changed = [s for s in recorded if recorded[s] != now[s]]
        files = record.get("dataset", {}).get("files", {})
        changed += [p for p, d in files.items() if not Path(p).is_file() or file_digest(p) != d]
        if changed:
            raise DataChanged(f"{self.path} was trained on other data: {changed[0]} has changed since "
                              f"{record.get('created')}; start a new run (another --name) for the new data, "
                              "or rebuild the old data")

    # -- train ---------------------------------------------------------------------------
    def max_iter(self):
        from virality.training import read_solver
        return int(read_solver(self.solver).max_iter)

    def final_snapshot(self):
        return self.train_dir / f"{self.prefix}_iter_{self.max_iter()}.caffemodel"

    def last_state(self):
        states = snapshot_iterations(self.train_dir, self.prefix, "solverstate")
        return (max(states), states[max(states)]) if states else (0, None)

    def _tpvcnn_init(self):
        from virality.weights import make_tpvcnn_init
        topic = RunDir.read(self.spec.topic_run) if self.spec.topic_run else None
        if topic is None or not topic.done("trained"):
            raise RunError(f"{self.name}: a TPVCNN needs a trained Topic-CNN run (topic_run = {self.spec.topic_run})")
        if not self.init_weights.is_file():
            with open(self.path / "init_report.txt", "w") as report:
                make_tpvcnn_init(self.spec.model, self.spec.weights, topic.final_snapshot(), self.init_weights,
                                 stream=report)
        self._init_info = dict(topic_snapshot=str(topic.final_snapshot()),
                               topic_snapshot_sha256=file_digest(topic.final_snapshot()),
                               init_sha256=file_digest(self.init_weights))
        return [self.init_weights]

    def train(self, gpu=None, log=say, progress=None):
        """Train (or resume) to the solver's max_iter; returns the final snapshot."""
        from virality.plots import plot_training_curves, read_csv
        from virality.training import TrainConfig, Trainer

        if self.done("trained"):
            return self.final_snapshot()
        weights = self._tpvcnn_init() if self.model.kind == "tpvcnn" else (
            [Path(self.spec.weights)] if self.spec.weights else [])
        start, state = self.last_state()
        if state is not None:
            log(f"{self.name}: resuming from its snapshot at iteration {start} ({state.name})")
            _truncate_log(self.train_dir / "train_log.csv", start)
        config = TrainConfig(solver_path=self.solver, out_dir=self.train_dir, workdir=self.path,
                             weights=weights, resume=state, gpu=gpu, seed=self.spec.seed)
        began = time.time()
        final = Trainer(config, log=lambda m: log(f"{self.name}: {m}"), progress=progress).run()
        seconds = time.time() - began
        log_csv = self.train_dir / "train_log.csv"
        rows = read_csv(log_csv)
        plot_training_curves(rows, self.train_dir / "train_curves.png", title=f"{self.name} ({self.spec.model})")
        vals = [float(r["val_accuracy"]) for r in rows if r.get("val_accuracy")]
        iterations = self.max_iter() - start
        self._mark("trained", **getattr(self, "_init_info", {}), final_snapshot=str(final).replace(".solverstate", ".caffemodel"),
                   resumed_from=start or None, seconds=round(seconds, 1),
                   seconds_per_iteration=seconds / iterations if iterations else None,
                   final_val_accuracy=vals[-1] if vals else None)
        return self.final_snapshot()

    # -- evaluate ------------------------------------------------------------------------
    def evaluate(self, other=None, other_setting=None, gpu=None):
        """Score the run on its own dataset and setting (eval/), or, only when ``other`` (a DataSource) is
        given, on that dataset's ``other_setting`` (eval-<dataset>-<setting>/). Returns the Result."""
        if not self.done("trained"):
            raise RunError(f"{self.path}: not trained yet; run it first")
        if self.model.kind == "topic":
            status = self.status()["trained"]
            result = dict(metric="topic_accuracy", value=status.get("final_val_accuracy"),
                          n=self.provenance()["split"].get("test_phase_records"),
                          scored="its own held-out topic images (the test phase of train_val.prototxt)")
            if other is None:
                _write_json(self.eval_dir / "results.json", result)
                self._mark("evaluated", **result)
            return result
        import caffe
        from virality.evaluation import Run, evaluate_run, write_report
        from virality.imagestore import ImageStore

        if gpu is not None:
            caffe.set_device(gpu)
            caffe.set_mode_gpu()
        else:
            caffe.set_mode_cpu()
        source = other or self.spec.data
        setting = other_setting or self.spec.setting
        own = other is None
        if own:
            self.check_data()
        dataset = source.load()
        store = ImageStore(source.root / f"images_{self.model.architecture.image_size}_lmdb")
        try:
            result = evaluate_run(Run(setting, self.spec.model, self.final_snapshot(), self.deploy), dataset, store)
        finally:
            store.close()
        scored = (f"dataset {source.dataset}" + (f" ({source.data_dir})" if source.data_dir else "")
                  + f", setting {setting}: {result.n} test pairs")
        notes = [f"Scored: {scored}; "
                 + ("the run's own data and setting." if own else
                    f"OTHER DATA, not what the run was trained on ({self.spec.data.dataset}/{self.spec.setting})."),
                 f"Run: {self.path} ({self.spec.model}, attribute '{self.spec.attribute}'); snapshot "
                 f"{self.final_snapshot().name}."]
        warning = small_test_warning(result.n)
        if warning:
            notes.append(warning)
        out = self.eval_dir if own else self.path / f"eval-{source.dataset}-{setting}"
        write_report([result], dataset, out, notes=notes,
                     title=f"{self.name}: {self.spec.attribute} ranking, {self.spec.model} on "
                           f"{source.dataset}/{setting}")
        info = dict(metric=result.metric, value=result.value, low=result.low, high=result.high, n=result.n,
                    paper=result.paper, scored=scored, report=str(out / "report.md"))
        if own:
            self._mark("evaluated", **info)
        return info

    # -- release -------------------------------------------------------------------------
    def release(self):
        from virality.release import make_release, read_release
        if self.done("released"):
            return read_release(self.release_dir)
        data = self.spec.data
        trained_on = (f"run {self.path}: {data.dataset}" + (f" ({data.data_dir})" if data.data_dir else "")
                      + f", setting {self.spec.setting}, {self.max_iter()} iterations; run.json has the provenance")
        with open(self.path / "release_report.txt", "w") as report:
            release, _ = make_release(self.spec.model, snapshot=self.final_snapshot(), out_dir=self.release_dir,
                                      trained_on=trained_on, force=True, stream=report, deploy=self.deploy,
                                      train_val=self.train_val, attribute=self.spec.attribute)
        self._mark("released", dir=str(self.release_dir))
        return release

    # -- all stages ------------------------------------------------------------------------
    def run(self, summary, gpu=None, log=say, progress=None):
        """Every stage not done yet: prepare, train (or resume), evaluate, release."""
        self.prepare(summary)
        self.train(gpu=gpu, log=log, progress=progress)
        if not self.done("evaluated"):
            self.evaluate(gpu=gpu)
        self.release()
        return self.status()


def _truncate_log(path, iteration):
    """Drop the log rows after ``iteration`` (written after the snapshot a resume starts from)."""
    import csv
    if not path.is_file():
        return
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
        fields = list(rows[0]) if rows else None
    if fields:
        import io
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=fields)
        writer.writeheader()
        writer.writerows(r for r in rows if int(r["iteration"]) <= iteration)
        write_text_atomic(path, buf.getvalue())


def small_test_warning(n):
    """A loud line when ``n`` test pairs give a 95% interval wider than +-WARN_HALF_WIDTH at 50%."""
    half = 1.96 * 0.5 / math.sqrt(max(n, 1))
    if half <= WARN_HALF_WIDTH:
        return None
    return (f"WARNING: only {n} test pairs: a 95% interval spans about +-{100 * half:.0f} points around 50%, so "
            "this accuracy says little. Add images or comparisons, or raise --test-fraction.")


def _engine():
    info = ROOT / ".engine" / "build-info.txt"
    if info.is_file():
        return dict(line.split("=", 1) for line in info.read_text().splitlines() if "=" in line)
    return None
