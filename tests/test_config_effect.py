"""Configuration takes effect: a value given in a param_str, a LossConfig, a solver or a store's
metadata changes what happens, checked against the formula written out or the documented value.

- the loss layer's ``lambda``, ``epsilon`` and ``normalize`` (and ``LossConfig``) against Eqs. 1-4
  written with exponentials, and their derivatives written by hand;
- pairs per update of every committed solver against docs/TRAINING.md's table;
- an image store whose store.json does not say "complete": true is refused;
- every random crop offset is reachable, the centre crop is the centre;
- a pair list with a pair twice is refused;
- the check that pretrained weights landed in both towers fires when they did not.
"""
import dataclasses
import json
import math

import cv2
import numpy as np
import pytest

import caffe
from caffe.proto import caffe_pb2
from google.protobuf import text_format

from test_ranking_loss import fill, loss_net
from virality.datasets.base import Setting
from virality.data.imagestore import ImageStore, StoreError, build_image_store
from virality.data.pair_batches import ImageSource, PairBatcher
from virality.data.pairs import PairSamplingError, check_pairs, sample_pairs
from virality.paths import ROOT
from virality.model.ranking import LossConfig, ranking_loss
from virality.pretrained.weights import WeightsError, build_net, input_net_param, load_weights


# ------------------------------------------------------------------ the loss's configuration

def literal_loss_and_grads(f1, f2, y, lam, epsilon, normalize):
    """Eqs. 1-4 with exponentials, and dE/df1 by hand: dg1/df1 = g1 g2, so d(g2 - g1)/df1 = -2 g1 g2."""
    loss, grads = 0.0, []
    for a, b, t in zip(f1, f2, y):
        g1 = math.exp(a) / (math.exp(a) + math.exp(b))
        g2 = 1.0 - g1
        hinge = max(0.0, t * (g2 - g1))
        denom = (b - a) ** 2 + epsilon
        loss += hinge ** 2 + lam / denom
        grads.append(2 * hinge * t * (-2 * g1 * g2) + lam * (-2 * (a - b)) / denom ** 2)
    n = len(y) if normalize else 1
    return loss / n, np.array(grads) / n


F1 = [0.7, -0.4, 0.05, 1.5]
F2 = [0.1, 0.9, 0.0, 2.5]
Y = [1, 1, -1, -1]


@pytest.mark.parametrize("lam, epsilon, normalize", [(0.5, 0.1, False), (0.001, 0.3, False), (0.2, 0.05, True),
                                                     (0.0, 0.1, True)])
