"""One Caffe measurement in its own process (bench/run.py starts it, interleaved).

    python bench/caffe_worker.py TASK [options]     -> last stdout line: a JSON object

Tasks:
  info     the engine and the BLAS it loaded (library, version, kernels, threads)
  gemm     float32 GEMM rate of that BLAS (cblas_sgemm through ctypes: the same
           library instance Caffe calls)
  train    training step of a pair model (solver.step: forward, backward, SGD update)
           and forward+backward alone, on random inputs
  infer    deploy net forward (images/s)
  layers   per-layer forward/backward times, and a GEMM model of each layer: the
           time of exactly the cblas_sgemm calls this engine makes for it (Caffe 1.0's
           per-image convolution, or patch 0004's per-chunk one), timed alone

The process imports whichever pycaffe is first on PYTHONPATH (run.py points it at
one engine).
"""
import argparse
import ctypes
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np  # noqa: E402

import common  # noqa: E402
import hardware  # noqa: E402

os.environ.setdefault("GLOG_minloglevel", "2")
import caffe  # noqa: E402

caffe.set_mode_cpu()

NO_TRANS, TRANS = 111, 112
ROW_MAJOR = 101


# ---- the BLAS Caffe loaded ----

class _DlInfo(ctypes.Structure):
    _fields_ = [("dli_fname", ctypes.c_char_p), ("dli_fbase", ctypes.c_void_p),
                ("dli_sname", ctypes.c_char_p), ("dli_saddr", ctypes.c_void_p)]


#: The names libcaffe may import cblas_sgemm by: a prefixed BLAS (engine patch 0006, the
#: scipy-openblas32 wheel: scipy_cblas_sgemm), 64-bit-integer builds, or the plain name.
SGEMM_NAMES = ("scipy_cblas_sgemm", "scipy_cblas_sgemm64_", "cblas_sgemm64_", "cblas_sgemm")


def sgemm_name(libcaffe):
    """The cblas_sgemm symbol libcaffe imports: the one named in its dynamic string table.

    (Asking for plain cblas_sgemm would find Debian's OpenBLAS, which OpenCV pulls into
    every Caffe process, even when libcaffe calls a prefixed one.)"""
    data = Path(libcaffe).read_bytes()
    for name in SGEMM_NAMES:
        if b"\0" + name.encode() + b"\0" in data:
            return name
    raise RuntimeError(f"{libcaffe}: imports none of {', '.join(SGEMM_NAMES)}")


def blas_sgemm():
    """(library path, symbol name) of the cblas_sgemm libcaffe calls in this process.

    dlsym on libcaffe's handle resolves the symbol the way libcaffe's own calls bind
    (libcaffe, then its dependencies in load order); dladdr names the file. On Debian
    OpenCV also pulls in libblas.so.3, so "whichever BLAS is mapped" is not enough.
    """
    libcaffe = next(iter(hardware.mapped_libraries(r"^libcaffe\.so")), None)
    if not libcaffe:
        return None, None
    name = sgemm_name(libcaffe)
    fn = getattr(ctypes.CDLL(libcaffe), name)
    info = _DlInfo()
    libdl = ctypes.CDLL(None)
    libdl.dladdr.argtypes = [ctypes.c_void_p, ctypes.POINTER(_DlInfo)]
    if not libdl.dladdr(ctypes.cast(fn, ctypes.c_void_p), ctypes.byref(info)):
        return None, None
    return info.dli_fname.decode(), name


def blas_library():
    """Path of the library that provides libcaffe's cblas_sgemm in this process."""
    return blas_sgemm()[0]


def blas_info():
    """The BLAS libcaffe calls: library, configuration, the kernel family it runs (OpenBLAS:
    openblas_get_corename of that very library; MKL: its dispatch branch), threads."""
    path = blas_library()
    if not path:
        return {"library": None, "real_path": None}
    info = hardware.describe(path)
    info["real_path"] = os.path.realpath(path)
    info["sgemm_symbol"] = blas_sgemm()[1]
    if info.get("kind") == "MKL":
        info["kernels"] = mkl_code_path(ctypes.CDLL(path))
    return info


