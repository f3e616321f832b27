"""What every training run checks before it starts (tools/caffe_train.py, tools/train.py, and a run
directory's training in virality/experiments/runs.py), and the training record of `make train`.

- A model whose towers take ImageNet weights (alexnet, vgg19; Sec. 2.3: "fine-tune
  two such disjoint networks from their image classification weights") refuses to
  start without them unless ``from_scratch`` is asked for; then it says so loudly
  and the run record keeps it (:func:`check_initialisation`).
- Caffe's test phase reads the validation set exactly once: ``test_iter`` x the
  TEST batch equals the validation records (:func:`check_test_coverage`).
- ``run.json`` in a model directory (models/<model>/, `make train`) records the
  setting the net trains on, the weights, ``from_scratch`` and the command
  (:func:`write_run_record`), so a TPVCNN can check that its Topic-CNN was trained for
  the same setting. A run directory (runs/<name>/, virality/experiments/runs.py) keeps the same
  facts in its own run.json, written by virality.experiments.runs; these checks are shared.
"""
import json
import re
import time
from pathlib import Path

from virality.files import write_text_atomic

RUN_RECORD = "run.json"
SCRATCH_BANNER = ("!" * 78 + "\n!!! {model}: TRAINING FROM SCRATCH (random initialisation, no ImageNet weights).\n"
                  "!!! The paper fine-tunes from ImageNet (Sec. 2.3); numbers from this run are not comparable\n"
                  "!!! with Table 1. Recorded in {record}.\n" + "!" * 78)


#: Caffe's seed is an unsigned 32-bit int (caffe.set_random_seed refuses anything else).
SEED_LIMIT = 2 ** 32


class RunError(ValueError):
    """A run that must not start as configured."""


def check_seed(seed):
    """A training seed is a whole number in [0, 2**32): Caffe's seed is an unsigned 32-bit int."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < SEED_LIMIT:
        raise RunError(f"seed {seed!r}: give a whole number from 0 to {SEED_LIMIT - 1} "
                       "(Caffe's seed is an unsigned 32-bit int)")
    return seed


def seed_argument(text):
    """argparse ``type=`` for a training seed: the check above, said as a usage error."""
    import argparse
    try:
        return check_seed(int(text))
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err) if isinstance(err, RunError) else
                                         f"seed {text!r}: give a whole number") from None


def needs_pretrained(model_name):
    from virality.model.nets import get_model     # here: the tools parse their arguments before Caffe loads
    return bool(get_model(model_name).architecture.pretrained)


def check_initialisation(model_name, weights, from_scratch):
    """Refuse a pretrained-tower model without weights unless ``from_scratch``; returns True when
    the run trains from scratch (the caller prints :data:`SCRATCH_BANNER` and records it)."""
    if weights or not needs_pretrained(model_name):
        return False
    if not from_scratch:
        raise RunError(f"{model_name} fine-tunes ImageNet weights (paper Sec. 2.3) and none were given: pass "
                       f"WEIGHTS=models/pretrained/<zoo model>.caffemodel (make weights MODEL=<zoo model>), or "
                       f"FROM_SCRATCH=1 (--from-scratch) to train from random initialisation on purpose")
    return True


def net_data_setting(train_val_path):
    """(dataset, setting) the TRAIN phase of a generated train_val net reads (pairs or topics)."""
    text = Path(train_val_path).read_text()
    m = re.search(r'data/([^/"\\]+)/([^/"\\]+)/(?:pairs|topics)_train', text)
    if not m:
        raise RunError(f"{train_val_path}: cannot tell which dataset/setting it trains on")
    return m.group(1), m.group(2)


def check_test_coverage(solver_param, net_param, workdir):
    """Raise unless test_iter x the TEST-phase batch equals the validation records the net reads."""
    from virality.train.training import count_test_records

    if not solver_param.test_iter:
        return None
    batch = test_batch_size(net_param)
    records = count_test_records(net_param, workdir)
    covered = solver_param.test_iter[0] * batch
    if covered != records:
        raise RunError(f"the solver's test phase reads test_iter {solver_param.test_iter[0]} x batch {batch} = "
                       f"{covered} records but the validation set holds {records}: regenerate the nets with "
                       f"`tools/make_nets.py --val-records {records}` (and a --test-batch dividing it)")
    return records


def test_batch_size(net_param):
    for layer in net_param.layer:
        if not any(rule.phase == 1 for rule in layer.include):    # caffe.TEST
            continue
        if layer.type == "Data":
            return layer.data_param.batch_size
        if layer.type == "Python":
            return int(json.loads(layer.python_param.param_str)["batch_size"])
    raise RunError("the net has no TEST-phase data layer")


def write_run_record(model_dir, **fields):
    path = Path(model_dir) / RUN_RECORD
    record = dict(fields, started=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    write_text_atomic(path, json.dumps(record, indent=1, sort_keys=True, default=str) + "\n")
    return path


def read_run_record(model_dir):
    path = Path(model_dir) / RUN_RECORD
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError as err:
        raise RunError(f"{path}: not a run record ({err}); delete it or retrain") from None
