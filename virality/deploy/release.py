"""Trained-model releases: the directory a predictor reads.

``make_release(model, snapshot)`` writes ``models/<model>/release/``:

    deploy.prototxt        the model's generated deploy net (one tower: data -> score, or -> prob)
    <model>.caffemodel     the snapshot's weights, as the deploy net holds them (tower B and the
                           solver state are not needed: they share or duplicate tower A)
    metadata.json          model, arch, input (blob, crop, image size, mean BGR, channel order),
                           output blob, what it was trained on (if known), sha256 of the caffemodel,
                           the snapshot it came from, created date, engine version, and the
                           score distribution of its training images (``score_distribution``:
                           n, 101 quantiles of f_r, mean, std; predict turns f_r into a percentile)
    SHA256SUMS             sha256 of the three files above (``sha256sum -c SHA256SUMS`` format)

The snapshot is loaded into the deploy net with ``virality.pretrained.weights.load_weights``,
every layer required: a release whose layers were not all trained fails. The
directory is assembled in a temporary sibling, validated with ``read_release``,
then moved into place: nothing half-written.

``read_release(dir)`` checks a release as data before anything is built from it, since a
release may come from someone else: every checksum; metadata.json against a schema (types and
ranges: an edited ``crop_size: 99999`` or ``input: "x"`` is refused before Caffe allocates
anything); the deploy net's layer types against ``ALLOWED_LAYERS`` (built-in layers that
compute; no ``Python`` layer, which would import any module, no data or file-writing layers)
and its input shape against the metadata. ``Release.net()`` then checks the caffemodel's
layers and blob shapes against the net before copying the weights in, so a truncated or
mismatched caffemodel is a ReleaseError naming the file, never a Caffe abort.
"""
import datetime as _dt
import json
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from virality.files import file_digest
from virality.paths import MODELS_DIR, PROTOTXT_DIR, ROOT, SOLVER_DIR

RELEASE_FORMAT = "virality-release/1"
CHECKSUM_FILE = "SHA256SUMS"
METADATA_FILE = "metadata.json"
DEPLOY_FILE = "deploy.prototxt"

_REQUIRED_METADATA = ("format", "model", "arch", "kind", "input", "output", "files", "caffemodel_sha256",
                      "trained_on", "snapshot", "created")
_REQUIRED_INPUT = ("blob", "shape", "crop_size", "image_size", "mean_bgr", "channels", "pixel_range")
#: Layer types a release's deploy net may hold: Caffe's built-in compute layers. No Python layer
#: (it imports and runs any installed module), no data or output layers (they open files).
ALLOWED_LAYERS = frozenset({
    "Input", "Convolution", "Deconvolution", "InnerProduct", "ReLU", "PReLU", "ELU", "Sigmoid", "TanH",
    "AbsVal", "Power", "Exp", "Log", "BNLL", "Threshold", "Pooling", "LRN", "Dropout", "BatchNorm", "Scale",
    "Bias", "Concat", "Slice", "Split", "Eltwise", "Flatten", "Reshape", "Softmax", "ArgMax", "Crop", "Silence",
})
MAX_IMAGE_SIZE = 2048          # a side larger than any net here would take (VGG/AlexNet: 256)
QUANTILES = 101                # score_distribution: the 0th, 1st, ..., 100th percentile of f_r
DISTRIBUTION_LIMIT = 5000      # training images scored for the distribution, at most (evenly spread)


class ReleaseError(Exception):
    """A release that cannot be made or does not validate; the message names the file."""


