"""Pretrained weights: stand-ins with the official names and shapes load into our nets, checked.

Stand-ins (no download is possible here):
- AlexNet: the Model Zoo layout (``virality.pretrained.zoo.reference_net``: our tower +
  fc8 + prob) filled with random values (biases too) and saved by Caffe
  (``Net.save``, current format).
- VGG-19: written in Caffe's old V1 format (``layers``, enum types, legacy
  4-D blob dims), as VGG_ILSVRC_19_layers.caffemodel is stored; Caffe upgrades
  it when loading. Built once per module (about 575 MB).

Checks: both towers' conv/fc blobs equal the stand-in's after loading (through
the shared params), a renamed layer or a wrong shape fails with a clear message,
the TPVCNN initialisation transplant, the release round trip and tampering.
"""
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from virality.model.architectures import ARCHITECTURES, TOWER_PARAM_LAYERS
from virality.pretrained.caffemodel import read_caffemodel, tensor_layers, write_caffemodel
from virality.paths import ROOT
from virality.deploy.release import ReleaseError, make_release, read_release
from virality.pretrained.weights import (WeightsError, build_net, input_net_param, load_pretrained, load_weights,
                              make_tpvcnn_init, upgrade_caffemodel)
from virality.pretrained.zoo import load_manifest, reference_net


def _randomise(net, seed):
    """Give every param blob (biases too) random values, so that nothing equals a filler by accident."""
    rng = np.random.default_rng(seed)
    for blobs in net.params.values():
        for blob in blobs:
            blob.data[...] = rng.standard_normal(blob.data.shape, dtype=np.float32)
    # Read back after all writes: layers sharing params (tower B) wrote into the same memory.
    return {(name, i): blob.data.copy() for name, blobs in net.params.items() for i, blob in enumerate(blobs)}


def _saved_random_net(net_param, path, seed):
    net = build_net(net_param)
    arrays = _randomise(net, seed)
    net.save(str(path))
    del net
    return arrays


def _tower_b(layer):
    return f"{layer}_p"


@pytest.fixture(scope="module")
def alexnet_standin(tmp_path_factory):
    path = tmp_path_factory.mktemp("alexnet") / "standin_bvlc_alexnet.caffemodel"
    arrays = _saved_random_net(reference_net("alexnet"), path, seed=1)
    return path, arrays


@pytest.fixture(scope="module")
def vgg19_v1_standin(tmp_path_factory):
    manifest = load_manifest("VGG_ILSVRC_19_layers")
    rng = np.random.default_rng(2)
    layers = [(name, "CONVOLUTION" if name.startswith("conv") else "INNER_PRODUCT",
               [rng.random(shape, dtype=np.float32) - 0.5 for shape in manifest.layer_shapes[name]])
              for name in list(manifest.layers) + list(manifest.ignored_layers)]
    arrays = {(name, i): a for name, _, blobs in layers for i, a in enumerate(blobs)}
    path = tmp_path_factory.mktemp("vgg19") / "standin_VGG_ILSVRC_19_layers.caffemodel"
    write_caffemodel(path, layers, name="VGG_ILSVRC_19_layers", v1=True)
    del layers
    yield path, arrays
    path.unlink()


# ------------------------------------------------------------------ manifests
@pytest.mark.parametrize("name", ["bvlc_alexnet", "VGG_ILSVRC_19_layers"])
def test_manifest_agrees_with_the_architecture_and_the_reference_net(name):
    m = load_manifest(name)
    arch = ARCHITECTURES[m.arch]
    assert m.layers == arch.pretrained == TOWER_PARAM_LAYERS[m.arch]
    assert m.mean_bgr == arch.mean_bgr and m.crop_size == arch.crop_size
    assert m.licence["name"] and m.url.startswith("http")
    net = build_net(reference_net(m.arch))
    shapes = {layer: tuple(tuple(b.data.shape) for b in blobs) for layer, blobs in net.params.items()}
    assert shapes == m.layer_shapes
    assert sum(b.data.size for blobs in net.params.values() for b in blobs) == m.num_params


