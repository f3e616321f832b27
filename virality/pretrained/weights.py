"""Load pretrained weights into our nets, and prove that they were loaded.

Caffe's ``Net::CopyTrainedLayersFrom`` (``net.copy_from``, ``caffe train
-weights``) copies blobs by *layer name*, logs "Ignoring source layer" for the
others at INFO level (invisible by default), and aborts the process on a shape
mismatch. So:

- ``load_weights(net, net_param, path, required)`` first indexes the file
  (``virality.pretrained.caffemodel``: names, shapes, data, V1 or current format) and
  checks it against the net: a shape or blob-count mismatch, or a layer meant
  to be pretrained (``Architecture.pretrained``) that the file lacks (e.g. a
  renamed layer), raises ``WeightsError`` with a clear message *before* Caffe
  can abort. Then it calls ``net.copy_from`` and verifies, blob by blob, that
  every copied layer and every layer sharing its params (tower B: ``conv1_p``
  shares ``conv1_w``/``conv1_b`` with ``conv1``) now equals the file; a layer
  meant to be pretrained that kept its initial values raises ``WeightsError``.
  It returns a ``LoadReport``: copied, shared, left at their initialisation,
  ignored source layers.
- ``rename`` maps source layer names to target names (a Topic-CNN's ``conv1``
  into TPVCNN's ``topic_conv1``); those blobs are copied in Python, with the
  same checks.
- Files named like a Model Zoo manifest's ``file`` are verified against its
  sha1 on every use; an unverifiable one (VGG-19) is warned about loudly.

Nets: deploy nets have one tower. ``input_net(model)`` turns the train_val net
into one with ``Input`` layers in place of the data layers and without the loss,
so both towers (and their sharing) can be checked with pycaffe.
"""
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from difflib import get_close_matches
from pathlib import Path

import numpy as np
from google.protobuf import text_format

from virality.model.architectures import ARCHITECTURES, TOWER_PARAM_LAYERS
from virality.pretrained.caffemodel import CaffeModelError, read_caffemodel, write_caffemodel
from virality.pretrained.download import file_sha1
from virality.paths import PROTOTXT_DIR, ROOT
from virality.pretrained.zoo import find_by_file

UPGRADE_TOOL = ROOT / ".engine" / "bin" / "upgrade_net_proto_binary"


class WeightsError(Exception):
    """Weights that do not fit, or were not loaded, where they must be; the message says which and why."""


# ------------------------------------------------------------------- nets
def _model(model_name):
    from virality.model.nets import get_model
    return get_model(model_name)


def read_net_param(path):
    from caffe.proto import caffe_pb2
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such prototxt (generate it with `make nets`)")
    msg = caffe_pb2.NetParameter()
    try:
        text_format.Merge(path.read_text(), msg)
    except text_format.ParseError as e:
        raise WeightsError(f"{path}: not a valid NetParameter prototxt ({e})") from None
    return msg


def input_net_param(model_name, batch=1, train_val=None):
    """The model's train_val net with ``Input`` layers in place of its data layers and no loss.

    Every tower input (``data``, and ``data_p`` for ranking models) becomes an
    Input blob of ``batch x 3 x crop x crop``. Layers upstream of them (the data
    layers, the pair Slice) are dropped, and so is every layer that needs a blob
    only they produced (the loss and accuracy, which read ``label``). The towers,
    the topic branch and the scoring layer stay as generated, with their named
    (shared) params.
    """
    from caffe.proto import caffe_pb2

    model = _model(model_name)
    crop = model.architecture.crop_size
    src = read_net_param(train_val or PROTOTXT_DIR / model_name / "train_val.prototxt")
    inputs = ["data"] if model.kind == "topic" else ["data", "data_p"]
    layers = list(src.layer)
    producers = {}
    for i, layer in enumerate(layers):
        for top in layer.top:
            producers.setdefault(top, []).append(i)
    missing = [b for b in inputs if b not in producers]
    if missing:
        raise WeightsError(f"{model_name}: its train_val net has no blob(s) {missing}; regenerate it (`make nets`)")
    # Drop everything upstream of the tower inputs.
    drop, frontier = set(), list(inputs)
    while frontier:
        blob = frontier.pop()
        for i in producers.get(blob, []):
            if i not in drop and not (set(layers[i].bottom) & set(layers[i].top)):
                drop.add(i)
                frontier.extend(layers[i].bottom)
    # Drop whatever depends on a blob that no kept layer (nor an Input) produces.
    available = set(inputs)
    kept = []
    for i, layer in enumerate(layers):
        if i in drop:
            continue
        if all(b in available for b in layer.bottom):
            kept.append(layer)
            available.update(layer.top)
    out = caffe_pb2.NetParameter()
    out.name = f"{src.name}_inputs"
    for blob in inputs:
        inp = out.layer.add()
        inp.name, inp.type = f"input_{blob}", "Input"
        inp.top.append(blob)
        inp.input_param.shape.add().dim.extend([batch, 3, crop, crop])
    out.layer.extend(kept)
    return out


