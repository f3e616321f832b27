"""Read and write .caffemodel files (binary ``NetParameter``) without a net, fast.

Why not ``caffe_pb2.NetParameter.ParseFromString``: turning a parsed repeated
float field into numpy goes through Python objects (about 40 s for VGG-19's 144M
weights on our machine). This module walks the protobuf wire format of the few
fields that matter and maps each blob's packed float data straight from the file
with ``numpy.frombuffer`` on an ``mmap`` (no copy).

What it understands (caffe.proto of BVLC Caffe 1.0):

- ``NetParameter``: ``name`` (1), ``layer`` (100, LayerParameter: the current
  "V2" format) and ``layers`` (2, V1LayerParameter: the old format that
  VGG_ILSVRC_19_layers.caffemodel uses; Caffe upgrades it on load).
- ``LayerParameter``: ``name`` (1), ``type`` (2, a string), ``blobs`` (7).
- ``V1LayerParameter``: ``name`` (4), ``type`` (5, an enum), ``blobs`` (6). A V0
  layer inside it (field 1, Caffe's oldest format) is refused with the command
  that upgrades such a file (``upgrade_net_proto_binary``).
- ``BlobProto``: legacy 4-D ``num/channels/height/width`` (1-4), ``shape`` (7),
  ``data`` (5, packed or not) and ``double_data`` (8). Diffs are skipped.

Blob shapes follow Caffe's ``Blob::ShapeEquals``: a legacy 4-D blob matches a
net blob whose shape, padded on the left with 1s to four axes, is the same
(an fc weight stored as 1 x 1 x 4096 x 9216 fits a 4096 x 9216 blob).
"""
import mmap
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from caffe.proto import caffe_pb2

from virality.files import write_binary_atomic


class CaffeModelError(Exception):
    """A .caffemodel that cannot be read; the message names the file."""


@dataclass
class BlobRecord:
    shape: tuple          # as stored: BlobShape dims, or (num, channels, height, width) when legacy
    legacy: bool          # True when stored with the deprecated 4-D fields
    data: np.ndarray      # flat float32 (or float64 for double_data), a view of the file

    def fits(self, net_shape):
        """Caffe's Blob::ShapeEquals(BlobProto): may this blob be copied into a blob of ``net_shape``?"""
        net_shape = tuple(int(d) for d in net_shape)
        if self.legacy:
            return len(net_shape) <= 4 and (1,) * (4 - len(net_shape)) + net_shape == self.shape
        return net_shape == self.shape

    def shape_str(self):
        return "x".join(str(d) for d in self.shape) + (" (legacy 4-D)" if self.legacy else "")


@dataclass
class LayerRecord:
    name: str
    type: str
    blobs: list = field(default_factory=list)


@dataclass
class CaffeModel:
    path: Path
    name: str
    format: str           # "V2" (layer), "V1" (layers) or "V1+V2"
    layers: list          # LayerRecord, in file order

    def by_name(self):
        """name -> LayerRecord of the layers holding blobs (Caffe copies the first one of a name)."""
        out = {}
        for layer in self.layers:
            if layer.blobs and layer.name not in out:
                out[layer.name] = layer
        return out

    def num_params(self):
        return sum(b.data.size for layer in self.layers for b in layer.blobs)


# ---------------------------------------------------------------- wire format
_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


def _varint(buf, pos, end):
    result = shift = 0
    while True:
        if pos >= end:
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _fields(buf, pos, end):
    """Yield (field_number, wire_type, value, start, stop) of one message in buf[pos:end].

    For length-delimited fields value is None and [start, stop) is the payload;
    for varints value is the integer; for fixed32/64 [start, stop) are the bytes.
    """
    while pos < end:
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if wire == _VARINT:
            value, pos = _varint(buf, pos, end)
            yield number, wire, value, pos, pos
        elif wire == _LEN:
            length, pos = _varint(buf, pos, end)
            if pos + length > end:
                raise ValueError(f"field {number} runs past the end of its message")
            yield number, wire, None, pos, pos + length
            pos += length
        elif wire == _I32:
            if pos + 4 > end:
                raise ValueError("truncated fixed32")
            yield number, wire, None, pos, pos + 4
            pos += 4
        elif wire == _I64:
            if pos + 8 > end:
                raise ValueError("truncated fixed64")
            yield number, wire, None, pos, pos + 8
            pos += 8
        else:
            raise ValueError(f"unsupported wire type {wire} (field {number})")