def test_manifest_checksums():
    assert load_manifest("bvlc_alexnet").sha1 == "9116a64c0fbe4459d18f4bb6b56d647b63920377"
    vgg = load_manifest("VGG_ILSVRC_19_layers")
    assert vgg.sha1 is None and not vgg.verifiable and "NO CHECKSUM" in vgg.sha1_note


def test_bad_manifest_is_refused_with_the_file_name(tmp_path):
    from virality.pretrained.zoo import ManifestError
    data = json.loads((ROOT / "model_zoo" / "bvlc_alexnet.json").read_text())
    data["sha1"] = "not-a-sha1"
    path = tmp_path / "bvlc_alexnet.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ManifestError, match=f"{path}.*sha1"):
        load_manifest(path)


# ------------------------------------------------------------------ AlexNet
def test_two_tower_input_net_keeps_the_towers_and_drops_data_and_loss():
    net_param = input_net_param("alexnet_pvcnn")
    types = [layer.type for layer in net_param.layer]
    assert types[:2] == ["Input", "Input"] and "Data" not in types and "Python" not in types
    names = {layer.name for layer in net_param.layer}
    assert {"conv1", "conv1_p", "fc7", "fc7_p", "score", "score_p"} <= names


def test_alexnet_standin_loads_into_both_towers_of_alexnet_pvcnn(alexnet_standin):
    path, arrays = alexnet_standin
    net_param = input_net_param("alexnet_pvcnn")
    net = build_net(net_param)
    before = {layer: net.params[layer][0].data.copy() for layer in ARCHITECTURES["alexnet"].pretrained}
    report = load_weights(net, net_param, path, required=ARCHITECTURES["alexnet"].pretrained)
    for layer in ARCHITECTURES["alexnet"].pretrained:
        assert not np.array_equal(before[layer], arrays[(layer, 0)])       # the load did change something
        for tower_layer in (layer, _tower_b(layer)):
            for i in (0, 1):
                np.testing.assert_array_equal(net.params[tower_layer][i].data, arrays[(layer, i)])
    assert report.copied_layers == list(ARCHITECTURES["alexnet"].pretrained)
    assert [layer for layer, _ in report.shared] == [_tower_b(x) for x in ARCHITECTURES["alexnet"].pretrained]
    assert report.ignored == ["fc8"] and report.initialised == ["score", "score_p"]
    text = report.format()
    assert "fc8" in text and "conv1_p (params of conv1)" in text and "score" in text
    # The forward pass runs and both towers compute the same function.
    image = np.random.default_rng(0).standard_normal(net.blobs["data"].data.shape).astype(np.float32)
    net.blobs["data"].data[...] = image
    net.blobs["data_p"].data[...] = image
    net.forward()
    np.testing.assert_array_equal(net.blobs["score"].data, net.blobs["score_p"].data)


def test_renamed_layer_makes_the_load_fail(alexnet_standin, tmp_path):
    path, _ = alexnet_standin
    layers = tensor_layers(read_caffemodel(path))
    renamed = [("conv3_renamed" if name == "conv3" else name, t, blobs) for name, t, blobs in layers]
    bad = tmp_path / "renamed.caffemodel"
    write_caffemodel(bad, renamed)
    with pytest.raises(WeightsError) as err:
        load_pretrained("alexnet_pvcnn", bad)
    msg = str(err.value)
    assert "'conv3'" in msg and "conv3_renamed" in msg and "renamed?" in msg and str(bad) in msg


def test_wrong_shape_fails_with_a_message_not_a_caffe_abort(tmp_path):
    bad = tmp_path / "wrong_shape.caffemodel"
    write_caffemodel(bad, [("conv1", "Convolution", [np.zeros((64, 3, 11, 11), np.float32),
                                                      np.zeros(64, np.float32)])])
    with pytest.raises(WeightsError, match=r"'conv1' blob 0 has shape 64x3x11x11.*needs 96x3x11x11"):
        load_pretrained("alexnet_pvcnn", bad)


