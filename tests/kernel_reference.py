"""Numpy references for the Caffe CPU kernels the engine patch 0004 rewrites, and a checker.

Patch 0004 (engine/patches) runs convolution as one GEMM per group over a chunk of images,
and im2col/col2im, LRN, pooling and ReLU on Caffe's own CPU threads. Each function here
computes the same layer from its definition, in float64, with no code shared with Caffe;
`check_all()` builds small Caffe nets for many shapes and compares forward and backward.

Run as a script (tests/test_engine_kernels.py does, once per thread/workspace setting,
because the engine reads CAFFE_CPU_THREADS and CAFFE_CONV_WORKSPACE_MB once per process):
    python tests/kernel_reference.py   -> prints "checked N cases", exit status 1 on a mismatch
"""
import math
import os
import sys
import tempfile

import numpy as np

RTOL = 2e-4
ATOL = 2e-4


# ---- references -----------------------------------------------------------------------

def conv_out_size(size, kernel, pad, stride, dilation):
    return (size + 2 * pad - (dilation * (kernel - 1) + 1)) // stride + 1


def _tap(x_padded, i, j, out_h, out_w, stride, dilation):
    """x_padded's inputs under kernel tap (i, j) for every output pixel: (N, C, out_h, out_w)."""
    (sh, sw), (dh, dw) = stride, dilation
    return x_padded[:, :, i * dh: i * dh + sh * (out_h - 1) + 1: sh,
                    j * dw: j * dw + sw * (out_w - 1) + 1: sw]


def conv_forward(x, w, b, pad, stride, dilation, group):
    n, c, h, wid = x.shape
    out_c, c_group, kh, kw = w.shape
    out_h = conv_out_size(h, kh, pad[0], stride[0], dilation[0])
    out_w = conv_out_size(wid, kw, pad[1], stride[1], dilation[1])
    xp = np.pad(x, ((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])))
    y = np.zeros((n, out_c, out_h, out_w))
    o_group = out_c // group
    for g in range(group):
        xs = xp[:, g * c_group:(g + 1) * c_group]
        ws = w[g * o_group:(g + 1) * o_group]
        for i in range(kh):
            for j in range(kw):
                tap = _tap(xs, i, j, out_h, out_w, stride, dilation)
                y[:, g * o_group:(g + 1) * o_group] += np.einsum("nchw,oc->nohw", tap, ws[:, :, i, j])
    if b is not None:
        y += b[None, :, None, None]
    return y


def conv_backward(x, w, dy, pad, stride, dilation, group):
    """(dx, dw, db) of conv_forward for the top gradient dy."""
    n, c, h, wid = x.shape
    out_c, c_group, kh, kw = w.shape
    out_h, out_w = dy.shape[2:]
    xp = np.pad(x, ((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])))
    dxp = np.zeros_like(xp)
    dw = np.zeros_like(w)
    o_group = out_c // group
    (sh, sw), (dh, dwl) = stride, dilation
    for g in range(group):
        cs = slice(g * c_group, (g + 1) * c_group)
        os_ = slice(g * o_group, (g + 1) * o_group)
        for i in range(kh):
            for j in range(kw):
                tap = _tap(xp[:, cs], i, j, out_h, out_w, stride, dilation)
                dw[os_, :, i, j] = np.einsum("nohw,nchw->oc", dy[:, os_], tap)
                rows = slice(i * dh, i * dh + sh * (out_h - 1) + 1, sh)
                cols = slice(j * dwl, j * dwl + sw * (out_w - 1) + 1, sw)
                dxp[:, cs, rows, cols] += np.einsum("nohw,oc->nchw", dy[:, os_], w[os_, :, i, j])
    dx = dxp[:, :, pad[0]:pad[0] + h, pad[1]:pad[1] + wid]
    return dx, dw, dy.sum(axis=(0, 2, 3))


def lrn_forward(x, size, alpha, beta, k):
    """Caffe's ACROSS_CHANNELS LRN: y = x * (k + alpha/size * sum of x^2 over the window)^-beta."""
    scale = _lrn_scale(x, size, alpha, k)
    return x * scale ** -beta


