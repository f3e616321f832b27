#!/usr/bin/env python3
"""Train a model with pycaffe, adding what `caffe train` lacks (virality/train/training.py).

    .venv/bin/python tools/train.py --model tiny_pvcnn
    .venv/bin/python tools/train.py --model alexnet_pvcnn --weights models/pretrained/bvlc_alexnet.caffemodel \
        --gpu 0 --lr-drops plateau
    .venv/bin/python tools/train.py --model tiny_pvcnn --resume models/tiny_pvcnn/tiny_pvcnn_iter_500.solverstate
    .venv/bin/python tools/train.py --model alexnet_pvcnn --gpus 0,1,2,3 ...   # data-parallel, NCCL (docs/GPU.md)

Validation (the solver's test net) reads the setting's D_val, never D_test (docs/PROTOCOL.md).
Writes under --out (default models/<model>/): snapshots, train_log.csv, train_curves.png,
solver.effective.prototxt, run.json (setting, weights, from_scratch), and caffe.log: Caffe's
whole log (the console keeps its warnings and errors; --verbose prints it all, --log moves it). An alexnet/vgg19 model
without --weights refuses to start unless --from-scratch. Exit status 3 when the loss became
non-finite; 4 when a snapshot could not be written (disk full, read-only); 5 when a solver
rank of --gpus failed; 130 / 143 after Ctrl-C (SIGINT) / SIGTERM, which stop training after
the current iteration, write a snapshot there and print the command that resumes
(docs/FAILURES.md).
"""
import argparse
import shlex
import signal
import sys
from pathlib import Path

from virality.paths import ROOT
from virality.train.preflight import seed_argument


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="model name, e.g. tiny_pvcnn (solvers/<model>.prototxt)")
    p.add_argument("--solver", type=Path, help="solver file (default solvers/<model>.prototxt)")
    p.add_argument("--weights", type=Path, action="append", default=[],
                   help="caffemodel(s) to initialise from (repeatable)")
    p.add_argument("--resume", type=Path, help="a .solverstate to continue from")
    p.add_argument("--gpu", type=int, help="GPU id (default: CPU)")
    p.add_argument("--gpus", help="data-parallel training on these GPUs, e.g. 0,1: one solver process per GPU "
                                  "through Caffe's NCCL; each reads its share of every batch, so the effective "
                                  "batch is (number of GPUs) x the net's batch_size (docs/GPU.md)")
    p.add_argument("--lr-drops", choices=["steps", "plateau"], default="steps",
                   help="steps: the solver's three fixed drops; plateau: drop x0.1 (at most 3 times) when "
                        "validation accuracy stops improving (the paper's wording, Sec. 3)")
    p.add_argument("--val-interval", type=int, default=0, help="iterations between validations (default: solver's)")
    p.add_argument("--patience", type=int, default=3, help="plateau: validations without improvement before a drop")
    p.add_argument("--max-iter", type=int, default=0, help="override the solver's max_iter")
    p.add_argument("--snapshot-interval", type=int, default=0, help="override the solver's snapshot interval")
    p.add_argument("--seed", type=seed_argument, default=1701, help="seed of numpy and Caffe")
    p.add_argument("--out", type=Path, help="output directory (default models/<model>)")
    p.add_argument("--from-scratch", action="store_true",
                   help="train an alexnet/vgg19 model without ImageNet weights on purpose (said loudly, recorded)")
    p.add_argument("--log", type=Path, help="Caffe's full log (default <out>/caffe.log)")
    p.add_argument("--verbose", action="store_true", help="print Caffe's whole log on the console too")
    p.add_argument("--workdir", type=Path, default=ROOT,
                   help="directory the nets' relative data paths resolve from (default: repo root)")
    return p.parse_args(argv)