def test_not_a_caffemodel_is_refused(tmp_path):
    bad = tmp_path / "page.caffemodel"
    bad.write_text("<html>404 Not Found</html>\n")
    with pytest.raises(WeightsError, match=str(bad)):
        load_pretrained("alexnet_pvcnn", bad)


# ------------------------------------------------------------------ VGG-19, V1 format
def test_vgg19_v1_standin_loads_into_both_towers_of_vgg19_pvcnn(vgg19_v1_standin):
    path, arrays = vgg19_v1_standin
    model = read_caffemodel(path)
    assert model.format == "V1"
    fc6 = model.by_name()["fc6"]
    assert fc6.type == "INNER_PRODUCT" and fc6.blobs[0].legacy and fc6.blobs[0].shape == (1, 1, 4096, 25088)
    del model, fc6
    net, report = load_pretrained("vgg19_pvcnn", path)      # Caffe upgrades V1 while loading
    assert report.source_format == "V1"
    pretrained = ARCHITECTURES["vgg19"].pretrained
    assert report.copied_layers == list(pretrained) and report.ignored == ["fc8"]
    for layer in pretrained:
        for tower_layer in (layer, _tower_b(layer)):
            for i in (0, 1):
                np.testing.assert_array_equal(net.params[tower_layer][i].data.reshape(-1),
                                              arrays[(layer, i)].reshape(-1))


def test_upgrade_tool_writes_a_current_format_copy(tmp_path):
    """The explicit upgrade step (Caffe's upgrade_net_proto_binary) on a small V1 file."""
    rng = np.random.default_rng(3)
    layers = [("conv1", "CONVOLUTION", [rng.random((16, 3, 5, 5), dtype=np.float32), rng.random(16, dtype=np.float32)]),
              ("fc6", "INNER_PRODUCT", [rng.random((64, 512), dtype=np.float32), rng.random(64, dtype=np.float32)])]
    v1 = write_caffemodel(tmp_path / "v1.caffemodel", layers, v1=True)
    v2 = upgrade_caffemodel(v1, tmp_path / "v2.caffemodel")
    upgraded = read_caffemodel(v2)
    assert upgraded.format == "V2"
    assert [(layer.name, layer.type) for layer in upgraded.layers] == [("conv1", "Convolution"),
                                                                       ("fc6", "InnerProduct")]
    for (_, _, arrays), layer in zip(layers, upgraded.layers):
        for a, blob in zip(arrays, layer.blobs):
            np.testing.assert_array_equal(blob.data, a.reshape(-1))
            assert blob.fits(a.shape)


# ------------------------------------------------------------------ TPVCNN
def test_tpvcnn_init_transplants_imagenet_and_topic_weights(alexnet_standin, tmp_path):
    imagenet, imagenet_arrays = alexnet_standin
    from virality.model.nets import deploy_net
    topic = tmp_path / "alexnet_topic_iter_1.caffemodel"
    topic_arrays = _saved_random_net(deploy_net("alexnet_topic", num_topics=7), topic, seed=5)
    out = tmp_path / "init" / "alexnet_tpvcnn_init.caffemodel"
    reports = make_tpvcnn_init("alexnet_tpvcnn", imagenet, topic, out)
    pretrained = ARCHITECTURES["alexnet"].pretrained
    written = read_caffemodel(out).by_name()
    assert list(written) == list(pretrained) + [f"topic_{x}" for x in pretrained]
    for layer in pretrained:
        for i in (0, 1):
            np.testing.assert_array_equal(written[layer].blobs[i].data, imagenet_arrays[(layer, i)].reshape(-1))
            np.testing.assert_array_equal(written[f"topic_{layer}"].blobs[i].data, topic_arrays[(layer, i)].reshape(-1))
    imagenet_report, topic_report, check = reports
    assert topic_report.ignored == ["fc8_topic"] and not topic_report.warnings
    assert [(t, s) for t, s, _ in topic_report.copied] == [(f"topic_{x}", x) for x in pretrained]
    # Loading the written file: both ranking towers and both topic branches are filled, score is not.
    shared = dict(check.shared)
    assert shared["conv1_p"] == "conv1" and shared["topic_fc7_p"] == "topic_fc7"
    assert check.initialised == ["score", "score_p"]
    assert not list(out.parent.glob(".*"))          # no temporary file left behind


