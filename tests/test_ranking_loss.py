"""The ranking loss (Eqs. 1-4): numpy core and the Caffe layer inside real nets."""
import json
import textwrap
import warnings

import numpy as np
import pytest

import caffe  # the engine is never optional: a missing or broken pycaffe fails this module
from virality.model.layer_params import LayerConfigError
from virality.model.ranking import LossConfig, pair_probability, pairwise_accuracy, ranking_loss


def paper_loss(f1, f2, y, lam=0.001, epsilon=0.1):
    """Eqs. 1-4 written literally with exponentials (valid for moderate scores)."""
    g1 = np.exp(f1) / (np.exp(f1) + np.exp(f2))
    g2 = 1 - g1
    e_c = np.maximum(0, y * (g2 - g1)) ** 2
    e_r = 1 / ((f2 - f1) ** 2 + epsilon)
    return np.sum(e_c + lam * e_r)


def numeric_grad(f1, f2, y, config, h=1e-6):
    g1, g2 = np.zeros_like(f1), np.zeros_like(f2)
    for i in range(f1.size):
        for arr, out in ((f1, g1), (f2, g2)):
            old = arr[i]
            arr[i] = old + h
            plus = ranking_loss(f1, f2, y, config).loss
            arr[i] = old - h
            minus = ranking_loss(f1, f2, y, config).loss
            arr[i] = old
            out[i] = (plus - minus) / (2 * h)
    return g1, g2


# --- numpy core -----------------------------------------------------------------------------

def test_hand_made_values():
    # Pair 0: I1 viral and f1 > f2 (right order): no E_c. Pair 1: I1 viral but f1 < f2 (wrong order).
    f1 = np.array([2.0, -1.0, 0.5])
    f2 = np.array([0.0, 1.0, 0.5])
    y = np.array([1.0, 1.0, -1.0])
    res = ranking_loss(f1, f2, y)
    # Pair 1: g1 = e^-1/(e^-1+e^1) = 1/(1+e^2); E_c = (g2-g1)^2 = ((e^2-1)/(e^2+1))^2 = tanh(1)^2
    np.testing.assert_allclose(res.e_c, [0.0, np.tanh(1.0) ** 2, 0.0], atol=1e-15)
    # E_r = 1/((f2-f1)^2 + 0.1): 1/4.1, 1/4.1, 1/0.1 (the bounded singularity of pair 2)
    np.testing.assert_allclose(res.e_r, [1 / 4.1, 1 / 4.1, 10.0])
    expected = np.tanh(1.0) ** 2 + 0.001 * (2 / 4.1 + 10.0)
    assert res.loss == pytest.approx(expected, rel=1e-12)
    assert res.loss == pytest.approx(paper_loss(f1, f2, y), rel=1e-12)


def test_normalize_divides_loss_and_gradients_by_n():
    rng = np.random.default_rng(0)
    f1, f2 = rng.normal(size=8), rng.normal(size=8)
    y = rng.choice([-1.0, 1.0], size=8)
    s = ranking_loss(f1, f2, y)
    m = ranking_loss(f1, f2, y, LossConfig(normalize=True))
    assert m.loss == pytest.approx(s.loss / 8)
    np.testing.assert_allclose(m.grad_f1, s.grad_f1 / 8)


def test_matches_the_literal_formula_on_random_scores():
    rng = np.random.default_rng(1)
    for _ in range(20):
        f1, f2 = rng.normal(scale=3, size=16), rng.normal(scale=3, size=16)
        y = rng.choice([-1.0, 1.0], size=16)
        assert ranking_loss(f1, f2, y).loss == pytest.approx(paper_loss(f1, f2, y), rel=1e-10)


