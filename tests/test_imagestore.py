"""The image store survives a corpus of broken images, reports each one, and a killed
build never leaves a store that looks complete."""
import csv
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import cv2
import lmdb
import numpy as np
import pytest
from PIL import Image

from virality.data.imagestore import (ImageProblem, ImageStore, StoreError, build_image_store, key, load_image_bgr,
                                 parse_datum, resize_square)

ROOT = Path(__file__).resolve().parent.parent


def _png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_bomb_png(path, width, height):
    """A PNG whose header declares width x height RGB pixels, with almost no pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
                     + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + _png_chunk(b"IEND", b""))


def noise_bgr(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def make_corpus(d):
    """{name: (path, expected status, expected kind or None)}; status in ok/converted/skipped."""
    d.mkdir(parents=True, exist_ok=True)
    corpus = {}

    def add(name, status, kind=None):
        corpus[name] = (d / name, status, kind)

    cv2.imwrite(str(d / "ok.png"), noise_bgr(30, 40))
    add("ok.png", "ok")
    cv2.imwrite(str(d / "ok.jpg"), noise_bgr(30, 40, 1))
    add("ok.jpg", "ok")
    add("missing.jpg", "skipped", "missing")
    (d / "corrupt.jpg").write_bytes(np.random.default_rng(2).bytes(5000))
    add("corrupt.jpg", "skipped", "unreadable")
    (d / "empty.jpg").write_bytes(b"")
    add("empty.jpg", "skipped", "unreadable")
    cv2.imwrite(str(d / "full.jpg"), cv2.resize(noise_bgr(16, 16, 3), (200, 200)), [cv2.IMWRITE_JPEG_QUALITY, 95])
    data = (d / "full.jpg").read_bytes()
    (d / "truncated.jpg").write_bytes(data[:len(data) // 2])
    add("truncated.jpg", "skipped", "decode_error")
    cv2.imwrite(str(d / "full.png"), noise_bgr(50, 50, 4))
    data = (d / "full.png").read_bytes()
    (d / "truncated.png").write_bytes(data[:len(data) // 2])
    add("truncated.png", "skipped", "decode_error")
    cv2.imwrite(str(d / "gray.png"), noise_bgr(20, 20, 5)[..., 0])
    add("gray.png", "converted", "grayscale")
    Image.new("CMYK", (24, 24), (0, 255, 255, 0)).save(d / "cmyk.jpg")       # CMYK red
    add("cmyk.jpg", "converted", "cmyk")
    rgba = np.zeros((20, 20, 4), np.uint8)
    rgba[..., 2] = 200                                # red in BGR order (OpenCV writes BGRA)
    rgba[:, 10:, 3] = 255                             # left half fully transparent
    cv2.imwrite(str(d / "alpha.png"), rgba)
    add("alpha.png", "converted", "alpha")
    cv2.imwrite(str(d / "gray16.png"), np.full((20, 20), 128 * 257, np.uint16))
    add("gray16.png", "converted", "16bit")
    rgb16 = np.zeros((20, 20, 3), np.uint16)
    rgb16[..., 0] = 65535                             # blue, 16 bit
    cv2.imwrite(str(d / "rgb16.png"), rgb16)
    add("rgb16.png", "converted", "16bit")
    frames = [Image.new("RGB", (20, 20), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    frames[0].save(d / "animated.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    add("animated.gif", "converted", "animated")
    write_bomb_png(d / "bomb.png", 30000, 30000)     # 900 M pixels declared
    add("bomb.png", "skipped", "oversized")
    write_bomb_png(d / "big.png", 10000, 9000)       # 90 M: just over Pillow's and our default cap
    add("big.png", "skipped", "oversized")
    return corpus


@pytest.fixture(scope="module")
def corpus_store(tmp_path_factory):
    d = tmp_path_factory.mktemp("corpus")
    corpus = make_corpus(d / "images")
    names = sorted(corpus)
    items = [(i, corpus[n][0]) for i, n in enumerate(names)]
    meta = build_image_store(items, d / "store", 16, workers=2, progress=False)
    return d, corpus, names, meta


def _manifest(store_dir):
    with open(store_dir / "manifest.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_every_broken_image_is_skipped_or_converted_and_listed_with_its_reason(corpus_store):
    d, corpus, names, meta = corpus_store
    rows = _manifest(d / "store")
    by_id = {}
    for row in rows:
        by_id.setdefault(int(row["id"]), []).append(row)
        assert row["detail"], f"no reason given for {row['path']}"
    store = ImageStore(d / "store")
    for i, name in enumerate(names):
        _, status, kind = corpus[name]
        listed = by_id.get(i, [])
        if status == "ok":
            assert not listed, f"{name} should not be in the manifest: {listed}"
        else:
            assert (status, kind) in {(r["status"], r["kind"]) for r in listed}, f"{name}: {listed}"
            assert all(r["path"].endswith(name) for r in listed)
        assert (i in store) == (status != "skipped"), name
    assert meta["stored"] == sum(1 for n in names if corpus[n][1] != "skipped")
    assert meta["skipped"] == sum(1 for n in names if corpus[n][1] == "skipped")
    assert meta["complete"] is True
    assert list(store.ids) == sorted(i for i, n in enumerate(names) if corpus[n][1] != "skipped")


def test_converted_images_have_the_right_pixels(corpus_store):
    d, corpus, names, _ = corpus_store
    store = ImageStore(d / "store")
    get = {n: store.get(i) for i, n in enumerate(names) if corpus[n][1] != "skipped"}
    assert all(img.shape == (16, 16, 3) and img.dtype == np.uint8 for img in get.values())
    np.testing.assert_allclose(get["cmyk.jpg"].reshape(-1, 3).mean(0), [0, 0, 255], atol=3)      # red, BGR
    np.testing.assert_allclose(get["gray16.png"], 128, atol=1)                               # 128*257 -> 128
    np.testing.assert_allclose(get["rgb16.png"].reshape(-1, 3).mean(0), [255, 0, 0], atol=1)   # blue
    np.testing.assert_allclose(get["animated.gif"].reshape(-1, 3).mean(0), [0, 0, 255], atol=2)  # first frame red
    g = get["gray.png"]
    assert (g[..., 0] == g[..., 1]).all() and (g[..., 1] == g[..., 2]).all()
    a = get["alpha.png"]                             # transparent left half -> white, opaque right half -> red
    np.testing.assert_allclose(a[:, :7].reshape(-1, 3).mean(0), [255, 255, 255], atol=1)
    np.testing.assert_allclose(a[:, 9:].reshape(-1, 3).mean(0), [0, 0, 200], atol=1)


def test_oversized_images_are_refused_from_the_header_before_decoding(tmp_path):
    # The bomb's pixel data is garbage: decoding it would report decode_error, not oversized.
    write_bomb_png(tmp_path / "bomb.png", 3000, 3000)
    with pytest.raises(ImageProblem) as err:
        load_image_bgr(tmp_path / "bomb.png", max_pixels=1_000_000)
    assert err.value.kind == "oversized" and "header" in err.value.detail
    with pytest.raises(ImageProblem) as err:
        load_image_bgr(tmp_path / "bomb.png")       # under the default cap: decoding fails
    assert err.value.kind == "decode_error"
    cv2.imwrite(str(tmp_path / "ok.png"), noise_bgr(100, 100))
    meta = build_image_store([(0, tmp_path / "ok.png")], tmp_path / "store", 8, max_pixels=5000, progress=False)
    assert meta["stored"] == 0 and meta["problems"] == {"skipped:oversized": 1}


def test_exif_orientation_is_applied_and_noted(tmp_path):
    img = Image.fromarray(np.zeros((20, 40, 3), np.uint8))        # 40 wide, 20 high
    exif = Image.Exif()
    exif[0x0112] = 6                                                # rotate 90 degrees clockwise
    img.save(tmp_path / "rot.jpg", exif=exif)
    image, notes = load_image_bgr(tmp_path / "rot.jpg")
    assert image.shape == (40, 20, 3)
    assert [k for k, _ in notes] == ["exif_orientation"]


def test_resize_modes():
    img = np.zeros((20, 40, 3), np.uint8)
    img[:, :10] = 255                                  # a white band on the left quarter
    warped = resize_square(img, 10, "warp")
    cropped = resize_square(img, 10, "crop")
    assert warped.shape == cropped.shape == (10, 10, 3)
    assert warped[:, 0].min() > 200 and warped[:, -1].max() == 0      # the whole width is kept
    assert cropped.max() == 0                                           # the centre crop cuts the band
    with pytest.raises(ValueError, match="resize mode"):
        resize_square(img, 10, "stretch")


@pytest.mark.parametrize("encoding", ["raw", "png", "jpg"])
def test_encodings_round_trip_and_caffe_layout(tmp_path, encoding):
    smooth = np.zeros((12, 12, 3), np.uint8)
    smooth[..., 0] = np.arange(12)[None, :] * 20
    smooth[..., 1] = np.arange(12)[:, None] * 20
    smooth[..., 2] = 90
    cv2.imwrite(str(tmp_path / "a.png"), smooth)
    meta = build_image_store([(7, tmp_path / "a.png")], tmp_path / "s", 12, encoding=encoding, progress=False)
    assert meta["encoding"] == encoding
    got = ImageStore(tmp_path / "s").get(7)
    want = cv2.imread(str(tmp_path / "a.png"))
    if encoding == "jpg":
        assert np.abs(got.astype(int) - want).mean() < 4
    else:
        np.testing.assert_array_equal(got, want)
    env = lmdb.open(str(tmp_path / "s"), readonly=True, lock=False)
    with env.begin() as txn:
        keys = [k for k, _ in txn.cursor()]
        chw, label = parse_datum(txn.get(b"0000000007"))
    assert keys == [key(7)] == [b"0000000007"]
    assert chw.shape == (3, 12, 12) and label == 0


def test_the_threaded_build_equals_the_serial_build(tmp_path):
    for i in range(20):
        cv2.imwrite(str(tmp_path / f"{i}.png"), noise_bgr(30 + i, 20, i))
    items = [(i, tmp_path / f"{i}.png") for i in range(20)]
    build_image_store(items, tmp_path / "one", 16, workers=1, progress=False)
    build_image_store(items, tmp_path / "two", 16, workers=2, progress=False)
    a, b = ImageStore(tmp_path / "one"), ImageStore(tmp_path / "two")
    np.testing.assert_array_equal(a.read_chw(a.ids), b.read_chw(b.ids))


def test_bad_ids_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unique"):
        build_image_store([(1, "a.png"), (1, "b.png")], tmp_path / "s", 8, progress=False)
    assert not (tmp_path / "s").exists()


def test_an_interrupted_build_leaves_nothing_and_keeps_the_old_store(tmp_path, monkeypatch):
    import virality.data.imagestore as imagestore

    cv2.imwrite(str(tmp_path / "a.png"), noise_bgr(10, 10))
    items = [(i, tmp_path / "a.png") for i in range(50)]
    build_image_store(items[:3], tmp_path / "s", 8, progress=False)
    real = imagestore._process_one
    calls = []

    def dies_on_the_tenth(task):
        calls.append(task)
        if len(calls) == 10:
            raise KeyboardInterrupt
        return real(task)

    monkeypatch.setattr(imagestore, "_process_one", dies_on_the_tenth)
    with pytest.raises(KeyboardInterrupt):
        build_image_store(items, tmp_path / "s", 8, progress=False)
    assert len(ImageStore(tmp_path / "s")) == 3                 # the old, complete store is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "s"]


def test_a_killed_build_never_looks_complete(tmp_path):
    cv2.imwrite(str(tmp_path / "a.png"), noise_bgr(64, 64))
    n = 200_000
    with open(tmp_path / "list.csv", "w") as f:
        f.write("id,path\n" + "".join(f"{i},a.png\n" for i in range(n)))
    out = tmp_path / "images_16_lmdb"
    proc = subprocess.Popen([sys.executable, str(ROOT / "tools/build_lmdb.py"), "images", "--list",
                             str(tmp_path / "list.csv"), "--size", "16", "--workers", "1", "--out", str(out)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tmp_dirs = []
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        tmp_dirs = [p for p in tmp_path.glob(".images_16_lmdb.tmp-*") if (p / "data.mdb").exists()]
        if tmp_dirs and (tmp_dirs[0] / "data.mdb").stat().st_size > 1 << 20:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the build finished before it could be killed: make it longer"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert tmp_dirs, "the build should work under a temporary name"
    assert not out.exists()
    with pytest.raises(StoreError):
        ImageStore(out)
    with pytest.raises(StoreError, match="incomplete|not a complete"):
        ImageStore(tmp_dirs[0])                  # even the leftover says it is not complete
    # the next build removes the leftover of the dead process
    build_image_store([(0, tmp_path / "a.png")], out, 16, progress=False)
    assert len(ImageStore(out)) == 1
    assert not list(tmp_path.glob(".images_16_lmdb.*"))


def test_the_tool_reports_problems_on_stderr(tmp_path):
    corpus = make_corpus(tmp_path / "images")
    with open(tmp_path / "list.csv", "w") as f:
        f.write("id,path\n" + "".join(f"{i},images/{n}\n" for i, n in enumerate(sorted(corpus))))
    run = subprocess.run([sys.executable, str(ROOT / "tools/build_lmdb.py"), "--quiet", "images", "--list",
                          str(tmp_path / "list.csv"), "--size", "16", "--out", str(tmp_path / "store")],
                         cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "skipped" in run.stderr and "manifest.csv" in run.stderr and "skipped:oversized 2" in run.stderr
    bad = subprocess.run([sys.executable, str(ROOT / "tools/build_lmdb.py"), "images", "--list",
                          str(tmp_path / "nope.csv"), "--size", "16", "--out", str(tmp_path / "x")],
                         cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode != 0 and "nope.csv" in bad.stderr
