"""Items 3 (data feed) and 4 (pair sampling) of the benchmarks.

    python bench/feeds.py [--quick]        -> last stdout line: a JSON object

Run by bench/run.py in a child process on the project's engine. Each measurement
uses the project's own modules and is skipped, with the reason, when a module it
needs does not exist (yet):

- JPEG decode alone (cv2.imread) vs building the image store from the same files
  (virality.data.imagestore.build_image_store), images/s;
- pairs/s delivered by Caffe's Data layer reading a pair LMDB
  (virality.data.pairlmdb.build_pair_lmdb; crop, mirror and mean as the train net's),
  and by the pair-index Python layer (python_layers.pair_data.PairIndexData), each
  timed alone in a net that holds only the feed;
- seconds to sample 10M training pairs (virality.data.pairs.sample_pairs) in a setting
  the size of Deza & Parikh's (5,040 x 5,040 images, 25.4M possible pairs).
"""
import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np  # noqa: E402


ALEX_MEAN = [104.007, 116.669, 122.679]


def _jpegs(folder, count, rng):
    """Smooth synthetic photos (gradients, blobs, a little noise), 500 x 375 JPEGs."""
    import cv2
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    yy, xx = np.mgrid[0:375, 0:500].astype(np.float32)
    for i in range(count):
        img = np.empty((375, 500, 3), np.float32)
        for c in range(3):
            a, b, ph = rng.uniform(0.005, 0.03, 2).tolist() + [rng.uniform(0, 6.28)]
            img[..., c] = 127 + 100 * np.sin(a * xx + b * yy + ph)
        cv2.circle(img, (int(rng.integers(0, 500)), int(rng.integers(0, 375))), int(rng.integers(20, 120)),
                   rng.uniform(0, 255, 3).tolist(), -1)
        img += rng.normal(0, 6, img.shape)
        path = folder / f"{i}.jpg"
        cv2.imwrite(str(path), np.clip(img, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 90])
        items.append((i, str(path)))
    return items


def decode_and_store(tmp, count):
    import cv2
    from virality.data.imagestore import build_image_store
    rng = np.random.default_rng(0)
    items = _jpegs(tmp / "jpg", count, rng)
    os.sync()
    t0 = time.perf_counter()
    for _, path in items:
        im = cv2.imread(path, cv2.IMREAD_COLOR)
        assert im is not None
    decode = count / (time.perf_counter() - t0)
    out = {"images": count, "jpeg_decode_images_per_s": decode}
    for size in (256, 36):
        t0 = time.perf_counter()
        build_image_store(items, tmp / f"store{size}", size, progress=False)
        out[f"store{size}_build_images_per_s"] = count / (time.perf_counter() - t0)
    return out, items


def _feed_rate(net_text, tmp, name, batch, seconds):
    import caffe
    path = tmp / f"{name}.prototxt"
    path.write_text(net_text)
    net = caffe.Net(str(path), caffe.TRAIN)
    net.forward()
    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        net.forward()
        n += batch
    return n / (time.perf_counter() - t0)


def pair_lmdb_rate(tmp, num_pairs, seconds):
    from virality.data.pairlmdb import build_pair_lmdb
    rng = np.random.default_rng(1)
    out = {}
    for size, crop, mean in ((256, 227, ALEX_MEAN), (36, 32, [128.0] * 3)):
        ids = np.load(tmp / f"store{size}" / "ids.npy")
        a = rng.choice(ids, num_pairs)
        b = rng.choice(ids, num_pairs)
        y = rng.choice([-1, 1], num_pairs)
        pairs = np.stack([a, b, y], 1).astype(np.int32)
        t0 = time.perf_counter()
        build_pair_lmdb(tmp / f"store{size}", pairs, tmp / f"pairs{size}_lmdb", progress=False)
        build = num_pairs / (time.perf_counter() - t0)
        batch = 16
        text = f"""
layer {{ name: "pair_data" type: "Data" top: "pair_data" top: "label"
  transform_param {{ mirror: true crop_size: {crop} {' '.join(f'mean_value: {m}' for m in mean * 2)} }}
  data_param {{ source: "{tmp / f'pairs{size}_lmdb'}" batch_size: {batch} backend: LMDB }} }}
layer {{ name: "data" type: "Slice" bottom: "pair_data" top: "data" top: "data_p"
  slice_param {{ slice_point: 3 axis: 1 }} }}
"""
        out[f"lmdb{size}"] = {"build_pairs_per_s": build,
                              "read_pairs_per_s": _feed_rate(text, tmp, f"lmdb{size}", batch, seconds),
                              "crop": crop}
    return out


