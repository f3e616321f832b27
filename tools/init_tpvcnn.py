#!/usr/bin/env python3
"""Make the initialisation caffemodel of a TPVCNN model (paper Sec. 2.5).

    .venv/bin/python tools/init_tpvcnn.py alexnet_tpvcnn \
        --imagenet models/pretrained/bvlc_alexnet.caffemodel \
        --topic models/alexnet_topic/alexnet_topic_iter_20000.caffemodel
    make train MODEL=alexnet_tpvcnn WEIGHTS=models/alexnet_tpvcnn/init.caffemodel

The ranking tower (conv1..fc7, shared by both towers) takes the ImageNet
weights; the frozen topic branch (topic_conv1..topic_fc7) takes the Topic-CNN
snapshot's conv1..fc7. The output holds exactly these layers; the scoring layer
keeps its Gaussian initialisation at training time. Every copied layer is
checked, and the written file is loaded back into the two-tower net and checked
again; a loading report is printed for each step. tiny_tpvcnn takes no
ImageNet weights (omit --imagenet).

Exit status: 0 ok, 1 the weights do not fit or were not all loaded (the message says which).
"""
import argparse
import sys
from pathlib import Path

from virality.model.nets import MODELS
from virality.paths import MODELS_DIR
from virality.pretrained.weights import WeightsError, make_tpvcnn_init


def main(argv=None):
    tpvcnn = sorted(m for m in MODELS if m.endswith("_tpvcnn"))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", choices=tpvcnn, metavar="MODEL", help=f"one of {', '.join(tpvcnn)}")
    parser.add_argument("--imagenet", type=Path, help="ImageNet weights (Model Zoo caffemodel) for the ranking tower")
    parser.add_argument("--topic", type=Path, required=True,
                        help="Topic-CNN snapshot (<arch>_topic) for the topic branch")
    parser.add_argument("--out", type=Path, help="output caffemodel (default: models/<model>/init.caffemodel)")
    args = parser.parse_args(argv)

    out = args.out or MODELS_DIR / args.model / "init.caffemodel"
    print(f"init_tpvcnn: model={args.model} imagenet={args.imagenet} topic={args.topic} out={out}", file=sys.stderr)
    try:
        reports = make_tpvcnn_init(args.model, args.imagenet, args.topic, out)
    except WeightsError as e:
        print(f"init_tpvcnn: FAILED: {e}", file=sys.stderr)
        return 1
    for report in reports:
        print(report.format(), file=sys.stderr)
    print(f"init_tpvcnn: wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
