#!/usr/bin/env python3
"""Explain a model's virality scores with nearest neighbours (the paper's Fig. 2).

    .venv/bin/python tools/neighbours.py --model tiny_pvcnn --dataset synthetic \
        --snapshot demo/models/random/tiny_pvcnn/tiny_pvcnn_iter_1000.caffemodel --out neighbours.png

Computes the pre-final-layer features (the scoring layer's input) of the images in
the dataset's image store (or --limit of them), picks queries (--queries IDS, or the
--num-queries most and least viral by predicted score), and writes a PNG grid of each
query's --k nearest neighbours (cosine similarity) with their scores.
"""
import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("GLOG_minloglevel", "2")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="ranking model name (deploy net prototxt/<model>/deploy.prototxt)")
    p.add_argument("--snapshot", type=Path, required=True, help="trained caffemodel")
    p.add_argument("--deploy", type=Path, help="deploy prototxt (default prototxt/<model>/deploy.prototxt)")
    p.add_argument("--dataset", required=True, help="dataset whose image store to search (data/<dataset>/)")
    p.add_argument("--store", type=Path, help="image store (default data/<dataset>/images_<size>_lmdb)")
    p.add_argument("--queries", type=int, nargs="*", help="query image ids")
    p.add_argument("--num-queries", type=int, default=3, help="most and least viral queries each (default 3)")
    p.add_argument("--k", type=int, default=6, help="neighbours per query")
    p.add_argument("--limit", type=int, default=2000, help="search at most this many images (0: all)")
    p.add_argument("--out", type=Path, default=Path("neighbours.png"))
    args = p.parse_args(argv)

    import caffe
    import numpy as np
    from virality.imagestore import ImageStore
    from virality.nets import get_model
    from virality.neighbours import features_and_scores, nearest, plot_grid
    from virality.paths import DATA_DIR, PROTOTXT_DIR
    from virality.preprocess import InputSpec

    caffe.set_mode_cpu()
    model = get_model(args.model)
    spec = InputSpec.of_architecture(model.architecture)
    store = ImageStore(args.store or DATA_DIR / args.dataset / f"images_{spec.image_size}_lmdb")
    net = caffe.Net(str(args.deploy or PROTOTXT_DIR / args.model / "deploy.prototxt"), str(args.snapshot), caffe.TEST)
    ids = store.ids if not args.limit else store.ids[:args.limit]
    if args.queries:
        missing = [q for q in args.queries if q not in set(ids.tolist())]
        if missing:
            print(f"neighbours: error: query ids not in the searched images: {missing}", file=sys.stderr)
            return 2
    features, scores = features_and_scores(net, store, ids, spec)
    if args.queries:
        index = {int(i): j for j, i in enumerate(ids)}
        queries = [index[q] for q in args.queries]
    else:
        order = np.argsort(-scores)
        queries = list(order[:args.num_queries]) + list(order[::-1][:args.num_queries])
    neighbours = nearest(features, queries, args.k)
    plot_grid(store, ids, scores, queries, neighbours, args.out,
              title=f"{args.model}: nearest neighbours in feature space (score f_r above each image)")
    print(f"neighbours: {len(queries)} queries over {len(ids)} images -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