@dataclass(frozen=True)
class Release:
    dir: Path
    deploy: Path
    caffemodel: Path
    metadata: dict

    @property
    def mean_bgr(self):
        return tuple(self.metadata["input"]["mean_bgr"])

    @property
    def crop_size(self):
        return self.metadata["input"]["crop_size"]

    @property
    def output_blob(self):
        return self.metadata["output"]["blob"]

    @property
    def score_distribution(self):
        return self.metadata.get("score_distribution")

    def net(self):
        """The deploy net with the release's weights (TEST phase), after checking the caffemodel fits it."""
        import caffe
        from virality.pretrained.caffemodel import CaffeModelError, read_caffemodel
        try:
            model = read_caffemodel(self.caffemodel)
        except CaffeModelError as e:
            raise ReleaseError(f"{e}; rebuild the release (make release)") from None
        net = caffe.Net(str(self.deploy), caffe.TEST)
        records = model.by_name()
        for name, blobs in net.params.items():
            record = records.get(name)
            if record is None:
                raise ReleaseError(f"{self.caffemodel}: no weights for layer '{name}' of {self.deploy}")
            if len(record.blobs) != len(blobs):
                raise ReleaseError(f"{self.caffemodel}: layer '{name}' holds {len(record.blobs)} blob(s), "
                                   f"{self.deploy} needs {len(blobs)}")
            for i, (stored, blob) in enumerate(zip(record.blobs, blobs)):
                if not stored.fits(blob.data.shape) or stored.data.size != blob.data.size:
                    raise ReleaseError(f"{self.caffemodel}: layer '{name}' blob {i} is {stored.shape_str()} "
                                       f"({stored.data.size} values), {self.deploy} needs "
                                       f"{'x'.join(map(str, blob.data.shape))}")
        del model, records
        net.copy_from(str(self.caffemodel))
        return net

    def percentile(self, scores):
        """% of the training images whose f_r is below each score; None without a distribution."""
        from virality.deploy.predict import score_distribution_percentile
        dist = self.score_distribution
        return None if not dist else score_distribution_percentile(dist, scores)


def sha256_file(path):
    return file_digest(path, "sha256")


def release_dir(model_name):
    return MODELS_DIR / model_name / "release"


def default_snapshot(model_name, solver_path=None):
    """The solver's final snapshot: ``<snapshot_prefix>_iter_<max_iter>.caffemodel`` (from the repo root)."""
    from caffe.proto import caffe_pb2
    from google.protobuf import text_format

    solver_path = Path(solver_path or SOLVER_DIR / f"{model_name}.prototxt")
    if not solver_path.is_file():
        raise ReleaseError(f"{solver_path}: no solver for {model_name}; pass --snapshot FILE")
    msg = caffe_pb2.SolverParameter()
    text_format.Merge(solver_path.read_text(), msg)
    return ROOT / f"{msg.snapshot_prefix}_iter_{msg.max_iter}.caffemodel"


def training_sources(train_val_path):
    """The data a train_val net reads in its TRAIN phase: LMDB sources and Python feed files."""
    from virality.pretrained.weights import read_net_param

    sources = []
    for layer in read_net_param(train_val_path).layer:
        if layer.bottom or any(rule.phase != 0 for rule in layer.include):   # 0 = caffe.TRAIN
            continue
        if layer.type == "Data" and layer.data_param.source:
            sources.append(layer.data_param.source)
        elif layer.type == "Python" and layer.python_param.param_str:
            try:
                params = json.loads(layer.python_param.param_str)
            except json.JSONDecodeError:
                continue
            sources += [str(params[k]) for k in ("image_store", "pairs", "source") if k in params]
    return sources


def _engine_version():
    info = ROOT / ".engine" / "build-info.txt"
    if info.is_file():
        for line in info.read_text().splitlines():
            if line.startswith("caffe_version="):
                return line.split("=", 1)[1]
    return None


def _rel(path):
    path = Path(path).resolve()
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def training_reference(model_name, train_val=None):
    """(image store, pair file) of the images ``model_name``'s train_val net trains on, or (None, None).

    The pair-index feed names both in its param_str; a pair-LMDB feed reads
    data/<dataset>/<setting>/pairs_train_lmdb, written by make_data beside pairs_train.npy,
    with the dataset's image store at data/<dataset>/images_<size>_lmdb.
    """
    from virality.model.nets import get_model
    train_val = Path(train_val or PROTOTXT_DIR / model_name / "train_val.prototxt")
    if not train_val.is_file():
        return None, None
    size = get_model(model_name).architecture.image_size
    store = pairs = None
    for source in training_sources(train_val):
        path = Path(source)
        if path.name.startswith("images_") and path.name.endswith("_lmdb"):
            store = path
        elif path.name == "pairs_train.npy":
            pairs = path
        elif path.name == "pairs_train_lmdb":
            pairs = path.with_name("pairs_train.npy")
            store = store or path.parent.parent / f"images_{size}_lmdb"
    resolve = lambda p: None if p is None else (p if p.is_absolute() else ROOT / p)   # noqa: E731
    return resolve(store), resolve(pairs)


