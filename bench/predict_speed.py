#!/usr/bin/env python3
"""tools/predict.py's pipeline end to end against the deploy net's forward rate alone (issue 11 target:
end to end >= 80% of the forward rate, decoding in worker processes beside the forward).

    .venv/bin/python bench/predict_speed.py [--model alexnet_pvcnn] [--images 256] [--rounds 3] [--workers 2]

Photos: scikit-image's sample photographs (JPEG and PNG, 300x225 to 1000x1000 pixels), copied
under distinct names until there are --images files. Weights: the deploy net's own random
initialisation, saved as a release (the speed does not depend on the values). "forward alone"
times forward passes over already prepared batches of 32; "end to end" times predict_files
(file listing, decoding, resizing, preprocessing, forward, results) on the folder, including
the start of its decode processes. Prints one JSON object (rates in images/s, medians).
"""
import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "hubble_deep_field.jpg", "retina.jpg",
          "motorcycle_left.png", "motorcycle_right.png", "brick.png", "grass.png", "gravel.png", "color.png")


def cpu_model():
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="alexnet_pvcnn")
    p.add_argument("--images", type=int, default=256)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--workers", type=int, help="decode processes (default: predict's default)")
    p.add_argument("--batch-size", type=int, default=32)
    args = p.parse_args(argv)

    from virality.console import caffe_logging
    caffe_logging()
    import caffe
    import numpy as np
    import skimage
    from virality.imagestore import load_image_bgr
    from virality.paths import PROTOTXT_DIR
    from virality.predict import default_workers, predict_files
    from virality.preprocess import InputSpec, forward_in_batches, to_input
    from virality.release import make_release

    caffe.set_mode_cpu()
    tmp = Path(tempfile.mkdtemp(prefix="predict_speed_"))
    try:
        data = Path(skimage.__file__).parent / "data"
        folder = tmp / "photos"
        folder.mkdir()
        for i in range(args.images):
            name = PHOTOS[i % len(PHOTOS)]
            shutil.copy(data / name, folder / f"{i:05d}_{name}")
        net = caffe.Net(str(PROTOTXT_DIR / args.model / "deploy.prototxt"), caffe.TEST)   # filler weights
        net.save(str(tmp / "random.caffemodel"))
        release, _ = make_release(args.model, snapshot=tmp / "random.caffemodel", out_dir=tmp / "release",
                                  stream=open(os.devnull, "w"), show_progress=False)
        net = release.net()
        spec = InputSpec.of_release(release.metadata)
        inputs = to_input([load_image_bgr(f, shrink_to=spec.image_size)[0] for f in sorted(folder.iterdir())], spec)
        workers = default_workers(args.images) if args.workers is None else args.workers
        forward, end_to_end = [], []
        forward_in_batches(net, inputs[:args.batch_size], "score", args.batch_size)          # warm-up
        for _ in range(args.rounds):                                                         # interleaved rounds
            t = time.perf_counter()
            forward_in_batches(net, inputs, "score", args.batch_size)
            forward.append(len(inputs) / (time.perf_counter() - t))
            t = time.perf_counter()
            results = predict_files(release, [folder], args.batch_size, net=net, workers=workers)
            end_to_end.append(len(results) / (time.perf_counter() - t))
            assert all(r.error is None for r in results), [r for r in results if r.error][:3]
        fwd, e2e = float(np.median(forward)), float(np.median(end_to_end))
        print(json.dumps({
            "cpu": cpu_model(), "cores": os.cpu_count(), "model": args.model, "images": args.images,
            "batch_size": args.batch_size, "workers": workers, "rounds": args.rounds,
            "forward_alone_images_per_s": round(fwd, 2), "end_to_end_images_per_s": round(e2e, 2),
            "ratio": round(e2e / fwd, 3), "target": 0.8, "met": e2e / fwd >= 0.8,
            "forward_rounds": [round(x, 2) for x in forward], "end_to_end_rounds": [round(x, 2) for x in end_to_end],
            "load_average_1min": os.getloadavg()[0],
        }, indent=2))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
