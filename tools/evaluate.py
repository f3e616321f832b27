#!/usr/bin/env python3
"""Evaluate trained ranking models and write a report laid out like the paper's Table 1.

    .venv/bin/python tools/evaluate.py --dataset synthetic --model tiny_pvcnn
    .venv/bin/python tools/evaluate.py --dataset deza2015 --images ~/deza/images \
        --run top_bottom:alexnet_pvcnn:models/alexnet_pvcnn/alexnet_pvcnn_iter_100000.caffemodel \
        --run random:alexnet_pvcnn:/runs/random/alexnet_pvcnn_iter_100000.caffemodel

With --model, the model's latest snapshot in models/<model>/ is evaluated on the
setting its train_val net was trained on (each setting keeps its own test pairs
out of training, so a model is only scored on its own setting's test set D_test;
training validated on D_val only). With --run SETTING:MODEL:CAFFEMODEL (repeatable)
any runs are combined in one table: each image-disjoint figure first, the
paper-protocol one beside it, the interval named per setting, and the mean of the
5 folds where all complete_fold<k> runs of a model are given (docs/PROTOCOL.md).
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
    p.add_argument("--dataset", required=True, help="dataset name (deza2015, synthetic, popularity, ...)")
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

    caffe_logging(args.log, args.verbose)
    import caffe
    from virality.datasets import load_dataset
    from virality.evaluation import Run, evaluate_run, latest_snapshot, trained_setting, write_report
    from virality.imagestore import ImageStore
    from virality.nets import get_model
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
            print(f"evaluate: note: prototxt/{args.model}/train_val.prototxt trains on '{dataset_name}'; "
                  f"evaluating on '{args.dataset}' setting '{setting}'", file=sys.stderr)
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
    from virality.gallery import write_run_page
    pages = [write_run_page(run, dataset, stores[args.store or DATA_DIR / args.dataset /
                                                  f"images_{get_model(run.model).architecture.image_size}_lmdb"],
                            Path(out) / "pages", show_progress=True) for run in runs]
    notes = [f"test pairs right and wrong, and nearest neighbours: pages/{p.name}" for p in pages]
    md, csv_path, png = write_report(results, dataset, out, title=f"Evaluation on {args.dataset}", notes=notes)
    print(md.read_text())
    print(f"evaluate: wrote {md}, {csv_path}, {png}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
