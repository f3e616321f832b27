"""tools/predict.py as a user runs it: broken and odd files, percentiles, --pair, outputs that
cannot be written, and memory on huge images."""
import errno
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from release_fixture import make_tiny_release

PREDICT = Path(__file__).resolve().parents[1] / "tools" / "predict.py"


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return make_tiny_release(tmp_path_factory.mktemp("predict_release"))


def run_predict(*args, timeout=300):
    return subprocess.run([sys.executable, str(PREDICT), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def write_image(path, seed=0, shape=(50, 40, 3)):
    cv2.imwrite(str(path), np.random.default_rng(seed).integers(0, 255, shape, dtype=np.uint8))


def training_scores(release_dir, store, pairs):
    """f_r of every training image, by a plain forward of the deploy net over the store (not release code)."""
    import caffe
    from virality.data.imagestore import ImageStore
    net = caffe.Net(str(release_dir / "deploy.prototxt"), str(release_dir / "tiny_pvcnn.caffemodel"), caffe.TEST)
    ids = np.unique(np.load(pairs)[:, :2])
    chw = ImageStore(store).read_chw(ids).astype(np.float32)           # 36x36 store, 32x32 centre crop
    x = (chw[:, :, 2:34, 2:34] - 128.0) / 128.0                        # tiny: mean 128, scale 1/128
    net.blobs["data"].reshape(*x.shape)
    net.blobs["data"].data[...] = x
    return dict(zip(ids.tolist(), net.forward()["score"][:, 0].astype(np.float64).tolist()))


def test_predict_scores_a_folder_with_broken_files(release, tmp_path):
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    for i, name in enumerate(("a.png", "b.jpg", "sub/c.png")):
        write_image(folder / name, seed=i)
    good = (folder / "b.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(good[: len(good) // 3])
    (folder / "not_an_image.jpg").write_text("hello")
    out = run_predict(release[0], folder, tmp_path / "missing.png", "--format", "json")
    assert out.returncode == 1, out.stderr            # some files failed, the rest were scored
    doc = json.loads(out.stdout)
    assert doc["attribute"] == "virality" and "f_r" in doc["columns"]["f_r"]
    rows = doc["rows"]
    scored = [r for r in rows if not r["error"]]
    failed = {Path(r["path"]).name: r["error"] for r in rows if r["error"]}
    assert {Path(r["path"]).name for r in scored} == {"a.png", "b.jpg", "c.png"}
    assert [r["rank"] for r in scored] == [1, 2, 3]
    assert [r["f_r"] for r in scored] == sorted((r["f_r"] for r in scored), reverse=True)
    assert all(0 <= r["percentile"] <= 100 for r in scored)
    assert set(failed) == {"truncated.jpg", "not_an_image.jpg", "missing.png"}
    assert all(failed.values())
    assert "truncated.jpg" in out.stderr


def test_the_release_stores_its_training_score_distribution(release):
    """quantiles = numpy's percentiles of a plain forward over the training images."""
    from virality.deploy.release import read_release
    release_dir, store, pairs, _ = release
    dist = read_release(release_dir).score_distribution
    scores = np.array(list(training_scores(release_dir, store, pairs).values()))
    assert dist["n"] == scores.size == 60
    np.testing.assert_allclose(dist["quantiles"], np.percentile(scores, np.arange(101)), rtol=1e-5, atol=1e-6)


def test_percentile_of_a_training_image_is_its_rank_among_them(release, tmp_path):
    from scipy.stats import percentileofscore
    release_dir, store, pairs, _ = release
    truth = training_scores(release_dir, store, pairs)
    ids = sorted(truth, key=truth.get)
    picks = [ids[5], ids[30], ids[54]]                       # low, middle, high
    from virality.data.imagestore import ImageStore
    st = ImageStore(store)
    for i in picks:                                          # the store's own 36x36 pixels: the same f_r
        cv2.imwrite(str(tmp_path / f"{i}.png"), st.get(i))
    out = run_predict(release_dir, *[tmp_path / f"{i}.png" for i in picks], "--format", "json")
    assert out.returncode == 0, out.stderr
    rows = {int(Path(r["path"]).stem): r for r in json.loads(out.stdout)["rows"]}
    all_scores = np.array(list(truth.values()))
    for i in picks:
        assert rows[i]["f_r"] == pytest.approx(truth[i], rel=1e-4, abs=1e-6)
        expected = percentileofscore(all_scores, truth[i], kind="mean")      # scipy: % below, ties half
        assert rows[i]["percentile"] == pytest.approx(expected, abs=1.0)


def test_pair_follows_format_and_names_the_attribute_generically(release, tmp_path):
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    write_image(a, 1)
    write_image(b, 2)
    out = run_predict(release[0], "--pair", a, b)                     # default: CSV
    assert out.returncode == 0, out.stderr
    header, row = out.stdout.strip().splitlines()
    assert header.split(",") == ["a", "b", "f_r_a", "f_r_b", "percentile_a", "percentile_b", "p_a_higher"]
    values = dict(zip(header.split(","), row.split(",")))
    fa, fb = float(values["f_r_a"]), float(values["f_r_b"])
    assert float(values["p_a_higher"]) == pytest.approx(np.exp(fa) / (np.exp(fa) + np.exp(fb)), rel=1e-9)
    doc = json.loads(run_predict(release[0], "--pair", a, b, "--format", "json").stdout)
    assert doc["attribute"] == "virality" and "p_a_more_viral" not in doc
    assert doc["p_a_higher"] == pytest.approx(float(values["p_a_higher"]))


def test_pair_with_a_folder_is_a_clear_error(release, tmp_path):
    write_image(tmp_path / "a.png")
    out = run_predict(release[0], "--pair", tmp_path, tmp_path / "a.png")
    assert out.returncode == 2
    assert "is a folder" in out.stderr and "Traceback" not in out.stderr


def test_every_image_like_file_is_tried_and_nothing_is_skipped_silently(release, tmp_path):
    folder = tmp_path / "odd"
    folder.mkdir()
    write_image(folder / "p.jpg", 1)
    os.rename(folder / "p.jpg", folder / "photo.jfif")     # a JPEG under the .jfif extension
    cv2.imwrite(str(folder / "x.jpg"), np.full((40, 40, 3), 90, np.uint8))
    os.rename(folder / "x.jpg", folder / "no_extension")   # a JPEG without an extension
    cv2.imwrite(str(tmp_path / "y.png"), np.full((40, 40, 3), 200, np.uint8))
    os.rename(tmp_path / "y.png", folder / "wrong.txt")    # a PNG with a wrong extension
    (folder / "notes.txt").write_text("not an image")
    os.mkfifo(folder / "pipe.jpg")                         # would block a reader forever
    os.symlink(folder / "gone.jpg", folder / "dangling.jpg")
    out = run_predict(release[0], folder, "--format", "json", timeout=120)
    assert out.returncode == 1, out.stderr
    rows = {Path(r["path"]).name: r for r in json.loads(out.stdout)["rows"]}
    assert {n for n, r in rows.items() if not r["error"]} == {"photo.jfif", "no_extension", "wrong.txt"}
    assert "FIFO" in rows["pipe.jpg"]["error"]
    assert "dangling" in rows["dangling.jpg"]["error"]
    assert "notes.txt" not in rows and "notes.txt" in out.stderr and "not images" in out.stderr


def test_an_empty_folder_is_an_error(release, tmp_path):
    (tmp_path / "empty").mkdir()
    out = run_predict(release[0], tmp_path / "empty")
    assert out.returncode == 2 and "nothing to score" in out.stderr


def _load_tool():
    spec = importlib.util.spec_from_file_location("predict_tool", PREDICT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("code, words", [(errno.ENOSPC, "no space left"), (errno.EROFS, "read-only")])
def test_an_out_that_cannot_be_written_fails_before_scoring(release, tmp_path, monkeypatch, capsys, code, words):
    """A full disk or a read-only --out (faked: root ignores permissions here) stops before any image is scored."""
    import virality.deploy.predict
    tool = _load_tool()
    write_image(tmp_path / "a.png")

    def no_space(fd, offset, length):
        raise OSError(code, os.strerror(code))

    def must_not_score(*a, **k):
        raise AssertionError("scoring started before the output was checked")

    monkeypatch.setattr(os, "posix_fallocate", no_space)
    monkeypatch.setattr(virality.deploy.predict, "predict_files", must_not_score)
    assert tool.main([str(release[0]), str(tmp_path / "a.png"), "--out", str(tmp_path / "out" / "r.csv")]) == 2
    err = capsys.readouterr().err
    assert words in err and "r.csv" in err
    assert not list((tmp_path / "out").glob("*"))          # no probe or partial file left


def test_out_is_written_atomically_and_completely(release, tmp_path):
    for i in range(3):
        write_image(tmp_path / f"{i}.png", i)
    out = run_predict(release[0], tmp_path, "--out", tmp_path / "res" / "ranking.csv", "--quiet")
    assert out.returncode == 0, out.stderr
    lines = (tmp_path / "res" / "ranking.csv").read_text().splitlines()
    assert lines[0] == "rank,path,f_r,percentile,error" and len(lines) == 4
    assert out.stdout == ""


MEASURE = r"""
import sys
from virality.deploy.predict import decode_for_net

def peak_bytes():   # VmHWM: this process's peak resident memory (ru_maxrss would include the forking parent's)
    line = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024

base = peak_bytes()
path, image, error, _ = decode_for_net(sys.argv[1], 36, sys.argv[2] == "reduced")
assert error is None, error
print(peak_bytes() - base, image.mean())
"""


@pytest.fixture(scope="module")
def huge_images(tmp_path_factory):
    d = tmp_path_factory.mktemp("huge")
    yy, xx = np.mgrid[0:5000, 0:5000].astype(np.float32) / 5000
    rgb = np.stack([255 * xx, 255 * yy, 128 + 0 * xx], -1).astype(np.uint8)
    del yy
    cv2.imwrite(str(d / "huge.jpg"), rgb, [cv2.IMWRITE_JPEG_QUALITY, 80])
    rgba = np.dstack([rgb, np.where(xx < 0.5, 255, 0).astype(np.uint8)])       # right half transparent
    del rgb, xx
    cv2.imwrite(str(d / "huge_rgba.png"), rgba, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    return d


@pytest.mark.parametrize("name, limit_mb", [("huge.jpg", 30), ("huge_rgba.png", 230)])
def test_huge_images_decode_in_bounded_memory(root, huge_images, name, limit_mb):
    """5000x5000 pixels: a JPEG is DCT-scaled (1/8); an RGBA PNG is held only as its 8-bit decode and
    Pillow's premultiplied copy for the box filter (2 x 100 MB), never as floats. A full decode of
    the same files (what every prediction did before) peaks at about 0.25 GB and 1.1 GB."""
    def peak(mode):
        res = subprocess.run([sys.executable, "-c", MEASURE, str(huge_images / name), mode],
                             capture_output=True, text=True, timeout=300, cwd=root)
        assert res.returncode == 0, res.stderr
        grown, mean = res.stdout.split()
        return int(grown) / 2 ** 20, float(mean)
    reduced_mb, reduced_mean = peak("reduced")
    full_mb, full_mean = peak("full")
    assert reduced_mb < limit_mb, f"{name}: peak grew by {reduced_mb:.0f} MB (full decode: {full_mb:.0f} MB)"
    assert full_mb > 2 * reduced_mb                         # the measurement sees the difference
    assert reduced_mean == pytest.approx(full_mean, abs=0.5)   # and the picture is the same


def test_caffe_log_is_off_the_console_in_a_file_or_verbose(release, tmp_path):
    """Caffe's net dump (glog INFO) goes to --log, not to the console; --verbose prints it."""
    write_image(tmp_path / "a.png")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GLOG_")}   # as a user runs it
    run = lambda *extra: subprocess.run([sys.executable, str(PREDICT), str(release[0]), str(tmp_path / "a.png"),  # noqa: E731
                                         *extra], capture_output=True, text=True, timeout=120, env=env)
    quiet = run("--log", str(tmp_path / "logs" / "caffe.log"))
    assert quiet.returncode == 0, quiet.stderr
    assert "Network initialization done" not in quiet.stderr and len(quiet.stderr.splitlines()) < 10
    assert "Network initialization done" in (tmp_path / "logs" / "caffe.log").read_text()
    assert list((tmp_path / "logs").iterdir()) == [tmp_path / "logs" / "caffe.log"]     # glog's own name is gone
    verbose = run("--verbose")
    assert verbose.returncode == 0 and "Network initialization done" in verbose.stderr
