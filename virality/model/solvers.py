"""Solvers, generated as typed ``caffe_pb2.SolverParameter`` messages.

The paper (Sec. 3) gives: SGD, base_lr 0.001, momentum 0.9, L2 weight decay 0.05,
and "The learning rate was decreased once the network began oscillating and the
learning rate was decreased a total of 3 times". The factor of each drop (x0.1),
the batch size, iteration count and drop points are ours, in ``SCHEDULES``, with
the reasons in docs/TRAINING.md. ``tools/train.py`` can instead drop the rate when
validation accuracy stops improving (the paper's wording).

Caffe's test phase reads the validation set D_val exactly once:
``test_iter * test_batch`` = the number of validation records (pairs for ranking
models, images for Topic-CNNs; virality.data.splits sizes them), checked here.
"""
from dataclasses import dataclass

from caffe.proto import caffe_pb2

from virality.model.nets import DataConfig, get_model

BASE_LR = 0.001       # Sec. 3
MOMENTUM = 0.9        # Sec. 3
WEIGHT_DECAY = 0.05   # Sec. 3
GAMMA = 0.1           # our decision: the paper says only "decreased a total of 3 times" (Sec. 3)
RANDOM_SEED = 1701


@dataclass(frozen=True)
class Schedule:
    """Batch sizes and iteration schedule of one model (our choice; docs/TRAINING.md)."""

    train_batch: int       # pairs (ranking) or images (topic) per forward pass
    iter_size: int         # forward passes accumulated per update
    test_batch: int        # test_iter = validation records / test_batch (exactly once)
    test_interval: int
    stepvalues: tuple      # the three drops (Sec. 3), each x GAMMA (our decision)
    max_iter: int
    snapshot: int
    display: int
    mode: str              # "GPU" or "CPU"
    base_lr: float = BASE_LR


#: 12 GB card (TITAN X class) for alexnet/vgg19; two CPU cores for tiny.
SCHEDULES = {
    # 64 pairs = 128 images per tower pass (+128 through the frozen topic branch for TPVCNN).
    ("alexnet", "ranking"): Schedule(64, 1, 50, 2000, (50000, 75000, 90000), 100000, 10000, 20, "GPU"),
    # VGG-19 keeps ~16 images of activations + gradients per GB-ish; 8 pairs x 4 = 32 pairs per update,
    # each update the sum of Eq. 1 over its 32 pairs (loss_weight = iter_size, virality.model.nets).
    ("vgg19", "ranking"): Schedule(8, 4, 25, 2000, (40000, 60000, 72000), 80000, 10000, 20, "GPU"),
    ("alexnet", "topic"): Schedule(128, 1, 50, 1000, (10000, 15000, 18000), 20000, 5000, 20, "GPU"),
    ("vgg19", "topic"): Schedule(16, 4, 25, 1000, (10000, 15000, 18000), 20000, 5000, 20, "GPU"),
    # tiny ranking nets keep the paper's base_lr: at 0.01 the TPVCNN's concatenated features
    # (the frozen topic branch's are ~6x larger) diverged (docs/TRAINING.md). The tiny Topic-CNN is
    # a softmax classifier trained from scratch, where 0.01 converges in 500 iterations.
    ("tiny", "ranking"): Schedule(32, 1, 100, 200, (600, 800, 900), 1000, 500, 50, "CPU"),
    ("tiny", "topic"): Schedule(64, 1, 100, 200, (300, 400, 450), 500, 250, 50, "CPU", base_lr=0.01),
}

#: The data each committed model reads by default (tools/make_nets.py can change it).
#: Full-size models read 10M training pairs through the pair-index feed: a 256 px pair LMDB of
#: them would hold about 3.9 TB (docs/DATA_STORAGE.md); the tiny ones use Caffe's own pair LMDB.
DEFAULT_DATA = {
    "alexnet": dict(dataset="deza2015", setting="top_bottom", num_topics=7, feed="pair_index"),
    "vgg19": dict(dataset="deza2015", setting="top_bottom", num_topics=7, feed="pair_index"),
    "tiny": dict(dataset="synthetic", setting="random", num_topics=5, feed="pair_lmdb"),
}


def schedule_for(model_name):
    model = get_model(model_name)
    return SCHEDULES[(model.arch, "topic" if model.kind == "topic" else "ranking")]


def default_data_config(model_name, feed=None, **overrides):
    """The DataConfig of a model: DEFAULT_DATA for its architecture and its schedule's batch sizes
    and iter_size, then ``feed`` and overrides (any DataConfig field)."""
    model = get_model(model_name)
    sched = schedule_for(model_name)
    fields = dict(DEFAULT_DATA[model.arch], train_batch=sched.train_batch, test_batch=sched.test_batch,
                  iter_size=sched.iter_size)
    if feed:
        fields["feed"] = feed
    fields.update(overrides)
    return DataConfig(**fields)


def default_val_records(model_name, dataset):
    """Validation records of ``dataset``'s default split that a model's test phase reads:
    pairs for ranking models, images (two pools' worth) for Topic-CNNs (virality.data.splits)."""
    from virality.data.splits import default_validation

    val = default_validation(dataset)
    return 2 * val["images_per_side"] if get_model(model_name).kind == "topic" else val["num_pairs"]


def test_iterations(val_records, test_batch):
    """test_iter with test_iter * test_batch == val_records; an error when the batch does not divide."""
    if val_records < 1 or val_records % test_batch:
        raise ValueError(f"the test phase must read the {val_records} validation records exactly once, but a "
                         f"test batch of {test_batch} does not divide them: choose --test-batch among the "
                         f"divisors of {val_records} (or other --val-records)")
    return val_records // test_batch


def covering_test_batch(val_records, largest):
    """The largest test batch <= ``largest`` that divides ``val_records``, so that
    :func:`test_iterations` covers them exactly once (a run directory fits its nets to its data)."""
    if val_records < 1:
        raise ValueError("the test phase has no validation records")
    return max(b for b in range(1, min(val_records, largest) + 1) if val_records % b == 0)


def solver(model_name, net_path, snapshot_prefix, data_cfg=None, val_records=None):
    """The SolverParameter of a model (paths relative to the repo root).

    data_cfg:    the net's DataConfig (default: the model's); its iter_size and test_batch are used.
    val_records: validation records the test phase covers (default: the dataset's default split).
    """
    s = schedule_for(model_name)
    data_cfg = data_cfg or default_data_config(model_name)
    val_records = val_records or default_val_records(model_name, data_cfg.dataset)
    return caffe_pb2.SolverParameter(
        net=net_path,
        test_iter=[test_iterations(val_records, data_cfg.test_batch)], test_interval=s.test_interval,
        test_initialization=False,
        base_lr=s.base_lr, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY,
        regularization_type="L2", type="SGD",
        lr_policy="multistep", gamma=GAMMA, stepvalue=list(s.stepvalues),
        iter_size=data_cfg.iter_size, max_iter=s.max_iter,
        display=s.display, average_loss=s.display,
        snapshot=s.snapshot, snapshot_prefix=snapshot_prefix,
        solver_mode=getattr(caffe_pb2.SolverParameter, s.mode),
        random_seed=RANDOM_SEED,
    )
