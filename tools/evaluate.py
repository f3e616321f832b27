#!/usr/bin/env python3
"""Evaluate trained ranking models and write a report laid out like the paper's Table 1.

    .venv/bin/python tools/evaluate.py --dataset synthetic --model tiny_pvcnn
    .venv/bin/python tools/evaluate.py --dataset deza2015 --images ~/deza/images \
        --run top_bottom:alexnet_pvcnn:models/alexnet_pvcnn/alexnet_pvcnn_iter_100000.caffemodel \
        --run random:alexnet_pvcnn:/runs/random/alexnet_pvcnn_iter_100000.caffemodel

    .venv/bin/python tools/evaluate.py --run-dir runs/brightness-tiny_pvcnn     # a run, on its own data
    .venv/bin/python tools/evaluate.py --run-dir runs/brightness-tiny_pvcnn --other-data --dataset synthetic

With --run-dir, a run directory (virality/experiments/runs.py) is scored on its own dataset and setting
(its eval/); scoring it on other data needs --other-data (and writes eval-<dataset>-<setting>/,
whose report says what it scored). With --model, the model's latest snapshot in models/<model>/
is evaluated on the setting its train_val net was trained on (each setting keeps its own test
pairs out of training, so a model is only scored on its own setting's test set D_test; training
validated on D_val only); a --dataset other than the one its net reads needs --other-data too.
With --run SETTING:MODEL:CAFFEMODEL (repeatable) any runs are combined in one table: each
image-disjoint figure first, the paper-protocol one beside it, the interval named per setting,
and the mean of the 5 folds where all complete_fold<k> runs of a model are given (docs/PROTOCOL.md).
Writes report.md, results.csv, results.json and accuracy.png under --out
(default models/<model>/eval or demo/eval).
"""
import argparse
import sys
from pathlib import Path

from virality.console import caffe_logging