def test_loss_layer_param_str_takes_effect(tmp_path, lam, epsilon, normalize):
    params = json.dumps({"lambda": lam, "epsilon": epsilon, "normalize": normalize})
    net = loss_net(tmp_path, param_str=params)
    fill(net, F1, F2, Y)
    out = net.forward()
    net.backward()
    f1, f2 = np.float32(F1).astype(float), np.float32(F2).astype(float)
    want_loss, want_grad = literal_loss_and_grads(f1, f2, Y, lam, epsilon, normalize)
    assert float(out["loss"]) == pytest.approx(want_loss, rel=1e-6)
    np.testing.assert_allclose(net.blobs["f1"].diff.ravel(), want_grad, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(net.blobs["f2"].diff.ravel(), -want_grad, rtol=1e-5, atol=1e-8)


def test_default_param_str_is_the_papers_lambda_and_our_epsilon(tmp_path):
    net = loss_net(tmp_path)
    fill(net, F1, F2, Y)
    f1, f2 = np.float32(F1).astype(float), np.float32(F2).astype(float)
    want, _ = literal_loss_and_grads(f1, f2, Y, 0.001, 0.1, False)     # Sec. 3: lambda = 0.001; docs/LOSS.md
    assert float(net.forward()["loss"]) == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("lam, epsilon, normalize", [(0.5, 0.1, False), (0.0, 0.1, False), (0.01, 0.02, True)])
def test_loss_config_takes_effect_in_the_core(lam, epsilon, normalize):
    rng = np.random.default_rng(11)
    f1, f2 = rng.normal(0, 1.5, 12), rng.normal(0, 1.5, 12)
    y = rng.choice([-1.0, 1.0], 12)
    res = ranking_loss(f1, f2, y, LossConfig(lam=lam, epsilon=epsilon, normalize=normalize))
    want_loss, want_grad = literal_loss_and_grads(f1, f2, y, lam, epsilon, normalize)
    assert res.loss == pytest.approx(want_loss, rel=1e-12)
    np.testing.assert_allclose(res.grad_f1, want_grad, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(res.grad_f2, -want_grad, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(res.e_r, 1 / ((f2 - f1) ** 2 + epsilon), rtol=1e-14)


def test_loss_config_rejects_non_finite_values():
    for bad in (dict(lam=float("nan")), dict(lam=float("inf")), dict(epsilon=float("inf")), dict(epsilon=-0.1)):
        with pytest.raises(ValueError, match="finite"):
            LossConfig(**bad)
    assert LossConfig(lam=0.0).lam == 0.0                          # lambda 0 (no E_r) is allowed
    with pytest.raises(dataclasses.FrozenInstanceError):
        LossConfig().lam = 0.5                                     # passed down, never changed on the way


@pytest.mark.parametrize("labels", [[1, -2], [2, -1], [-1, 0], [-1, 0.5], [-1, -1, np.nan]])
def test_every_label_other_than_plus_or_minus_one_is_refused(labels):
    n = len(labels)
    with pytest.raises(ValueError, match=r"labels must be \+1 .* or -1"):
        ranking_loss(np.zeros(n), np.arange(n, dtype=float), labels)


# ------------------------------------------------------------------ solvers: pairs per update

#: docs/TRAINING.md, "What we chose": batch (pairs, or images for topic nets) x iter_size per update.
PER_UPDATE = {"alexnet_pvcnn": (64, 1), "alexnet_tpvcnn": (64, 1), "vgg19_pvcnn": (8, 4), "vgg19_tpvcnn": (8, 4),
              "alexnet_topic": (128, 1), "vgg19_topic": (16, 4), "tiny_pvcnn": (32, 1), "tiny_tpvcnn": (32, 1),
              "tiny_topic": (64, 1)}


def _train_batch(net):
    for layer in net.layer:
        if any(rule.phase == caffe.TRAIN for rule in layer.include):
            if layer.type == "Python":
                return json.loads(layer.python_param.param_str)["batch_size"]
            return layer.data_param.batch_size
    raise AssertionError("no TRAIN data layer")


@pytest.mark.parametrize("model", sorted(PER_UPDATE))
def test_committed_solvers_give_the_documented_pairs_per_update(model):
    solver = caffe_pb2.SolverParameter()
    text_format.Merge((ROOT / "solvers" / f"{model}.prototxt").read_text(), solver)
    net = caffe_pb2.NetParameter()
    text_format.Merge((ROOT / solver.net).read_text(), net)
    batch, iter_size = PER_UPDATE[model]
    assert (_train_batch(net), solver.iter_size) == (batch, iter_size)
    assert _train_batch(net) * max(1, solver.iter_size) == batch * iter_size
    assert "| vgg19 ranking | 8 x 4 |" in (ROOT / "docs/TRAINING.md").read_text()


# ------------------------------------------------------------------ image stores

def _store(tmp_path, image, size):
    cv2.imwrite(str(tmp_path / "img.png"), image)
    out = tmp_path / "store"
    build_image_store([(7, tmp_path / "img.png")], out, size, progress=False)
    return out


@pytest.mark.parametrize("edit", [{"complete": False}, {"complete": None}, {"complete": "false"},
                                  {"format": "something-else"}])
def test_a_store_not_marked_complete_is_refused(tmp_path, edit):
    out = _store(tmp_path, np.zeros((8, 8, 3), np.uint8), 8)
    assert len(ImageStore(out)) == 1
    meta = json.loads((out / "store.json").read_text())
    meta.update(edit)
    if edit.get("complete", True) is None:
        del meta["complete"]
    (out / "store.json").write_text(json.dumps(meta))
    with pytest.raises(StoreError, match=f"{out}: not a complete"):
        ImageStore(out)


def test_every_random_crop_offset_is_reachable_and_test_crops_are_central(tmp_path):
    """A 12 x 12 image whose blue value is 12 y + x: a crop's top-left pixel is its offset."""
    size, crop = 12, 8
    image = np.zeros((size, size, 3), np.uint8)
    image[..., 0] = np.arange(size)[:, None] * size + np.arange(size)[None, :]
    source = ImageSource(_store(tmp_path, image, size))
    pairs = np.array([[7, 7, 1]] * 64, np.int32)
    batcher = PairBatcher(pairs.copy(), source, batch_size=64, crop_size=crop, random_crop=True, seed=3)
    offsets = set()
    for _ in range(4):                                  # 512 crops over 25 offsets
        data, data_p, _ = batcher.next_batch()
        for block in (data, data_p):
            offsets.update(divmod(int(v), size) for v in block[:, 0, 0, 0])
    assert offsets == {(y, x) for y in range(size - crop + 1) for x in range(size - crop + 1)}
    central = PairBatcher(pairs.copy(), source, batch_size=4, crop_size=crop, random_crop=False)
    data, _, _ = central.next_batch()
    assert {int(v) for v in data[:, 0, 0, 0]} == {2 * size + 2}          # offset (12 - 8) // 2 = 2


# ------------------------------------------------------------------ pair lists

def _list_setting(train_pairs):
    empty = np.zeros((0, 3), np.int32)
    return Setting(name="list", description="", metric="pairwise_accuracy", test_pairs=empty,
                   test_images=np.zeros(0, np.int64), viral_pool=np.zeros(0, np.int64),
                   nonviral_pool=np.zeros(0, np.int64), disjoint=False,
                   train_pairs=np.array(train_pairs, np.int32))


@pytest.mark.parametrize("duplicate", [(1, 0, -1), (0, 1, 1), (1, 0, 1)])
def test_a_pair_list_with_a_pair_twice_is_refused(duplicate):
    listed = [(0, 1, 1), (2, 3, -1), (4, 5, 1), duplicate]
    with pytest.raises(PairSamplingError, match="lists a pair twice"):
        sample_pairs(_list_setting(listed), 2, seed=0)
    setting = _list_setting(listed[:3])
    sample = sample_pairs(setting, 2, seed=0)
    check_pairs(sample, setting)
    twice = np.array([(0, 1, 1), (2, 3, -1), (3, 2, 1), (5, 4, -1)], np.int32)
    with pytest.raises(ValueError, match="twice"):
        check_pairs(twice, setting)


# ------------------------------------------------------------------ pretrained weights

class CopyDoesNothing:
    """A caffe.Net whose copy_from silently does nothing (what an 'Ignoring source layer' looks like)."""

    def __init__(self, net):
        self.net = net
        self.params, self._layer_names, self.layers = net.params, net._layer_names, net.layers

    def copy_from(self, path):
        pass


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "tiny.caffemodel"
    net = caffe.Net(str(ROOT / "prototxt/tiny_pvcnn/deploy.prototxt"), caffe.TEST)
    rng = np.random.default_rng(4)
    for blobs in net.params.values():
        for b in blobs:
            b.data[...] = rng.normal(0, 1, b.data.shape)
    net.save(str(path))
    return path


def test_loaded_weights_equal_the_file_in_both_towers(tiny_weights):
    net_param = input_net_param("tiny_pvcnn")
    net = build_net(net_param)
    report = load_weights(net, net_param, tiny_weights, required=("conv1", "fc7"), check_zoo=False)
    assert {"conv1", "fc7", "score"} <= set(report.copied_layers)
    assert ("conv1_p", "conv1") in report.shared
    ref = caffe.Net(str(ROOT / "prototxt/tiny_pvcnn/deploy.prototxt"), str(tiny_weights), caffe.TEST)
    for name in ("conv1", "fc6", "fc7"):
        for tower in (name, f"{name}_p"):
            np.testing.assert_array_equal(net.params[tower][0].data, ref.params[name][0].data)


def test_a_copy_that_did_nothing_is_an_error(tiny_weights):
    net_param = input_net_param("tiny_pvcnn")
    net = CopyDoesNothing(build_net(net_param))
    with pytest.raises(WeightsError, match=r"layer\(s\) \[.*'conv1'.*\] do not equal the file"):
        load_weights(net, net_param, tiny_weights, check_zoo=False)


def test_a_tower_that_does_not_share_the_loaded_params_is_an_error(tiny_weights):
    """The checked description says tower B shares tower A's params; the net built does not."""
    net_param = input_net_param("tiny_pvcnn")
    unshared = caffe_pb2.NetParameter()
    unshared.CopyFrom(net_param)
    for layer in unshared.layer:
        if layer.name.endswith("_p"):
            for p in layer.param:
                p.name = f"{p.name}_own"
    net = build_net(unshared)
    with pytest.raises(WeightsError, match=r"\['conv1_p'.*do not equal the file"):
        load_weights(net, net_param, tiny_weights, check_zoo=False)


# ------------------------------------------------------------------ the loss layer's shape checks

@pytest.mark.parametrize("blob, shape, bottom", [("f1", (3, 1), "bottom 1 .f2."), ("f2", (3, 1), "bottom 1 .f2."),
                                                  ("y", (3,), "bottom 2 .y."), ("f2", (4, 2), "bottom 1 .f2.")])
def test_loss_layer_rechecks_shapes_that_change_after_setup(tmp_path, blob, shape, bottom):
    from virality.model.layer_params import LayerConfigError
    net = loss_net(tmp_path)
    fill(net, F1, F2, Y)
    net.forward()
    net.blobs[blob].reshape(*shape)
    with pytest.raises(LayerConfigError, match=f"RankingLoss.*{bottom}"):
        net.reshape()


def test_loss_layer_follows_a_new_batch_size(tmp_path):
    net = loss_net(tmp_path)
    fill(net, F1, F2, Y)
    net.forward()
    f1, f2, y = [0.3, -0.2, 1.0, 0.0, 2.0, -1.0], [0.1, 0.4, -1.0, 0.5, 2.5, -3.0], [1, 1, -1, -1, 1, -1]
    for name, shape in (("f1", (6, 1)), ("f2", (6, 1)), ("y", (6,))):
        net.blobs[name].reshape(*shape)
    net.reshape()
    fill(net, f1, f2, y)
    out = net.forward()
    want, _ = literal_loss_and_grads(np.float32(f1).astype(float), np.float32(f2).astype(float), y, 0.001, 0.1,
                                     False)
    assert out["loss"].shape == () and out["accuracy"].shape == ()
    assert float(out["loss"]) == pytest.approx(want, rel=1e-6)
    assert float(out["accuracy"]) == pytest.approx(2 / 6)       # by hand: pairs 0 and 3 are ordered right


def test_loss_layer_keeps_its_checked_shapes_between_passes(tmp_path):
    """An unchanged shape is not re-checked (pycaffe's Blob.shape is a fresh IntVec each time, so the cache
    compares tuples): a reshape between forward and backward keeps the forward's result."""
    net = loss_net(tmp_path)
    fill(net, F1, F2, Y)
    net.forward()
    net.reshape()
    net.backward()
    f1, f2 = np.float32(F1).astype(float), np.float32(F2).astype(float)
    _, want = literal_loss_and_grads(f1, f2, Y, 0.001, 0.1, False)
    np.testing.assert_allclose(net.blobs["f1"].diff.ravel(), want, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("scalar, message", [("f1", r"bottom 0 \(f1\).*got \(\) \(f1 has 0 pairs\)"),
                                             ("f2", r"bottom 1 \(f2\).*got \(\) \(f1 has 4 pairs\)")])
def test_loss_layer_names_a_scalar_bottom(tmp_path, scalar, message):
    from virality.model.layer_params import LayerConfigError
    dims = {"f1": "dim: 4 dim: 1", "f2": "dim: 4 dim: 1", "y": "dim: 4"}
    dims[scalar] = ""
    inputs = "".join(f'layer {{ name: "{b}" type: "Input" top: "{b}" input_param {{ shape {{ {dims[b]} }} }} }}\n'
                     for b in ("f1", "f2", "y"))
    (tmp_path / "scalar.prototxt").write_text(inputs + '''
        layer { name: "loss" type: "Python" bottom: "f1" bottom: "f2" bottom: "y" top: "loss" loss_weight: 1
                python_param { module: "python_layers.ranking_loss" layer: "RankingLoss" } }''')
    with pytest.raises(LayerConfigError, match=message):
        caffe.Net(str(tmp_path / "scalar.prototxt"), caffe.TEST)
