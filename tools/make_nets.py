#!/usr/bin/env python3
"""Write every model's train_val/deploy prototxt and solver from one definition.

    .venv/bin/python tools/make_nets.py                 # all models, committed defaults
    .venv/bin/python tools/make_nets.py --models tiny_pvcnn --feed pair_index \
        --dataset synthetic --setting random_disjoint --out /tmp/nets

Outputs (under --out, default the repo root):
    prototxt/<model>/train_val.prototxt
    prototxt/<model>/deploy.prototxt
    solvers/<model>.prototxt
    models/<model>/.gitkeep       (Caffe needs the snapshot directory to exist)

The committed files are generated with the defaults; tests regenerate them and
fail on any difference. Never edit a generated file by hand.
"""
import argparse
import sys
from pathlib import Path

from virality.model.generated import generate
from virality.model.nets import FEEDS, MODELS, LossOptions
from virality.paths import ROOT
from virality.model.ranking import DEFAULT_EPSILON, DEFAULT_LAMBDA

def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=sorted(MODELS), choices=sorted(MODELS), metavar="MODEL",
                        help="models to write (default: all)")
    parser.add_argument("--out", type=Path, default=ROOT, help="output root (default: the repo root)")
    parser.add_argument("--feed", choices=FEEDS,
                        help="ranking models' data feed: Caffe-native pair LMDB or the pair-index Python layer "
                             "(default: pair_index for alexnet/vgg19, pair_lmdb for tiny)")
    parser.add_argument("--dataset", help="dataset under data/ (default: deza2015 for alexnet/vgg19, synthetic for tiny)")
    parser.add_argument("--setting", help="evaluation setting whose train/test pairs to read (docs/PROTOCOL.md)")
    parser.add_argument("--num-topics", type=int, help="Topic-CNN classes (default: 7 deza2015, 5 synthetic)")
    parser.add_argument("--batch-size", type=int, help="pairs (ranking) or images (topic) per forward pass "
                        "(default: the model's schedule, docs/TRAINING.md)")
    parser.add_argument("--iter-size", type=int, help="forward passes per update (default: the schedule's); an "
                        "update is the sum of Eq. 1 over all its pairs for any iter_size")
    parser.add_argument("--feed-workers", type=int, help="pair_index feed: worker processes that assemble the "
                        "TRAIN batches while Caffe steps (GPU training: 2-4; default 0, one thread; docs/GPU.md)")
    parser.add_argument("--test-batch", type=int, help="validation records per test pass (default: the schedule's)")
    parser.add_argument("--val-records", type=int, help="validation records (pairs, or Topic-CNN images) the "
                        "test phase reads exactly once (default: make_data's default split of the dataset)")
    parser.add_argument("--lambda", dest="lam", type=float, default=DEFAULT_LAMBDA,
                        help=f"weight of E_r (default {DEFAULT_LAMBDA}, Sec. 3)")
    parser.add_argument("--epsilon", type=float, default=DEFAULT_EPSILON,
                        help=f"bound of E_r's singularity (default {DEFAULT_EPSILON}, docs/LOSS.md)")
    parser.add_argument("--normalize", action="store_true", help="divide the loss by the batch size "
                        "(default: sum over the batch, Eq. 1)")
    args = parser.parse_args(argv)

    overrides = {k: v for k, v in dict(dataset=args.dataset, setting=args.setting, num_topics=args.num_topics,
                                       train_batch=args.batch_size, iter_size=args.iter_size,
                                       test_batch=args.test_batch, feed_workers=args.feed_workers).items()
                 if v is not None}
    try:
        loss = LossOptions(lam=args.lam, epsilon=args.epsilon, normalize=args.normalize)
    except ValueError as err:
        parser.error(str(err))
    print(f"make_nets: models={' '.join(args.models)} out={args.out} feed={args.feed or 'default'} "
          f"overrides={overrides} loss={loss} val_records={args.val_records or 'default'}")
    for model in args.models:
        try:
            data_cfg, paths = generate(model, args.out, args.feed, overrides, loss, args.val_records)
        except ValueError as err:
            print(f"make_nets: error: {model}: {err}", file=sys.stderr)
            return 2
        print(f"  {model}: data/{data_cfg.dataset}/{data_cfg.setting} ({data_cfg.feed}), batch "
              f"{data_cfg.train_batch} x iter_size {data_cfg.iter_size} -> "
              + ", ".join(str(p.relative_to(args.out)) for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
