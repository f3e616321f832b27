#!/usr/bin/env python3
"""`make train`: the faithful command-line path, `caffe train -solver solvers/<model>.prototxt`,
with the steps a model needs first done in order.

    .venv/bin/python tools/caffe_train.py tiny_pvcnn
    .venv/bin/python tools/caffe_train.py alexnet_pvcnn --weights models/pretrained/bvlc_alexnet.caffemodel --gpu 0
    .venv/bin/python tools/caffe_train.py alexnet_tpvcnn --gpu 0     # topic CNN first if needed

- Given --weights for a model whose towers take Model Zoo weights, the file is checked first
  (virality.pretrained.weights: every pretrained layer must load into both towers), so a wrong file
  fails before training instead of being ignored by Caffe. Without --weights such a model
  refuses to start unless --from-scratch (FROM_SCRATCH=1) is given; then it says so loudly
  and models/<model>/run.json records it (virality.train.preflight).
- Caffe's test phase must read the validation set (D_val) exactly once: test_iter x the TEST
  batch is checked against the validation records before Caffe starts.
- A TPVCNN needs its Topic-CNN, trained for the same setting (only on images the ranking model
  may train on, docs/PROTOCOL.md): when models/<arch>_topic/ has no final snapshot, the
  Topic-CNN is trained first (with the same --weights, ImageNet, for alexnet/vgg19); a snapshot
  recorded for another setting is an error. Then tools/init_tpvcnn.py writes
  models/<model>/init.caffemodel (ImageNet weights in the ranking tower, the Topic-CNN in the
  frozen branch), and that is the -weights of the run.
"""
import argparse
import os
import subprocess
import sys
from pathlib import Path

from virality.model.nets import MODELS, get_model
from virality.paths import MODELS_DIR, ROOT, SOLVER_DIR
from virality.deploy.release import default_snapshot

CAFFE = ROOT / ".venv" / "bin" / "caffe"


def caffe_train(model, weights=None, gpu=None, from_scratch=False):
    from virality.train.preflight import SCRATCH_BANNER, check_test_coverage, net_data_setting, write_run_record
    from virality.train.training import read_solver
    from virality.pretrained.weights import read_net_param

    model_dir = MODELS_DIR / model
    model_dir.mkdir(parents=True, exist_ok=True)
    solver_path = SOLVER_DIR / f"{model}.prototxt"
    solver = read_solver(solver_path)
    net_path = ROOT / solver.net
    val_records = check_test_coverage(solver, read_net_param(net_path), ROOT)
    cmd = [str(CAFFE), "train", "-solver", f"solvers/{model}.prototxt"]
    if weights:
        cmd += ["-weights", str(weights)]
    if gpu is not None:
        cmd += ["-gpu", str(gpu)]
    dataset, setting = net_data_setting(net_path)
    record = write_run_record(model_dir, model=model, dataset=dataset, setting=setting, solver=str(solver_path),
                              weights=str(weights) if weights else None, from_scratch=bool(from_scratch),
                              val_records=val_records, command=cmd)
    if from_scratch:
        print(SCRATCH_BANNER.format(model=model, record=record), flush=True)
    print(f"caffe_train: {model} on {dataset}/{setting} (test phase: {val_records} validation records); "
          + " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)


def check_topic_setting(model, topic):
    """The Topic-CNN snapshot must come from the TPVCNN's setting (its training images depend on it)."""
    from virality.train.preflight import net_data_setting, read_run_record

    want = net_data_setting(ROOT / "prototxt" / model / "train_val.prototxt")
    net = net_data_setting(ROOT / "prototxt" / topic / "train_val.prototxt")
    if net != want:
        sys.exit(f"caffe_train: error: prototxt/{topic} trains on {'/'.join(net)} but {model} on "
                 f"{'/'.join(want)}: generate both for one setting (tools/make_nets.py --setting ...)")
    record = read_run_record(MODELS_DIR / topic)
    if record is None or record.get("setting") is None:
        print(f"caffe_train: note: models/{topic}/ has no run record of its setting: cannot check which setting its snapshot "
              f"was trained for (expected {'/'.join(want)})", flush=True)
    elif (record.get("dataset"), record.get("setting")) != want:
        sys.exit(f"caffe_train: error: the snapshot in models/{topic}/ was trained for "
                 f"{record.get('dataset')}/{record.get('setting')}, not {'/'.join(want)}: its training images "
                 f"may hold this setting's test images. Move it away to retrain it for this setting")


def check_weights(model, weights):
    from virality.pretrained.weights import WeightsError, load_pretrained
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
    p.add_argument("--from-scratch", action="store_true",
                   help="train an alexnet/vgg19 model without ImageNet weights on purpose (said loudly, recorded)")
    args = p.parse_args(argv)
    os.environ.setdefault("GLOG_logtostderr", "1")
    from virality.train.preflight import RunError, check_initialisation
    model = get_model(args.model)
    weights = args.weights.resolve() if args.weights else None

    try:
        if model.kind == "tpvcnn":
            if not weights and model.architecture.pretrained:
                sys.exit(f"caffe_train: error: {args.model} takes ImageNet weights for its ranking tower: "
                         f"pass WEIGHTS=... (make weights MODEL=<zoo model>)")
            topic = f"{model.arch}_topic"
            check_topic_setting(args.model, topic)
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
            subprocess.run(cmd, check=True)
            caffe_train(args.model, init, args.gpu)
            return 0

        from_scratch = check_initialisation(args.model, weights, args.from_scratch)
        if weights:
            check_weights(args.model, weights)
        caffe_train(args.model, weights, args.gpu, from_scratch=from_scratch)
    except (RunError, FileNotFoundError) as err:
        sys.exit(f"caffe_train: error: {err}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