def mkl_code_path(lib):
    """MKL's instruction-set branch, read from MKL_VERBOSE output of one call (best effort)."""
    try:
        r, w = os.pipe()
        saved = os.dup(1)
        sys.stdout.flush()
        os.dup2(w, 1)
        lib.MKL_Verbose(1)
        a = np.ones((8, 8), np.float32)
        c = np.zeros((8, 8), np.float32)
        _sgemm_call(getattr(lib, blas_sgemm()[1]), NO_TRANS, NO_TRANS, 8, 8, 8, a, a, c)
        lib.MKL_Verbose(0)
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(w)
        text = os.read(r, 65536).decode(errors="replace")
        os.close(r)
        line = next((l for l in text.splitlines() if "MKL_VERBOSE" in l and "SGEMM" not in l), "")
        # e.g. "... for Intel(R) 64 architecture Intel(R) AVX-512 ... enabled processors, Lnx 2.60GHz lp64 intel_thread"
        line = line.split(" architecture ", 1)[-1].strip()
        return line[:160] or "unknown"
    except Exception as err:  # pragma: no cover - diagnostics only
        return f"unknown ({err})"


def _sgemm_call(sgemm, ta, tb, m, n, k, a, b, c):
    lda = a.shape[1]
    ldb = b.shape[1]
    sgemm(ROW_MAJOR, ta, tb, m, n, k, ctypes.c_float(1.0),
                    a.ctypes.data_as(ctypes.c_void_p), lda, b.ctypes.data_as(ctypes.c_void_p), ldb,
                    ctypes.c_float(0.0), c.ctypes.data_as(ctypes.c_void_p), n)