def pair_index_rate(tmp, num_pairs, seconds):
    import importlib.util
    if importlib.util.find_spec("python_layers.pair_data") is None:
        raise ModuleNotFoundError("python_layers.pair_data does not exist yet")
    rng = np.random.default_rng(2)
    out = {}
    for size, crop, mean in ((256, 227, ALEX_MEAN), (36, 32, [128.0] * 3)):
        ids = np.load(tmp / f"store{size}" / "ids.npy")
        pairs = np.stack([rng.choice(ids, num_pairs), rng.choice(ids, num_pairs),
                          rng.choice([-1, 1], num_pairs)], 1).astype(np.int32)
        np.save(tmp / f"pairs{size}.npy", pairs)
        batch = 16
        params = dict(image_store=str(tmp / f"store{size}"), pairs=str(tmp / f"pairs{size}.npy"),
                      batch_size=batch, crop_size=crop, mean=mean, mirror=True, shuffle=True, seed=1701)
        text = f"""
layer {{ name: "pair_data" type: "Python" top: "data" top: "data_p" top: "label"
  python_param {{ module: "python_layers.pair_data" layer: "PairIndexData"
                  param_str: '{json.dumps(params, sort_keys=True)}' }} }}
"""
        out[f"index{size}"] = {"read_pairs_per_s": _feed_rate(text, tmp, f"index{size}", batch, seconds),
                               "crop": crop}
    return out


def pair_sampling(num_pairs):
    from virality.datasets.base import Setting
    from virality.data.pairs import sample_pairs
    rng = np.random.default_rng(3)
    viral = np.arange(5040, dtype=np.int64)
    nonviral = np.arange(5040, 10080, dtype=np.int64)
    test = np.stack([rng.choice(viral, 2000), rng.choice(nonviral, 2000), np.ones(2000)], 1).astype(np.int32)
    setting = Setting(name="bench", description="benchmark", metric="pairwise_accuracy",
                      test_pairs=test, test_images=np.unique(test[:, :2]),
                      viral_pool=viral, nonviral_pool=nonviral)
    times = []
    for seed in (0, 1):
        t0 = time.perf_counter()
        pairs = sample_pairs(setting, num_pairs, seed)
        times.append(time.perf_counter() - t0)
        assert len(pairs) == num_pairs
    return {"num_pairs": num_pairs, "seconds": times}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("GLOG_minloglevel", "2")
    res = {}
    with tempfile.TemporaryDirectory(prefix="virality-bench-feeds-") as t:
        tmp = Path(t)
        steps = [
            ("store", lambda: decode_and_store(tmp, 100 if args.quick else 300)[0]),
            ("pair_lmdb", lambda: pair_lmdb_rate(tmp, 200 if args.quick else 400, 3 if args.quick else 6)),
            ("pair_index", lambda: pair_index_rate(tmp, 400, 3 if args.quick else 6)),
            ("sampling", lambda: pair_sampling(10_000_000)),
        ]
        for name, fn in steps:
            try:
                res[name] = fn()
            except Exception as err:
                res[name] = {"skipped": f"{type(err).__name__}: {err}".splitlines()[0][:300],
                             "trace": traceback.format_exc()[-1500:]}
    print(json.dumps(res))


if __name__ == "__main__":
    main()
