#!/usr/bin/env python3
"""`make train`: the faithful command-line path, `caffe train -solver solvers/<model>.prototxt`,
with the steps a model needs first done in order.

    .venv/bin/python tools/caffe_train.py tiny_pvcnn
    .venv/bin/python tools/caffe_train.py alexnet_pvcnn --weights models/pretrained/bvlc_alexnet.caffemodel --gpu 0
    .venv/bin/python tools/caffe_train.py alexnet_tpvcnn --gpu 0     # topic CNN first if needed

- Given --weights for a model whose towers take Model Zoo weights, the file is checked first
  (virality.weights: every pretrained layer must load into both towers), so a wrong file
  fails before training instead of being ignored by Caffe.
- A TPVCNN needs its Topic-CNN: when models/<arch>_topic/ has no final snapshot, the
  Topic-CNN is trained first (with the same --weights, ImageNet, for alexnet/vgg19); then
  tools/init_tpvcnn.py writes models/<model>/init.caffemodel (ImageNet weights in the
  ranking tower, the Topic-CNN in the frozen branch), and that is the -weights of the run.
"""
import argparse
import os
import subprocess
import sys
from pathlib import Path

from virality.nets import MODELS, get_model
from virality.paths import MODELS_DIR, ROOT, SOLVER_DIR
from virality.release import default_snapshot

CAFFE = ROOT / ".venv" / "bin" / "caffe"


def caffe_train(model, weights=None, gpu=None):
    (MODELS_DIR / model).mkdir(parents=True, exist_ok=True)
    cmd = [str(CAFFE), "train", "-solver", f"solvers/{model}.prototxt"]
    if weights:
        cmd += ["-weights", str(weights)]
    if gpu is not None:
        cmd += ["-gpu", str(gpu)]
    print("caffe_train: " + " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)


def check_weights(model, weights):
    from virality.weights import WeightsError, load_pretrained
    if not get_model(model).architecture.pretrained:
        return
    try:
        load_pretrained(model, weights)
    except WeightsError as err:
        sys.exit(f"caffe_train: error: {weights} does not initialise {model}: {err}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", choices=sorted(MODELS), metavar="MODEL")
    p.add_argument("--weights", type=Path, help="ImageNet weights (alexnet/vgg19) or any caffemodel to start from")
    p.add_argument("--gpu", type=int)
    args = p.parse_args(argv)
    os.environ.setdefault("GLOG_logtostderr", "1")
    model = get_model(args.model)
    weights = args.weights.resolve() if args.weights else None

    if model.kind == "tpvcnn":
        topic = f"{model.arch}_topic"
        topic_snapshot = default_snapshot(topic)
        if not topic_snapshot.exists():
            print(f"caffe_train: {args.model} needs the Topic-CNN {topic}: training it first", flush=True)
            if weights:
                check_weights(topic, weights)
            caffe_train(topic, weights, args.gpu)
        init = MODELS_DIR / args.model / "init.caffemodel"
        cmd = [sys.executable, str(ROOT / "tools/init_tpvcnn.py"), args.model, "--topic", str(topic_snapshot),
               "--out", str(init)]
        if weights:
            cmd += ["--imagenet", str(weights)]
        elif model.architecture.pretrained:
            sys.exit(f"caffe_train: error: {args.model} takes ImageNet weights for its ranking tower: "
                     f"pass WEIGHTS=... (make weights MODEL=<zoo model>)")
        subprocess.run(cmd, check=True)
        caffe_train(args.model, init, args.gpu)
        return 0

    if weights:
        check_weights(args.model, weights)
    caffe_train(args.model, weights, args.gpu)
    return 0


if __name__ == "__main__":
    sys.exit(main())