def test_tpvcnn_init_fails_when_the_topic_snapshot_lacks_a_layer(tmp_path):
    from virality.model.nets import deploy_net
    topic = tmp_path / "tiny_topic.caffemodel"
    _saved_random_net(deploy_net("tiny_topic", num_topics=5), topic, seed=6)
    layers = [(n, t, b) for n, t, b in tensor_layers(read_caffemodel(topic)) if n != "fc7"]
    write_caffemodel(topic, layers)
    out = tmp_path / "init.caffemodel"
    with pytest.raises(WeightsError, match="'fc7'"):
        make_tpvcnn_init("tiny_tpvcnn", None, topic, out)
    assert not out.exists()


def test_init_tpvcnn_tool_on_tiny(tmp_path):
    from virality.model.nets import deploy_net
    topic = tmp_path / "tiny_topic.caffemodel"
    _saved_random_net(deploy_net("tiny_topic", num_topics=5), topic, seed=7)
    out = tmp_path / "tiny_init.caffemodel"
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "init_tpvcnn.py"), "tiny_tpvcnn",
                           "--topic", str(topic), "--out", str(out)], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "topic_conv1 <- conv1" in proc.stderr and out.is_file()


# ------------------------------------------------------------------ releases
@pytest.fixture
def tiny_snapshot(tmp_path):
    """A stand-in training snapshot of tiny_pvcnn: the two-tower net, as `caffe train` saves it."""
    path = tmp_path / "tiny_pvcnn_iter_1000.caffemodel"
    arrays = _saved_random_net(input_net_param("tiny_pvcnn"), path, seed=11)
    return path, arrays


def test_release_round_trip(tiny_snapshot, tmp_path):
    snapshot, arrays = tiny_snapshot
    out = tmp_path / "release"
    release, report = make_release("tiny_pvcnn", snapshot=snapshot, out_dir=out, trained_on="stand-in",
                                   stream=sys.stderr)
    assert sorted(p.name for p in out.iterdir()) == ["SHA256SUMS", "deploy.prototxt", "metadata.json",
                                                     "tiny_pvcnn.caffemodel"]
    again = read_release(out)
    meta = again.metadata
    assert meta["model"] == "tiny_pvcnn" and meta["arch"] == "tiny" and meta["output"]["blob"] == "score"
    assert meta["input"]["crop_size"] == 32 and meta["input"]["mean_bgr"] == list(ARCHITECTURES["tiny"].mean_bgr)
    assert meta["input"]["shape"] == [1, 3, 32, 32] and meta["trained_on"]["description"] == "stand-in"
    assert meta["trained_on"]["data_sources"]                  # read from the train_val net
    assert again.deploy.read_text() == (ROOT / "prototxt" / "tiny_pvcnn" / "deploy.prototxt").read_text()
    net = again.net()
    for (layer, i), a in arrays.items():
        if not layer.endswith("_p"):
            np.testing.assert_array_equal(net.params[layer][i].data, a)
    assert report.copied_layers == list(net.params.keys()) and not report.initialised
    # The release holds one tower only: no _p layers.
    assert not [layer for layer in read_caffemodel(again.caffemodel).by_name() if layer.endswith("_p")]


