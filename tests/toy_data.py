"""A learnable toy pair set for net tests: brighter images are 'more viral'.

Written as the Caffe-native pair LMDB the generated train_val nets read
(6-channel Datums: I1 BGR then I2 BGR, label y = +1 when I1 is more viral).
"""
import lmdb
import numpy as np

import caffe


def toy_image(rng, brightness, size=36):
    img = rng.normal(brightness, 20, size=(3, size, size))
    return np.clip(img, 0, 255).astype(np.uint8)


def write_pair_lmdb(path, num_pairs, seed, size=36):
    rng = np.random.default_rng(seed)
    env = lmdb.open(str(path), map_size=1 << 30)
    with env.begin(write=True) as txn:
        for i in range(num_pairs):
            viral = toy_image(rng, rng.uniform(150, 230), size)
            plain = toy_image(rng, rng.uniform(30, 110), size)
            y = 1 if rng.random() < 0.5 else -1
            pair = np.concatenate([viral, plain] if y == 1 else [plain, viral])
            txn.put(b"%08d" % i, caffe.io.array_to_datum(pair, y).SerializeToString())
    env.close()


def write_topic_lmdb(path, num_images, num_topics, seed, size=36):
    """Topic k images have brightness around 40 + 40 k."""
    rng = np.random.default_rng(seed)
    env = lmdb.open(str(path), map_size=1 << 30)
    with env.begin(write=True) as txn:
        for i in range(num_images):
            k = int(rng.integers(num_topics))
            txn.put(b"%08d" % i, caffe.io.array_to_datum(toy_image(rng, 40 + 40 * k, size), k).SerializeToString())
    env.close()


def make_toy_data(root, dataset="synthetic", setting="random", num_topics=5):
    base = root / "data" / dataset
    (base / setting).mkdir(parents=True, exist_ok=True)
    write_pair_lmdb(base / setting / "pairs_train_lmdb", 2000, seed=1)
    write_pair_lmdb(base / setting / "pairs_val_lmdb", 1000, seed=2)
    write_topic_lmdb(base / setting / "topics_train_lmdb", 1000, num_topics, seed=3)
    write_topic_lmdb(base / setting / "topics_val_lmdb", 1000, num_topics, seed=4)
