"""Train/val and deploy nets of every model, from one definition per architecture.

Models (``MODELS``): ``<arch>_pvcnn``, ``<arch>_tpvcnn`` and ``<arch>_topic`` for
arch in alexnet, vgg19, tiny.

- PVCNN (paper Sec. 2.3, Fig. 1 without the topic branch): two towers with shared
  weights map I1, I2 to fc7; one shared fully connected layer ``score`` maps fc7
  to the scalar virality score f_r (our reading of "combined to a fully-connected
  layer", docs/MODEL.md); the ranking loss (Sec. 2.4, Eqs. 1-4) compares f_r(I1)
  and f_r(I2).
- TPVCNN (Sec. 2.5): as PVCNN, plus a frozen Topic-CNN branch (own param names,
  lr_mult 0, decay_mult 0, no dropout: its test-time features) whose fc7 is
  concatenated with the ranking tower's fc7 before ``score``.
- Topic-CNN (Sec. 2.5): the tower plus ``fc8_topic``, a softmax classifier of the
  image's topic; it is fine-tuned first and then frozen inside TPVCNN.

Deploy nets are one tower: input blob ``data`` (N x 3 x crop x crop, BGR,
(pixel - mean) * scale: see ``Architecture.mean_bgr``/``input_scale`` and docs/MODEL.md), output blob
``score`` (f_r) for ranking models and ``prob`` (topic probabilities) for
Topic-CNNs.

The TEST phase of every train_val net reads the setting's validation set D_val
(``pairs_val``, ``topics_val``), never its test set: D_test is read once, by
evaluation (docs/PROTOCOL.md).

One update of a ranking net is the sum of Eq. 1 over all the pairs of the update,
whatever ``iter_size``: Caffe divides the gradients accumulated over ``iter_size``
passes by ``iter_size``, so the loss layer's ``loss_weight`` is ``iter_size`` when the
loss sums (``normalize: false``) and 1 when it averages (docs/TRAINING.md).

New layers are initialised from a Gaussian with std 0.05 (Sec. 3).
"""
import json
from dataclasses import dataclass

import caffe
from caffe import layers as L, params as P
from caffe.proto import caffe_pb2

from virality.model.architectures import ARCHITECTURES, TowerNamer
from virality.model.ranking import DEFAULT_EPSILON, DEFAULT_LAMBDA

#: Sec. 3: "initial weights were sampled from a gaussian distribution with mean 0 and sigma 0.05".
NEW_LAYER_FILLER = dict(type="gaussian", std=0.05)

KINDS = ("pvcnn", "tpvcnn", "topic")
FEEDS = ("pair_lmdb", "pair_index")


@dataclass(frozen=True)
class Model:
    name: str
    arch: str
    kind: str

    @property
    def architecture(self):
        return ARCHITECTURES[self.arch]


MODELS = {f"{arch}_{kind}": Model(f"{arch}_{kind}", arch, kind)
          for arch in ("alexnet", "vgg19", "tiny") for kind in KINDS}


def get_model(name):
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model '{name}'; known models: {', '.join(sorted(MODELS))}") from None


