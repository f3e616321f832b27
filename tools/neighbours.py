#!/usr/bin/env python3
"""Explain a model's scores with nearest neighbours (the paper's Fig. 2).

    .venv/bin/python tools/neighbours.py --model tiny_pvcnn --dataset synthetic \
        --snapshot demo/models/random/tiny_pvcnn/tiny_pvcnn_iter_1000.caffemodel --out neighbours.png
    .venv/bin/python tools/neighbours.py ... --query-files my_photos/ a.jpg --html neighbours.html

Computes the pre-final-layer features (the scoring layer's input) of the images in the
dataset's image store (or --limit of them, evenly spread), picks queries (--queries IDS of
store images, --query-files image files or folders, or by default the --num-queries highest-
and lowest-scored images), and writes a PNG grid (and with --html a page) of each query's
--k nearest neighbours with their file names, scores f_r and cosine distances.
"""
import argparse
import sys
from pathlib import Path


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="ranking model name (deploy net prototxt/<model>/deploy.prototxt)")
    p.add_argument("--snapshot", type=Path, required=True, help="trained caffemodel")
    p.add_argument("--deploy", type=Path, help="deploy prototxt (default prototxt/<model>/deploy.prototxt)")
    p.add_argument("--dataset", required=True, help="dataset whose image store to search (data/<dataset>/)")
    p.add_argument("--data-dir", type=Path, help="dataset metadata directory (for file names; default the dataset's)")
    p.add_argument("--store", type=Path, help="image store (default data/<dataset>/images_<size>_lmdb)")
    p.add_argument("--queries", type=int, nargs="*", help="query image ids (images of the store)")
    p.add_argument("--query-files", type=Path, nargs="*", help="query image files or folders (any images)")
    p.add_argument("--num-queries", type=int, default=3, help="most and least scored queries each (default 3)")
    p.add_argument("--k", type=int, default=6, help="neighbours per query")
    p.add_argument("--limit", type=int, default=2000, help="search at most this many images (0: all)")
    p.add_argument("--out", type=Path, default=Path("neighbours.png"))
    p.add_argument("--html", type=Path, help="also write a page with the same rows")
    p.add_argument("--log", type=Path, help="Caffe's full log goes to this file")
    p.add_argument("--verbose", action="store_true", help="print Caffe's whole log on the console")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if args.queries and args.query_files:
        p.error("give --queries or --query-files, not both")

    from virality.console import caffe_logging
    caffe_logging(args.log, args.verbose)
    import caffe
    import numpy as np
    from virality.report.gallery import evenly_spaced, image_namer
    from virality.data.imagestore import ImageProblem, ImageStore, StoreError, load_image_bgr
    from virality.model.nets import get_model
    from virality.deploy.neighbours import features_and_scores, features_of_images, nearest, plot_grid
    from virality.paths import DATA_DIR, PROTOTXT_DIR
    from virality.deploy.predict import collect_images
    from virality.deploy.preprocess import InputSpec

    caffe.set_mode_cpu()
    model = get_model(args.model)
    spec = InputSpec.of_architecture(model.architecture)
    try:
        store = ImageStore(args.store or DATA_DIR / args.dataset / f"images_{spec.image_size}_lmdb")
    except StoreError as err:
        print(f"neighbours: error: {err}", file=sys.stderr)
        return 2
    net = caffe.Net(str(args.deploy or PROTOTXT_DIR / args.model / "deploy.prototxt"), str(args.snapshot), caffe.TEST)
    ids = np.asarray(store.ids if not args.limit else evenly_spaced(list(store.ids), args.limit))
    if args.queries:
        missing = sorted(set(args.queries) - set(ids.tolist()))
        if missing:
            print(f"neighbours: error: query ids not in the searched images: {missing}", file=sys.stderr)
            return 2
    name_of = image_namer(args.dataset, args.data_dir)
    features, scores = features_and_scores(net, store, ids, spec, show_progress=not args.quiet)
    item = lambda j, d=None: dict(name=name_of(int(ids[j])), image=store.get(ids[j]), score=float(scores[j]),  # noqa: E731
                                  distance=d)
    rows = []
    if args.query_files:
        files, problems, _ = collect_images(args.query_files)
        images, names = [], []
        for f in files:
            try:
                images.append(load_image_bgr(f, shrink_to=spec.image_size)[0])
                names.append(f)
            except ImageProblem as err:
                problems.append((f, f"{err.kind}: {err.detail}"))
        for f, reason in problems:
            print(f"neighbours: error: {f}: {reason}", file=sys.stderr)
        if not images:
            print("neighbours: error: no query image could be read", file=sys.stderr)
            return 2
        qf, qs = features_of_images(net, images, spec)
        order, dist = nearest(features, None, args.k, query_features=qf)
        from virality.data.imagestore import resize_square
        for f, image, s, nb, dd in zip(names, images, qs, order, dist):
            query = dict(name=Path(f).name, image=resize_square(image, spec.image_size), score=float(s))
            rows.append(("file", query, [item(j, d) for j, d in zip(nb, dd)]))
    else:
        if args.queries:
            index = {int(i): j for j, i in enumerate(ids)}
            queries = [index[q] for q in args.queries]
            labels = ["chosen"] * len(queries)
        else:
            order = np.argsort(-scores, kind="stable")
            n = min(args.num_queries, len(order) // 2)
            queries = list(order[:n]) + list(order[::-1][:n])
            labels = [f"highest f_r #{i + 1}" for i in range(n)] + [f"lowest f_r #{i + 1}" for i in range(n)]
        order, dist = nearest(features, queries, args.k)
        for label, q, nb, dd in zip(labels, queries, order, dist):
            rows.append((label, item(q), [item(j, d) for j, d in zip(nb, dd)]))
    title = f"{args.model} on {args.dataset}: nearest neighbours in feature space"
    plot_grid(rows, args.out, title=title)
    if args.html:
        from virality.report.gallery import ThumbFolder, neighbours_section, write_page
        thumbs = ThumbFolder(args.html)
        write_page(args.html, title, [f"snapshot {args.snapshot}; {len(ids)} images searched",
                                      "f_r: the model's score (no unit; higher ranks above)"],
                   [neighbours_section(rows, "Queries and their nearest neighbours", thumbs)], thumbs)
    print(f"neighbours: {len(rows)} queries over {len(ids)} images -> {args.out}"
          + (f", {args.html}" if args.html else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
