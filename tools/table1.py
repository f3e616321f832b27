#!/usr/bin/env python3
"""The paper's Table 1 as one resumable plan of runs (`make table1`; virality/experiments/plan.py).

    .venv/bin/python tools/table1.py --images /path/to/deza/jpgs --gpu 0     # the Image Virality half
    .venv/bin/python tools/table1.py --images ... --popularity /path/to/popularity.csv --popularity-images ...
    .venv/bin/python tools/table1.py --dataset synthetic                     # tiny models, on CPU

Plan: the Topic-CNNs first, then AlexNet and VGG-19 (tiny for synthetic), PVCNN and TPVCNN, on
every setting of the dataset (deza2015: complete, top_bottom, random and their _disjoint
variants). Each run is a directory under --out (default runs/table1-<dataset>/<run>/, see
virality/experiments/runs.py). A second call skips finished runs and resumes an interrupted one from its
last snapshot; progress covers the whole plan (which run, how far, ETA). Ends in
<out>/report.md: one table beside the paper's numbers, with 95% intervals and a link per run.

The alexnet/vgg19 towers start from ImageNet weights (make weights MODEL=bvlc_alexnet and
MODEL=VGG_ILSVRC_19_layers; docs/WEIGHTS.md): --weights-alexnet / --weights-vgg19 default to
models/pretrained/<zoo name>.caffemodel.
"""
import argparse
import re
import sys
from pathlib import Path

from virality.paths import DATA_DIR, MODELS_DIR, ROOT

ZOO_WEIGHTS = {"alexnet": MODELS_DIR / "pretrained/bvlc_alexnet.caffemodel",
               "vgg19": MODELS_DIR / "pretrained/VGG_ILSVRC_19_layers.caffemodel"}
POPULARITY_SETTINGS = ("one_per_user", "user_mix", "user_specific")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="deza2015", choices=("deza2015", "synthetic"),
                   help="deza2015 (the paper's; needs --images) or synthetic (tiny models, CPU)")
    p.add_argument("--images", type=Path, help="deza2015: the directory of <img_id>.jpg files")
    p.add_argument("--data-dir", type=Path, help="the dataset's metadata (default: its own)")
    p.add_argument("--popularity", type=Path, help="the popularity half: an image,user,score table (docs/DATASETS.md)")
    p.add_argument("--popularity-images", type=Path, help="its image directory (default: beside the table)")
    p.add_argument("--archs", nargs="+", help="towers (default: alexnet vgg19; tiny for synthetic)")
    p.add_argument("--settings", nargs="+", help="settings (default: all of the dataset's)")
    p.add_argument("--weights-alexnet", type=Path, default=ZOO_WEIGHTS["alexnet"])
    p.add_argument("--weights-vgg19", type=Path, default=ZOO_WEIGHTS["vgg19"])
    p.add_argument("--gpu", type=int, help="GPU id (default: CPU)")
    p.add_argument("--out", type=Path, help="plan directory (default runs/table1-<dataset>)")
    p.add_argument("--num-pairs", type=int, help="training pairs per setting (default: make_data's, capped)")
    p.add_argument("--max-iter", type=int, default=0, help="every run's max_iter (default: the schedules')")
    p.add_argument("--snapshot", type=int, default=0, help="every run's snapshot interval (default: the schedules')")
    p.add_argument("--verbose", action="store_true", help="print Caffe's whole log (default: <plan dir>/caffe.log)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from virality.console import caffe_logging
    out = (args.out or ROOT / "runs" / f"table1-{args.dataset}").resolve()
    caffe_log = caffe_logging(out / "caffe.log", args.verbose)      # before Caffe loads
    from virality.experiments.plan import PlanRunner, check_plan, table1_plan
    from virality.experiments.runs import DataSource, RunError
    from virality.train.training import Interrupted

    archs = args.archs or (["tiny"] if args.dataset == "synthetic" else ["alexnet", "vgg19"])
    weights = {}
    for arch in archs:
        if arch in ZOO_WEIGHTS:
            path = getattr(args, f"weights_{arch}").resolve()
            if not path.is_file():
                print(f"table1: error: {path} not found: the {arch} towers start from ImageNet weights; fetch them "
                      f"(make weights MODEL={ZOO_WEIGHTS[arch].stem}) or pass --weights-{arch}", file=sys.stderr)
                return 2
            weights[arch] = str(path)
    if args.dataset == "deza2015" and not args.images:
        print("table1: error: the deza2015 images are not shipped: pass IMAGES=<dir of <img_id>.jpg>",
              file=sys.stderr)
        return 2
    data_root = str(DATA_DIR)
    abspath = lambda p: str(p.resolve()) if p else None  # noqa: E731
    source = DataSource(args.dataset, data_dir=abspath(args.data_dir), images=abspath(args.images),
                        data_root=data_root, num_pairs=args.num_pairs)
    if caffe_log:
        print(f"table1: Caffe's full log: {caffe_log}", flush=True)
    try:
        names = args.settings or _settings(source)
        common = dict(max_iter=args.max_iter, snapshot=args.snapshot, weights=weights)
        entries = table1_plan(source, names, archs, out, **common)
        if args.popularity:
            pop = DataSource("popularity", data_dir=abspath(args.popularity), images=abspath(args.popularity_images),
                             data_root=data_root, num_pairs=args.num_pairs)
            # The popularity data has no topics: TPVCNN is not applicable there (marked "-" in the table).
            entries += table1_plan(pop, list(POPULARITY_SETTINGS), archs, out, kinds=("pvcnn",), **common)
        check_plan(entries)
        print(f"table1: {len(entries)} runs under {out}: " + ", ".join(e.name for e in entries), flush=True)
        report = PlanRunner(entries, out, title=f"Table 1 on {args.dataset}", gpu=args.gpu,
                            log=lambda m: print(f"table1: {m}", flush=True)).run()
    except Interrupted as err:
        print(f"table1: stopped by {err}; the same command skips the finished runs and continues this one from "
              "that snapshot", file=sys.stderr)
        return 128 + err.signum
    except (RunError, ValueError, OSError) as err:
        print(f"table1: error: {err}", file=sys.stderr)
        return 2
    print(report.read_text())
    return 0


def _settings(source):
    """Table 1's settings in its column order (complete, top_bottom, random), the image-disjoint
    variant of each first; complete is its 5 folds (complete_fold0..4; the table adds their mean)."""
    if source.dataset == "synthetic":
        return ["random_disjoint", "random"]      # a scores table's settings; its world is generated later
    ds = source.load()
    columns = [c for c in ("complete", "top_bottom", "random")
               if any(re.fullmatch(rf"{c}(_fold\d+)?", s) for s in ds.settings)]
    if not columns:
        return sorted(ds.settings, key=lambda s: (s.removesuffix("_disjoint"), not s.endswith("_disjoint")))
    names = []
    for column in columns:
        for base in sorted(s for s in ds.settings if re.fullmatch(rf"{column}(_fold\d+)?", s)):
            names += [n for n in (base + "_disjoint", base) if n in ds.settings]
    return names


if __name__ == "__main__":
    sys.exit(main())
