"""Generated nets and solvers: up to date, weight sharing, frozen topic branch, training on CPU."""
import re
import subprocess
import sys

import numpy as np
import pytest
from google.protobuf import text_format

import caffe
from caffe.proto import caffe_pb2
from toy_data import make_toy_data
from virality.model.nets import MODELS

REQUIRED_MODELS = {"alexnet_pvcnn", "alexnet_tpvcnn", "vgg19_pvcnn", "vgg19_tpvcnn", "alexnet_topic",
                   "vgg19_topic", "tiny_pvcnn", "tiny_tpvcnn", "tiny_topic"}


def read_net(path):
    net = caffe_pb2.NetParameter()
    text_format.Merge(path.read_text(), net)
    return net


def read_solver(path):
    solver = caffe_pb2.SolverParameter()
    text_format.Merge(path.read_text(), solver)
    return solver


def test_every_model_exists():
    assert REQUIRED_MODELS <= set(MODELS)


def test_generated_files_are_up_to_date(root, tmp_path):
    subprocess.run([sys.executable, str(root / "tools/make_nets.py"), "--out", str(tmp_path)],
                   check=True, capture_output=True)
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.prototxt"))
    assert len(generated) == 3 * len(MODELS)
    stale = [str(rel) for rel in generated
             if not (root / rel).exists() or (root / rel).read_text() != (tmp_path / rel).read_text()]
    assert not stale, f"run `make nets` and commit: {stale}"


def _feed_params(net):
    """{phase: the pair-index feed's param_str as a dict}."""
    import json
    return {layer.include[0].phase: json.loads(layer.python_param.param_str)
            for layer in net.layer if layer.type == "Python" and layer.python_param.layer == "PairIndexData"}


