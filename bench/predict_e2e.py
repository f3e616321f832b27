"""`tools/predict.py` end to end on a folder of real photos (bench/run.py, section "predict").

    python bench/predict_e2e.py setup --dir DIR [--images 256] [--model alexnet_pvcnn]
                                               -> last stdout line: a JSON object

`setup` (a child process on the project engine) writes, under DIR:

- photos/ and photos_one_batch/: copies of the colour photographs that scikit-image ships
  in its data directory (astronaut, chelsea, coffee, ...), each copy resized so its long
  side is 480, 640 or 800 pixels, cropped to 85-100% of its area, sometimes mirrored,
  and saved as a JPEG (quality 90): photos/ holds ``--images`` of them, photos_one_batch/
  the first 32 (one batch);
- release/: a release of ``--model`` (virality.deploy.release.make_release) whose weights are the
  deploy net's own initialisation: speed does not depend on what the weights are;

and times the stages one after another on photos/ (decode with
virality.data.imagestore.load_image_bgr; resize, crop and mean with virality.deploy.preprocess.to_input;
the release's net forward in batches of 32), for "where the time goes".

`time_cli(...)` (used by run.py, in every round) runs the tool itself as a user does,
``python tools/predict.py DIR/release FOLDER --out ... --batch-size 32``, on both folders,
and checks that every photo was scored. The rate reported is the marginal one,
(photos - 32) / (time on photos/ - time on photos_one_batch/), so the fixed start-up
(Python, Caffe, reading and verifying the model) is left out and reported beside it.
"""
import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

#: Colour photographs in scikit-image's data directory (skimage.data.data_dir).
PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
          "motorcycle_right.png", "hubble_deep_field.jpg", "retina.jpg", "ihc.png")
ONE_BATCH = 32


def make_photos(out, count, seed=0):
    import cv2
    import numpy as np
    from skimage import data
    rng = np.random.default_rng(seed)
    sources = []
    for name in PHOTOS:
        image = cv2.imread(str(Path(data.data_dir) / name), cv2.IMREAD_COLOR)
        if image is None:
            raise FileNotFoundError(f"{Path(data.data_dir) / name}: scikit-image's sample photo is missing")
        sources.append(image)
    out.mkdir(parents=True, exist_ok=True)
    sizes = []
    for i in range(count):
        image = sources[i % len(sources)]
        h, w = image.shape[:2]
        frac = np.sqrt(rng.uniform(0.85, 1.0))
        ch, cw = int(h * frac), int(w * frac)
        y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        crop = image[y0:y0 + ch, x0:x0 + cw]
        side = int(rng.choice([480, 640, 800]))
        scale = side / max(ch, cw)
        crop = cv2.resize(crop, (max(1, round(cw * scale)), max(1, round(ch * scale))),
                          interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        path = out / f"{i:05d}.jpg"
        if not cv2.imwrite(str(path), np.ascontiguousarray(crop), [cv2.IMWRITE_JPEG_QUALITY, 90]):
            raise OSError(f"{path}: cannot write")
        sizes.append(crop.shape[1] * crop.shape[0])
    return {"count": count, "sources": list(PHOTOS), "mean_megapixels": float(np.mean(sizes)) / 1e6,
            "bytes": sum(p.stat().st_size for p in out.iterdir())}


def make_model_release(model, out):
    import caffe
    from virality.deploy.release import make_release
    caffe.set_mode_cpu()
    snapshot = out.parent / "initial.caffemodel"
    caffe.Net(str(common.deploy_net_path(model)), caffe.TEST).save(str(snapshot))
    with open(os.devnull, "w") as quiet:
        release, _report = make_release(model, snapshot, out_dir=out, force=True, stream=quiet,
                                        trained_on="nothing: the deploy net's initial weights (bench/predict_e2e.py)")
    snapshot.unlink()
    return release


def stage_times(release, folder, batch):
    """Seconds for each stage run alone, one after the other, over every photo of ``folder``."""
    import numpy as np
    from virality.data.imagestore import load_image_bgr
    from virality.deploy.preprocess import InputSpec, to_input
    files = sorted(folder.iterdir())
    t0 = time.perf_counter()
    images = [load_image_bgr(f)[0] for f in files]
    decode = time.perf_counter() - t0
    spec = InputSpec.of_release(release.metadata)
    t0 = time.perf_counter()
    inputs = to_input(images, spec)
    preprocess = time.perf_counter() - t0
    net = release.net()
    net.blobs["data"].reshape(batch, *inputs.shape[1:])
    net.forward()                                        # warm-up
    t0 = time.perf_counter()
    for start in range(0, len(inputs), batch):
        chunk = inputs[start:start + batch]
        if len(chunk) != net.blobs["data"].data.shape[0]:
            net.blobs["data"].reshape(*chunk.shape)
        net.blobs["data"].data[...] = chunk
        net.forward()
    forward = time.perf_counter() - t0
    return {"images": len(files), "decode_s": decode, "preprocess_s": preprocess, "forward_s": forward,
            "input_shape": list(np.shape(inputs))}


def setup(args):
    root = Path(args.dir)
    photos = make_photos(root / "photos", args.images)
    make_photos(root / "photos_one_batch", ONE_BATCH)
    release = make_model_release(args.model, root / "release")
    return {"model": args.model, "photos": photos, "one_batch": ONE_BATCH, "release": str(release.dir),
            "stages": stage_times(release, root / "photos", ONE_BATCH)}


def time_cli(python, root, folder, env, batch=ONE_BATCH):
    """Wall seconds of one `tools/predict.py` run over ``folder``; every photo must be scored."""
    root = Path(root)
    out = root / "ranking.csv"
    cmd = [str(python), str(common.ROOT / "tools" / "predict.py"), str(root / "release"), str(root / folder),
           "--out", str(out), "--batch-size", str(batch)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=common.ROOT, capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    expected = len(list((root / folder).iterdir()))
    # a scored row has a rank and no error (whatever the score column is called)
    scored = [r for r in rows if r.get("rank") not in ("", None) and not r.get("error")]
    if len(scored) != expected:
        raise RuntimeError(f"{' '.join(cmd)} scored {len(scored)} of {expected} photos:\n{proc.stderr[-3000:]}")
    return wall


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("task", choices=["setup"])
    ap.add_argument("--dir", required=True)
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--model", default="alexnet_pvcnn")
    args = ap.parse_args()
    os.environ.setdefault("GLOG_minloglevel", "2")
    print(json.dumps(setup(args)))


if __name__ == "__main__":
    main()
