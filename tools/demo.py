#!/usr/bin/env python3
"""The main job on the embedded synthetic dataset (`make demo`): the Table 1 plan of runs with the
tiny models on CPU (tiny_topic, then tiny_pvcnn and tiny_tpvcnn on random_disjoint and random),
each trained, evaluated and released in its own run directory under demo/; the table in
demo/report.md.

    .venv/bin/python tools/demo.py                 # the full demo (about 3 minutes on 2 cores)
    .venv/bin/python tools/demo.py --max-iter 100  # a quick smoke run (into another --out, or --restart)

A second call skips finished runs and resumes an interrupted one; --restart starts afresh.
See virality/experiments/demo.py for the steps.
"""
import argparse
import sys
from pathlib import Path

from virality.paths import DEMO_DIR


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=DEMO_DIR, help="output directory (default demo/)")
    p.add_argument("--max-iter", type=int, default=0, help="override every solver's max_iter (smoke runs)")
    p.add_argument("--num-pairs", type=int, help="training pairs per setting (default: make_data's)")
    p.add_argument("--restart", action="store_true", help="remove the previous demo under --out first")
    p.add_argument("--verbose", action="store_true", help="print Caffe's whole log (default: <out>/caffe.log)")
    args = p.parse_args(argv)
    print(f"demo: out={args.out} max_iter={args.max_iter or 'solver default'} num_pairs={args.num_pairs or 'default'}")
    from virality.experiments.demo import run
    try:
        run(args.out, max_iter=args.max_iter, num_pairs=args.num_pairs, restart=args.restart, verbose=args.verbose)
    except Exception as err:        # virality.experiments.runs loads Caffe, so it is imported after its logging is set
        from virality.experiments.runs import RunConflict, RunError
        if isinstance(err, RunConflict):
            print(f"demo: error: {err}\ndemo: --restart starts the demo afresh (or pass another --out)",
                  file=sys.stderr)
            return 2
        if isinstance(err, RunError):
            print(f"demo: error: {err}", file=sys.stderr)
            return 2
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