def score_distribution(net, store_path, pairs_path, spec, limit=DISTRIBUTION_LIMIT, show_progress=True):
    """The f_r distribution of the training images (both sides of every training pair).

    At most ``limit`` images, evenly spread over the sorted ids (deterministic), are scored with
    the deploy net as evaluation scores them (centre crop, virality.deploy.preprocess).
    """
    from virality.data.imagestore import ImageStore, StoreError
    from virality.deploy.preprocess import chw_to_input, forward_in_batches
    from virality.progress import progress
    pairs_path, store_path = Path(pairs_path), Path(store_path)
    if not pairs_path.is_file():
        raise ReleaseError(f"{pairs_path}: no training pairs for the score distribution; build the data "
                           "(make data), pass --pairs/--store, or --no-score-distribution")
    try:
        store = ImageStore(store_path)
    except (StoreError, OSError) as e:
        raise ReleaseError(f"{store_path}: cannot read the training image store ({e}); build it with make data, "
                           "or pass --no-score-distribution") from None
    pairs = np.load(pairs_path, mmap_mode="r")
    ids = np.unique(np.asarray(pairs[:, :2], dtype=np.int64))
    ids = ids[np.isin(ids, store.ids)]
    if ids.size == 0:
        raise ReleaseError(f"{pairs_path}: none of its images is in {store_path}")
    sampled = bool(limit) and ids.size > limit
    if sampled:
        ids = ids[np.linspace(0, ids.size - 1, limit).round().astype(np.int64)]
    scores = []
    with progress(total=int(ids.size), desc="score distribution", unit="img", enabled=show_progress) as bar:
        for start in range(0, ids.size, 256):
            chunk = ids[start:start + 256]
            scores.append(forward_in_batches(net, chw_to_input(store.read_chw(chunk), spec), "score", 64)[:, 0])
            bar.update(len(chunk))
    store.close()
    scores = np.concatenate(scores)
    return {
        "n": int(scores.size),
        "quantiles": [float(v) for v in np.quantile(scores, np.linspace(0, 1, QUANTILES))],
        "mean": float(scores.mean()), "std": float(scores.std()),
        "images": {"store": _rel(store_path), "pairs": _rel(pairs_path),
                   "selection": f"{limit} of the training pairs' images, evenly spaced by id" if sampled
                   else "every image of the training pairs"},
        "meaning": ("f_r of the training images: quantiles[k] is the k-th percentile; an image's percentile "
                    "is the % of training images it outscores"),
    }


