"""Pair feeds: make_data's outputs, pair/topic LMDB records, the pair-index layer inside a real
Caffe net, and a tiny_pvcnn that trains from each feed."""
import json
import os
import re
import shutil
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import caffe
from caffe.proto import caffe_pb2
from google.protobuf import text_format

from virality.data.imagestore import ImageStore
from virality.data.pair_batches import ImageSource, PairBatcher, PairDataError, Prefetcher, load_pairs
from virality.data.pairlmdb import PAIR_FORMAT, TOPIC_FORMAT, build_pair_lmdb, read_records

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


def make_data(out_root, *extra):
    run = subprocess.run([PY, str(ROOT / "tools/make_data.py"), "--dataset", "synthetic", "--out-root",
                          str(out_root), "--quiet", *extra], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """<work>/data/synthetic/... as make_data builds it (600 training pairs per setting)."""
    work = tmp_path_factory.mktemp("feeds")
    make_data(work / "data", "--num-pairs", "600")
    return work


@pytest.fixture(scope="module")
def syn(work):
    return work / "data" / "synthetic"


def test_make_data_builds_the_layout_the_nets_read(syn):
    from virality.model.nets import DataConfig

    for setting in ("random", "random_disjoint"):
        cfg = DataConfig(dataset="synthetic", setting=setting)
        for split in ("train", "val"):
            for rel in (cfg.pair_index(split), cfg.pair_lmdb(split), cfg.topic_lmdb(split)):
                path = syn.parent.parent / rel
                assert path.exists(), rel
                assert Path(f"{path}.stamp").is_file(), rel
        test = syn.parent.parent / cfg.pair_index("test")    # D_test: read by evaluation only
        assert test.exists() and not (syn.parent.parent / cfg.pair_lmdb("test")).exists()
        assert (syn.parent.parent / cfg.image_store(36) / "data.mdb").is_file()
    train = np.load(syn / "random" / "pairs_train.npy")
    assert train.dtype == np.int32 and train.shape == (600, 3)
    summary = json.loads((syn / "data.json").read_text())
    assert summary["synthetic"] is True and summary["available"] == 3000
    assert "SYNTHETIC" in (syn / "raw" / "README.md").read_text()


def test_make_data_is_keyed_by_content(syn, tmp_path):
    root = tmp_path / "data" / "synthetic"
    root.mkdir(parents=True)
    shutil.copytree(syn / "raw", root / "raw")
    shutil.copy(f"{syn / 'raw'}.stamp", f"{root / 'raw'}.stamp")
    first = make_data(tmp_path / "data", "--num-pairs", "300", "--settings", "random")
    assert "raw: up to date" in first and "pairs sampled" in first
    again = make_data(tmp_path / "data", "--num-pairs", "300", "--settings", "random")
    assert "sampled" not in again and "records" not in again and "images_36_lmdb: up to date" in again
    assert again.count("up to date") == 9     # raw, store, 3 pair files, 2 pair LMDBs, 2 topic LMDBs
    changed = make_data(tmp_path / "data", "--num-pairs", "200", "--settings", "random")
    assert "images_36_lmdb: up to date" in changed and "topics_train_lmdb: up to date" in changed
    assert "pairs_train.npy: 200 pairs sampled" in changed
    assert re.search(r"pairs_train_lmdb: 200 pair records", changed)
    assert "pairs_val_lmdb: up to date" in changed
    # an edited input image rebuilds the image store (a world without its stamp is a user's input, kept as it is;
    # a stamped one is make_data's output, regenerated when edited or damaged: virality/outputs.py)
    Path(f"{root / 'raw'}.stamp").unlink()
    victim = sorted((root / "raw" / "images").iterdir())[0]
    victim.write_bytes(victim.read_bytes())        # same bytes: still up to date
    assert "images_36_lmdb: up to date" in make_data(tmp_path / "data", "--num-pairs", "200", "--settings", "random")
    import cv2
    cv2.imwrite(str(victim), np.zeros((48, 48, 3), np.uint8))
    rebuilt = make_data(tmp_path / "data", "--num-pairs", "200", "--settings", "random")
    assert "images_36_lmdb: 3000/3000 images" in rebuilt


def test_pair_lmdb_records_are_the_two_store_images_and_y(syn):
    store = ImageStore(syn / "images_36_lmdb")
    pairs = np.load(syn / "random" / "pairs_val.npy")
    records = list(read_records(syn / "random" / "pairs_val_lmdb", PAIR_FORMAT))
    assert len(records) == len(pairs) > 0
    for (chw, label), (a, b, y) in zip(records, pairs):
        assert chw.shape == (6, 36, 36)
        np.testing.assert_array_equal(chw[:3], store.get(a).transpose(2, 0, 1))
        np.testing.assert_array_equal(chw[3:], store.get(b).transpose(2, 0, 1))
        assert label == y
    assert set(pairs[:, 2]) == {-1, 1}


def test_pair_lmdb_refuses_pairs_of_images_not_in_the_store(syn, tmp_path):
    with pytest.raises(Exception, match="not in the store"):
        build_pair_lmdb(syn / "images_36_lmdb", np.array([[0, 99999, 1]], np.int32), tmp_path / "p", progress=False)
    assert not (tmp_path / "p").exists()


def test_topic_lmdbs_hold_the_settings_topic_split_with_topic_labels(syn):
    from virality.datasets.registry import load_dataset
    from virality.data.splits import split_setting, topic_split

    dataset = load_dataset("synthetic", data_dir=syn / "raw")
    topic = dict(zip(dataset.ids.tolist(), dataset.topics.tolist()))
    for name in ("random", "random_disjoint"):
        ids = {s: np.load(syn / name / f"topics_{s}_lmdb" / "ids.npy") for s in ("train", "val")}
        assert not set(ids["train"]) & set(ids["val"])
        assert not (np.diff(ids["train"]) > 0).all(), "records are shuffled, not in id order"
        split = split_setting(dataset.setting(name), 300, 150, 1701)
        want_train, want_val = topic_split(split, dataset.ids, dataset.topics)
        np.testing.assert_array_equal(np.sort(ids["train"]), want_train)
        np.testing.assert_array_equal(ids["val"], want_val)
        assert ids["val"].size == 300 and ids["train"].size == 3000 - 600 - 300
    store = ImageStore(syn / "images_36_lmdb")
    ids = np.load(syn / "random" / "topics_val_lmdb" / "ids.npy")
    records = list(read_records(syn / "random" / "topics_val_lmdb", TOPIC_FORMAT))
    assert len(records) == ids.size
    for (chw, label), image_id in zip(records, ids):
        assert label == topic[int(image_id)]
        np.testing.assert_array_equal(chw, store.get(image_id).transpose(2, 0, 1))


# ------------------------------------------------------------------ the pure numpy core

def _batcher(syn, pairs, **kw):
    return PairBatcher(pairs, ImageSource(syn / "images_36_lmdb"), **kw)


def test_test_order_is_the_file_order_wrapping_around_with_centre_crops(syn):
    store = ImageStore(syn / "images_36_lmdb")
    pairs = np.load(syn / "random" / "pairs_test.npy")[:10].copy()
    b = _batcher(syn, pairs.copy(), batch_size=7, crop_size=32, mean=(10, 20, 30), scale=0.5)
    d1, p1, l1 = b.next_batch()
    d2, p2, l2 = b.next_batch()
    rows = np.concatenate([pairs, pairs])[:14]
    mean = np.array([10, 20, 30], np.float32).reshape(3, 1, 1)
    for k, (a, c, y) in enumerate(rows):
        data, data_p, label = (d1, p1, l1) if k < 7 else (d2, p2, l2)
        want = (store.get(a).transpose(2, 0, 1)[:, 2:34, 2:34] - mean) * 0.5
        want_p = (store.get(c).transpose(2, 0, 1)[:, 2:34, 2:34] - mean) * 0.5
        np.testing.assert_allclose(data[k % 7], want)
        np.testing.assert_allclose(data_p[k % 7], want_p)
        assert label[k % 7] == y
    assert d1.dtype == np.float32 and d1.shape == (7, 3, 32, 32) and l1.shape == (7,)


def test_train_batches_are_deterministic_per_seed_and_reshuffle_each_epoch(syn):
    pairs = np.load(syn / "random" / "pairs_train.npy")[:40].copy()
    kw = dict(batch_size=8, crop_size=32, mirror=True, random_crop=True, shuffle=True)
    a = _batcher(syn, pairs.copy(), seed=3, **kw)
    b = _batcher(syn, pairs.copy(), seed=3, **kw)
    c = _batcher(syn, pairs.copy(), seed=4, **kw)
    batches_a = [a.next_batch() for _ in range(10)]          # two epochs
    batches_b = [b.next_batch() for _ in range(10)]
    for x, y in zip(batches_a, batches_b):
        for u, v in zip(x, y):
            np.testing.assert_array_equal(u, v)
    assert not np.array_equal(batches_a[0][0], c.next_batch()[0])
    epoch0 = {tuple(r) for r in np.load(syn / "random" / "pairs_train.npy")[:40].tolist()}
    assert a.epoch == 2 and {tuple(r) for r in a.pairs.tolist()} == epoch0     # same pairs, permuted
    labels = np.concatenate([bt[2] for bt in batches_a[:5]])
    assert sorted(labels) == sorted(pairs[:, 2].astype(np.float32))          # one epoch = each pair once


def test_random_crops_and_mirrors_are_taken_from_each_image_on_its_own(syn):
    store = ImageStore(syn / "images_36_lmdb")
    pairs = np.load(syn / "random" / "pairs_train.npy")[:16].copy()
    b = _batcher(syn, pairs, batch_size=16, crop_size=32, mirror=True, random_crop=True, seed=9)
    rows = b.next_rows()                                      # what the next batch will use
    b.cursor = 0
    data, data_p, _ = b.next_batch()
    seen = set()
    for k, (i1, i2, _) in enumerate(rows):
        for image_id, got in ((i1, data[k]), (i2, data_p[k])):
            full = store.get(image_id).transpose(2, 0, 1).astype(np.float32)
            matches = [(y, x, f) for y in range(5) for x in range(5) for f in (0, 1)
                       if np.array_equal((full[:, y:y + 32, x:x + 32][:, :, ::-1] if f else
                                          full[:, y:y + 32, x:x + 32]), got)]
            assert matches, f"crop of image {image_id} is not a crop/mirror of it"
            seen.update(matches)
    assert len({(y, x) for y, x, _ in seen}) > 5 and {f for _, _, f in seen} == {0, 1}


def test_ten_million_pairs_cost_only_their_index(syn):
    pairs = np.zeros((10_000_000, 3), np.int32)
    pairs[:, 0] = np.arange(10_000_000) % 3000
    pairs[:, 1] = (np.arange(10_000_000) + 1) % 3000
    pairs[:, 2] = 1
    source = ImageSource(syn / "images_36_lmdb")
    tracemalloc.start()
    b = PairBatcher(pairs, source, batch_size=64, crop_size=32, shuffle=True, random_crop=True, seed=1)
    b.next_batch()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert b.pairs is pairs                           # shuffled in place, not copied
    assert peak < 5e6, f"{peak / 1e6:.1f} MB allocated beyond the 120 MB index"
    assert (pairs[:, 1] == (pairs[:, 0] + 1) % 3000).all()      # rows moved whole


def test_load_pairs_names_the_file_on_bad_input(tmp_path):
    with pytest.raises(PairDataError, match="nope.npy"):
        load_pairs(tmp_path / "nope.npy")
    np.save(tmp_path / "bad.npy", np.zeros((4, 2), np.int32))
    with pytest.raises(PairDataError, match=r"bad.npy.*\(N, 3\)"):
        load_pairs(tmp_path / "bad.npy")
    np.save(tmp_path / "label.npy", np.array([[1, 2, 0]], np.int32))
    with pytest.raises(PairDataError, match="label.npy.*-1"):
        load_pairs(tmp_path / "label.npy")


def test_prefetcher_keeps_order_and_raises_producer_errors():
    counter = iter(range(100))
    pf = Prefetcher(lambda: next(counter), depth=2)
    assert [pf.get() for _ in range(10)] == list(range(10))
    pf.close()

    def boom():
        raise OSError("disk gone")
    pf = Prefetcher(boom)
    with pytest.raises(RuntimeError, match="disk gone"):
        pf.get()


# ------------------------------------------------------------------ inside Caffe

def _data_net(tmp_path, params, phase_name="TEST"):
    text = f"""name: "feed"
layer {{ name: "data" type: "Python" top: "data" top: "data_p" top: "label"
  python_param {{ module: "python_layers.pair_data" layer: "PairIndexData" param_str: '{json.dumps(params)}' }} }}
"""
    path = tmp_path / f"net_{phase_name}.prototxt"
    path.write_text(text)
    return caffe.Net(str(path), getattr(caffe, phase_name))


def test_pair_index_layer_in_a_real_net(syn, tmp_path):
    store = ImageStore(syn / "images_36_lmdb")
    pairs = np.load(syn / "random" / "pairs_test.npy")
    params = dict(image_store=str(syn / "images_36_lmdb"), pairs=str(syn / "random" / "pairs_test.npy"),
                  batch_size=5, crop_size=32, mean=[128.0, 120.0, 110.0], scale=0.0078125, mirror=False,
                  shuffle=False, seed=1701)
    net = _data_net(tmp_path, params)
    assert net.blobs["data"].data.shape == (5, 3, 32, 32) and net.blobs["label"].data.shape == (5,)
    outs = []
    for _ in range(2):
        net.forward()
        outs.append({k: net.blobs[k].data.copy() for k in ("data", "data_p", "label")})
    np.testing.assert_array_equal(np.concatenate([o["label"] for o in outs]), pairs[:10, 2])
    mean = np.array([128.0, 120.0, 110.0], np.float32).reshape(3, 1, 1)
    want = (store.get(pairs[6, 1]).transpose(2, 0, 1)[:, 2:34, 2:34] - mean) * 0.0078125
    np.testing.assert_allclose(outs[1]["data_p"][1], want, rtol=1e-6)
    again = _data_net(tmp_path, params)                       # TEST order is deterministic
    again.forward()
    np.testing.assert_array_equal(again.blobs["data"].data, outs[0]["data"])


def test_pair_index_layer_defaults_give_the_raw_central_crops(syn, tmp_path):
    """The documented defaults: mean [0, 0, 0], scale 1, no mirror, no shuffle; file order in TEST: the
    tops are the stored pixels of the central 32 x 32 crop (offset (36 - 32) / 2 = 2), unchanged."""
    store = ImageStore(syn / "images_36_lmdb")
    pairs = np.load(syn / "random" / "pairs_test.npy")
    net = _data_net(tmp_path, dict(image_store=str(syn / "images_36_lmdb"),
                                   pairs=str(syn / "random" / "pairs_test.npy"), batch_size=3, crop_size=32))
    net.forward()
    for i in range(3):
        np.testing.assert_array_equal(net.blobs["data"].data[i], store.get(pairs[i, 0]).transpose(2, 0, 1)[:, 2:34, 2:34])
        np.testing.assert_array_equal(net.blobs["data_p"].data[i],
                                      store.get(pairs[i, 1]).transpose(2, 0, 1)[:, 2:34, 2:34])
    # TRAIN: no shuffle and no mirror by default; a 36 x 36 crop of a 36 x 36 image has one offset (0, 0),
    # so the first batch is the file's first pairs, whole and unflipped
    train = _data_net(tmp_path, dict(image_store=str(syn / "images_36_lmdb"),
                                     pairs=str(syn / "random" / "pairs_test.npy"), batch_size=4, crop_size=36),
                      "TRAIN")
    train.forward()
    np.testing.assert_array_equal(train.blobs["label"].data, pairs[:4, 2])
    for i in range(4):
        np.testing.assert_array_equal(train.blobs["data"].data[i], store.get(pairs[i, 0]).transpose(2, 0, 1))
        np.testing.assert_array_equal(train.blobs["data_p"].data[i], store.get(pairs[i, 1]).transpose(2, 0, 1))
    from virality.data.pair_batches import Prefetcher
    assert type(train.layers[0].prefetcher) is Prefetcher          # workers 0: one thread, no processes
    # seed 1701 by default: a shuffled feed without a seed gives seed 1701's batches (and not 1702's)
    shuffled = dict(image_store=str(syn / "images_36_lmdb"), pairs=str(syn / "random" / "pairs_test.npy"),
                    batch_size=8, crop_size=36, shuffle=True)
    labels = {}
    for name, extra in (("default", {}), ("1701", {"seed": 1701}), ("1702", {"seed": 1702})):
        net = _data_net(tmp_path, dict(shuffled, **extra), "TRAIN")
        net.forward()
        labels[name] = net.blobs["data"].data.copy()
    np.testing.assert_array_equal(labels["default"], labels["1701"])
    assert not np.array_equal(labels["default"], labels["1702"])


def test_pair_index_layer_accepts_one_and_refuses_zero_for_each_size(syn, tmp_path):
    base = dict(image_store=str(syn / "images_36_lmdb"), pairs=str(syn / "random" / "pairs_test.npy"),
                batch_size=2, crop_size=32, prefetch=2)
    net = _data_net(tmp_path, dict(base, batch_size=1, crop_size=1, prefetch=1))     # the smallest allowed
    net.forward()
    assert net.blobs["data"].data.shape == (1, 3, 1, 1)
    for key in ("batch_size", "crop_size", "prefetch"):
        with pytest.raises(Exception, match=f"param_str key '{key}' must be >= 1, got 0"):
            _data_net(tmp_path, dict(base, **{key: 0}))


@pytest.mark.parametrize("mean", [[1.0, 2.0], [1.0, 2.0, 3.0, 4.0], [1.0, 2.0, True], [1.0, "2", 3.0]])
def test_pair_index_layer_wants_the_mean_as_three_numbers(syn, tmp_path, mean):
    params = dict(image_store=str(syn / "images_36_lmdb"), pairs=str(syn / "random" / "pairs_test.npy"),
                  batch_size=2, crop_size=32, mean=mean)
    with pytest.raises(Exception, match=r"param_str key 'mean' must be 3 numbers \(B, G, R\)"):
        _data_net(tmp_path, params)


def test_a_layer_seek_stops_its_old_prefetch_thread(syn, tmp_path):
    import threading
    net = _data_net(tmp_path, dict(image_store=str(syn / "images_36_lmdb"),
                                   pairs=str(syn / "random" / "pairs_test.npy"), batch_size=2, crop_size=32), "TRAIN")
    layer = net.layers[0]
    old = layer.prefetcher._thread
    layer.seek(3)
    assert not old.is_alive() and layer.prefetcher._thread.is_alive()
    assert [t for t in threading.enumerate() if t is old] == []
    layer.prefetcher.close()


def test_pair_index_layer_rejects_bad_configuration(syn, tmp_path):
    good = dict(image_store=str(syn / "images_36_lmdb"), pairs=str(syn / "random" / "pairs_test.npy"),
                batch_size=5, crop_size=32)
    with pytest.raises(Exception, match="unknown param_str key"):
        _data_net(tmp_path, dict(good, croop_size=3))
    with pytest.raises(Exception, match="missing.npy"):
        _data_net(tmp_path, dict(good, pairs=str(tmp_path / "missing.npy")))
    with pytest.raises(Exception, match="crop_size 40"):
        _data_net(tmp_path, dict(good, crop_size=40))
    np.save(tmp_path / "foreign.npy", np.array([[0, 123456, 1]], np.int32))
    with pytest.raises(Exception, match="not in the image store"):
        _data_net(tmp_path, dict(good, pairs=str(tmp_path / "foreign.npy")))


@pytest.mark.parametrize("feed", ["pair_lmdb", "pair_index"])
def test_tiny_pvcnn_trains_from_each_feed(work, tmp_path, feed):
    nets = tmp_path / "nets"
    run = subprocess.run([PY, str(ROOT / "tools/make_nets.py"), "--models", "tiny_pvcnn", "--feed", feed,
                          "--out", str(nets)], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    os.symlink(work / "data", nets / "data")
    (nets / "models" / "tiny_pvcnn").mkdir(parents=True, exist_ok=True)
    solver = caffe_pb2.SolverParameter()
    text_format.Merge((nets / "solvers" / "tiny_pvcnn.prototxt").read_text(), solver)
    solver.max_iter, solver.test_interval, solver.test_iter[:] = 100, 100, [3]
    solver.display, solver.average_loss, solver.snapshot, solver.snapshot_after_train = 20, 20, 0, False
    (nets / "solver.prototxt").write_text(text_format.MessageToString(solver))
    log = subprocess.run([str(ROOT / ".venv/bin/caffe"), "train", "-solver", "solver.prototxt"], cwd=nets,
                         capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, GLOG_minloglevel="0", GLOG_logtostderr="1"))
    assert log.returncode == 0, log.stderr[-3000:]
    losses = [float(x) for x in re.findall(r"Iteration \d+ \(.*\), loss = ([-\d.e+naif]+)", log.stderr)]
    accuracy = [float(x) for x in re.findall(r"Test net output #\d+: accuracy = ([\d.]+)", log.stderr)]
    assert losses and all(np.isfinite(losses)), log.stderr[-2000:]
    print(f"{feed}: losses {losses}, test accuracy {accuracy}")
    assert accuracy and accuracy[-1] > 0.6, f"{feed}: test accuracy {accuracy} after 100 iterations"
