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

from virality.generated import generate
from virality.nets import FEEDS, MODELS
from virality.paths import ROOT

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
    args = parser.parse_args(argv)

    overrides = {k: v for k, v in dict(dataset=args.dataset, setting=args.setting,
                                       num_topics=args.num_topics).items() if v is not None}
    print(f"make_nets: models={' '.join(args.models)} out={args.out} feed={args.feed or 'default'} "
          f"overrides={overrides}")
    for model in args.models:
        data_cfg, paths = generate(model, args.out, args.feed, overrides)
        print(f"  {model}: data/{data_cfg.dataset}/{data_cfg.setting} ({data_cfg.feed}) -> "
              + ", ".join(str(p.relative_to(args.out)) for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