def make_release(model_name, snapshot=None, out_dir=None, trained_on=None, force=False, stream=None,
                 reference=None, distribution_limit=DISTRIBUTION_LIMIT, show_progress=True, attribute="virality",
                 deploy=None, train_val=None):
    """Write the release directory of ``model_name`` from ``snapshot``. Returns (Release, LoadReport).

    ``reference=(image store, pair file)`` of the training images gives the release its score
    distribution (ranking models); None writes ``score_distribution: null`` (percentiles unknown).
    ``attribute``: what the score ranks ("virality"; "brightness", "memorability", ... for other
    pairwise data), recorded in metadata.json and used by tools/predict.py's output.
    ``deploy``, ``train_val``: the nets of a run directory (default: the committed prototxt/<model>/).
    """
    from virality.model.architectures import ARCHITECTURES
    from virality.model.nets import get_model
    from virality.pretrained.weights import WeightsError, build_net, load_weights, read_net_param

    stream = stream or sys.stderr
    try:
        model = get_model(model_name)
    except ValueError as e:
        raise ReleaseError(str(e)) from None
    arch = ARCHITECTURES[model.arch]
    deploy_src = Path(deploy) if deploy else PROTOTXT_DIR / model_name / DEPLOY_FILE
    if not deploy_src.is_file():
        raise ReleaseError(f"{deploy_src}: no deploy net; generate it with `make nets`")
    snapshot = Path(snapshot) if snapshot else default_snapshot(model_name)
    if not snapshot.is_file():
        raise ReleaseError(f"{snapshot}: no such snapshot; train first (make train MODEL={model_name}) "
                           "or pass --snapshot FILE")
    out_dir = Path(out_dir) if out_dir else release_dir(model_name)
    if out_dir.exists() and not force:
        raise ReleaseError(f"{out_dir} already exists; pass --force to replace it")

    net_param = read_net_param(deploy_src)
    net = build_net(net_param)
    try:
        report = load_weights(net, net_param, snapshot, required=tuple(net.params.keys()), check_zoo=False,
                              stream=stream)
    except WeightsError as e:
        raise ReleaseError(f"{snapshot} does not fill the deploy net of {model_name}: {e}") from None
    output_blob = net.outputs[0] if len(net.outputs) == 1 else None
    if output_blob not in ("score", "prob"):
        raise ReleaseError(f"{deploy_src}: expected one output blob 'score' or 'prob', got {list(net.outputs)}")
    input_shape = list(net.blobs["data"].data.shape)
    distribution = None
    if reference is not None and output_blob == "score":
        from virality.deploy.preprocess import InputSpec
        distribution = score_distribution(net, reference[0], reference[1], InputSpec.of_architecture(arch),
                                          distribution_limit, show_progress)
        net.blobs["data"].reshape(*input_shape)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-"))
    try:
        caffemodel_name = f"{model_name}.caffemodel"
        shutil.copyfile(deploy_src, tmp / DEPLOY_FILE)
        net.save(str(tmp / caffemodel_name))
        del net
        caffemodel_sha = sha256_file(tmp / caffemodel_name)
        train_val = Path(train_val) if train_val else PROTOTXT_DIR / model_name / "train_val.prototxt"
        output = ({"blob": "score", "meaning": f"f_r, the image's {attribute} score (no unit; higher = more "
                                              f"{attribute}); image 1 beats image 2 iff its score is higher"}
                  if output_blob == "score" else
                  {"blob": "prob", "meaning": "topic probabilities (softmax over the Topic-CNN classes)",
                   "num_topics": int(net_param_num_outputs(net_param, "fc8_topic"))})
        metadata = {
            "format": RELEASE_FORMAT,
            "model": model_name,
            "attribute": attribute,
            "arch": model.arch,
            "kind": model.kind,
            "input": {
                "blob": "data",
                "shape": input_shape,
                "crop_size": arch.crop_size,
                "image_size": arch.image_size,
                "mean_bgr": list(arch.mean_bgr),
                "channels": "BGR",
                "pixel_range": [0, 255],
                "scale": arch.input_scale,
                "preprocessing": (f"resize to {arch.image_size}x{arch.image_size}, centre crop "
                                  f"{arch.crop_size}x{arch.crop_size}, BGR order, subtract mean_bgr, "
                                  "multiply by scale; the deploy net does not subtract the mean itself"),
            },
            "output": output,
            "score_distribution": distribution,
            "files": {"deploy": DEPLOY_FILE, "caffemodel": caffemodel_name},
            "caffemodel_sha256": caffemodel_sha,
            "trained_on": {
                "description": trained_on,
                "note": ("data_sources are what the committed train_val net reads; a caffemodel does not record "
                         "its training data, so 'description' (tools/release.py --trained-on) is the authority"),
                "train_val": _rel(train_val) if train_val.is_file() else None,
                "data_sources": training_sources(train_val) if train_val.is_file() else [],
            },
            "snapshot": {"file": _rel(snapshot), "sha256": sha256_file(snapshot)},
            "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
            "engine": _engine_version(),
        }
        (tmp / METADATA_FILE).write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
        sums = "".join(f"{sha256_file(tmp / name)}  {name}\n"
                       for name in (DEPLOY_FILE, caffemodel_name, METADATA_FILE))
        (tmp / CHECKSUM_FILE).write_text(sums)
        for name in (DEPLOY_FILE, caffemodel_name, METADATA_FILE, CHECKSUM_FILE):
            os.chmod(tmp / name, 0o644)
        os.chmod(tmp, 0o755)
        read_release(tmp)                                      # self-check before it becomes visible
        old = None
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
            os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return read_release(out_dir), report


def net_param_num_outputs(net_param, layer_name):
    for layer in net_param.layer:
        if layer.name == layer_name:
            return layer.inner_product_param.num_output
    raise ReleaseError(f"net {net_param.name} has no layer {layer_name}")


