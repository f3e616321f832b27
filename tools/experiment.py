#!/usr/bin/env python3
"""Your own attribute in one command: from a scores CSV or a pairs CSV and an image folder to a
trained, evaluated and released model in its own run directory (`make experiment`).

    .venv/bin/python tools/experiment.py --scores brightness.csv --images photos/ \
        --model tiny_pvcnn --attribute brightness
    .venv/bin/python tools/experiment.py --pairs colourfulness_pairs.csv --images photos/ \
        --model tiny_pvcnn --attribute colourfulness
    .venv/bin/python tools/experiment.py --scores memorability.csv --images photos/ --model alexnet_pvcnn \
        --weights models/pretrained/bvlc_alexnet.caffemodel --attribute memorability --gpu 0

The tables are docs/DATASETS.md's `scores-csv` (image,score[,topic]) and `pairs-csv`
(image_a,image_b,label). Everything lands in runs/<name>/ (default name <attribute>-<model>;
virality/experiments/runs.py): its data (image store at the model's size, pairs), nets and solver (absolute
paths: `caffe train -solver runs/<name>/solver.prototxt [-gpu N]` trains it too), snapshots,
log and curves, eval/report.md and release/ (for tools/predict.py). Calling the same command
again continues the run (training resumes from its last snapshot; finished stages are
skipped); a different experiment under an existing name is refused.

Defaults scale with the data: training pairs are the paper's 10M capped at what the data
allows (said in one line); the test set is the adapter's --test-fraction of the images, and a
test set too small for a useful interval gets a loud warning. The setting is random_disjoint
(no test image in any training pair). A TPVCNN needs a topic column: its Topic-CNN is trained
first, as the run <name>-topic.
"""
import argparse
import sys
from pathlib import Path

from virality.paths import ROOT
from virality.train.preflight import seed_argument