def _lrn_scale(x, size, alpha, k):
    channels = x.shape[1]
    pre = (size - 1) // 2
    sq = x ** 2
    scale = np.full_like(x, k)
    for c in range(channels):
        lo, hi = max(0, c - pre), min(channels, c - pre + size)
        scale[:, c] += alpha / size * sq[:, lo:hi].sum(axis=1)
    return scale


def lrn_backward(x, dy, size, alpha, beta, k):
    channels = x.shape[1]
    pre = (size - 1) // 2
    scale = _lrn_scale(x, size, alpha, k)
    y = x * scale ** -beta
    ratio = dy * y / scale
    dx = dy * scale ** -beta
    for c in range(channels):
        # channel c feeds the scales of channels j whose window covers c
        lo, hi = max(0, c - (size - 1 - pre)), min(channels, c + pre + 1)
        dx[:, c] -= 2 * alpha * beta / size * x[:, c] * ratio[:, lo:hi].sum(axis=1)
    return dx


def pool_out_size(size, kernel, pad, stride):
    out = int(math.ceil((size + 2 * pad - kernel) / stride)) + 1
    if pad and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def pool_forward_backward(x, dy_fn, method, kernel, pad, stride):
    """(y, dx) of Caffe's MAX or AVE pooling; dy_fn(shape) gives the top gradient."""
    n, c, h, w = x.shape
    out_h = pool_out_size(h, kernel[0], pad[0], stride[0])
    out_w = pool_out_size(w, kernel[1], pad[1], stride[1])
    y = np.zeros((n, c, out_h, out_w))
    dy = dy_fn(y.shape)
    dx = np.zeros_like(x)
    for ph in range(out_h):
        for pw in range(out_w):
            h0, w0 = ph * stride[0] - pad[0], pw * stride[1] - pad[1]
            h1, w1 = min(h0 + kernel[0], h + pad[0]), min(w0 + kernel[1], w + pad[1])
            area = (h1 - h0) * (w1 - w0)
            hs, ws = slice(max(h0, 0), min(h1, h)), slice(max(w0, 0), min(w1, w))
            window = x[:, :, hs, ws]
            if method == "MAX":
                flat = window.reshape(n, c, -1)
                y[:, :, ph, pw] = flat.max(axis=2)
                arg = flat.argmax(axis=2)
                rows, cols = np.unravel_index(arg, window.shape[2:])
                nn, cc = np.meshgrid(np.arange(n), np.arange(c), indexing="ij")
                np.add.at(dx, (nn, cc, rows + hs.start, cols + ws.start), dy[:, :, ph, pw])
            else:
                y[:, :, ph, pw] = window.sum(axis=(2, 3)) / area
                dx[:, :, hs, ws] += dy[:, :, ph, pw][:, :, None, None] / area
    return y, dy, dx


def relu(x, dy, slope):
    return np.where(x > 0, x, slope * x), np.where(x > 0, dy, slope * dy)


# ---- Caffe side -------------------------------------------------------------------------

def _net(tmpdir, name, shape, layer):
    dims = " ".join(f"dim: {d}" for d in shape)
    text = (f'name: "{name}" force_backward: true\n'
            f'layer {{ name: "x" type: "Input" top: "x" input_param {{ shape {{ {dims} }} }} }}\n'
            f'{layer}\n')
    path = os.path.join(tmpdir, f"{name}.prototxt")
    with open(path, "w") as f:
        f.write(text)
    import caffe
    return caffe.Net(path, caffe.TRAIN)


def _run(net, x, top="y", dy=None):
    net.blobs["x"].data[...] = x
    net.forward()
    y = net.blobs[top].data.astype(np.float64)
    if dy is None:
        dy = np.random.default_rng(1).standard_normal(y.shape)
    net.blobs["x"].diff[...] = 0
    for param in net.params.values():
        for blob in param:
            blob.diff[...] = 0
    net.blobs[top].diff[...] = dy
    net.backward(start=list(net._layer_names)[-1])
    return y, dy, net.blobs["x"].diff.astype(np.float64)