def resume_command(argv, state):
    """The command line that continues this run from ``state``: the same options, --resume replaced."""
    kept, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--resume":
            skip = True
        elif not a.startswith("--resume="):
            kept.append(a)
    return shlex.join([sys.executable, sys.argv[0], *kept, "--resume", str(state)])


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    workdir = args.workdir.resolve()
    solver = (args.solver or workdir / "solvers" / f"{args.model}.prototxt").resolve()
    if not solver.exists():
        print(f"train: solver {solver} not found (see `make nets`)", file=sys.stderr)
        return 2
    out = (args.out or workdir / "models" / args.model).resolve()
    from virality.train.multigpu import Leader, MultiGpuError, check_gpus, engine_has_nccl, parse_gpus
    gpus = None
    if args.gpus is not None:
        try:
            gpus = parse_gpus(args.gpus)
        except MultiGpuError as err:
            print(f"train: error: {err}", file=sys.stderr)
            return 2
        if args.gpu is not None:
            print("train: error: give --gpu or --gpus, not both", file=sys.stderr)
            return 2
        if not engine_has_nccl():
            print("train: error: --gpus needs an engine built with NCCL: `make caffe CUDA=1` "
                  "(USE_NCCL=1 is its default; docs/GPU.md)", file=sys.stderr)
            return 2
        try:
            check_gpus(gpus)
        except MultiGpuError as err:
            print(f"train: error: {err}", file=sys.stderr)
            return 2
        args.gpu = gpus[0]
    from virality.console import caffe_logging, config_lines
    caffe_log = caffe_logging((args.log or out / "caffe.log").resolve(), args.verbose)   # before Caffe loads

    import os
    os.chdir(workdir)   # Caffe resolves the nets' data sources from the cwd
    from virality.train.preflight import SCRATCH_BANNER, RunError, check_initialisation, write_run_record
    try:
        from_scratch = check_initialisation(args.model, args.weights or args.resume, args.from_scratch)
    except RunError as err:
        print(f"train: error: {err}", file=sys.stderr)
        return 2
    from virality.train.preflight import net_data_setting
    from virality.train.training import read_solver, resolve_net_path
    try:
        dataset, setting = net_data_setting(resolve_net_path(read_solver(solver).net, solver, workdir))
    except (RunError, OSError) as err:
        print(f"train: note: {err}", file=sys.stderr)
        dataset = setting = None
    out.mkdir(parents=True, exist_ok=True)
    record = write_run_record(out, model=args.model, dataset=dataset, setting=setting, solver=str(solver), weights=[str(w) for w in args.weights],
                              resume=str(args.resume) if args.resume else None, from_scratch=from_scratch,
                              command=sys.argv)
    if from_scratch:
        print(SCRATCH_BANNER.format(model=args.model, record=record), flush=True)
    from virality.report.plots import plot_training_curves, read_csv
    from virality.files import DiskError, TruncatedFile
    from virality.data.imagestore import StoreError
    from virality.data.pair_batches import PairDataError
    from virality.outputs import OutputLocked
    from virality.train.snapshots import SnapshotError
    from virality.train.training import Interrupted, NonFiniteLoss, TrainConfig, Trainer

    config = TrainConfig(solver_path=solver, out_dir=out, workdir=workdir,
                         weights=[w.resolve() for w in args.weights],
                         resume=args.resume.resolve() if args.resume else None, gpu=args.gpu,
                         lr_drops=args.lr_drops, val_interval=args.val_interval, patience=args.patience,
                         max_iter=args.max_iter, snapshot_interval=args.snapshot_interval, seed=args.seed)
    print(config_lines(f"train: {args.model}", config))
    if caffe_log:
        print(f"train: Caffe's full log: {caffe_log}" + ("" if args.verbose else " (--verbose to print it)"))
    status = 0
    trainer = None
    try:
        trainer = Trainer(config)
        if gpus:
            trainer.parallel = Leader(config, gpus)
        trainer.run()
    except NonFiniteLoss as err:
        print(f"train: error: {err}", file=sys.stderr)
        status = 3
    except Interrupted as err:
        print(f"train: stopped by {signal.Signals(err.signum).name} after iteration {err.iteration}; "
              f"snapshot {err.snapshot}\ntrain: resume with: {resume_command(argv, err.snapshot)}", file=sys.stderr)
        status = 128 + err.signum
    except MultiGpuError as err:
        print(f"train: error: {err}", file=sys.stderr)
        status = 5
    except (DiskError, SnapshotError, OutputLocked) as err:
        print(f"train: error: {err}", file=sys.stderr)
        status = 4
    except (StoreError, PairDataError, TruncatedFile, FileNotFoundError) as err:
        print(f"train: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:     # before the first iteration (later ones stop with a snapshot: Interrupted)
        print("train: interrupted before training started; nothing to resume", file=sys.stderr)
        return 130
    log = out / "train_log.csv"
    if log.exists():
        try:
            plot_training_curves(read_csv(log), out / "train_curves.png", title=args.model,
                                 n_val=getattr(trainer, "num_test", None))
            print(f"train: log {log}, curves {out / 'train_curves.png'}")
        except OSError as err:
            print(f"train: log {log}; the curves could not be written: {err}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