@dataclass(frozen=True)
class DataConfig:
    """Where a train_val net reads its data from, and how it batches it.

    Paths are relative to the project root (Caffe resolves them from the cwd:
    run from the repo root, as the Makefile does), unless ``data_root`` is an
    absolute directory: a run's nets (virality/experiments/runs.py) read ``<data_root>/<dataset>``
    by absolute path, so they work from any working directory.
    """

    dataset: str
    setting: str
    feed: str = "pair_lmdb"      # ranking models: "pair_lmdb" or "pair_index"
    train_batch: int = 64        # pairs (ranking) or images (topic) per forward pass
    test_batch: int = 50         # validation records per TEST-phase pass
    num_topics: int = 7          # Topic-CNN classes (dataset-dependent)
    seed: int = 1701             # pair_index shuffling
    data_root: str = "data"      # where <dataset>/ lives: "data" (from the repo root) or an absolute path
    iter_size: int = 1           # passes per update (the solver's iter_size; sets the loss weight)
    feed_workers: int = 0        # pair_index TRAIN feed: 0 a thread, N worker processes (docs/GPU.md)

    def __post_init__(self):
        if self.feed not in FEEDS:
            raise ValueError(f"feed must be one of {FEEDS}, got '{self.feed}'")
        for name in ("train_batch", "test_batch", "iter_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.feed_workers < 0:
            raise ValueError(f"feed_workers must be 0 (a thread) or more (worker processes), got {self.feed_workers}")
        if self.feed_workers and self.feed != "pair_index":
            raise ValueError(f"feed_workers={self.feed_workers} needs the pair_index feed (the {self.feed} feed is "
                             "Caffe's own Data layer, with its own prefetch thread)")

    @property
    def root(self):
        return f"{self.data_root}/{self.dataset}"

    def pair_lmdb(self, split):
        return f"{self.root}/{self.setting}/pairs_{split}_lmdb"

    def pair_index(self, split):
        return f"{self.root}/{self.setting}/pairs_{split}.npy"

    def image_store(self, size):
        return f"{self.root}/images_{size}_lmdb"

    def topic_lmdb(self, split):
        return f"{self.root}/{self.setting}/topics_{split}_lmdb"


@dataclass(frozen=True)
class LossOptions:
    """The ranking loss layer's param_str (docs/LOSS.md): lambda (Sec. 3), epsilon (ours), normalize."""

    lam: float = DEFAULT_LAMBDA
    epsilon: float = DEFAULT_EPSILON
    normalize: bool = False

    def __post_init__(self):
        if not self.lam >= 0 or not self.epsilon > 0:
            raise ValueError(f"lambda must be >= 0 and epsilon > 0, got {self.lam}, {self.epsilon}")

    def param_str(self):
        return json.dumps({"lambda": self.lam, "epsilon": self.epsilon, "normalize": self.normalize})

    def loss_weight(self, iter_size):
        """Caffe averages the iter_size passes of an update: a summed loss (Eq. 1) is weighted
        by iter_size so that the update is the sum over all its pairs."""
        return 1.0 if self.normalize else float(iter_size)


def _mean_values(arch, copies):
    return [float(v) for v in arch.mean_bgr] * copies


def _transform(arch, train, copies):
    """Caffe's DataTransformer: random crop + mirror in TRAIN, centre crop in TEST, (x - mean) * scale."""
    params = dict(crop_size=arch.crop_size, mirror=train, mean_value=_mean_values(arch, copies))
    if arch.input_scale != 1.0:
        params["scale"] = arch.input_scale
    return params


def _include(phase):
    return dict(phase=phase)


def _lmdb_layer(arch, data_cfg, phase, source, copies):
    """Caffe's Data layer over an LMDB: ``source(split)`` names it; ``copies`` images per Datum."""
    train = phase == caffe.TRAIN
    return L.Data(ntop=2, include=_include(phase), backend=P.Data.LMDB, source=source("train" if train else "val"),
                  batch_size=data_cfg.train_batch if train else data_cfg.test_batch,
                  transform_param=_transform(arch, train, copies=copies))


def _pair_lmdb_layer(arch, data_cfg, phase):
    """Caffe-native pair feed: one Datum per pair, 6 channels (I1 BGR, I2 BGR), label y."""
    return _lmdb_layer(arch, data_cfg, phase, data_cfg.pair_lmdb, copies=2)


def _pair_index_layer(arch, data_cfg, phase):
    """Pair-index feed: batches assembled from the image store by pair index."""
    train = phase == caffe.TRAIN
    params = dict(image_store=data_cfg.image_store(arch.image_size),
                  pairs=data_cfg.pair_index("train" if train else "val"),
                  batch_size=data_cfg.train_batch if train else data_cfg.test_batch,
                  crop_size=arch.crop_size, mean=list(arch.mean_bgr), scale=arch.input_scale, mirror=train,
                  shuffle=train, seed=data_cfg.seed)
    if train and data_cfg.feed_workers:
        params["workers"] = data_cfg.feed_workers     # worker processes assemble batches (GPU training)
    return L.Python(ntop=3, include=_include(phase),
                    python_param=dict(module="python_layers.pair_data", layer="PairIndexData",
                                      param_str=json.dumps(params, sort_keys=True)))


def _topic_lmdb_layer(arch, data_cfg, phase):
    return _lmdb_layer(arch, data_cfg, phase, data_cfg.topic_lmdb, copies=1)


def _score(n, name, bottom):
    n[name] = L.InnerProduct(bottom, num_output=1,
                             param=[dict(name="score_w", lr_mult=1.0, decay_mult=1.0),
                                    dict(name="score_b", lr_mult=2.0, decay_mult=0.0)],
                             weight_filler=NEW_LAYER_FILLER, bias_filler=dict(type="constant", value=0))
    return n[name]


def _ranking_branch(n, model, data, suffix, dropout):
    """f_r for one image: ranking tower (+ frozen topic branch for TPVCNN) -> score."""
    arch = model.architecture
    features = arch.build(n, data, TowerNamer(layer_suffix=suffix), dropout=dropout)
    if model.kind == "tpvcnn":
        topic = arch.build(n, data, TowerNamer(layer_prefix="topic_", layer_suffix=suffix,
                                               param_prefix="topic_", lr_mult=0.0, decay_mult=0.0),
                           dropout=False)
        n[f"concat{suffix}"] = L.Concat(features, topic)
        features = n[f"concat{suffix}"]
    return _score(n, f"score{suffix}", features)


def _topic_head(n, model, data, dropout, num_topics):
    features = model.architecture.build(n, data, TowerNamer(), dropout=dropout)
    n.fc8_topic = L.InnerProduct(features, num_output=num_topics,
                                 param=[dict(name="fc8_topic_w", lr_mult=1.0, decay_mult=1.0),
                                        dict(name="fc8_topic_b", lr_mult=2.0, decay_mult=0.0)],
                                 weight_filler=NEW_LAYER_FILLER, bias_filler=dict(type="constant", value=0))
    return n.fc8_topic


def _with_test_data_layer(net, test_layer_net):
    """Insert the TEST-phase data layer(s) right after the TRAIN-phase ones."""
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net)
    del out.layer[:]
    out.layer.extend(net.layer[:1])
    out.layer.extend(test_layer_net.layer)
    out.layer.extend(net.layer[1:])
    return out