def parse_args(argv):
    # virality.model.nets loads Caffe, whose logging is set up after parsing (caffe_logging): the
    # choices come from the model table and feeds, listed here without importing it.
    MODELS = [f"{arch}_{kind}" for arch in ("tiny", "alexnet", "vgg19") for kind in ("pvcnn", "tpvcnn")]
    FEEDS = ("pair_lmdb", "pair_index")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    table = p.add_mutually_exclusive_group(required=True)
    table.add_argument("--scores", type=Path, help="image,score[,topic] table (one score per image)")
    table.add_argument("--pairs", type=Path, help="image_a,image_b,label table (+1: image_a has more)")
    p.add_argument("--images", type=Path, help="the image folder the table names files in "
                                               "(default: <table dir>/images or the table's directory)")
    p.add_argument("--model", default="tiny_pvcnn", choices=sorted(m for m in MODELS if not m.endswith("_topic")),
                   metavar="MODEL", help="ranking model (default tiny_pvcnn: minutes on a CPU)")
    p.add_argument("--attribute", help="what the score ranks, used in reports, release and predict output "
                                       "(default: the table's file name, e.g. brightness for brightness.csv)")
    p.add_argument("--name", help="run directory name under --runs-dir (default <attribute>-<model>)")
    p.add_argument("--runs-dir", type=Path, default=ROOT / "runs", help="where runs go (default runs/)")
    p.add_argument("--setting", default="random_disjoint", choices=("random_disjoint", "random"),
                   help="random_disjoint (default): no test image in any training pair; random: the seed "
                        "paper's protocol (test pairs held out, their images not)")
    p.add_argument("--test-fraction", type=float, help="held-out share (default: the table adapter's, "
                                                       "0.2 scores / 0.3 pairs; docs/DATASETS.md)")
    p.add_argument("--val-fraction", type=float, help="validation share, where the adapter has a validation "
                                                      "split (the protocol's D_val)")
    p.add_argument("--split-seed", type=int, help="seed of the held-out split (default: the adapter's)")
    p.add_argument("--num-pairs", type=int, help="training pairs (default: the paper's 10M, capped at what the "
                                                 "data allows)")
    p.add_argument("--feed", choices=FEEDS, default="pair_index",
                   help="training feed (default pair_index: no pair LMDB to build, exact resume)")
    p.add_argument("--weights", type=Path, help="ImageNet weights for alexnet/vgg19 towers (docs/WEIGHTS.md)")
    p.add_argument("--max-iter", type=int, default=0, help="iterations (default: the model's schedule)")
    p.add_argument("--gpu", type=int, help="GPU id (default: CPU)")
    p.add_argument("--seed", type=seed_argument, default=1701, help="training seed (numpy and Caffe)")
    p.add_argument("--verbose", action="store_true", help="print Caffe's whole log (default: <run>/caffe.log)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    table = (args.scores or args.pairs).resolve()
    dataset = "scores-csv" if args.scores else "pairs-csv"
    attribute = args.attribute or table.stem
    name = args.name or f"{attribute}-{args.model}"
    run_dir = (args.runs_dir / name).resolve()
    from virality.console import caffe_logging
    caffe_log = caffe_logging(run_dir / "caffe.log", args.verbose)     # before Caffe loads
    from virality.datasets.registry import dataset_options
    from virality.model.nets import FEEDS, MODELS, get_model
    from virality.experiments.runs import DataSource, RunDir, RunError, RunSpec, small_test_warning
    from virality.train.training import Interrupted

    if args.model not in MODELS or args.feed not in FEEDS:
        print(f"experiment: error: unknown --model {args.model} or --feed {args.feed}", file=sys.stderr)
        return 2
    model = get_model(args.model)
    if caffe_log:
        print(f"experiment: Caffe's full log: {caffe_log}" + ("" if args.verbose else " (--verbose to print it)"),
              flush=True)
    options = {}
    for key, value in (("test_fraction", args.test_fraction), ("val_fraction", args.val_fraction),
                       ("seed", args.split_seed)):
        if value is None:
            continue
        if key not in dataset_options(dataset):
            print(f"experiment: error: --{key.replace('_', '-')}: the {dataset} adapter has no '{key}' option "
                  f"(its options: {', '.join(sorted(dataset_options(dataset)))})", file=sys.stderr)
            return 2
        options[key] = value
    if args.weights is None and model.architecture.pretrained:
        print(f"experiment: error: {args.model} starts from ImageNet weights: pass --weights "
              f"(make weights MODEL=bvlc_alexnet or VGG_ILSVRC_19_layers; docs/WEIGHTS.md), or use a tiny_* model",
              file=sys.stderr)
        return 2
    source = DataSource(dataset, data_dir=str(table), images=str(args.images.resolve()) if args.images else None,
                        options=options, data_root=str(run_dir / "data"), num_pairs=args.num_pairs)
    weights = str(args.weights.resolve()) if args.weights else None
    common = dict(attribute=attribute, max_iter=args.max_iter, weights=weights, seed=args.seed)
    print(f"experiment: {attribute} from {table} ({dataset}), images {args.images or 'beside the table'}, "
          f"model {args.model}, setting {args.setting}, run {run_dir}, {'GPU ' + str(args.gpu) if args.gpu is not None else 'CPU'}",
          flush=True)
    try:
        topic = None
        if model.kind == "tpvcnn":
            topic_spec = RunSpec(f"{model.arch}_topic", args.setting, source, **common)
            topic = RunDir.open(run_dir.with_name(f"{name}-topic"), topic_spec)
        spec = RunSpec(args.model, args.setting, source, feed=args.feed,
                       topic_run=str(topic.path) if topic else None, **common)
        run = RunDir.open(run_dir, spec)
        if run.finished:
            run.check_data()
            print(f"experiment: {run.path} is finished; nothing to do (a new experiment needs another --name)")
        else:
            summary = source.build([model.architecture.image_size], [args.setting], "none")
            split = summary["settings"][args.setting]
            print(f"experiment: {split['train_pairs']:,} training pairs ({split['possible_pairs']:,} possible), "
                  f"{split['test_pairs']} test pairs", flush=True)
            warning = small_test_warning(split["test_pairs"])
            if warning:
                print("\n" + "!" * 100 + f"\n{warning}\n" + "!" * 100 + "\n", file=sys.stderr, flush=True)
            if topic is not None:
                topic.run(summary, gpu=args.gpu)
            run.run(summary, gpu=args.gpu)
    except Interrupted as err:
        print(f"experiment: stopped by {err}; the same command continues from that snapshot", file=sys.stderr)
        return 128 + err.signum
    except (RunError, ValueError, OSError) as err:
        print(f"experiment: error: {err}", file=sys.stderr)
        return 2
    ev = run.status()["evaluated"]
    print(f"experiment: {attribute}: pairwise accuracy {100 * ev['value']:.2f}% "
          f"(95% interval {100 * ev['low']:.2f}-{100 * ev['high']:.2f}) on {ev['n']} held-out pairs, chance 50%")
    print(f"experiment: report {run.eval_dir / 'report.md'}; curves {run.train_dir / 'train_curves.png'}")
    print(f"experiment: release {run.release_dir}; rank new images with\n"
          f"    .venv/bin/python tools/predict.py {run.release_dir} <images or folders>")
    return 0


if __name__ == "__main__":
    sys.exit(main())
