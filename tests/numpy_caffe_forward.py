"""An independent float64 forward pass of a Caffe deploy net, in numpy.

Reads the net from its prototxt and the weights straight from the .caffemodel
protobuf (caffe_pb2 message classes only: no Caffe layer code runs), then computes
every layer from its definition in Caffe's documentation and layer headers,
in float64, with in-place layers overwriting their blob as Caffe's do. Layers:
Input, Convolution, BatchNorm (global statistics), Scale, ReLU, Eltwise, Pooling,
InnerProduct, Softmax; any other type is an error that names it.

tests/test_third_party_model.py compares the engine's blobs with these on a real
pretrained model (tests/third_party_model.py).
"""
import math

import numpy as np


class UnsupportedLayer(ValueError):
    pass


def read_net(prototxt):
    from google.protobuf import text_format
    from caffe.proto import caffe_pb2
    net = caffe_pb2.NetParameter()
    with open(prototxt) as f:
        text_format.Merge(f.read(), net)
    return net


def read_weights(caffemodel):
    """{layer name: [float64 arrays]} from a binary .caffemodel."""
    from caffe.proto import caffe_pb2
    net = caffe_pb2.NetParameter()
    with open(caffemodel, "rb") as f:
        net.ParseFromString(f.read())
    weights = {}
    for layer in list(net.layer) + list(net.layers):
        arrays = []
        for blob in layer.blobs:
            shape = tuple(blob.shape.dim) or tuple(d for d in (blob.num, blob.channels, blob.height, blob.width))
            arrays.append(np.asarray(blob.data, dtype=np.float64).reshape(shape))
        if arrays:
            weights[layer.name] = arrays
    return weights


def _pair(repeated, single_h, single_w, default):
    """Caffe's (h, w) of kernel/pad/stride: the _h/_w fields, else the repeated field (one or two values)."""
    if single_h or single_w:
        return int(single_h), int(single_w)
    values = list(repeated)
    if not values:
        return default, default
    return int(values[0]), int(values[-1])


def convolution(x, w, b, pad, stride, dilation, group):
    n, c, h, wid = x.shape
    out_c, c_group, kh, kw = w.shape
    (ph, pw), (sh, sw), (dh, dw) = pad, stride, dilation
    out_h = (h + 2 * ph - (dh * (kh - 1) + 1)) // sh + 1
    out_w = (wid + 2 * pw - (dw * (kw - 1) + 1)) // sw + 1
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    o_group = out_c // group
    y = np.empty((n, out_c, out_h * out_w))
    for g in range(group):
        xs = xp[:, g * c_group:(g + 1) * c_group]
        taps = [xs[:, :, i * dh: i * dh + sh * (out_h - 1) + 1: sh, j * dw: j * dw + sw * (out_w - 1) + 1: sw]
                for i in range(kh) for j in range(kw)]
        cols = np.stack(taps, axis=2).reshape(n, c_group * kh * kw, out_h * out_w)
        wg = w[g * o_group:(g + 1) * o_group].reshape(o_group, -1)
        y[:, g * o_group:(g + 1) * o_group] = np.matmul(wg, cols)
    if b is not None:
        y += b[None, :, None]
    return y.reshape(n, out_c, out_h, out_w)


def pooling(x, method, kernel, pad, stride):
    """Caffe's MAX / AVE pooling: output size rounds up, the last window may overhang the input;
    AVE divides by the window clipped to the padded input (as pooling_layer.cpp does)."""
    n, c, h, w = x.shape
    (kh, kw), (ph, pw), (sh, sw) = kernel, pad, stride

    def out_size(size, k, p, s):
        out = int(math.ceil((size + 2 * p - k) / s)) + 1
        if p and (out - 1) * s >= size + p:
            out -= 1
        return out

    out_h, out_w = out_size(h, kh, ph, sh), out_size(w, kw, pw, sw)
    y = np.empty((n, c, out_h, out_w))
    for i in range(out_h):
        h0 = i * sh - ph
        h1 = min(h0 + kh, h + ph)
        for j in range(out_w):
            w0 = j * sw - pw
            w1 = min(w0 + kw, w + pw)
            window = x[:, :, max(h0, 0):min(h1, h), max(w0, 0):min(w1, w)]
            if method == "MAX":
                y[:, :, i, j] = window.max(axis=(2, 3))
            else:
                y[:, :, i, j] = window.sum(axis=(2, 3)) / ((h1 - h0) * (w1 - w0))
    return y