@pytest.mark.parametrize("d", [3.0, 0.8, 0.2, 1e-3, 0.0, -1e-3, -0.2, -0.8, -3.0])
@pytest.mark.parametrize("y", [1.0, -1.0])
def test_gradient_matches_finite_differences(d, y):
    """Both sides of the hinge (y(g2-g1) > 0 and < 0), away from, near and at f1 = f2."""
    f1 = np.array([0.3 + d / 2])
    f2 = np.array([0.3 - d / 2])
    config = LossConfig()
    res = ranking_loss(f1, f2, np.array([y]), config)
    n1, n2 = numeric_grad(f1.copy(), f2.copy(), np.array([y]), config, h=1e-7)
    assert np.all(np.isfinite([res.loss, res.grad_f1[0], res.grad_f2[0]]))
    np.testing.assert_allclose(res.grad_f1, n1, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(res.grad_f2, n2, rtol=1e-5, atol=1e-6)
    # The two scores' gradients are opposite: the loss depends on f1 - f2 only.
    np.testing.assert_allclose(res.grad_f1, -res.grad_f2)


def test_wrong_order_is_pushed_the_right_way():
    # I1 viral (y=+1) but scored lower: gradient descent must raise f1 and lower f2.
    res = ranking_loss(np.array([-1.0]), np.array([1.0]), np.array([1.0]), LossConfig(lam=0.0))
    assert res.grad_f1[0] < 0 < res.grad_f2[0]


def test_singularity_is_bounded_as_documented():
    config = LossConfig()
    d = np.linspace(-1, 1, 20001)
    res = ranking_loss(d, np.zeros_like(d), np.ones_like(d), config)
    e_r_grad = config.lam * 2 * np.abs(d) / (d * d + config.epsilon) ** 2
    bound = config.lam * (9 / 8) * np.sqrt(config.epsilon / 3) / config.epsilon ** 2
    assert e_r_grad.max() <= bound * (1 + 1e-9)
    assert e_r_grad.max() == pytest.approx(bound, rel=1e-3)   # the bound is attained near d^2 = eps/3
    assert config.lam * res.e_r.max() == pytest.approx(config.lam / config.epsilon)
    assert np.all(np.abs(res.grad_f1) < 1.0)


@pytest.mark.parametrize("epsilon, trapped", [(0.1, False), (0.07, False), (0.01, True), (1e-4, True)])
def test_wrong_order_trap_near_ties_exists_only_for_small_epsilon(epsilon, trapped):
    """With epsilon < 2 sqrt(lambda), E_r's push outweighs E_c's pull for wrongly ordered pairs with
    small |f1 - f2|, so gradient descent drives them further apart in the wrong order (we saw a
    tiny net settle at 0% accuracy that way). Our default epsilon has no such region."""
    d = -np.linspace(1e-4, 3.0, 30001)          # I1 is the viral image but f1 < f2
    res = ranking_loss(d, np.zeros_like(d), np.ones_like(d), LossConfig(epsilon=epsilon))
    # Descent moves f1 by -grad_f1: the order is being corrected iff grad_f1 < 0.
    assert bool(np.any(res.grad_f1 > 0)) == trapped


def test_extreme_scores_are_stable():
    f1 = np.array([1e4, -1e4, 1e4, 0.0])
    f2 = np.array([-1e4, 1e4, 1e4, 1e4])
    y = np.array([1.0, 1.0, -1.0, 1.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = ranking_loss(f1, f2, y)
        p = pair_probability(f1, f2)
    assert np.isfinite(res.loss) and np.all(np.isfinite(res.grad_f1))
    np.testing.assert_allclose(res.e_c, [0.0, 1.0, 0.0, 1.0])
    np.testing.assert_allclose(p, [1.0, 0.0, 0.5, 0.0])


def test_bad_labels_and_config_are_errors():
    with pytest.raises(ValueError, match=r"y\[1\] = 0.0"):
        ranking_loss([0.0, 1.0], [1.0, 0.0], [1, 0])
    with pytest.raises(ValueError, match="same length"):
        ranking_loss([0.0, 1.0], [1.0], [1, 1])
    with pytest.raises(ValueError, match="epsilon"):
        LossConfig(epsilon=0.0)
    with pytest.raises(ValueError, match="lambda"):
        LossConfig(lam=-1.0)


def test_pairwise_accuracy_and_ties():
    y = np.array([1, -1, 1, -1])
    assert pairwise_accuracy([2, 0, 3, 1], [1, 1, 0, 5], y) == 1.0     # perfect
    assert pairwise_accuracy([1, 1, 0, 5], [2, 0, 3, 1], y) == 0.0     # reversed
    assert pairwise_accuracy([1, 1, 1, 1], [1, 1, 1, 1], y) == 0.5     # all ties count half
    assert pairwise_accuracy([2, 1, 1, 1], [1, 1, 1, 1], y) == 0.625


# --- the Caffe layer --------------------------------------------------------------------------


def loss_net(tmp_path, n=4, param_str=None, loss_weight=1.0, tops=2, propagate_down=None, bottoms=3,
             phase=caffe.TRAIN):
    params = "" if param_str is None else f"param_str: '{param_str}'"
    prop = "".join(f"propagate_down: {str(p).lower()} " for p in propagate_down) if propagate_down else ""
    top_lines = 'top: "loss" top: "accuracy" loss_weight: %g loss_weight: 0' % loss_weight if tops == 2 \
        else 'top: "loss" loss_weight: %g' % loss_weight
    bottom_lines = " ".join(f'bottom: "{b}"' for b in ("f1", "f2", "y")[:bottoms])
    text = textwrap.dedent(f'''
        force_backward: true
        layer {{ name: "f1" type: "Input" top: "f1" input_param {{ shape {{ dim: {n} dim: 1 }} }} }}
        layer {{ name: "f2" type: "Input" top: "f2" input_param {{ shape {{ dim: {n} dim: 1 }} }} }}
        layer {{ name: "y" type: "Input" top: "y" input_param {{ shape {{ dim: {n} }} }} }}
        layer {{ name: "loss" type: "Python" {bottom_lines} {top_lines} {prop}
                python_param {{ module: "python_layers.ranking_loss" layer: "RankingLoss" {params} }} }}
    ''')
    path = tmp_path / "net.prototxt"
    path.write_text(text)
    return caffe.Net(str(path), phase)


def fill(net, f1, f2, y):
    net.blobs["f1"].data[...] = np.asarray(f1, np.float32).reshape(-1, 1)
    net.blobs["f2"].data[...] = np.asarray(f2, np.float32).reshape(-1, 1)
    net.blobs["y"].data[...] = np.asarray(y, np.float32)


F1 = [0.7, -0.4, 0.05, 1.5]
F2 = [0.1, 0.9, 0.0, 2.5]
Y = [1, 1, -1, -1]


def test_layer_forward_equals_core(tmp_path):
    net = loss_net(tmp_path)
    fill(net, F1, F2, Y)
    out = net.forward()
    expected = ranking_loss(np.float32(F1), np.float32(F2), Y)
    assert float(out["loss"]) == pytest.approx(expected.loss, rel=1e-5)
    assert float(out["accuracy"]) == pytest.approx(pairwise_accuracy(F1, F2, Y))


@pytest.mark.parametrize("loss_weight", [1.0, 2.0])
def test_layer_backward_scales_by_loss_weight_and_leaves_labels_alone(tmp_path, loss_weight):
    net = loss_net(tmp_path, loss_weight=loss_weight)
    fill(net, F1, F2, Y)
    net.forward()
    net.blobs["y"].diff[...] = 123.0
    net.backward()
    core = ranking_loss(np.float32(F1), np.float32(F2), Y)
    np.testing.assert_allclose(net.blobs["f1"].diff.ravel(), loss_weight * core.grad_f1, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(net.blobs["f2"].diff.ravel(), loss_weight * core.grad_f2, rtol=1e-4, atol=1e-7)
    assert np.all(net.blobs["y"].diff == 123.0)


@pytest.mark.parametrize("phase, normalize, factor", [(caffe.TRAIN, False, 3), (caffe.TRAIN, True, 1),
                                                      (caffe.TEST, False, 1)])
def test_layer_multiplies_a_summed_train_gradient_by_the_solver_count(tmp_path, phase, normalize, factor):
    """docs/GPU.md: NCCL divides the N solvers' summed gradients by N, so the loss layer multiplies its
    TRAIN gradient by N when the loss is a sum (normalize false); a mean loss and the TEST net keep 1."""
    try:
        caffe.set_multiprocess(True)      # one solver per process, as tools/train.py --gpus runs them
        caffe.set_solver_count(3)
        net = loss_net(tmp_path, param_str=json.dumps({"normalize": normalize}), phase=phase)
    finally:
        caffe.set_solver_count(1)
        caffe.set_multiprocess(False)
    fill(net, F1, F2, Y)
    net.forward()
    net.backward()
    core = ranking_loss(np.float32(F1), np.float32(F2), Y, LossConfig(normalize=normalize))
    np.testing.assert_allclose(net.blobs["f1"].diff.ravel(), factor * core.grad_f1, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(net.blobs["f2"].diff.ravel(), factor * core.grad_f2, rtol=1e-4, atol=1e-7)


def test_layer_gradient_by_finite_differences_inside_caffe(tmp_path):
    net = loss_net(tmp_path, param_str='{"normalize": true}')
    f1 = np.array([0.7, -0.4, 0.02, 1.5])
    f2 = np.array([0.1, 0.9, 0.0, 2.5])
    fill(net, f1, f2, Y)
    net.forward()
    net.backward()
    analytic = net.blobs["f1"].diff.ravel().copy()
    h = 1e-2   # float32 blobs: a coarse step, checked with a matching tolerance

    def loss_at(g):
        fill(net, g, f2, Y)
        return float(net.forward()["loss"])

    for i in range(4):
        step = np.zeros(4)
        step[i] = h
        numeric = (loss_at(f1 + step) - loss_at(f1 - step)) / (2 * h)
        assert numeric == pytest.approx(analytic[i], rel=0.05, abs=2e-4), i


def test_layer_honours_propagate_down(tmp_path):
    """Scores from learnable layers (no force_backward): propagate_down false for f2 leaves its diff."""
    text = textwrap.dedent('''
        layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 4 dim: 2 } } }
        layer { name: "y" type: "Input" top: "y" input_param { shape { dim: 4 } } }
        layer { name: "a" type: "InnerProduct" bottom: "x" top: "f1"
                inner_product_param { num_output: 1 weight_filler { type: "gaussian" std: 1 } } }
        layer { name: "b" type: "InnerProduct" bottom: "x" top: "f2"
                inner_product_param { num_output: 1 weight_filler { type: "gaussian" std: 1 } } }
        layer { name: "loss" type: "Python" bottom: "f1" bottom: "f2" bottom: "y" top: "loss" loss_weight: 1
                propagate_down: true propagate_down: false propagate_down: false
                python_param { module: "python_layers.ranking_loss" layer: "RankingLoss" } }
    ''')
    (tmp_path / "pd.prototxt").write_text(text)
    net = caffe.Net(str(tmp_path / "pd.prototxt"), caffe.TRAIN)
    net.blobs["x"].data[...] = np.arange(8, dtype=np.float32).reshape(4, 2) / 8
    net.blobs["y"].data[...] = np.float32(Y)
    net.forward()
    net.blobs["f2"].diff[...] = 7.0
    net.backward()
    assert np.all(net.blobs["f2"].diff == 7.0)
    assert np.any(net.blobs["f1"].diff != 0)
    assert np.any(net.params["a"][0].diff != 0)
    assert np.all(net.params["b"][0].diff == 0)


def test_layer_accepts_a_single_top(tmp_path):
    net = loss_net(tmp_path, tops=1)
    fill(net, F1, F2, Y)
    assert set(net.forward()) == {"loss"}


@pytest.mark.parametrize("param_str, message", [
    ('{"lamda": 0.1}', "unknown param_str key"),
    ('{"epsilon": 0}', "epsilon must be"),
    ('{"normalize": 1}', "'normalize' must be bool"),
    ("lambda=0.1", "not valid JSON"),
])
def test_bad_param_str_names_layer_and_key(tmp_path, param_str, message):
    with pytest.raises(Exception) as err:
        loss_net(tmp_path, param_str=param_str)
    assert err.type is LayerConfigError or "RankingLoss" in str(err.value)
    assert "RankingLoss" in str(err.value) and message in str(err.value)


def test_wrong_bottom_count_is_an_error(tmp_path):
    with pytest.raises(LayerConfigError, match="RankingLoss.*3 bottoms"):
        loss_net(tmp_path, bottoms=2)


def test_labels_outside_plus_minus_one_are_an_error(tmp_path):
    net = loss_net(tmp_path)
    fill(net, F1, F2, [1, 0, -1, 1])
    with pytest.raises(LayerConfigError, match="RankingLoss.*y"):
        net.forward()


def test_mismatched_batch_sizes_are_an_error(tmp_path):
    text = textwrap.dedent('''
        layer { name: "f1" type: "Input" top: "f1" input_param { shape { dim: 4 dim: 1 } } }
        layer { name: "f2" type: "Input" top: "f2" input_param { shape { dim: 3 dim: 1 } } }
        layer { name: "y" type: "Input" top: "y" input_param { shape { dim: 4 } } }
        layer { name: "loss" type: "Python" bottom: "f1" bottom: "f2" bottom: "y" top: "loss" loss_weight: 1
                python_param { module: "python_layers.ranking_loss" layer: "RankingLoss" } }
    ''')
    (tmp_path / "bad.prototxt").write_text(text)
    with pytest.raises(LayerConfigError, match="bottom 1 .f2."):
        caffe.Net(str(tmp_path / "bad.prototxt"), caffe.TRAIN)


def test_generated_nets_configure_the_loss_as_documented(root):
    from google.protobuf import text_format
    from caffe.proto import caffe_pb2
    net = caffe_pb2.NetParameter()
    text_format.Merge((root / "prototxt/alexnet_pvcnn/train_val.prototxt").read_text(), net)
    (loss,) = [layer for layer in net.layer if layer.type == "Python" and "ranking_loss" in layer.python_param.module]
    assert list(loss.bottom) == ["score", "score_p", "label"]
    assert list(loss.loss_weight) == [1.0, 0.0]
    assert json.loads(loss.python_param.param_str) == {"lambda": 0.001, "epsilon": 0.1, "normalize": False}


def test_loss_counts_the_same_accuracy_as_pairwise_accuracy():
    """The loss layer's accuracy top comes from ranking_loss's own pass over the pairs: it
    must agree with pairwise_accuracy, ties (half right) and a NaN score (wrong) included."""
    rng = np.random.default_rng(7)
    f1 = rng.integers(-2, 3, 200).astype(np.float64)      # many exact ties
    f2 = rng.integers(-2, 3, 200).astype(np.float64)
    f1[5] = np.nan
    y = rng.choice([-1.0, 1.0], 200)
    for normalize in (False, True):
        got = ranking_loss(f1, f2, y, LossConfig(normalize=normalize)).accuracy
        assert got == pytest.approx(pairwise_accuracy(f1, f2, y), abs=1e-15)
    assert np.isnan(ranking_loss(np.array([]), np.array([]), np.array([])).accuracy)
    assert np.isnan(ranking_loss(f1, f2, y).loss)                   # the NaN score reaches the loss
