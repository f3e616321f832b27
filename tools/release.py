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
replaces an existing release (--force). virality.deploy.release.read_release() is
what tools/predict.py uses to read it back.

Ranking models also get the score distribution of their training images (so predict can
say an image's percentile): the images of the training pairs (--pairs, default: what
prototxt/<model>/train_val.prototxt trains on, data/<dataset>/<setting>/pairs_train.npy),
read from the image store (--store, default data/<dataset>/images_<size>_lmdb), at most
--distribution-limit of them, scored by the released weights. --no-score-distribution skips it.

Exit status: 0 ok, 1 the release could not be made (the message says why).
"""
import argparse
import sys
from pathlib import Path

from virality.console import caffe_logging, config_lines
from virality.deploy.release import DISTRIBUTION_LIMIT, ReleaseError   # no caffe import: logging is set up first


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", metavar="MODEL", help="a model name: {alexnet,vgg19,tiny}_{pvcnn,tpvcnn,topic}")
    parser.add_argument("--snapshot", type=Path, help="trained caffemodel (default: the solver's final snapshot)")
    parser.add_argument("--out", type=Path, help="release directory (default: models/<model>/release)")
    parser.add_argument("--trained-on", help="free text recorded in metadata.json (dataset, setting, notes)")
    parser.add_argument("--force", action="store_true", help="replace an existing release directory")
    parser.add_argument("--attribute", default="virality",
                        help="what the score ranks, recorded in metadata.json (default virality)")
    parser.add_argument("--pairs", type=Path, help="training pairs (.npy) whose images give the score distribution")
    parser.add_argument("--store", type=Path, help="image store holding those images")
    parser.add_argument("--distribution-limit", type=int, default=DISTRIBUTION_LIMIT,
                        help=f"score at most this many training images (default {DISTRIBUTION_LIMIT}; 0: all)")
    parser.add_argument("--no-score-distribution", action="store_true",
                        help="make the release without one (predict then reports no percentiles)")
    parser.add_argument("--log", type=Path, help="Caffe's full log goes to this file")
    parser.add_argument("--verbose", action="store_true", help="print Caffe's whole log on the console")
    args = parser.parse_args(argv)

    caffe_logging(args.log, args.verbose)
    from virality.model.nets import MODELS, get_model
    from virality.deploy.release import default_snapshot, make_release, release_dir, training_reference
    if args.model not in MODELS:
        parser.error(f"unknown model '{args.model}'; one of {', '.join(sorted(MODELS))}")
    try:
        snapshot = args.snapshot or default_snapshot(args.model)
        out = args.out or release_dir(args.model)
        reference = None
        if not args.no_score_distribution and get_model(args.model).kind != "topic":
            store, pairs = training_reference(args.model)
            store, pairs = args.store or store, args.pairs or pairs
            if store is None or pairs is None:
                raise ReleaseError(f"cannot tell which images {args.model} was trained on; pass --store and "
                                   "--pairs, or --no-score-distribution")
            if (args.store or args.pairs) or (pairs.is_file() and store.is_dir()):
                reference = (store, pairs)      # given explicitly: a missing file is an error, below
            else:
                print(f"release: WARNING: no score distribution: the training data ({pairs}, {store}) is not "
                      "here, so predict will report no percentiles; build it (make data) and remake the "
                      "release, or pass --pairs/--store (--no-score-distribution silences this)", file=sys.stderr)
        print(config_lines("release", dict(model=args.model, snapshot=snapshot, out=out, force=args.force,
                                           attribute=args.attribute,
                                           score_distribution=" + ".join(map(str, reference)) if reference
                                           else "none")), file=sys.stderr)
        release, report = make_release(args.model, snapshot=snapshot, out_dir=out, trained_on=args.trained_on,
                                       force=args.force, reference=reference,
                                       distribution_limit=args.distribution_limit, attribute=args.attribute)
    except ReleaseError as e:
        print(f"release: FAILED: {e}", file=sys.stderr)
        return 1
    print(report.format(), file=sys.stderr)
    print(f"release: {release.dir}: {release.deploy.name}, {release.caffemodel.name} "
          f"(sha256 {release.metadata['caffemodel_sha256']}), metadata.json, SHA256SUMS")
    dist = release.score_distribution
    if dist:
        q = dist["quantiles"]
        print(f"release: f_r of {dist['n']} training images: median {q[50]:.4f}, 5th-95th percentile "
              f"{q[5]:.4f} .. {q[95]:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
