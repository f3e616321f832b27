#!/usr/bin/env python3
"""Package a trained model for prediction: models/<model>/release/.

    .venv/bin/python tools/release.py tiny_pvcnn                       # make release MODEL=tiny_pvcnn
    .venv/bin/python tools/release.py alexnet_pvcnn --snapshot models/alexnet_pvcnn/alexnet_pvcnn_iter_50000.caffemodel \
        --trained-on "deza2015 top_bottom, 100k iterations" --force

Without --snapshot the solver's final snapshot is used
(<snapshot_prefix>_iter_<max_iter>.caffemodel, from solvers/<model>.prototxt).
The snapshot is loaded into prototxt/<model>/deploy.prototxt with every layer
required (a loading report is printed); the directory gets deploy.prototxt,
<model>.caffemodel, metadata.json and SHA256SUMS, and is validated before it
replaces an existing release (--force). virality.release.read_release() is
what tools/predict.py uses to read it back.

Exit status: 0 ok, 1 the release could not be made (the message says why).
"""
import argparse
import sys
from pathlib import Path

from virality.nets import MODELS
from virality.release import ReleaseError, default_snapshot, make_release, release_dir


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", choices=sorted(MODELS), metavar="MODEL", help=f"one of {', '.join(sorted(MODELS))}")
    parser.add_argument("--snapshot", type=Path, help="trained caffemodel (default: the solver's final snapshot)")
    parser.add_argument("--out", type=Path, help="release directory (default: models/<model>/release)")
    parser.add_argument("--trained-on", help="free text recorded in metadata.json (dataset, setting, notes)")
    parser.add_argument("--force", action="store_true", help="replace an existing release directory")
    args = parser.parse_args(argv)

    try:
        snapshot = args.snapshot or default_snapshot(args.model)
        out = args.out or release_dir(args.model)
        print(f"release: model={args.model} snapshot={snapshot} out={out} force={args.force}", file=sys.stderr)
        release, report = make_release(args.model, snapshot=snapshot, out_dir=out, trained_on=args.trained_on,
                                       force=args.force)
    except ReleaseError as e:
        print(f"release: FAILED: {e}", file=sys.stderr)
        return 1
    print(report.format(), file=sys.stderr)
    print(f"release: {release.dir}: {release.deploy.name}, {release.caffemodel.name} "
          f"(sha256 {release.metadata['caffemodel_sha256']}), metadata.json, SHA256SUMS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
