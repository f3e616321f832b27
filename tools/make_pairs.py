#!/usr/bin/env python3
"""Sample training pairs for one dataset and evaluation setting.

    .venv/bin/python tools/make_pairs.py --dataset deza2015 --setting random \
        --num-pairs 10000000 --seed 0 --out data/deza2015/random/pairs_train.npy
    .venv/bin/python tools/make_pairs.py --dataset synthetic --setting random_disjoint \
        --num-pairs 20000 --seed 0 --out /tmp/pairs.npy --test-out /tmp/test_pairs.npy

Writes an int32 .npy of shape (N, 3): I1 id, I2 id, y (+1 iff I1 is the viral /
higher image). Pairs are distinct in either order, avoid the setting's test pairs
(and, in a *_disjoint setting, its test images), labels are balanced, and the
result depends only on the dataset, setting, N and seed (virality/data/pairs.py,
docs/PROTOCOL.md). The setting's validation set D_val is held out first, as `make data`
does with the same seed (virality.data.splits: --val-pairs, --val-images-per-side, defaults per
dataset); --val-out writes it and --test-out the setting's test pairs.
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np

from virality.files import save_npy_atomic

from virality.datasets.registry import dataset_names, default_setting, load_dataset
from virality.data.pairs import PairSamplingError, check_pairs, max_pairs, sample_pairs
from virality.data.splits import default_validation, split_setting


save_npy = save_npy_atomic


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, choices=dataset_names())
    parser.add_argument("--setting", help="evaluation setting (default: the dataset's, e.g. random)")
    parser.add_argument("--num-pairs", type=int, required=True, help="how many training pairs")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    parser.add_argument("--out", type=Path, required=True, help="output .npy (int32, N x 3)")
    parser.add_argument("--data-dir", type=Path, help="the dataset's files (default: the dataset's own)")
    parser.add_argument("--images", type=Path, help="image directory (not needed to sample pairs)")
    parser.add_argument("--test-out", type=Path, help="also write the setting's test pairs here")
    parser.add_argument("--val-out", type=Path, help="also write the validation pairs (D_val) here")
    parser.add_argument("--val-pairs", type=int, help="validation pairs (default: the dataset's, docs/PROTOCOL.md)")
    parser.add_argument("--val-images-per-side", type=int, help="validation images per pool (default: the dataset's)")
    parser.add_argument("--no-check", action="store_true", help="skip re-checking every constraint")
    args = parser.parse_args(argv)
    setting_name = args.setting or default_setting(args.dataset)
    print(f"make_pairs: dataset={args.dataset} setting={setting_name} num_pairs={args.num_pairs} "
          f"seed={args.seed} data_dir={args.data_dir} out={args.out}")
    try:
        dataset = load_dataset(args.dataset, data_dir=args.data_dir, images=args.images)
        val = default_validation(args.dataset)
        split = split_setting(dataset.setting(setting_name), args.val_pairs or val["num_pairs"],
                              args.val_images_per_side or val["images_per_side"], args.seed)
        setting = split.train
        print(f"setting: {setting.description}; D_val: {len(split.val_pairs)} pairs held out")
        start = time.perf_counter()
        pairs = sample_pairs(setting, args.num_pairs, args.seed)
        took = time.perf_counter() - start
        if not args.no_check:
            check_pairs(pairs, setting)
    except (OSError, ValueError, PairSamplingError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    save_npy(args.out, pairs)
    if args.test_out:
        save_npy(args.test_out, np.asarray(setting.test_pairs, dtype=np.int32))
    if args.val_out:
        save_npy(args.val_out, split.val_pairs)
    print(f"wrote {args.out}: {pairs.shape[0]} pairs of {max_pairs(setting)} possible, "
          f"{int((pairs[:, 2] > 0).sum())} with y=+1, sampled in {took:.2f} s"
          f"{'' if args.no_check else ', every constraint checked'}")
    if dataset.synthetic:
        print("note: the dataset is SYNTHETIC")
    return 0


if __name__ == "__main__":
    sys.exit(main())
