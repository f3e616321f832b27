#!/usr/bin/env python3
"""Recompute Deza & Parikh's virality score from the raw per-submission files.

    .venv/bin/python tools/virality_score.py --out /tmp/scores.csv
    .venv/bin/python tools/virality_score.py --data-dir datasets/deza2015 --out scores.csv

Writes img_id,v_score,n_submissions,max_a,dominant_subreddit (one row per kept
image, final_names.csv order; floats written exactly). The recipe is in
virality/datasets/virality_score.py and datasets/deza2015/README.md. When the
directory holds viral_datasetV2.mat the result is checked against it
(|diff| <= 1e-9) and the tool exits non-zero on a mismatch; --no-check skips that.
"""
import argparse
import sys
from collections import Counter
from pathlib import Path

from virality.datasets import deza2015
from virality.datasets.virality_score import TOLERANCE, check_against_published, compute_scores, write_csv


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=deza2015.DEFAULT_DIR,
                        help="the Deza & Parikh metadata directory (default: datasets/deza2015)")
    parser.add_argument("--out", type=Path, required=True, help="output CSV")
    parser.add_argument("--no-check", action="store_true", help="do not compare with viral_datasetV2.mat")
    args = parser.parse_args(argv)
    print(f"virality_score: data-dir={args.data_dir} out={args.out} check={not args.no_check}")
    try:
        table = compute_scores(args.data_dir)
        mat = args.data_dir / "viral_datasetV2.mat"
        if not args.no_check:
            if not mat.is_file():
                raise FileNotFoundError(f"{mat} is missing: it is needed for the check (or pass --no-check)")
            worst = check_against_published(table, mat)
            print(f"checked against {mat}: max |diff| = {worst:.3g} (<= {TOLERANCE:g})")
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    write_csv(table, args.out)
    top = ", ".join(f"{k} {v}" for k, v in Counter(table.dominant_subreddit).most_common(6))
    print(f"wrote {args.out}: {table.img_id.size} images ({table.dropped.size} dropped without a counted "
          f"submission), n_bar = {table.n_bar:.4f}; dominant subreddits: {top}, ...")
    return 0


if __name__ == "__main__":
    sys.exit(main())
