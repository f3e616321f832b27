#!/usr/bin/env python3
"""Rank your own images by a released model's score (virality, or the attribute it was trained on).

    .venv/bin/python tools/predict.py models/tiny_pvcnn/release photos/ a.jpg b.png
    .venv/bin/python tools/predict.py models/tiny_pvcnn/release photos/ --html ranking.html
    .venv/bin/python tools/predict.py models/tiny_pvcnn/release photos/ --format json --out ranking.json
    .venv/bin/python tools/predict.py models/tiny_pvcnn/release --pair a.jpg b.jpg [--format csv]

A model directory (made by `make release MODEL=<model>`) holds deploy.prototxt, the
caffemodel, metadata.json and SHA256SUMS; it is checked as data before use (checksums,
metadata types and ranges, allowed layer types, caffemodel blobs against the net).

Scores. f_r is the model's score of one image (the output of its scoring layer). It has no
unit: only differences matter, image A ranks above image B iff f_r(A) > f_r(B), and
P(A above B) = exp(f_r(A)) / (exp(f_r(A)) + exp(f_r(B))) (the paper's Eq. 4, g_r). The
percentile beside it is the % of the model's training images with a lower f_r (from the
score distribution stored in the release); it is empty for releases made without one.

Output: one row per image, highest f_r first (CSV columns rank, path, f_r, percentile, error;
JSON: an object with the model, the attribute, what the columns mean, and the rows); files
that cannot be read get a per-file error and the others are still scored. Every file under a
folder that looks like an image (by extension or by its first bytes) is tried; other files,
FIFOs and dangling links are reported, never skipped silently. --html writes a gallery page
(static, works offline) with the top and bottom images first. --pair prints P(A above B),
in --format. Caffe's log goes to --log (default: nowhere; warnings and errors still print);
--verbose prints all of it.

Exit status: 0 when every file was scored, 1 when some failed, 2 on a bad model directory or
bad arguments (an empty folder, --pair with a folder, an --out that cannot be written).
"""
import argparse
import csv
import io
import json
import os
import sys
from pathlib import Path


def _say(msg):
    print(f"predict: {msg}", file=sys.stderr, flush=True)