def build_net(net_param, weights=None):
    """A ``caffe.Net`` (TEST phase) from a NetParameter (written to a temporary prototxt)."""
    import caffe
    fd, tmp = tempfile.mkstemp(suffix=".prototxt", prefix="virality_net_")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text_format.MessageToString(net_param))
        if weights is not None:
            return caffe.Net(tmp, str(weights), caffe.TEST)
        return caffe.Net(tmp, caffe.TEST)
    finally:
        os.unlink(tmp)


def param_owners(net_param):
    """layer name -> the layer that owns its params (itself, or the first layer with the same param names)."""
    first = {}
    owners = {}
    for layer in net_param.layer:
        names = [p.name for p in layer.param]
        if names and all(names) and all(n in first for n in names):
            owner = {first[n] for n in names}
            owners[layer.name] = owner.pop() if len(owner) == 1 else layer.name
        else:
            owners[layer.name] = layer.name
        for n in names:
            if n:
                first.setdefault(n, layer.name)
    return owners


# ------------------------------------------------------------------- report
@dataclass
class LoadReport:
    source: str
    source_format: str
    net: str
    copied: list = field(default_factory=list)        # (target layer, source layer, shapes)
    shared: list = field(default_factory=list)        # (layer, owner layer): equal to the source via sharing
    initialised: list = field(default_factory=list)   # target layers with params left at their fillers
    ignored: list = field(default_factory=list)       # source layers with blobs the net did not take
    required: tuple = ()
    warnings: list = field(default_factory=list)
    sha1: object = None
    verified_sha1: bool = False

    @property
    def copied_layers(self):
        return [t for t, _, _ in self.copied]

    def format(self):
        lines = [f"weights {self.source} ({self.source_format} format) -> net {self.net}"]
        if self.sha1:
            state = "verified against its manifest" if self.verified_sha1 else "NOT verified"
            lines.append(f"  sha1 {self.sha1} ({state})")
        lines.append(f"  copied ({len(self.copied)}), equal to the file after loading:")
        for target, source, shapes in self.copied:
            via = "" if target == source else f" <- {source}"
            lines.append(f"    {target}{via}: {', '.join('x'.join(map(str, s)) for s in shapes)}")
        if self.shared:
            lines.append(f"  shared params ({len(self.shared)}), equal to the file after loading:")
            lines += [f"    {layer} (params of {owner})" for layer, owner in self.shared]
        lines.append(f"  not copied, left at their initialisation ({len(self.initialised)}): "
                     + (", ".join(self.initialised) or "none"))
        lines.append(f"  source layers not used ({len(self.ignored)}): " + (", ".join(self.ignored) or "none"))
        if self.required:
            lines.append(f"  all {len(self.required)} layers meant to be pretrained were loaded")
        lines += [f"  WARNING: {w}" for w in self.warnings]
        return "\n".join(lines)


def _shapes_str(shapes):
    return ", ".join("x".join(map(str, s)) for s in shapes)


def _check_zoo_checksum(path, report, stream):
    manifest = find_by_file(path)
    if manifest is None:
        return
    report.sha1 = file_sha1(path)
    if manifest.verifiable:
        if report.sha1 != manifest.sha1:
            raise WeightsError(f"{path}: sha1 {report.sha1} differs from {manifest.sha1} in {manifest.path}; "
                               f"the file is corrupt or not {manifest.name}. Fetch it again: "
                               f"make weights MODEL={manifest.name}")
        report.verified_sha1 = True
    else:
        stream.write(manifest.unverified_warning(report.sha1))
        report.warnings.append(f"{manifest.name} has no published checksum; this file (sha1 {report.sha1}) "
                               "is not verified")