def test_release_detects_tampering(tiny_snapshot, tmp_path):
    snapshot, _ = tiny_snapshot
    out = tmp_path / "release"
    make_release("tiny_pvcnn", snapshot=snapshot, out_dir=out, stream=sys.stderr)
    caffemodel = out / "tiny_pvcnn.caffemodel"
    good = caffemodel.read_bytes()
    caffemodel.chmod(0o644)
    caffemodel.write_bytes(good[:-10] + bytes(b ^ 1 for b in good[-10:]))
    with pytest.raises(ReleaseError, match=r"tiny_pvcnn\.caffemodel: sha256 .* differs"):
        read_release(out)
    caffemodel.write_bytes(good)
    read_release(out)
    meta = out / "metadata.json"
    meta.chmod(0o644)
    meta.write_text(meta.read_text().replace('"crop_size": 32', '"crop_size": 64'))
    with pytest.raises(ReleaseError, match=r"metadata\.json: sha256"):
        read_release(out)
    caffemodel.unlink()
    with pytest.raises(ReleaseError, match="missing"):
        read_release(out)


def test_release_refuses_an_incomplete_snapshot_and_an_existing_directory(tiny_snapshot, tmp_path):
    snapshot, _ = tiny_snapshot
    partial = tmp_path / "partial.caffemodel"
    write_caffemodel(partial, [(n, t, b) for n, t, b in tensor_layers(read_caffemodel(snapshot)) if n != "score"])
    with pytest.raises(ReleaseError, match="'score'"):
        make_release("tiny_pvcnn", snapshot=partial, out_dir=tmp_path / "r1", stream=sys.stderr)
    assert not (tmp_path / "r1").exists()
    out = tmp_path / "r2"
    make_release("tiny_pvcnn", snapshot=snapshot, out_dir=out, stream=sys.stderr)
    with pytest.raises(ReleaseError, match="already exists"):
        make_release("tiny_pvcnn", snapshot=snapshot, out_dir=out, stream=sys.stderr)
    make_release("tiny_pvcnn", snapshot=snapshot, out_dir=out, force=True, stream=sys.stderr)
    read_release(out)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_release_tool(tiny_snapshot, tmp_path):
    snapshot, _ = tiny_snapshot
    out = tmp_path / "rel"
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "release.py"), "tiny_pvcnn", "--snapshot",
                           str(snapshot), "--out", str(out)], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert read_release(out).metadata["model"] == "tiny_pvcnn"
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "release.py"), "tiny_pvcnn", "--snapshot",
                           str(tmp_path / "nope.caffemodel"), "--out", str(tmp_path / "x")],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 1 and "nope.caffemodel: no such snapshot" in proc.stderr
    shutil.rmtree(out)


# ------------------------------------------------------------------ Model Zoo files are checked on every use
def _tiny_weights(path, v1=False):
    net_param = input_net_param("tiny_pvcnn")
    arrays = _saved_random_net(net_param, path, seed=13)
    if v1:
        layers = [(n, "CONVOLUTION" if n.startswith("conv") else "INNER_PRODUCT", b)
                  for n, _, b in tensor_layers(read_caffemodel(path))]
        write_caffemodel(path, layers, v1=True)
    return net_param, arrays


def test_a_file_named_like_a_verified_zoo_file_must_have_its_sha1(tmp_path):
    path = tmp_path / "bvlc_alexnet.caffemodel"
    net_param, _ = _tiny_weights(path)
    with pytest.raises(WeightsError, match="9116a64c0fbe4459d18f4bb6b56d647b63920377.*make weights MODEL=bvlc_alexnet"):
        load_weights(build_net(net_param), net_param, path)


def test_an_unverifiable_zoo_file_is_warned_about_on_every_use(tmp_path, capsys):
    path = tmp_path / "VGG_ILSVRC_19_layers.caffemodel"
    net_param, _ = _tiny_weights(path, v1=True)
    for _ in range(2):
        report = load_weights(build_net(net_param), net_param, path, required=("conv1", "fc7"))
        assert report.warnings and not report.verified_sha1 and report.source_format == "V1"
        err = capsys.readouterr().err
        assert "NO published checksum" in err and report.sha1 in err
        assert "WARNING" in report.format()