def forward(net, weights, inputs, bn_eps=None):
    """Every blob of ``net`` (NetParameter, TEST phase) after one forward pass, float64.

    ``inputs``: {input blob name: array}. ``bn_eps`` overrides every BatchNorm's epsilon
    (tests use it to show that the comparison notices a wrong one).
    """
    from caffe.proto import caffe_pb2
    P = caffe_pb2
    blobs = {}
    for layer in net.layer:
        if any(r.HasField("phase") and r.phase != P.TEST for r in layer.include):
            continue
        t = layer.type
        bottoms = [blobs[b] for b in layer.bottom]
        w = weights.get(layer.name, [])
        if t in ("Input", "MemoryData"):
            for top in layer.top:
                blobs[top] = np.asarray(inputs[top], dtype=np.float64)
            continue
        x = bottoms[0] if bottoms else None
        if t == "Convolution":
            cp = layer.convolution_param
            kernel = _pair(cp.kernel_size, cp.kernel_h, cp.kernel_w, 1)
            pad = _pair(cp.pad, cp.pad_h, cp.pad_w, 0)
            stride = _pair(cp.stride, cp.stride_h, cp.stride_w, 1)
            dilation = _pair(cp.dilation, 0, 0, 1)
            if w[0].shape[2:] != kernel:
                raise ValueError(f"{layer.name}: weights {w[0].shape} do not match kernel {kernel}")
            y = convolution(x, w[0], w[1] if cp.bias_term else None, pad, stride, dilation, max(cp.group, 1))
        elif t == "BatchNorm":
            bp = layer.batch_norm_param
            factor = 0.0 if w[2].ravel()[0] == 0 else 1.0 / w[2].ravel()[0]
            mean, var = w[0] * factor, w[1] * factor
            eps = bp.eps if bn_eps is None else bn_eps
            shape = (1, -1) + (1,) * (x.ndim - 2)
            y = (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps)
        elif t == "Scale":
            sp = layer.scale_param
            if len(bottoms) != 1 or sp.axis != 1 or sp.num_axes != 1:
                raise UnsupportedLayer(f"{layer.name}: Scale with a second bottom or axis/num_axes other than 1")
            shape = (1, -1) + (1,) * (x.ndim - 2)
            y = x * w[0].reshape(shape)
            if sp.bias_term:
                y = y + w[1].reshape(shape)
        elif t == "ReLU":
            slope = layer.relu_param.negative_slope
            y = np.where(x > 0, x, slope * x)
        elif t == "Eltwise":
            ep = layer.eltwise_param
            if ep.operation == P.EltwiseParameter.SUM:
                coeffs = list(ep.coeff) or [1.0] * len(bottoms)
                y = sum(c * b for c, b in zip(coeffs, bottoms))
            elif ep.operation == P.EltwiseParameter.PROD:
                y = np.prod(np.stack(bottoms), axis=0)
            else:
                y = np.max(np.stack(bottoms), axis=0)
        elif t == "Pooling":
            pp = layer.pooling_param
            if pp.global_pooling:
                kernel, pad, stride = x.shape[2:], (0, 0), (1, 1)
            else:
                kernel = _pair([pp.kernel_size] if pp.HasField("kernel_size") else [], pp.kernel_h, pp.kernel_w, 1)
                pad = _pair([pp.pad] if pp.HasField("pad") else [], pp.pad_h, pp.pad_w, 0)
                stride = _pair([pp.stride] if pp.HasField("stride") else [], pp.stride_h, pp.stride_w, 1)
            method = {P.PoolingParameter.MAX: "MAX", P.PoolingParameter.AVE: "AVE"}.get(pp.pool)
            if method is None:
                raise UnsupportedLayer(f"{layer.name}: pooling method {pp.pool}")
            y = pooling(x, method, kernel, pad, stride)
        elif t == "InnerProduct":
            ip = layer.inner_product_param
            if ip.axis != 1:
                raise UnsupportedLayer(f"{layer.name}: InnerProduct axis {ip.axis}")
            flat = x.reshape(x.shape[0], -1)
            y = flat @ (w[0] if ip.transpose else w[0].T)
            if ip.bias_term:
                y = y + w[1].ravel()
        elif t == "Softmax":
            if layer.softmax_param.axis != 1:
                raise UnsupportedLayer(f"{layer.name}: Softmax axis {layer.softmax_param.axis}")
            e = np.exp(x - x.max(axis=1, keepdims=True))
            y = e / e.sum(axis=1, keepdims=True)
        else:
            raise UnsupportedLayer(f"{layer.name}: layer type {t} has no numpy reference")
        blobs[layer.top[0]] = y
    return blobs