def _packed_or_single(buf, start, stop, dtype):
    """float/double data: a packed run (wire type 2) or one unpacked element (fixed32/64)."""
    itemsize = np.dtype(dtype).itemsize
    if (stop - start) % itemsize:
        raise ValueError("packed data length is not a multiple of the element size")
    return np.frombuffer(buf, dtype=dtype, count=(stop - start) // itemsize, offset=start)


def _parse_blob(buf, pos, end):
    legacy = {}
    dims = []
    chunks, dchunks = [], []
    for number, wire, value, start, stop in _fields(buf, pos, end):
        if number in (1, 2, 3, 4) and wire == _VARINT:
            legacy[number] = value if value < 2 ** 31 else value - 2 ** 64
        elif number == 7 and wire == _LEN:                       # BlobShape
            for n2, w2, v2, s2, e2 in _fields(buf, start, stop):
                if n2 == 1 and w2 == _VARINT:
                    dims.append(v2)
                elif n2 == 1 and w2 == _LEN:
                    p = s2
                    while p < e2:
                        d, p = _varint(buf, p, e2)
                        dims.append(d)
        elif number == 5 and wire in (_LEN, _I32):
            chunks.append(_packed_or_single(buf, start, stop, "<f4"))
        elif number == 8 and wire in (_LEN, _I64):
            dchunks.append(_packed_or_single(buf, start, stop, "<f8"))
    if chunks and dchunks:
        raise ValueError("blob has both float and double data")
    parts = chunks or dchunks
    if not parts:
        data = np.zeros(0, dtype=np.float32)
    elif len(parts) == 1:
        data = parts[0]
    else:                                                        # unpacked: one element per field
        data = np.concatenate(parts)
    if legacy:
        shape = tuple(legacy.get(k, 0) for k in (1, 2, 3, 4))
        # Caffe's defaults for absent legacy fields are 0; a blob written with only some of them is
        # still "legacy" (Blob::ShapeEquals checks has_num() || has_channels() || ...).
        return BlobRecord(shape, True, data)
    return BlobRecord(tuple(dims), False, data)


_V1_TYPE_NAMES = {v: k for k, v in caffe_pb2.V1LayerParameter.LayerType.items()}


def _parse_layer(buf, pos, end, v1):
    name_field, type_field, blobs_field = (4, 5, 6) if v1 else (1, 2, 7)
    name, ltype, blobs = "", "", []
    for number, wire, value, start, stop in _fields(buf, pos, end):
        if number == name_field and wire == _LEN:
            name = bytes(buf[start:stop]).decode("utf-8")
        elif number == type_field:
            if v1 and wire == _VARINT:
                ltype = _V1_TYPE_NAMES.get(value, f"V1 type {value}")
            elif wire == _LEN:
                ltype = bytes(buf[start:stop]).decode("utf-8")
        elif number == blobs_field and wire == _LEN:
            blobs.append(_parse_blob(buf, start, stop))
        elif v1 and number == 1 and wire == _LEN:
            raise _V0Layer()
    return LayerRecord(name, ltype, blobs)


class _V0Layer(Exception):
    pass


def read_caffemodel(path):
    """Index a .caffemodel: its layers, their blob shapes and data (views of the file).

    Raises CaffeModelError naming the file when it is missing, empty, not a
    NetParameter, or in Caffe's V0 format.
    """
    path = Path(path)
    if not path.is_file():
        raise CaffeModelError(f"{path}: no such file")
    size = path.stat().st_size
    if size == 0:
        raise CaffeModelError(f"{path}: the file is empty (an interrupted download?)")
    with open(path, "rb") as f:
        buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    name, layers, kinds = "", [], set()
    try:
        for number, wire, value, start, stop in _fields(buf, 0, size):
            if number == 1 and wire == _LEN:
                name = bytes(buf[start:stop]).decode("utf-8", errors="replace")
            elif number == 100 and wire == _LEN:
                layers.append(_parse_layer(buf, start, stop, v1=False))
                kinds.add("V2")
            elif number == 2 and wire == _LEN:
                layers.append(_parse_layer(buf, start, stop, v1=True))
                kinds.add("V1")
    except _V0Layer:
        raise CaffeModelError(
            f"{path}: Caffe V0 layers (the oldest format); upgrade it first: "
            f".engine/bin/upgrade_net_proto_binary {path} <out.caffemodel>") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise CaffeModelError(f"{path}: not a readable Caffe NetParameter ({e}); "
                              "is it a .caffemodel, and was it downloaded completely?") from None
    if not layers:
        raise CaffeModelError(f"{path}: no layers found; not a .caffemodel (a prototxt or an HTML error page?)")
    fmt = "V1+V2" if len(kinds) == 2 else kinds.pop()
    return CaffeModel(path, name, fmt, layers)


# ---------------------------------------------------------------- writing
def _enc_varint(value):
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        if value:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _key(number, wire):
    return _enc_varint(number << 3 | wire)


def _blob_pieces(array, legacy):
    array = np.ascontiguousarray(array, dtype="<f4")
    header = caffe_pb2.BlobProto()
    if legacy:
        if array.ndim > 4:
            raise ValueError(f"a legacy 4-D blob cannot hold a {array.ndim}-D array")
        header.num, header.channels, header.height, header.width = (1,) * (4 - array.ndim) + array.shape
    else:
        header.shape.dim.extend(array.shape)
    head = header.SerializeToString()
    pieces = [head]
    if array.size:
        pieces += [_key(5, _LEN), _enc_varint(array.nbytes), memoryview(array).cast("B")]
    return pieces



def _v1_type(ltype):
    """V1 enum value of a layer type given as "InnerProduct" or "INNER_PRODUCT"."""
    enum_name = ltype if ltype.isupper() else re.sub(r"(?<!^)(?=[A-Z])", "_", ltype).upper()
    try:
        return caffe_pb2.V1LayerParameter.LayerType.Value(enum_name)
    except ValueError:
        raise ValueError(f"layer type '{ltype}' has no V1 equivalent ({enum_name})") from None


def write_caffemodel(path, layers, name="", v1=False):
    """Write a .caffemodel from ``layers``: [(name, type, [numpy arrays])], atomically.

    ``v1=False``: current format (``layer``, string types, ``shape`` dims), as
    ``Net::ToProto`` writes it. ``v1=True``: Caffe's old V1 format (``layers``,
    enum types such as CONVOLUTION / INNER_PRODUCT, legacy 4-D blob dims), as
    VGG_ILSVRC_19_layers.caffemodel is stored. Used to make stand-in weights and
    to transplant blobs between files.
    """
    def write(f):
        if name:
            f.write(caffe_pb2.NetParameter(name=name).SerializeToString())
        for lname, ltype, arrays in layers:
            if v1:
                head = caffe_pb2.V1LayerParameter(name=lname, type=_v1_type(ltype)).SerializeToString()
                blob_field = 6
            else:
                head = caffe_pb2.LayerParameter(name=lname, type=ltype).SerializeToString()
                blob_field = 7
            blobs = [_blob_pieces(a, legacy=v1) for a in arrays]
            body = [head]
            for pieces in blobs:
                body += [_key(blob_field, _LEN), _enc_varint(sum(len(p) for p in pieces))] + pieces
            f.write(_key(2 if v1 else 100, _LEN))
            f.write(_enc_varint(sum(len(p) for p in body)))
            for piece in body:
                f.write(piece)
    return write_binary_atomic(path, write)


def tensor_layers(model):
    """[(name, type, [arrays])] of a CaffeModel's layers with blobs, in the shapes stored (legacy dims kept)."""
    return [(layer.name, layer.type, [b.data.reshape(b.shape) for b in layer.blobs])
            for layer in model.layers if layer.blobs]

