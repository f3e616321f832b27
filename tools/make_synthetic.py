#!/usr/bin/env python3
"""Write the SYNTHETIC virality world (virality/data/synthetic.py) in the on-disk form of a dataset.

    .venv/bin/python tools/make_synthetic.py                      # data/synthetic/raw, defaults
    .venv/bin/python tools/make_synthetic.py --out /tmp/world --num-images 500 --seed 3 --force

Outputs under --out: images/<name>.png, scores.csv (image,score,topic),
attributes.csv (planted ground truth), world.json and a README.md that says the
data are synthetic and gives the generating function. Deterministic for a seed.
"""
import argparse
import sys
import time
from pathlib import Path

from virality.paths import DATA_DIR
from virality.data.synthetic import WorldConfig, generate_world


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = WorldConfig()
    parser.add_argument("--out", type=Path, default=DATA_DIR / "synthetic" / "raw",
                        help="output directory (default: data/synthetic/raw)")
    parser.add_argument("--num-images", type=int, default=defaults.num_images)
    parser.add_argument("--size", type=int, default=defaults.size, help="image side in pixels")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--noise", type=float, default=defaults.noise, help="std of the score noise")
    parser.add_argument("--force", action="store_true", help="replace --out if it exists")
    args = parser.parse_args(argv)
    try:
        config = WorldConfig(num_images=args.num_images, size=args.size, seed=args.seed, noise=args.noise)
    except ValueError as err:
        parser.error(str(err))
    print(f"make_synthetic: SYNTHETIC world -> {args.out} ({config.num_images} images of "
          f"{config.size}x{config.size}, seed {config.seed}, noise {config.noise})")
    start = time.time()
    try:
        summary = generate_world(args.out, config, overwrite=args.force)
    except FileExistsError as err:
        print(f"make_synthetic: {err}", file=sys.stderr)
        return 2
    print(f"make_synthetic: wrote {summary['images']} images in {time.time() - start:.1f} s; "
          f"topics {summary['topics']}; score mean {summary['score_mean']:.3f} std {summary['score_std']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