def numpy_gemm_gflops(size=2048, min_time=0.3, repeats=2):
    """float32 GEMM rate of numpy's own BLAS (np.matmul), in this process."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    c = np.empty((size, size), np.float32)
    s = common.time_call(lambda: np.matmul(a, b, out=c), min_time, repeats)
    return 2.0 * size ** 3 / s / 1e9


class Gemm:
    """Times cblas_sgemm calls of given shapes on the loaded BLAS."""

    def __init__(self):
        path, name = blas_sgemm()
        if not path:
            raise RuntimeError("no BLAS library found in this process")
        self.sgemm = getattr(ctypes.CDLL(path), name)
        self.sgemm.restype = None
        self.cache = {}

    def seconds(self, ta, tb, m, n, k, min_time=0.05, repeats=3):
        key = (ta, tb, m, n, k)
        if key in self.cache:
            return self.cache[key]
        rng = np.random.default_rng(0)
        a = rng.standard_normal((k, m) if ta == TRANS else (m, k), dtype=np.float32)
        b = rng.standard_normal((n, k) if tb == TRANS else (k, n), dtype=np.float32)
        c = np.zeros((m, n), np.float32)
        self.cache[key] = common.time_call(lambda: _sgemm_call(self.sgemm, ta, tb, m, n, k, a, b, c), min_time, repeats)
        return self.cache[key]


# ---- tasks ----

def random_inputs(net, seed=0):
    rng = np.random.default_rng(seed)
    for name in net.inputs:
        blob = net.blobs[name]
        if name.startswith("label"):
            blob.data[...] = rng.choice([-1.0, 1.0], size=blob.data.shape)
        else:
            blob.data[...] = rng.normal(0.0, 50.0, size=blob.data.shape)


def task_info(args):
    return {"caffe": caffe.__file__, "blas": blas_info(), "numpy_blas": hardware.numpy_blas(),
            "cpu": hardware.cpu()}


def task_gemm(args):
    g = Gemm()
    out = {}
    for size in args.sizes:
        rates = []
        for _ in range(args.repeats):
            g.cache.clear()
            s = g.seconds(NO_TRANS, NO_TRANS, size, size, size, min_time=0.3, repeats=1)
            rates.append(2.0 * size ** 3 / s / 1e9)
        out[str(size)] = rates
    return {"gflops": out, "blas": blas_info()}


def _timing_net(args, tmp):
    net_param = common.timing_train_net(args.model, args.pairs)
    path = common.write_text(Path(tmp) / "train.prototxt", net_param)
    return path


def task_train(args):
    with tempfile.TemporaryDirectory() as tmp:
        net_path = _timing_net(args, tmp)
        solver_path = common.solver_for(args.model, net_path, Path(tmp) / "solver.prototxt")
        solver = caffe.SGDSolver(str(solver_path))
        net = solver.net
        random_inputs(net)
        solver.step(args.warmup)
        flops = flop_count(net, net_param_of(net_path))
        steps, fwdbwd, update = [], [], []
        for _ in range(args.iters):
            if "step" in args.what:
                t0 = time.perf_counter()
                solver.step(1)
                steps.append(time.perf_counter() - t0)
            if "fwdbwd" in args.what:
                t0 = time.perf_counter()
                net.forward()
                net.backward()
                fwdbwd.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                solver.apply_update()          # the SGD update alone (what step adds)
                update.append(time.perf_counter() - t0)
        loss = float(net.blobs["loss"].data)
    # The GEMM rate in this process, right after: the ceiling under the same conditions.
    # numpy's own BLAS right after it: a candidate for the honest ceiling (bench/report.py).
    gemm, numpy_gemm = [], []
    if args.gemm:
        g = Gemm()
        s = g.seconds(NO_TRANS, NO_TRANS, 2048, 2048, 2048, min_time=0.3, repeats=2)
        gemm.append(2.0 * 2048 ** 3 / s / 1e9)
        numpy_gemm.append(numpy_gemm_gflops())
    # A step is iter_size forward+backward passes (gradient accumulation, e.g. VGG-19's solver).
    iter_size = max(1, solver_iter_size(args.model))
    return {"model": args.model, "pairs": args.pairs, "iter_size": iter_size,
            "pairs_per_step": args.pairs * iter_size, "step_s": steps, "fwdbwd_s": fwdbwd,
            "update_s": update, "gemm_gflops": gemm, "numpy_gemm_gflops": numpy_gemm, "loss": loss, "flops": flops,
            "blas": blas_info(), "numpy_blas": hardware.numpy_blas(), "loadavg": os.getloadavg()}


def solver_iter_size(model):
    from google.protobuf import text_format
    from caffe.proto import caffe_pb2
    sp = caffe_pb2.SolverParameter()
    text_format.Merge((common.ROOT / "solvers" / f"{model}.prototxt").read_text(), sp)
    return sp.iter_size


def net_param_of(path):
    return common.load_net_param(path)


def task_infer(args):
    net = caffe.Net(str(common.deploy_net_path(args.model)), caffe.TEST)
    crop = common.CROP[common.arch_of(args.model)]
    net.blobs["data"].reshape(args.batch, 3, crop, crop)
    net.reshape()
    random_inputs(net)
    for _ in range(args.warmup):
        net.forward()
    times = []
    for _ in range(args.iters):
        t0 = time.perf_counter()
        net.forward()
        times.append(time.perf_counter() - t0)
    return {"model": args.model, "batch": args.batch, "forward_s": times}


def _weight_layers(net, net_param):
    """(name, type, LayerParameter, bottom shape, top shape, bottom is a net input) of every
    Convolution and InnerProduct layer, in net order."""
    params = {l.name: l for l in net_param.layer}
    inputs = set(net.inputs)
    for name, layer in zip(net._layer_names, net.layers):
        if layer.type not in ("Convolution", "InnerProduct"):
            continue
        bottom = net.bottom_names[name][0]
        top = net.top_names[name][0]
        yield (name, layer.type, params[name], net.blobs[bottom].data.shape, net.blobs[top].data.shape,
               bottom in inputs)


def flop_count(net, net_param):
    """GEMM FLOPs of one forward and one training pass (forward + backward) of ``net``.

    Convolution and InnerProduct only (everything else is a rounding error in FLOPs).
    Backward costs twice the forward (weight and data gradients), except that no data
    gradient is computed for a layer whose bottom is a net input.
    """
    fwd = train = 0.0
    for name, ltype, lparam, bshape, tshape, from_input in _weight_layers(net, net_param):
        if ltype == "Convolution":
            cp = lparam.convolution_param
            k = list(cp.kernel_size) or [cp.kernel_h, cp.kernel_w]
            kh, kw = (k[0], k[-1])
            macs = np.prod(tshape, dtype=np.float64) * (bshape[1] // max(cp.group, 1)) * kh * kw
        else:
            macs = np.prod(tshape, dtype=np.float64) * (np.prod(bshape[1:], dtype=np.float64))
        f = 2.0 * macs
        fwd += f
        train += f + f + (0.0 if from_input else f)
    return {"forward": fwd, "train": train}


def engine_root():
    """The engine directory whose pycaffe this process imported (<engine>/lib/python3/dist-packages/caffe)."""
    return Path(caffe.__file__).resolve().parents[4]


def conv_chunk(images, rows, out_channels, pixels):
    """Images per chunk in patch 0004's ConvolutionLayer (its images_per_chunk())."""
    megabytes = int(os.environ.get("CAFFE_CONV_WORKSPACE_MB", "256"))
    per_image = (rows + out_channels) * pixels * 4
    return max(1, min(images, (megabytes << 20) // per_image))


def gemm_calls(net, net_param, batched):
    """The cblas_sgemm calls the engine makes per layer: {name: (fwd_calls, bwd_calls)}.

    Each call: (transA, transB, M, N, K, count). Caffe 1.0 (batched=False) loops over
    the images of the batch (base_conv_layer.cpp): per image and group, one GEMM on
    the im2col buffer, plus a rank-1 GEMM for the bias; backward: weight and data
    gradients per image and group (the bias gradient is a GEMV, left out). Patch 0004
    (batched=True): per chunk of images and group, one GEMM with N (or K for the
    weight gradient) = chunk images x output pixels; the bias is added while copying
    out. InnerProduct: one GEMM for the batch (+ bias), backward two.
    """
    out = {}
    for name, ltype, lparam, bshape, tshape, from_input in _weight_layers(net, net_param):
        n = bshape[0]
        prop_down = not from_input
        if ltype == "Convolution":
            cp = lparam.convolution_param
            g = max(cp.group, 1)
            k = list(cp.kernel_size) or [cp.kernel_h, cp.kernel_w]
            kdim = bshape[1] // g * k[0] * k[-1]
            cout, hw = tshape[1], tshape[2] * tshape[3]
            if batched:
                chunk = conv_chunk(n, kdim * g, cout, hw)
                sizes = [chunk] * (n // chunk) + ([n % chunk] if n % chunk else [])
                fwd = [(NO_TRANS, NO_TRANS, cout // g, hw * c, kdim, g) for c in sizes]
                bwd = [(NO_TRANS, TRANS, cout // g, kdim, hw * c, g) for c in sizes]
                if prop_down:
                    bwd += [(TRANS, NO_TRANS, kdim, hw * c, cout // g, g) for c in sizes]
            else:
                fwd = [(NO_TRANS, NO_TRANS, cout // g, hw, kdim, n * g), (NO_TRANS, NO_TRANS, cout, hw, 1, n)]
                bwd = [(NO_TRANS, TRANS, cout // g, kdim, hw, n * g)]
                if prop_down:
                    bwd.append((TRANS, NO_TRANS, kdim, hw, cout // g, n * g))
        else:
            fin = int(np.prod(bshape[1:]))
            fout = tshape[1]
            fwd = [(NO_TRANS, TRANS, n, fout, fin, 1), (NO_TRANS, NO_TRANS, n, fout, 1, 1)]
            bwd = [(TRANS, NO_TRANS, fout, fin, n, 1)]
            if prop_down:
                bwd.append((NO_TRANS, NO_TRANS, n, fin, fout, 1))
        out[name] = (fwd, bwd)
    return out


def task_layers(args):
    """Per-layer times of the training net (forward and backward), or with --deploy-batch N of
    the deploy net at batch N (forward only: inference)."""
    deploy = args.deploy_batch > 0
    if deploy:
        net_path = common.deploy_net_path(args.model)
        net = caffe.Net(str(net_path), caffe.TEST)
        crop = common.CROP[common.arch_of(args.model)]
        net.blobs["data"].reshape(args.deploy_batch, 3, crop, crop)
        net.reshape()
        net_param = net_param_of(net_path)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            net_path = _timing_net(args, tmp)
            net = caffe.Net(str(net_path), caffe.TRAIN)
            net_param = net_param_of(net_path)
    random_inputs(net)
    names = list(net._layer_names)
    types = [l.type for l in net.layers]
    nl = len(names)
    for _ in range(args.warmup):
        net.forward()
        if not deploy:
            net.backward()
    fwd = {n: [] for n in names}
    bwd = {n: [] for n in names}
    total = []
    for _ in range(args.iters):
        t_all = time.perf_counter()
        for i in range(nl):
            t0 = time.perf_counter()
            net._forward(i, i)
            fwd[names[i]].append(time.perf_counter() - t0)
        for i in reversed(range(nl) if not deploy else []):
            t0 = time.perf_counter()
            net._backward(i, i)
            bwd[names[i]].append(time.perf_counter() - t0)
        total.append(time.perf_counter() - t_all)
    # GEMM model: the calls this engine makes, timed alone on the same BLAS.
    g = Gemm()
    batched = common.has_cpu_patches(engine_root())   # one GEMM per group for a chunk of images
    model = {}
    for name, (fc, bc) in gemm_calls(net, net_param, batched).items():
        f = sum(g.seconds(ta, tb, m, n, k) * cnt for ta, tb, m, n, k, cnt in fc)
        b = 0.0 if deploy else sum(g.seconds(ta, tb, m, n, k) * cnt for ta, tb, m, n, k, cnt in bc)
        model[name] = (f, b)
    layers = [{"name": n, "type": t,
               "forward_s": common.median(fwd[n]), "backward_s": common.median(bwd[n]) if bwd[n] else 0.0,
               "gemm_forward_s": model.get(n, (0.0, 0.0))[0], "gemm_backward_s": model.get(n, (0.0, 0.0))[1]}
              for n, t in zip(names, types)]
    return {"model": args.model, "pairs": args.pairs, "deploy_batch": args.deploy_batch, "total_s": total,
            "layers": layers,
            "batched_convolution": batched, "flops": flop_count(net, net_param), "blas": blas_info()}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("task", choices=["info", "gemm", "train", "infer", "layers"])
    ap.add_argument("--model", default="alexnet_pvcnn")
    ap.add_argument("--pairs", type=int, default=16)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--what", default="step,fwdbwd")
    ap.add_argument("--sizes", type=int, nargs="*", default=[2048])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--deploy-batch", type=int, default=0,
                    help="layers: time the deploy net's forward at this batch instead of the training net")
    ap.add_argument("--gemm", type=int, default=1, help="train: also time a 2048^3 GEMM (1) or not (0)")
    ap.add_argument("--gpu", type=int, help="run on this GPU (bench/gpu.sh); default CPU")
    args = ap.parse_args()
    if args.gpu is not None:
        caffe.set_device(args.gpu)
        caffe.set_mode_gpu()
    result = globals()[f"task_{args.task}"](args)
    result["task"] = args.task
    result["env"] = hardware.blas_environment()
    sys.stdout.flush()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
