"""A release is checked as data before use: edited metadata, deploy nets and caffemodels whose
checksums were recomputed after the edit are refused with a message naming the file and key."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from release_fixture import make_tiny_release, resum

PREDICT = Path(__file__).resolve().parents[1] / "tools" / "predict.py"


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return make_tiny_release(tmp_path_factory.mktemp("release_checks"), num_images=20)[0]


def edited(release, tmp_path, meta=None, deploy=None, caffemodel=None):
    """A copy of the release with metadata edited by ``meta(dict)``, the deploy text by ``deploy(str)``,
    the caffemodel bytes by ``caffemodel(bytes)``; checksums recomputed so only the content checks remain."""
    copy = tmp_path / "edited"
    shutil.copytree(release, copy)
    if meta:
        m = json.loads((copy / "metadata.json").read_text())
        meta(m)
        (copy / "metadata.json").write_text(json.dumps(m))
    if deploy:
        (copy / "deploy.prototxt").write_text(deploy((copy / "deploy.prototxt").read_text()))
    if caffemodel:
        path = copy / "tiny_pvcnn.caffemodel"
        path.write_bytes(caffemodel(path.read_bytes()))
    resum(copy)
    return copy


def predict(copy, tmp_path):
    import cv2
    import numpy as np
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((40, 40, 3), np.uint8))
    return subprocess.run([sys.executable, str(PREDICT), str(copy), str(tmp_path / "a.png")],
                          capture_output=True, text=True, timeout=120)


def test_the_fixture_release_predicts(release, tmp_path):
    out = predict(edited(release, tmp_path), tmp_path)        # recomputing unchanged checksums changes nothing
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("edit, words", [
    (lambda m: m["input"].update(crop_size=99999), "input.crop_size"),          # would allocate 112 GiB
    (lambda m: m["input"].update(image_size=99999, crop_size=99999), "input.image_size"),
    (lambda m: m.update(input="x"), "'input' is \"x\""),                          # was a TypeError
    (lambda m: m["input"].update(mean_bgr=[104, 117]), "input.mean_bgr"),
    (lambda m: m["input"].update(crop_size="32"), "input.crop_size"),
    (lambda m: m["input"].update(shape=[1, 3, 64, 64]), "input.shape"),
    (lambda m: m["output"].update(blob="fc7"), "output.blob"),
    (lambda m: m["score_distribution"]["quantiles"].reverse(), "score_distribution.quantiles"),
])
def test_metadata_is_checked_against_its_schema(release, tmp_path, edit, words):
    from virality.deploy.release import ReleaseError, read_release
    copy = edited(release, tmp_path, meta=edit)
    with pytest.raises(ReleaseError, match="metadata.json") as err:
        read_release(copy)
    assert words in str(err.value)
    out = predict(copy, tmp_path)
    assert out.returncode == 2 and words in out.stderr and "Traceback" not in out.stderr


def test_a_python_layer_in_the_deploy_net_is_refused(release, tmp_path):
    from virality.deploy.release import ReleaseError, read_release
    layer = ('layer { name: "evil" type: "Python" bottom: "score" top: "evil" '
             'python_param { module: "os" layer: "system" } }\n')
    copy = edited(release, tmp_path, deploy=lambda text: text + layer)
    with pytest.raises(ReleaseError, match=r"deploy.prototxt: layer type\(s\) \['Python'\] are not allowed"):
        read_release(copy)


def test_a_deploy_input_other_than_the_metadata_is_refused(release, tmp_path):
    from virality.deploy.release import ReleaseError, read_release
    copy = edited(release, tmp_path, deploy=lambda text: text.replace("dim: 32", "dim: 64", 2))
    with pytest.raises(ReleaseError, match="one Input layer with top 'data' of shape"):
        read_release(copy)


def test_a_truncated_caffemodel_is_a_clear_error_not_a_caffe_abort(release, tmp_path):
    copy = edited(release, tmp_path, caffemodel=lambda data: data[: len(data) * 2 // 3])
    out = predict(copy, tmp_path)
    assert out.returncode == 2, out.stderr                     # Caffe's CHECK would abort: -6
    assert "tiny_pvcnn.caffemodel" in out.stderr and "Traceback" not in out.stderr


def test_a_caffemodel_that_does_not_fit_the_net_is_refused(release, tmp_path):
    """Weights of another shape (a 64 -> 1 scoring layer stored as 32 -> 1) are named, layer and shape."""
    from virality.pretrained.caffemodel import read_caffemodel, tensor_layers, write_caffemodel
    from virality.deploy.release import ReleaseError, read_release
    copy = edited(release, tmp_path)
    path = copy / "tiny_pvcnn.caffemodel"
    layers = [(n, t, [a.copy() for a in arrays]) for n, t, arrays in tensor_layers(read_caffemodel(path))]
    layers = [(n, t, [arrays[0][:, :32].copy(), arrays[1]] if n == "score" else arrays) for n, t, arrays in layers]
    write_caffemodel(path, layers)
    resum(copy)
    with pytest.raises(ReleaseError, match=r"layer 'score' blob 0 is 1x32"):
        read_release(copy).net()