_SUM_LINE = re.compile(r"^([0-9a-f]{64}) [ *]([A-Za-z0-9_.-]+)$")


def read_release(directory):
    """Validate a release directory and return a Release. Raises ReleaseError naming the file at fault."""
    d = Path(directory)
    if not d.is_dir():
        raise ReleaseError(f"{d}: no such release directory (make one with `make release MODEL=<model>`)")
    sums_path = d / CHECKSUM_FILE
    if not sums_path.is_file():
        raise ReleaseError(f"{sums_path}: missing; not a release directory, or an incomplete one")
    sums = {}
    for n, line in enumerate(sums_path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        m = _SUM_LINE.match(line)
        if not m:
            raise ReleaseError(f"{sums_path}:{n}: not a '<sha256>  <file>' line: {line!r}")
        sums[m.group(2)] = m.group(1)
    meta_path = d / METADATA_FILE
    for name in (DEPLOY_FILE, METADATA_FILE):
        if name not in sums:
            raise ReleaseError(f"{sums_path}: does not list {name}")
    for name, digest in sums.items():
        path = d / name
        if not path.is_file():
            raise ReleaseError(f"{path}: listed in {sums_path} but missing")
        actual = sha256_file(path)
        if actual != digest:
            raise ReleaseError(f"{path}: sha256 {actual} differs from {digest} in {sums_path}; "
                               "the file was modified or corrupted: rebuild the release (make release)")
    try:
        metadata = json.loads(meta_path.read_text())
    except json.JSONDecodeError as e:
        raise ReleaseError(f"{meta_path}: not valid JSON ({e})") from None
    if not isinstance(metadata, dict):
        raise ReleaseError(f"{meta_path}: must be a JSON object")
    missing = [k for k in _REQUIRED_METADATA if k not in metadata]
    if missing:
        raise ReleaseError(f"{meta_path}: missing key(s) {missing}")
    if metadata["format"] != RELEASE_FORMAT:
        raise ReleaseError(f"{meta_path}: format '{metadata['format']}', this code reads '{RELEASE_FORMAT}'")
    for key in ("input", "output", "files"):
        if not isinstance(metadata[key], dict):
            raise ReleaseError(f"{meta_path}: '{key}' is {json.dumps(metadata[key])[:60]}; it must be an object. "
                               "Rebuild the release (make release) rather than editing it")
    missing = [k for k in _REQUIRED_INPUT if k not in metadata["input"]]
    if missing:
        raise ReleaseError(f"{meta_path}: 'input' lacks {missing}")
    if "blob" not in metadata["output"]:
        raise ReleaseError(f"{meta_path}: 'output' lacks 'blob'")
    files = metadata["files"]
    if files.get("deploy") != DEPLOY_FILE or not isinstance(files.get("caffemodel"), str):
        raise ReleaseError(f"{meta_path}: 'files' must name deploy ({DEPLOY_FILE}) and caffemodel")
    caffemodel = files["caffemodel"]
    if caffemodel not in sums:
        raise ReleaseError(f"{sums_path}: does not list the caffemodel {caffemodel}")
    if sums[caffemodel] != metadata["caffemodel_sha256"]:
        raise ReleaseError(f"{meta_path}: caffemodel_sha256 {metadata['caffemodel_sha256']} disagrees with "
                           f"{sums_path} ({sums[caffemodel]})")
    check_metadata(metadata, meta_path)
    check_deploy(d / DEPLOY_FILE, metadata)
    return Release(d, d / DEPLOY_FILE, d / caffemodel, metadata)


def _is_int(x):
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool) and np.isfinite(x)