def preflight(path, need_bytes):
    """Fail before any scoring when ``path`` cannot be written (read-only, no such folder, disk full)."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise OSError(f"{path} is a folder; give a file name")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".{path.name}.probe-{os.getpid()}"
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            try:
                os.posix_fallocate(fd, 0, max(int(need_bytes), 1))
            except OSError as err:
                if err.errno not in (95, 22):        # EOPNOTSUPP / EINVAL: a filesystem without fallocate
                    raise
                os.write(fd, b"\0" * min(int(need_bytes), 1 << 20))
                os.fsync(fd)
        finally:
            os.close(fd)
            probe.unlink(missing_ok=True)
    except OSError as err:
        reason = {28: "no space left on the device", 30: "read-only file system", 13: "permission denied"}.get(
            err.errno, err.strerror or str(err))
        raise OSError(f"cannot write {path}: {reason} (needs about {need_bytes / 1e6:.1f} MB); "
                      "choose another --out/--html") from None


def write_atomic(path, text):
    from virality.files import write_text_atomic
    write_text_atomic(path, text)


def render(rows, fmt, header):
    """rows (list of dicts) as CSV text, or as a JSON object {**header, rows}."""
    if fmt == "json":
        return json.dumps({**header, "rows": rows}, indent=2) + "\n"
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["rank", "path", "f_r", "percentile", "error"],
                            lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model_dir", type=Path, help="release directory (make release MODEL=<model>)")
    p.add_argument("images", nargs="*", type=Path, help="image files or folders")
    p.add_argument("--pair", nargs=2, type=Path, metavar=("A", "B"), help="print P(A scores above B), Eq. 4")
    p.add_argument("--format", choices=["csv", "json"], default="csv", help="output format (rankings and --pair)")
    p.add_argument("--out", type=Path, help="write the ranking here instead of stdout")
    p.add_argument("--html", type=Path, help="also write a gallery page here (thumbnails in <name>_files/)")
    p.add_argument("--top", type=int, default=12, help="gallery: the top and bottom N shown first (default 12)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, help="decode processes (default: one per two cores, 1 to 4; 0 = none)")
    p.add_argument("--full-decode", action="store_true",
                   help="decode every image at full size (default: JPEGs DCT-scaled, large images box-reduced)")
    p.add_argument("--gpu", type=int, help="GPU id (default CPU)")
    p.add_argument("--log", type=Path, help="Caffe's full log goes to this file")
    p.add_argument("--verbose", action="store_true", help="print Caffe's whole log on the console")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if not args.images and not args.pair:
        p.error("give IMAGES to rank, or --pair A B")
    if args.pair and args.images:
        p.error("give either IMAGES or --pair A B, not both")
    if args.pair:
        folders = [str(x) for x in args.pair if x.is_dir()]
        if folders:
            _say(f"error: --pair compares two image files; {', '.join(folders)} is a folder "
                 "(to rank a folder: predict.py MODEL_DIR FOLDER)")
            return 2

    from virality.console import caffe_logging
    caffe_logging(args.log, args.verbose)
    import caffe
    from virality.deploy.predict import collect_images, predict_files, sort_by_score
    from virality.model.ranking import pair_probability
    from virality.deploy.release import ReleaseError, read_release

    if args.gpu is not None:
        caffe.set_device(args.gpu)
        caffe.set_mode_gpu()
    else:
        caffe.set_mode_cpu()
    try:
        release = read_release(args.model_dir)
        net = release.net()
    except ReleaseError as err:
        _say(f"error: {err}")
        return 2
    meta = release.metadata
    attribute = meta.get("attribute") or "virality"
    dist = release.score_distribution
    ranking = release.output_blob == "score"
    _say(f"model {meta['model']} from {release.dir} (attribute: {attribute}; trained on: "
         f"{(meta.get('trained_on') or {}).get('description') or 'see metadata.json'})")
    meaning = (f"f_r: the model's {attribute} score of an image, no unit; A ranks above B iff f_r(A) > f_r(B); "
               "P(A above B) = exp(f_r(A)) / (exp(f_r(A)) + exp(f_r(B)))")
    pct_meaning = (f"percentile: % of the release's {dist['n']} training images with a lower f_r" if dist else
                   "percentile: unknown (this release stores no score distribution; remake it with make release)")
    header = {"model": meta["model"], "attribute": attribute, "release": str(release.dir),
              "columns": {"f_r": meaning, "percentile": pct_meaning}}

    if args.pair:
        if not ranking:
            _say("error: --pair needs a ranking model (output blob 'score')")
            return 2
        results = predict_files(release, list(args.pair), net=net, workers=0)
        by_path = {r.path: r for r in results}
        a, b = (by_path[str(x)] for x in args.pair)
        for r in (a, b):
            if r.error:
                _say(f"error: {r.path}: {r.error}")
                return 1
        row = {"a": a.path, "b": b.path, "f_r_a": a.score, "f_r_b": b.score,
               "percentile_a": "" if a.percentile is None else a.percentile,
               "percentile_b": "" if b.percentile is None else b.percentile,
               "p_a_higher": float(pair_probability(a.score, b.score))}
        if args.format == "json":
            text = json.dumps({**header, "columns": {**header["columns"], "p_a_higher":
                               f"P(A's {attribute} is higher than B's) = g_r of Eq. 4"}, **row}, indent=2) + "\n"
        else:
            text = render([row], "csv", header)
        sys.stdout.write(text)
        return 0

    files, problems, ignored = collect_images(args.images)
    if ignored:
        shown = ", ".join(str(f) for f in ignored[:5]) + (f" and {len(ignored) - 5} more" if len(ignored) > 5 else "")
        _say(f"{len(ignored)} file(s) in the folders are not images (by extension and first bytes), not scored: {shown}")
    if not files:
        what = "; ".join(f"{p}: {r}" for p, r in problems[:5]) or "no image files in " + ", ".join(map(str, args.images))
        _say(f"error: nothing to score ({what})")
        return 2
    thumbs = None
    try:
        if args.out:
            preflight(args.out, 200 * (len(files) + len(problems)) + 4096)
        if args.html:
            preflight(args.html, 12_000 * len(files) + 65536)
    except OSError as err:
        _say(f"error: {err}")
        return 2
    if args.html:
        from virality.report.gallery import THUMB_SIZE, ThumbFolder
        thumbs = ThumbFolder(args.html)
    _say(f"scoring {len(files)} image(s); {meaning}")
    results = sort_by_score(predict_files(release, args.images, args.batch_size, net=net, workers=args.workers,
                                          reduced_decode=not args.full_decode, show_progress=not args.quiet,
                                          thumbs=thumbs, thumb_size=THUMB_SIZE if thumbs else 0,
                                          collected=(files, problems, ignored)))
    rows = []
    for i, r in enumerate(results):
        row = {"rank": i + 1 if r.error is None else "", "path": r.path, "f_r" if ranking else "prob":
               "" if r.score is None else r.score}
        if ranking:
            row["percentile"] = "" if r.percentile is None else round(r.percentile, 2)
        else:
            row["topic"] = "" if r.topic is None else r.topic
        row["error"] = r.error or ""
        rows.append(row)
    text = render(rows, args.format, header)
    if args.out:
        write_atomic(args.out, text)
    else:
        sys.stdout.write(text)
    failed = [r for r in results if r.error]
    if thumbs is not None:
        from virality.report.gallery import Tile, write_ranked_gallery
        tiles = [Tile(Path(r.path).name, r.thumb, r.score, r.percentile) for r in results if r.error is None]
        write_ranked_gallery(
            args.html, tiles, title=f"{meta['model']}: {len(tiles)} images ranked by {attribute} score",
            meta_lines=[meaning, pct_meaning, f"release {release.dir}; trained on: "
                        f"{(meta.get('trained_on') or {}).get('description') or 'see metadata.json'}",
                        f"{len(failed)} file(s) could not be scored" + (" (listed at the end)" if failed else "")],
            failures=[(r.path, r.error) for r in failed], top_n=args.top, thumbs=thumbs,
            score_label="f_r" if ranking else "p")
        _say(f"gallery: {args.html}")
    for r in failed:
        _say(f"error: {r.path}: {r.error}")
    _say(f"scored {len(results) - len(failed)} image(s), {len(failed)} failed"
         + (f"; ranking in {args.out}" if args.out else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