def train_val_net(model_name, data_cfg, loss=LossOptions()):
    """The train_val NetParameter of a model reading the data described by ``data_cfg``
    (TRAIN: D_train, TEST: D_val), with the ranking loss configured by ``loss``."""
    model = get_model(model_name)
    arch = model.architecture
    n = caffe.NetSpec()
    t = caffe.NetSpec()
    if model.kind == "topic":
        n.data, n.label = _topic_lmdb_layer(arch, data_cfg, caffe.TRAIN)
        t.data, t.label = _topic_lmdb_layer(arch, data_cfg, caffe.TEST)
        logits = _topic_head(n, model, n.data, dropout=True, num_topics=data_cfg.num_topics)
        n.loss = L.SoftmaxWithLoss(logits, n.label)
        n.accuracy = L.Accuracy(logits, n.label, include=_include(caffe.TEST))
    else:
        if data_cfg.feed == "pair_lmdb":
            n.pair_data, n.label = _pair_lmdb_layer(arch, data_cfg, caffe.TRAIN)
            t.pair_data, t.label = _pair_lmdb_layer(arch, data_cfg, caffe.TEST)
            n.data, n.data_p = L.Slice(n.pair_data, ntop=2, slice_param=dict(axis=1, slice_point=[3]))
        else:
            n.data, n.data_p, n.label = _pair_index_layer(arch, data_cfg, caffe.TRAIN)
            t.data, t.data_p, t.label = _pair_index_layer(arch, data_cfg, caffe.TEST)
        score = _ranking_branch(n, model, n.data, "", dropout=True)
        score_p = _ranking_branch(n, model, n.data_p, "_p", dropout=True)
        n.loss, n.accuracy = L.Python(
            score, score_p, n.label, ntop=2, loss_weight=[loss.loss_weight(data_cfg.iter_size), 0.0],
            python_param=dict(module="python_layers.ranking_loss", layer="RankingLoss",
                              param_str=loss.param_str()))
    net = n.to_proto()
    net.name = model.name
    return _with_test_data_layer(net, t.to_proto())


def deploy_net(model_name, num_topics=7, batch=1):
    """One tower: ``data`` (batch x 3 x crop x crop) -> ``score`` (or ``prob`` for Topic-CNNs)."""
    model = get_model(model_name)
    arch = model.architecture
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[batch, 3, arch.crop_size, arch.crop_size]))
    if model.kind == "topic":
        logits = _topic_head(n, model, n.data, dropout=False, num_topics=num_topics)
        n.prob = L.Softmax(logits)
    else:
        _ranking_branch(n, model, n.data, "", dropout=False)
    net = n.to_proto()
    net.name = f"{model.name}_deploy"
    return net
