"""Manifests of the pretrained Model Zoo weights (``model_zoo/<name>.json``).

A manifest says where a caffemodel comes from (url), how to verify it (sha1, or
``null`` with a ``sha1_note`` saying why there is none), its size if known, its
licence, its input conventions (crop, mean BGR), where its definition comes
from, and the layers our towers take from it. ``model_zoo/README.md`` documents
every key.

    from virality.pretrained.zoo import load_manifest
    m = load_manifest("bvlc_alexnet")
    m.url, m.sha1, m.default_dest()

``reference_net(arch)`` regenerates the Model Zoo layout of an architecture
(our tower + ``fc8`` + ``prob``): the definition our stand-in weights are made
from, and what the manifests' ``layer_shapes`` are tested against.
"""
import json
import re
from dataclasses import dataclass
from pathlib import Path

from virality.model.architectures import ARCHITECTURES
from virality.paths import MODELS_DIR, ROOT

ZOO_DIR = ROOT / "model_zoo"
PRETRAINED_DIR = MODELS_DIR / "pretrained"

_SHA1 = re.compile(r"^[0-9a-f]{40}$")
_FILE = re.compile(r"^[A-Za-z0-9_.-]+\.caffemodel$")

#: key -> (type(s), required). ``None`` allowed where the type tuple has type(None).
_KEYS = {
    "name": (str, True),
    "description": (str, True),
    "arch": (str, True),
    "file": (str, True),
    "url": (str, True),
    "sha1": ((str, type(None)), True),
    "sha1_note": (str, True),
    "size_bytes": ((int, type(None)), True),
    "size_note": (str, False),
    "num_params": (int, True),
    "licence": (dict, True),
    "input": (dict, True),
    "definition": (dict, True),
    "layers": (list, True),
    "ignored_layers": (list, True),
    "layer_shapes": (dict, True),
    "citation": (str, True),
}


class ManifestError(Exception):
    """A manifest that is missing or malformed; the message names the file and the key."""


@dataclass(frozen=True)
class Manifest:
    path: Path
    name: str
    arch: str
    file: str
    url: str
    sha1: object            # 40 lowercase hex digits, or None when none is published
    sha1_note: str
    size_bytes: object      # int or None
    num_params: int
    licence: dict
    input: dict
    definition: dict
    layers: tuple           # the layers our towers take (load by these names)
    ignored_layers: tuple   # layers of the file our towers do not use (fc8)
    layer_shapes: dict      # layer -> tuple of blob shapes (current-format shapes)
    raw: dict

    @property
    def verifiable(self):
        return self.sha1 is not None

    @property
    def mean_bgr(self):
        return tuple(self.input["mean_bgr"])

    @property
    def crop_size(self):
        return self.input["crop_size"]

    def default_dest(self):
        return PRETRAINED_DIR / self.file

    def unverified_warning(self, sha1_of_file=None):
        """The loud warning printed whenever an unverifiable file is fetched or used."""
        got = f"\n  sha1 of this file: {sha1_of_file}" if sha1_of_file else ""
        return (
            f"\n{'!' * 78}\n"
            f"WARNING: {self.name} has NO published checksum; this file is NOT verified.{got}\n"
            f"  {self.sha1_note}\n"
            f"  To pin it: set \"sha1\" in {self.path} (only from a download verified by other means).\n"
            f"{'!' * 78}\n")


def _fail(path, msg):
    raise ManifestError(f"{path}: {msg}")