def _close(name, got, want, failures, rtol=RTOL, atol=ATOL):
    scale = max(1.0, float(np.max(np.abs(want)))) if want.size else 1.0
    if got.shape != want.shape or not np.allclose(got, want, rtol=rtol, atol=atol * scale):
        err = float(np.max(np.abs(got - want))) if got.shape == want.shape else float("nan")
        failures.append(f"{name}: shapes {got.shape} vs {want.shape}, max abs error {err:.3g}")


CONV_CASES = [
    # name, (n, c, h, w), out, kernel, pad, stride, dilation, group, bias
    ("alexnet_conv1_like", (3, 3, 35, 35), 8, (11, 11), (0, 0), (4, 4), (1, 1), 1, True),
    ("grouped_pad2", (4, 6, 13, 13), 8, (5, 5), (2, 2), (1, 1), (1, 1), 2, True),
    ("3x3_pad1_no_bias", (5, 4, 9, 9), 6, (3, 3), (1, 1), (1, 1), (1, 1), 1, False),
    ("1x1", (3, 5, 7, 6), 4, (1, 1), (0, 0), (1, 1), (1, 1), 1, True),
    ("rect_kernel_strides", (2, 3, 11, 14), 5, (3, 5), (1, 2), (2, 3), (1, 1), 1, True),
    ("dilation2_group3", (3, 6, 12, 12), 6, (3, 3), (2, 2), (1, 1), (2, 2), 3, True),
    ("pad_bigger_than_reach", (2, 2, 4, 4), 3, (3, 3), (3, 3), (2, 2), (1, 1), 1, True),
    ("one_image", (1, 3, 10, 10), 4, (3, 3), (1, 1), (1, 1), (1, 1), 1, True),
    # about 2.6 MB of columns per image: CAFFE_CONV_WORKSPACE_MB=5 makes chunks of 2, 2 and 1
    ("chunked", (5, 16, 64, 64), 8, (3, 3), (1, 1), (1, 1), (1, 1), 1, True),
]


def check_convolution(tmpdir, failures):
    rng = np.random.default_rng(0)
    for name, shape, out, kernel, pad, stride, dil, group, bias in CONV_CASES:
        layer = (f'layer {{ name: "conv" type: "Convolution" bottom: "x" top: "y" convolution_param {{ '
                 f'num_output: {out} kernel_h: {kernel[0]} kernel_w: {kernel[1]} pad_h: {pad[0]} '
                 f'pad_w: {pad[1]} stride_h: {stride[0]} stride_w: {stride[1]} dilation: {dil[0]} '
                 f'group: {group} bias_term: {"true" if bias else "false"} }} }}')
        net = _net(tmpdir, f"conv_{name}", shape, layer)
        x = rng.standard_normal(shape).astype(np.float32)
        w = rng.standard_normal(net.params["conv"][0].data.shape).astype(np.float32)
        net.params["conv"][0].data[...] = w
        b = None
        if bias:
            b = rng.standard_normal(out).astype(np.float32)
            net.params["conv"][1].data[...] = b
        y, dy, dx = _run(net, x)
        x64, w64 = x.astype(np.float64), w.astype(np.float64)
        _close(f"conv {name} forward", y,
               conv_forward(x64, w64, None if b is None else b.astype(np.float64), pad, stride, dil, group),
               failures)
        want_dx, want_dw, want_db = conv_backward(x64, w64, dy, pad, stride, dil, group)
        _close(f"conv {name} bottom diff", dx, want_dx, failures)
        _close(f"conv {name} weight diff", net.params["conv"][0].diff.astype(np.float64), want_dw, failures)
        if bias:
            _close(f"conv {name} bias diff", net.params["conv"][1].diff.astype(np.float64), want_db, failures)


LRN_CASES = [("alexnet_norm", (3, 16, 9, 9), 5, 1e-4 * 50, 0.75, 1.0),
             ("size3_k2", (2, 7, 5, 6), 3, 0.3, 0.6, 2.0),
             ("one_image", (1, 4, 3, 3), 5, 0.5, 0.75, 1.0)]


