#!/usr/bin/env python3
"""Rank your own images by predicted virality with a released model.

    .venv/bin/python tools/predict.py models/tiny_pvcnn/release photos/ a.jpg b.png
    .venv/bin/python tools/predict.py models/tiny_pvcnn/release photos/ --format json --out ranking.json
    .venv/bin/python tools/predict.py models/tiny_pvcnn/release --pair a.jpg b.jpg

A model directory (made by `make release MODEL=<model>`) holds deploy.prototxt, the
caffemodel, metadata.json (input size, mean, what it was trained on) and SHA256SUMS,
which is verified before use. Output: one row per image sorted by score f_r
(higher = more of the release's attribute: virality, or the --attribute it was trained
for, recorded in metadata.json and written in an ``attribute`` column); files that cannot be read get a per-file error and the
others are still scored. --pair prints P(A higher than B) = g_r of Eq. 4 (``p_a_higher``).
Exit status: 0 when every file was scored, 1 when some failed, 2 on a bad model directory.
"""
import argparse
import csv
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("GLOG_minloglevel", "2")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model_dir", type=Path, help="release directory (make release MODEL=<model>)")
    p.add_argument("images", nargs="*", type=Path, help="image files or folders")
    p.add_argument("--pair", nargs=2, type=Path, metavar=("A", "B"), help="print P(A more viral than B)")
    p.add_argument("--format", choices=["csv", "json"], default="csv")
    p.add_argument("--out", type=Path, help="write here instead of stdout")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--gpu", type=int, help="GPU id (default CPU)")
    args = p.parse_args(argv)
    if not args.images and not args.pair:
        p.error("give IMAGES to rank, or --pair A B")

    import caffe
    from virality.predict import predict_files, sort_by_score
    from virality.ranking import pair_probability
    from virality.release import ReleaseError, read_release

    if args.gpu is not None:
        caffe.set_device(args.gpu)
        caffe.set_mode_gpu()
    else:
        caffe.set_mode_cpu()
    try:
        release = read_release(args.model_dir)
    except ReleaseError as err:
        print(f"predict: error: {err}", file=sys.stderr)
        return 2
    attribute = release.metadata.get("attribute", "virality")
    print(f"predict: model {release.metadata['model']} from {release.dir}, ranking by {attribute} "
          f"(trained on: {release.metadata.get('trained_on', {}).get('description') or 'see metadata.json'})",
          file=sys.stderr)
    net = release.net()

    if args.pair:
        if release.output_blob != "score":
            print("predict: error: --pair needs a ranking model (output blob 'score')", file=sys.stderr)
            return 2
        results = predict_files(release, list(args.pair), net=net)
        by_path = {r.path: r for r in results}
        a, b = (by_path[str(x)] for x in args.pair)
        for r in (a, b):
            if r.error:
                print(f"predict: error: {r.path}: {r.error}", file=sys.stderr)
                return 1
        prob = float(pair_probability(a.score, b.score))
        answer = {"a": a.path, "b": b.path, "attribute": attribute, "score_a": a.score, "score_b": b.score,
                  "p_a_higher": prob}
        if attribute == "virality":
            answer["p_a_more_viral"] = prob     # the key of releases made before attributes had names
        print(json.dumps(answer, indent=2))
        return 0

    results = sort_by_score(predict_files(release, args.images, args.batch_size, net=net))
    rows = [dict(rank=i + 1 if r.error is None else "", path=r.path,
                 score="" if r.score is None else r.score, attribute=attribute,
                 **({"topic": "" if r.topic is None else r.topic} if release.output_blob == "prob" else {}),
                 error=r.error or "") for i, r in enumerate(results)]
    out = open(args.out, "w", newline="") if args.out else sys.stdout
    try:
        if args.format == "json":
            json.dump(rows, out, indent=2)
            out.write("\n")
        else:
            writer = csv.DictWriter(out, fieldnames=list(rows[0]) if rows else ["rank", "path", "score", "error"])
            writer.writeheader()
            writer.writerows(rows)
    finally:
        if args.out:
            out.close()
    failed = [r for r in results if r.error]
    for r in failed:
        print(f"predict: error: {r.path}: {r.error}", file=sys.stderr)
    print(f"predict: scored {len(results) - len(failed)} image(s), {len(failed)} failed", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
