#!/usr/bin/env python3
"""Measure what L2 weight decay does to a ranking net: weight norms and fc7 activations over a run.

    .venv/bin/python tools/weight_norms.py --solver demo/nets/random/solvers/tiny_pvcnn.prototxt \
        --weight-decay 0.05 0.0005 --max-iter 1000 --every 100 --out demo/weight_norms.csv

For each --weight-decay, trains the solver's net from the same initialisation (seed) on CPU and
records every --every iterations: the L2 norm of all learned weights, of fc7's and of the score
layer's weights, the mean L2 norm of the fc7 activations of a training batch, the mean |f1 - f2|,
and the training loss and accuracy of that batch. docs/TRAINING.md reports one run.
"""
import argparse
import csv
import io
import os
import sys
from pathlib import Path

os.environ.setdefault("GLOG_minloglevel", "2")

from virality.paths import ROOT  # noqa: E402

FIELDS = ["weight_decay", "iteration", "weights_norm", "fc7_w_norm", "score_w_norm", "fc7_activation_norm",
          "mean_abs_score_diff", "loss", "accuracy"]


def measure(solver_path, weight_decay, max_iter, every, seed):
    import caffe
    import numpy as np
    from google.protobuf import text_format

    from virality.train.training import read_solver, resolve_net_path

    param = read_solver(solver_path)
    param.net = str(resolve_net_path(param.net, solver_path, ROOT))
    param.weight_decay = weight_decay
    param.max_iter, param.test_interval, param.snapshot = max_iter, 10 ** 9, 0
    param.random_seed = seed
    tmp = Path(solver_path).with_name(f".weight_norms_{weight_decay:g}.prototxt")
    tmp.write_text(text_format.MessageToString(param))
    caffe.set_mode_cpu()
    caffe.set_random_seed(seed)
    try:
        solver = caffe.get_solver(str(tmp))
    finally:
        tmp.unlink()
    rows = []
    while solver.iter <= max_iter:
        if solver.iter % every == 0:
            net = solver.net
            learned = [b.data for name, blobs in net.params.items() if not name.endswith("_p") for b in blobs[:1]]
            rows.append(dict(
                weight_decay=weight_decay, iteration=solver.iter,
                weights_norm=float(np.sqrt(sum(float((w ** 2).sum()) for w in learned))),
                fc7_w_norm=float(np.linalg.norm(net.params["fc7"][0].data)),
                score_w_norm=float(np.linalg.norm(net.params["score"][0].data)),
                fc7_activation_norm=float(np.linalg.norm(net.blobs["fc7"].data.reshape(len(net.blobs["fc7"].data), -1),
                                                         axis=1).mean()),
                mean_abs_score_diff=float(np.abs(net.blobs["score"].data - net.blobs["score_p"].data).mean()),
                loss=float(net.blobs["loss"].data), accuracy=float(net.blobs["accuracy"].data)))
            print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in rows[-1].items()),
                  flush=True)
        if solver.iter == max_iter:
            break
        solver.step(1)
    solver = None
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--solver", type=Path, required=True)
    p.add_argument("--weight-decay", type=float, nargs="+", default=[0.05])
    p.add_argument("--max-iter", type=int, default=1000)
    p.add_argument("--every", type=int, default=100)
    p.add_argument("--seed", type=int, default=1701)
    p.add_argument("--out", type=Path, help="CSV of the measurements")
    args = p.parse_args(argv)
    os.chdir(ROOT)     # Caffe resolves the nets' data sources from the cwd
    rows = []
    for wd in args.weight_decay:
        rows += measure(args.solver.resolve(), wd, args.max_iter, args.every, args.seed)
    if args.out:
        from virality.files import write_text_atomic
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
        write_text_atomic(args.out, buffer.getvalue())
        print(f"weight_norms: wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
