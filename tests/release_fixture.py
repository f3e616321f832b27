"""A tiny_pvcnn release with random weights and a score distribution, for prediction tests.

The training images are a small image store of random-texture images and a pair file over
them; the release scores them at make_release time (its score distribution).
"""
import numpy as np

import caffe


def make_tiny_release(work, num_images=60, seed=0):
    """(release dir, store dir, pairs path, snapshot) under ``work``."""
    from virality.data.imagestore import build_image_store
    from virality.paths import PROTOTXT_DIR
    from virality.deploy.release import make_release
    rng = np.random.default_rng(seed)
    import cv2
    (work / "train_images").mkdir(parents=True, exist_ok=True)
    items = []
    for i in range(num_images):
        image = rng.integers(0, 255, (48, 40, 3), dtype=np.uint8)
        image = cv2.GaussianBlur(image, (0, 0), 1 + i % 4)
        cv2.imwrite(str(work / "train_images" / f"{i}.png"), image)
        items.append((i, work / "train_images" / f"{i}.png"))
    store = work / "images_36_lmdb"
    build_image_store(items, store, 36, progress=False)
    pairs = np.array([[i, (i + 1) % num_images, 1] for i in range(num_images)], np.int32)
    np.save(work / "pairs_train.npy", pairs)
    net = caffe.Net(str(PROTOTXT_DIR / "tiny_pvcnn/deploy.prototxt"), caffe.TEST)
    for blobs in net.params.values():
        for b in blobs:
            b.data[...] = rng.normal(0, 0.1, b.data.shape)
    net.save(str(work / "random.caffemodel"))
    release, _ = make_release("tiny_pvcnn", snapshot=work / "random.caffemodel", out_dir=work / "release",
                              trained_on="random weights (test)", stream=open("/dev/null", "w"),
                              reference=(store, work / "pairs_train.npy"), show_progress=False)
    return release.dir, store, work / "pairs_train.npy", work / "random.caffemodel"


def resum(release_dir):
    """Recompute SHA256SUMS (and caffemodel_sha256) after editing a release: checksums alone then pass."""
    import json
    from virality.files import file_digest
    meta_path = release_dir / "metadata.json"
    meta = json.loads(meta_path.read_text())
    caffemodel = meta["files"]["caffemodel"] if isinstance(meta.get("files"), dict) else "tiny_pvcnn.caffemodel"
    if isinstance(meta, dict):
        meta["caffemodel_sha256"] = file_digest(release_dir / caffemodel)
        meta_path.write_text(json.dumps(meta, indent=2))
    names = ["deploy.prototxt", caffemodel, "metadata.json"]
    (release_dir / "SHA256SUMS").write_text("".join(f"{file_digest(release_dir / n)}  {n}\n" for n in names))