def test_feed_workers_reach_the_train_feed_only(root, tmp_path):
    out = subprocess.run([sys.executable, str(root / "tools/make_nets.py"), "--out", str(tmp_path), "--models",
                          "alexnet_pvcnn", "--feed-workers", "3"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    params = _feed_params(read_net(tmp_path / "prototxt/alexnet_pvcnn/train_val.prototxt"))
    assert params[caffe_pb2.TRAIN]["workers"] == 3 and "workers" not in params[caffe_pb2.TEST]
    committed = _feed_params(read_net(root / "prototxt/alexnet_pvcnn/train_val.prototxt"))
    assert "workers" not in committed[caffe_pb2.TRAIN]          # the default: one thread
    # apart from the key, the same net
    del params[caffe_pb2.TRAIN]["workers"]
    assert params == committed
    bad = subprocess.run([sys.executable, str(root / "tools/make_nets.py"), "--out", str(tmp_path / "b"), "--models",
                          "tiny_pvcnn", "--feed-workers", "2"], capture_output=True, text=True)
    assert bad.returncode == 2 and "tiny_pvcnn: feed_workers=2 needs the pair_index feed" in bad.stderr


@pytest.mark.parametrize("model", sorted(REQUIRED_MODELS))
def test_deploy_net_maps_data_to_score(root, model):
    net = caffe.Net(str(root / f"prototxt/{model}/deploy.prototxt"), caffe.TEST)
    assert list(net.inputs) == ["data"]
    assert net.blobs["data"].data.shape[1] == 3
    expected = ["prob"] if model.endswith("_topic") else ["score"]
    assert list(net.outputs) == expected
    if expected == ["score"]:
        assert net.blobs["score"].data.shape == (1, 1)


@pytest.mark.parametrize("model", ["alexnet_pvcnn", "vgg19_tpvcnn", "tiny_tpvcnn"])
def test_towers_share_every_parameter_by_name(root, model):
    net = read_net(root / f"prototxt/{model}/train_val.prototxt")
    params = {layer.name: [p.name for p in layer.param] for layer in net.layer if layer.param}
    tower_a = [name for name in params if not name.endswith("_p")]
    assert tower_a, "no learnable layers"
    for name in tower_a:
        twin = name.replace("score", "score_p") if name == "score" else f"{name}_p"
        assert params[twin] == params[name], f"{name} and {twin} must share params"
    # Tower A keeps the Model Zoo layer names so -weights loads ImageNet weights into it.
    arch = MODELS[model].architecture
    assert set(arch.pretrained) <= set(tower_a)


def test_new_layers_use_the_papers_gaussian_init(root):
    net = read_net(root / "prototxt/alexnet_tpvcnn/train_val.prototxt")
    (score,) = [layer for layer in net.layer if layer.name == "score"]
    assert score.inner_product_param.weight_filler.type == "gaussian"
    assert score.inner_product_param.weight_filler.std == pytest.approx(0.05)
    assert score.inner_product_param.num_output == 1


def test_tpvcnn_topic_branch_is_frozen_and_concatenated(root):
    net = read_net(root / "prototxt/alexnet_tpvcnn/train_val.prototxt")
    topic = [layer for layer in net.layer if layer.name.startswith("topic_") and layer.param]
    assert {layer.name for layer in topic} >= {"topic_conv1", "topic_fc7", "topic_conv1_p", "topic_fc7_p"}
    for layer in topic:
        assert all(p.lr_mult == 0 and p.decay_mult == 0 for p in layer.param), layer.name
        assert all(p.name.startswith("topic_") for p in layer.param), layer.name
    assert not any(layer.type == "Dropout" and layer.name.startswith("topic_") for layer in net.layer)
    (concat,) = [layer for layer in net.layer if layer.name == "concat"]
    assert list(concat.bottom) == ["fc7", "topic_fc7"]
    (score,) = [layer for layer in net.layer if layer.name == "score"]
    assert list(score.bottom) == ["concat"]


@pytest.mark.parametrize("model", sorted(REQUIRED_MODELS))
def test_solvers_follow_the_paper(root, model):
    solver = read_solver(root / f"solvers/{model}.prototxt")
    assert solver.net == f"prototxt/{model}/train_val.prototxt"
    assert solver.momentum == pytest.approx(0.9)
    assert solver.weight_decay == pytest.approx(0.05)
    assert solver.lr_policy == "multistep" and solver.gamma == pytest.approx(0.1)
    assert len(solver.stepvalue) == 3 and list(solver.stepvalue) == sorted(solver.stepvalue)
    assert solver.stepvalue[-1] < solver.max_iter
    assert solver.snapshot_prefix == f"models/{model}/{model}"
    if model.startswith("tiny"):
        assert solver.solver_mode == caffe_pb2.SolverParameter.CPU
    else:
        assert solver.base_lr == pytest.approx(0.001)
        assert solver.solver_mode == caffe_pb2.SolverParameter.GPU


@pytest.fixture(scope="module")
def toy_project(root, tmp_path_factory):
    """The tiny nets and a learnable toy set, laid out as under the repo root."""
    work = tmp_path_factory.mktemp("toy_project")
    subprocess.run([sys.executable, str(root / "tools/make_nets.py"), "--out", str(work),
                    "--models", "tiny_pvcnn", "tiny_tpvcnn", "tiny_topic"], check=True, capture_output=True)
    make_toy_data(work)
    return work


def test_tiny_tpvcnn_step_updates_ranking_weights_only(toy_project, monkeypatch):
    monkeypatch.chdir(toy_project)
    caffe.set_mode_cpu()
    solver = caffe.get_solver("solvers/tiny_tpvcnn.prototxt")
    net = solver.net
    before = {name: [b.data.copy() for b in blobs] for name, blobs in net.params.items()}
    solver.step(3)
    for name, blobs in net.params.items():
        changed = any(not np.array_equal(b.data, old) for b, old in zip(blobs, before[name]))
        assert changed == (not name.startswith("topic_")), name
    # Shared blobs: the two towers hold the same values.
    np.testing.assert_array_equal(net.params["conv1"][0].data, net.params["conv1_p"][0].data)
    np.testing.assert_array_equal(net.params["topic_fc7"][0].data, net.params["topic_fc7_p"][0].data)


def test_caffe_train_tiny_pvcnn_loss_falls(toy_project, caffe_cli):
    """`caffe train -solver solvers/tiny_pvcnn.prototxt` from the command line, on CPU."""
    (toy_project / "models/tiny_pvcnn").mkdir(parents=True, exist_ok=True)
    out = subprocess.run([str(caffe_cli), "train", "-solver", "solvers/tiny_pvcnn.prototxt"],
                         cwd=toy_project, capture_output=True, text=True, timeout=900,
                         env={"GLOG_logtostderr": "1", "PATH": "/usr/bin:/bin"})
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-3000:]
    losses = [float(x) for x in re.findall(r"Iteration \d+ \(.*?\), loss = (\S+)", log)]
    accuracies = [float(x) for x in re.findall(r"Test net output #0: accuracy = (\S+)", log)]
    assert len(losses) >= 10 and accuracies, log[-3000:]
    assert np.mean(losses[-3:]) < 0.5 * losses[0], losses
    assert accuracies[-1] > 0.9, accuracies
    assert (toy_project / "models/tiny_pvcnn/tiny_pvcnn_iter_1000.caffemodel").exists()