def validate(data, path):
    """Check a manifest dict; return a Manifest. Raises ManifestError naming ``path`` and the key."""
    if not isinstance(data, dict):
        _fail(path, "a manifest is a JSON object")
    unknown = sorted(set(data) - set(_KEYS))
    if unknown:
        _fail(path, f"unknown key(s) {unknown}; known keys: {sorted(_KEYS)} (model_zoo/README.md)")
    for key, (types, required) in _KEYS.items():
        if key not in data:
            if required:
                _fail(path, f"missing key '{key}' (model_zoo/README.md documents it)")
            continue
        if not isinstance(data[key], types) or isinstance(data[key], bool):
            _fail(path, f"'{key}' has the wrong type ({type(data[key]).__name__})")
    if data["name"] != Path(path).stem:
        _fail(path, f"'name' is '{data['name']}' but the file is {Path(path).name}: they must agree")
    if data["arch"] not in ARCHITECTURES:
        _fail(path, f"'arch' '{data['arch']}' is not one of {sorted(ARCHITECTURES)}")
    if not _FILE.match(data["file"]):
        _fail(path, f"'file' '{data['file']}' must be a plain file name ending in .caffemodel")
    if not re.match(r"^https?://[^\s/]+/\S+$", data["url"]):
        _fail(path, f"'url' '{data['url']}' is not an http(s) URL")
    if data["sha1"] is not None and not _SHA1.match(data["sha1"]):
        _fail(path, f"'sha1' must be 40 lowercase hex digits or null, got '{data['sha1']}'")
    if not data["sha1_note"].strip():
        _fail(path, "'sha1_note' must say where the sha1 comes from (or why there is none)")
    if data["size_bytes"] is not None and data["size_bytes"] <= 0:
        _fail(path, "'size_bytes' must be positive or null")
    for key in ("name", "text", "url"):
        if not isinstance(data["licence"].get(key), str):
            _fail(path, f"'licence.{key}' is missing")
    inp = data["input"]
    for key in ("crop_size", "image_size"):
        if not isinstance(inp.get(key), int) or inp[key] <= 0:
            _fail(path, f"'input.{key}' must be a positive integer")
    if inp.get("channels") != "BGR":
        _fail(path, "'input.channels' must be \"BGR\" (Caffe Model Zoo convention)")
    mean = inp.get("mean_bgr")
    if not (isinstance(mean, list) and len(mean) == 3 and all(isinstance(v, (int, float)) for v in mean)):
        _fail(path, "'input.mean_bgr' must be a list of 3 numbers (B, G, R)")
    for key in ("source", "format", "ours"):
        if not isinstance(data["definition"].get(key), str):
            _fail(path, f"'definition.{key}' is missing")
    if not data["layers"] or not all(isinstance(v, str) for v in data["layers"]):
        _fail(path, "'layers' must be a non-empty list of layer names")
    shapes = {}
    for layer, blobs in data["layer_shapes"].items():
        if not (isinstance(blobs, list) and all(isinstance(s, list) and all(isinstance(d, int) and d > 0 for d in s)
                                                for s in blobs)):
            _fail(path, f"'layer_shapes.{layer}' must be a list of shapes (lists of positive integers)")
        shapes[layer] = tuple(tuple(s) for s in blobs)
    missing = [name for name in list(data["layers"]) + list(data["ignored_layers"]) if name not in shapes]
    if missing:
        _fail(path, f"'layer_shapes' lacks {missing}")
    return Manifest(path=Path(path), name=data["name"], arch=data["arch"], file=data["file"], url=data["url"],
                    sha1=data["sha1"], sha1_note=data["sha1_note"], size_bytes=data["size_bytes"],
                    num_params=data["num_params"], licence=data["licence"], input=inp,
                    definition=data["definition"], layers=tuple(data["layers"]),
                    ignored_layers=tuple(data["ignored_layers"]), layer_shapes=shapes, raw=data)


def manifest_names(zoo_dir=ZOO_DIR):
    return sorted(p.stem for p in Path(zoo_dir).glob("*.json"))


def load_manifest(name_or_path, zoo_dir=ZOO_DIR):
    """The Manifest of ``model_zoo/<name>.json`` (or of a path to a .json file)."""
    path = Path(name_or_path)
    if path.suffix != ".json":
        path = Path(zoo_dir) / f"{name_or_path}.json"
    if not path.is_file():
        raise ManifestError(f"{path}: no such manifest; known: {', '.join(manifest_names(zoo_dir)) or 'none'}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ManifestError(f"{path}: not valid JSON ({e})") from None
    return validate(data, path)


def find_by_file(weights_path, zoo_dir=ZOO_DIR):
    """The manifest whose ``file`` is the base name of ``weights_path``, or None."""
    name = Path(weights_path).name
    for stem in manifest_names(zoo_dir):
        m = load_manifest(stem, zoo_dir)
        if m.file == name:
            return m
    return None


def reference_net(arch_name, batch=1):
    """NetParameter of the Model Zoo layout of ``arch_name``: data -> tower -> fc8 (1000) -> prob."""
    import caffe
    from caffe import layers as L

    from virality.model.architectures import TowerNamer

    arch = ARCHITECTURES[arch_name]
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[batch, 3, arch.crop_size, arch.crop_size]))
    x = arch.build(n, n.data, TowerNamer(), dropout=True)
    n.fc8 = L.InnerProduct(x, num_output=1000, param=TowerNamer().params("fc8"),
                           weight_filler=dict(type="gaussian", std=0.01), bias_filler=dict(type="constant", value=0))
    n.prob = L.Softmax(n.fc8)
    net = n.to_proto()
    net.name = f"{arch_name}_model_zoo_layout"
    return net