def load_weights(net, net_param, weights, required=(), rename=None, check_zoo=True, stream=None):
    """Copy ``weights`` into ``net`` (built from ``net_param``), verify, and return a LoadReport.

    ``required``: target layer names that must end up equal to the file (raise
    WeightsError otherwise). ``rename``: {source layer: target layer}; when
    given, only those layers are copied (in Python); without it, Caffe's
    ``copy_from`` copies every layer whose name matches.
    """
    stream = stream or sys.stderr
    weights = Path(weights)
    try:
        model = read_caffemodel(weights)
    except CaffeModelError as e:
        raise WeightsError(str(e)) from None
    report = LoadReport(str(weights), model.format, net_param.name, required=tuple(required))
    if check_zoo:
        _check_zoo_checksum(weights, report, stream)
    source = model.by_name()
    target_layers = list(net.params.keys())
    target_shapes = {name: [tuple(b.data.shape) for b in net.params[name]] for name in target_layers}
    owners = param_owners(net_param)

    if rename is None:
        mapping = {name: name for name in target_layers if name in source}
    else:
        unknown = [t for t in rename.values() if t not in target_shapes]
        if unknown:
            raise WeightsError(f"net {net_param.name} has no layer(s) {unknown} to copy {weights} into")
        mapping = {t: s for s, t in rename.items() if s in source}
    # 1. Fit: blob counts and shapes (Caffe would abort the process instead). copy_from visits every
    #    source layer whose name is in the net, blobless ones included, and requires equal blob counts.
    if rename is None:
        net_blob_counts = {name: len(layer.blobs) for name, layer in zip(net._layer_names, net.layers)}
        for layer in model.layers:
            if layer.name in net_blob_counts and net_blob_counts[layer.name] != len(layer.blobs):
                raise WeightsError(f"{weights}: layer '{layer.name}' has {len(layer.blobs)} blobs but the layer of "
                                   f"that name in net {net_param.name} has {net_blob_counts[layer.name]}; "
                                   "Caffe cannot copy it (rename one of them)")
    for target, src_name in mapping.items():
        blobs, shapes = source[src_name].blobs, target_shapes[target]
        if len(blobs) != len(shapes):
            raise WeightsError(f"{weights}: layer '{src_name}' has {len(blobs)} blobs but layer '{target}' of net "
                               f"{net_param.name} has {len(shapes)}; not the same kind of layer")
        for j, (blob, shape) in enumerate(zip(blobs, shapes)):
            if not blob.fits(shape):
                raise WeightsError(f"{weights}: layer '{src_name}' blob {j} has shape {blob.shape_str()}, but "
                                   f"layer '{target}' of net {net_param.name} needs {'x'.join(map(str, shape))}; "
                                   "these weights are for another architecture")
    # 2. Required layers must be in the net and in the file.
    not_in_net = [r for r in required if r not in target_shapes]
    if not_in_net:
        raise WeightsError(f"net {net_param.name} has no layer(s) {not_in_net} that are meant to be pretrained; "
                           "the net and architectures.py disagree (regenerate the nets: make nets)")
    missing = [r for r in required if r not in mapping]
    if missing:
        src_names = [n for n in source if n not in mapping.values()]
        hints = []
        for r in missing:
            wanted = next((s for s, t in (rename or {}).items() if t == r), r)
            close = get_close_matches(wanted, src_names, n=2, cutoff=0.5)
            hints.append(f"'{wanted}'" + (f" (the file has {' or '.join(repr(c) for c in close)}: renamed?)"
                                          if close else ""))
        raise WeightsError(f"{weights}: layer(s) meant to be pretrained are not in the file, so they would keep "
                           f"their initial values in {net_param.name}: {', '.join(hints)}. "
                           f"Layers with weights in the file: {', '.join(source) or 'none'}")
    # 3. Copy.
    if rename is None:
        net.copy_from(str(weights))
    else:
        for target, src_name in mapping.items():
            for blob, dst in zip(source[src_name].blobs, net.params[target]):
                dst.data[...] = blob.data.reshape(dst.data.shape)
    # 4. Verify, blob by blob: copied layers and the layers sharing their params.
    copied_targets = set(mapping)
    not_equal = []
    for target, src_name in mapping.items():
        if not _equal(net.params[target], source[src_name].blobs):
            not_equal.append(target)
        report.copied.append((target, src_name, target_shapes[target]))
    for layer in target_layers:
        if layer in copied_targets:
            continue
        owner = owners.get(layer, layer)
        if owner in copied_targets:
            if not _equal(net.params[layer], source[mapping[owner]].blobs):
                not_equal.append(layer)
            report.shared.append((layer, owner))
        else:
            report.initialised.append(layer)
    if not_equal:
        raise WeightsError(f"after loading {weights} into {net_param.name}, layer(s) {not_equal} do not equal "
                           "the file (they kept their initial values or share the wrong params)")
    used = set(mapping.values())
    report.ignored = [name for name in source if name not in used]
    return report