def check_lrn(tmpdir, failures):
    rng = np.random.default_rng(1)
    for name, shape, size, alpha, beta, k in LRN_CASES:
        layer = (f'layer {{ name: "norm" type: "LRN" bottom: "x" top: "y" lrn_param {{ local_size: {size} '
                 f'alpha: {alpha} beta: {beta} k: {k} }} }}')
        net = _net(tmpdir, f"lrn_{name}", shape, layer)
        x = (3 * rng.standard_normal(shape)).astype(np.float32)
        y, dy, dx = _run(net, x)
        x64 = x.astype(np.float64)
        _close(f"lrn {name} forward", y, lrn_forward(x64, size, alpha, beta, k), failures)
        _close(f"lrn {name} bottom diff", dx, lrn_backward(x64, dy, size, alpha, beta, k), failures)


POOL_CASES = [("alexnet_pool", "MAX", (3, 4, 13, 13), (3, 3), (0, 0), (2, 2)),
              ("max_pad_ceil", "MAX", (2, 3, 10, 9), (3, 2), (1, 1), (2, 2)),
              ("max_2x2", "MAX", (2, 2, 8, 8), (2, 2), (0, 0), (2, 2)),
              ("ave_pad", "AVE", (2, 3, 9, 10), (3, 3), (1, 1), (2, 2)),
              ("ave_global_like", "AVE", (3, 2, 6, 6), (6, 6), (0, 0), (1, 1))]


def check_pooling(tmpdir, failures):
    rng = np.random.default_rng(2)
    for name, method, shape, kernel, pad, stride in POOL_CASES:
        layer = (f'layer {{ name: "pool" type: "Pooling" bottom: "x" top: "y" pooling_param {{ pool: {method} '
                 f'kernel_h: {kernel[0]} kernel_w: {kernel[1]} pad_h: {pad[0]} pad_w: {pad[1]} '
                 f'stride_h: {stride[0]} stride_w: {stride[1]} }} }}')
        net = _net(tmpdir, f"pool_{name}", shape, layer)
        x = rng.standard_normal(shape).astype(np.float32)
        dy_rng = np.random.default_rng(3)
        want_y, dy, want_dx = pool_forward_backward(x.astype(np.float64), dy_rng.standard_normal,
                                                    method, kernel, pad, stride)
        y, _, dx = _run(net, x, dy=dy)
        _close(f"pool {name} forward", y, want_y, failures)
        _close(f"pool {name} bottom diff", dx, want_dx, failures)


def check_relu(tmpdir, failures):
    rng = np.random.default_rng(4)
    # 300,000 values: large enough to be split across threads
    for name, shape, slope in [("plain", (3, 10, 100, 100), 0.0), ("leaky", (2, 3, 7, 5), 0.1)]:
        layer = (f'layer {{ name: "relu" type: "ReLU" bottom: "x" top: "y" '
                 f'relu_param {{ negative_slope: {slope} }} }}')
        net = _net(tmpdir, f"relu_{name}", shape, layer)
        x = rng.standard_normal(shape).astype(np.float32)
        y, dy, dx = _run(net, x)
        want_y, want_dx = relu(x.astype(np.float64), dy, slope)
        _close(f"relu {name} forward", y, want_y, failures, rtol=1e-6, atol=1e-6)
        _close(f"relu {name} bottom diff", dx, want_dx, failures, rtol=1e-6, atol=1e-6)


def check_all():
    failures = []
    with tempfile.TemporaryDirectory() as tmpdir:
        for check in (check_convolution, check_lrn, check_pooling, check_relu):
            check(tmpdir, failures)
    cases = len(CONV_CASES) + len(LRN_CASES) + len(POOL_CASES) + 2
    return cases, failures


if __name__ == "__main__":
    os.environ.setdefault("GLOG_minloglevel", "2")
    n_cases, problems = check_all()
    for problem in problems:
        print("MISMATCH", problem)
    print(f"checked {n_cases} cases, {len(problems)} mismatches")
    sys.exit(1 if problems else 0)