def check_metadata(meta, path):
    """Types and ranges of metadata.json; raises ReleaseError naming the key and the allowed values."""
    def bad(key, want):
        got = json.dumps(_dig(meta, key))
        raise ReleaseError(f"{path}: '{key}' is {got if len(got) < 60 else got[:57] + '...'}; it must be {want}. "
                           "Rebuild the release (make release) rather than editing it")

    for key in ("model", "arch", "kind", "caffemodel_sha256"):
        if not isinstance(meta[key], str):
            bad(key, "a string")
    if not isinstance(meta.get("attribute", "virality"), str):
        bad("attribute", "a string")
    if not re.fullmatch(r"[0-9a-f]{64}", meta["caffemodel_sha256"]):
        bad("caffemodel_sha256", "64 hex digits")
    for key in ("input", "output", "files"):
        if not isinstance(meta[key], dict):
            bad(key, "an object")
    inp = meta["input"]
    if inp.get("blob") != "data":
        bad("input.blob", '"data"')
    if not _is_int(inp.get("image_size")) or not 1 <= inp["image_size"] <= MAX_IMAGE_SIZE:
        bad("input.image_size", f"an integer in [1, {MAX_IMAGE_SIZE}]")
    if not _is_int(inp.get("crop_size")) or not 1 <= inp["crop_size"] <= inp["image_size"]:
        bad("input.crop_size", f"an integer in [1, input.image_size = {inp['image_size']}]")
    shape = inp.get("shape")
    if (not isinstance(shape, list) or len(shape) != 4 or not all(map(_is_int, shape))
            or shape[1:] != [3, inp["crop_size"], inp["crop_size"]] or not 1 <= shape[0] <= 1024):
        bad("input.shape", f"[N, 3, crop_size, crop_size] = [N, 3, {inp['crop_size']}, {inp['crop_size']}], "
                           "N in [1, 1024]")
    mean = inp.get("mean_bgr")
    if not isinstance(mean, list) or len(mean) != 3 or not all(_is_number(v) and 0 <= v <= 255 for v in mean):
        bad("input.mean_bgr", "three numbers in [0, 255]")
    if inp.get("channels") != "BGR":
        bad("input.channels", '"BGR"')
    if inp.get("pixel_range") != [0, 255]:
        bad("input.pixel_range", "[0, 255]")
    if "scale" in inp and not (_is_number(inp["scale"]) and 0 < inp["scale"] <= 1000):
        bad("input.scale", "a number in (0, 1000]")
    out = meta["output"]
    if out.get("blob") not in ("score", "prob"):
        bad("output.blob", '"score" or "prob"')
    if out["blob"] == "prob" and not (_is_int(out.get("num_topics")) and out["num_topics"] >= 1):
        bad("output.num_topics", "a positive integer")
    dist = meta.get("score_distribution")
    if dist is not None:
        if not isinstance(dist, dict) or out["blob"] != "score":
            bad("score_distribution", "null or an object (ranking models only)")
        if not _is_int(dist.get("n")) or dist["n"] < 1:
            bad("score_distribution.n", "a positive integer")
        q = dist.get("quantiles")
        if (not isinstance(q, list) or len(q) != QUANTILES or not all(map(_is_number, q))
                or any(b < a for a, b in zip(q, q[1:]))):
            bad("score_distribution.quantiles", f"{QUANTILES} finite, non-decreasing numbers")


def _dig(obj, dotted):
    for part in dotted.split("."):
        obj = obj.get(part) if isinstance(obj, dict) else None
    return obj


def check_deploy(deploy, meta):
    """The deploy net's layer types are allowed ones, and its input is the metadata's shape."""
    from virality.pretrained.weights import WeightsError, read_net_param
    try:
        net_param = read_net_param(deploy)
    except WeightsError as e:
        raise ReleaseError(str(e)) from None
    if net_param.layers:
        raise ReleaseError(f"{deploy}: old V1 'layers' entries; a release holds a current (V2) deploy net")
    refused = sorted({layer.type for layer in net_param.layer} - ALLOWED_LAYERS)
    if refused:
        raise ReleaseError(f"{deploy}: layer type(s) {refused} are not allowed in a release (allowed: "
                           f"{', '.join(sorted(ALLOWED_LAYERS))}); a Python layer would run arbitrary code")
    inputs = [layer for layer in net_param.layer if layer.type == "Input"]
    shape = meta["input"]["shape"]
    if (len(inputs) != 1 or list(inputs[0].top) != ["data"] or len(inputs[0].input_param.shape) != 1
            or list(inputs[0].input_param.shape[0].dim) != shape):
        raise ReleaseError(f"{deploy}: must have one Input layer with top 'data' of shape {shape} "
                           f"(metadata.json input.shape)")
    if list(net_param.input):
        raise ReleaseError(f"{deploy}: old-style 'input:' fields; a release declares its input with an Input layer")