def _equal(dst_blobs, src_blobs):
    return all(np.array_equal(dst.data.reshape(-1), src.data.astype(np.float32, copy=False))
               for dst, src in zip(dst_blobs, src_blobs))


# ------------------------------------------------------------------- entry points
def pretrained_layers(model_name):
    return ARCHITECTURES[_model(model_name).arch].pretrained


def load_pretrained(model_name, weights, batch=1, stream=None, check_zoo=True):
    """Build the model's two-tower Input net, load ImageNet ``weights``, check and report. Returns (net, report)."""
    required = pretrained_layers(model_name)
    if not required:
        raise WeightsError(f"{model_name}: its architecture takes no pretrained layers")
    net_param = input_net_param(model_name, batch=batch)
    net = build_net(net_param)
    return net, load_weights(net, net_param, weights, required=required, check_zoo=check_zoo, stream=stream)


def topic_rename(arch_name):
    """Topic-CNN layer -> TPVCNN topic-branch layer (``conv1`` -> ``topic_conv1``)."""
    return {base: f"topic_{base}" for base in TOWER_PARAM_LAYERS[arch_name]}


def make_tpvcnn_init(model_name, imagenet_weights, topic_weights, out, stream=None, check_zoo=True):
    """The initialisation caffemodel of a TPVCNN model.

    Ranking tower (conv1..fc7) from the ImageNet weights, the frozen topic
    branch (topic_conv1..topic_fc7) from a Topic-CNN snapshot (conv1..fc7).
    The file holds exactly these layers (the score layer keeps its Gaussian
    filler at training time). The written file is then loaded into the two-tower
    net and checked like any weights. Returns the three LoadReports
    (imagenet, topic, written file).
    """
    model = _model(model_name)
    if model.kind != "tpvcnn":
        raise WeightsError(f"{model_name} is not a TPVCNN model")
    arch = model.architecture
    net_param = input_net_param(model_name)
    net = build_net(net_param)
    reports = []
    if arch.pretrained:
        if imagenet_weights is None:
            raise WeightsError(f"{model_name}: ImageNet weights are needed for its ranking tower ({arch.name})")
        reports.append(load_weights(net, net_param, imagenet_weights, required=arch.pretrained,
                                    check_zoo=check_zoo, stream=stream))
    elif imagenet_weights is not None:
        raise WeightsError(f"{model_name}: the {arch.name} tower takes no ImageNet weights")
    rename = topic_rename(arch.name)
    topic_report = load_weights(net, net_param, topic_weights, required=tuple(rename.values()), rename=rename,
                                check_zoo=False, stream=stream)
    if "fc8_topic" not in topic_report.ignored:
        topic_report.warnings.append(f"{topic_weights} has no fc8_topic layer: is it really a Topic-CNN snapshot "
                                     f"({arch.name}_topic)?")
    reports.append(topic_report)
    types = {layer.name: layer.type for layer in net_param.layer}
    keep = list(arch.pretrained) + list(rename.values())
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, unchecked = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".unchecked")
    os.close(fd)
    try:
        write_caffemodel(unchecked, [(name, types[name], [b.data for b in net.params[name]]) for name in keep],
                         name=f"{model_name}_init")
        del net
        check_net = build_net(net_param)
        check = load_weights(check_net, net_param, unchecked, required=tuple(keep), check_zoo=False, stream=stream)
        del check_net
        os.replace(unchecked, out)                  # only a checked file gets the final name
    finally:
        if os.path.exists(unchecked):
            os.unlink(unchecked)
    check.source = str(out)
    reports.append(check)
    return reports


def upgrade_caffemodel(src, dst, tool=UPGRADE_TOOL):
    """Write a current-format copy of an old (V0/V1) caffemodel with Caffe's upgrade_net_proto_binary."""
    src, dst = Path(src), Path(dst)
    if not Path(tool).is_file():
        raise WeightsError(f"{tool}: Caffe's upgrade tool is missing; build the engine (make caffe)")
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".part")
    os.close(fd)
    try:
        proc = subprocess.run([str(tool), str(src), tmp], capture_output=True, text=True)
        if proc.returncode != 0:
            raise WeightsError(f"{src}: upgrade_net_proto_binary failed (exit {proc.returncode}): "
                               f"{proc.stderr.strip()[-2000:]}")
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dst