def parse_run(text):
    parts = text.split(":", 2)
    if len(parts) != 3 or not all(parts):
        raise argparse.ArgumentTypeError(f"--run wants SETTING:MODEL:CAFFEMODEL, got '{text}'")
    return parts[0], parts[1], Path(parts[2])      # a Run once Caffe's logging is set up


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", help="dataset name (deza2015, synthetic, popularity, ...; default with --run-dir: "
                                     "the run's own)")
    p.add_argument("--run-dir", type=Path, help="a run directory (runs/<name>/) to score")
    p.add_argument("--other-data", action="store_true",
                   help="allow scoring on data other than what the model was trained on")
    p.add_argument("--data-root", type=Path, help="with --run-dir --other-data: where <dataset>/ was built "
                                                  "(default data/)")
    p.add_argument("--setting", help="with --run-dir --other-data: the other dataset's setting (default: the run's)")
    p.add_argument("--data-dir", type=Path, help="dataset metadata directory (default: the dataset's)")
    p.add_argument("--images", type=Path, help="image directory, where the dataset needs one")
    p.add_argument("--model", help="evaluate models/<model>/'s latest snapshot on its training setting")
    p.add_argument("--snapshot", type=Path, help="with --model: this caffemodel instead of the latest")
    p.add_argument("--run", type=parse_run, action="append", default=[], metavar="SETTING:MODEL:CAFFEMODEL")
    p.add_argument("--store", type=Path, help="image store (default data/<dataset>/images_<size>_lmdb)")
    p.add_argument("--out", type=Path, help="report directory")
    p.add_argument("--gpu", type=int)
    p.add_argument("--log", type=Path, help="Caffe's full log goes to this file")
    p.add_argument("--verbose", action="store_true", help="print Caffe's whole log on the console")
    args = p.parse_args(argv)
    if not args.dataset and not args.run_dir:
        p.error("give --dataset (or --run-dir)")
    caffe_logging(args.log, args.verbose)
    if args.run_dir:
        return evaluate_run_dir(args)
    import caffe
    from virality.datasets import load_dataset
    from virality.experiments.evaluation import Run, evaluate_run, latest_snapshot, trained_setting, write_report
    from virality.data.imagestore import ImageStore
    from virality.model.nets import get_model
    from virality.paths import DATA_DIR, MODELS_DIR, PROTOTXT_DIR

    if args.gpu is not None:
        caffe.set_device(args.gpu)
        caffe.set_mode_gpu()
    else:
        caffe.set_mode_cpu()
    runs = [Run(*r) for r in args.run]
    if args.model:
        dataset_name, setting = trained_setting(PROTOTXT_DIR / args.model / "train_val.prototxt")
        if dataset_name != args.dataset:
            if not args.other_data:
                print(f"evaluate: error: prototxt/{args.model}/train_val.prototxt trains on '{dataset_name}', not "
                      f"'{args.dataset}'; scoring it on other data needs --other-data", file=sys.stderr)
                return 2
            print(f"evaluate: note: --other-data: prototxt/{args.model}/train_val.prototxt trains on "
                  f"'{dataset_name}'; evaluating on '{args.dataset}' setting '{setting}'", file=sys.stderr)
        snapshot = args.snapshot or latest_snapshot(MODELS_DIR / args.model, args.model)
        runs.append(Run(setting, args.model, snapshot))
    if not runs:
        p.error("give --model or at least one --run")
    out = args.out or (MODELS_DIR / args.model / "eval" if args.model else Path("demo/eval"))

    dataset = load_dataset(args.dataset, data_dir=args.data_dir, images=args.images)
    results = []
    stores = {}
    for run in runs:
        size = get_model(run.model).architecture.image_size
        store_path = args.store or DATA_DIR / args.dataset / f"images_{size}_lmdb"
        if store_path not in stores:
            stores[store_path] = ImageStore(store_path)
        print(f"evaluate: {run.model} on {args.dataset}/{run.setting} ({run.caffemodel})", file=sys.stderr)
        results.append(evaluate_run(run, dataset, stores[store_path]))
    from virality.report.gallery import write_run_page
    pages = [write_run_page(run, dataset, stores[args.store or DATA_DIR / args.dataset /
                                                  f"images_{get_model(run.model).architecture.image_size}_lmdb"],
                            Path(out) / "pages", show_progress=True) for run in runs]
    notes = [f"test pairs right and wrong, and nearest neighbours: pages/{p.name}" for p in pages]
    md, csv_path, png = write_report(results, dataset, out, title=f"Evaluation on {args.dataset}", notes=notes)
    print(md.read_text())
    print(f"evaluate: wrote {md}, {csv_path}, {png}", file=sys.stderr)
    return 0


def evaluate_run_dir(args):
    """--run-dir: the run on its own data, or (only with --other-data) on the data named."""
    from virality.paths import DATA_DIR
    from virality.experiments.runs import DataSource, RunDir, RunError

    try:
        run = RunDir.read(args.run_dir)
        own = run.spec.data
        other = None
        asked = (args.dataset, args.data_dir, args.images, args.setting)
        if any(a is not None for a in asked):
            same = (args.dataset in (None, own.dataset) and args.setting in (None, run.spec.setting)
                    and (args.data_dir is None or str(args.data_dir.resolve()) == own.data_dir)
                    and (args.images is None or str(args.images.resolve()) == own.images))
            if not same:
                if not args.other_data:
                    print(f"evaluate: error: {run.path} was trained on {own.dataset}/{run.spec.setting} "
                          f"({own.data_dir or 'its default data'}); scoring it on other data needs --other-data",
                          file=sys.stderr)
                    return 2
                other = DataSource(args.dataset or own.dataset,
                                   data_dir=str(args.data_dir.resolve()) if args.data_dir else None,
                                   images=str(args.images.resolve()) if args.images else None,
                                   data_root=str((args.data_root or DATA_DIR).resolve()))
        result = run.evaluate(other=other, other_setting=args.setting if other else None, gpu=args.gpu)
    except (RunError, ValueError, OSError) as err:
        print(f"evaluate: error: {err}", file=sys.stderr)
        return 2
    print(Path(result["report"]).read_text() if "report" in result else result)
    print(f"evaluate: scored {result.get('scored')}; wrote {result.get('report')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
