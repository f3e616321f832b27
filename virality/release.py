"""Trained-model releases: the directory a predictor reads.

``make_release(model, snapshot)`` writes ``models/<model>/release/``:

    deploy.prototxt        the model's generated deploy net (one tower: data -> score, or -> prob)
    <model>.caffemodel     the snapshot's weights, as the deploy net holds them (tower B and the
                           solver state are not needed: they share or duplicate tower A)
    metadata.json          model, arch, input (blob, crop, image size, mean BGR, channel order),
                           output blob, what it was trained on (if known), sha256 of the caffemodel,
                           the snapshot it came from, created date, engine version
    SHA256SUMS             sha256 of the three files above (``sha256sum -c SHA256SUMS`` format)

The snapshot is loaded into the deploy net with ``virality.weights.load_weights``,
every layer required: a release whose layers were not all trained fails. The
directory is assembled in a temporary sibling, validated with ``read_release``,
then moved into place: nothing half-written.

``read_release(dir)`` validates a release (every checksum, the metadata keys)
and returns a ``Release``; ``Release.net()`` builds the Caffe net.
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

from virality.files import file_digest
from virality.paths import MODELS_DIR, PROTOTXT_DIR, ROOT, SOLVER_DIR

RELEASE_FORMAT = "virality-release/1"
CHECKSUM_FILE = "SHA256SUMS"
METADATA_FILE = "metadata.json"
DEPLOY_FILE = "deploy.prototxt"

_REQUIRED_METADATA = ("format", "model", "arch", "kind", "input", "output", "files", "caffemodel_sha256",
                      "trained_on", "snapshot", "created")
_REQUIRED_INPUT = ("blob", "shape", "crop_size", "image_size", "mean_bgr", "channels", "pixel_range")


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

    def net(self):
        """The deploy net with the release's weights (TEST phase)."""
        import caffe
        return caffe.Net(str(self.deploy), str(self.caffemodel), caffe.TEST)


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
    from virality.weights import read_net_param

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


def make_release(model_name, snapshot=None, out_dir=None, trained_on=None, force=False, stream=None,
                 deploy=None, train_val=None, attribute="virality"):
    """Write the release directory of ``model_name`` from ``snapshot``. Returns (Release, LoadReport).

    deploy, train_val: the nets of the run (default: the committed prototxt/<model>/ files);
    attribute: what the score ranks ("virality", or e.g. "brightness"), recorded in metadata.json
    and used by tools/predict.py's output.
    """
    from virality.architectures import ARCHITECTURES
    from virality.nets import get_model
    from virality.weights import WeightsError, build_net, load_weights, read_net_param

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

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-"))
    try:
        caffemodel_name = f"{model_name}.caffemodel"
        shutil.copyfile(deploy_src, tmp / DEPLOY_FILE)
        net.save(str(tmp / caffemodel_name))
        del net
        caffemodel_sha = sha256_file(tmp / caffemodel_name)
        train_val = Path(train_val) if train_val else PROTOTXT_DIR / model_name / "train_val.prototxt"
        output = ({"blob": "score", "meaning": f"f_r, the image's {attribute} score (higher = more {attribute}); "
                                              "image 1 beats image 2 iff its score is higher"}
                  if output_blob == "score" else
                  {"blob": "prob", "meaning": "topic probabilities (softmax over the Topic-CNN classes)",
                   "num_topics": int(net_param_num_outputs(net_param, "fc8_topic"))})
        metadata = {
            "format": RELEASE_FORMAT,
            "model": model_name,
            "arch": model.arch,
            "kind": model.kind,
            "attribute": attribute,
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
    return Release(d, d / DEPLOY_FILE, d / caffemodel, metadata)
