"""The AlexNet-PVCNN training step in PyTorch, for comparison with Caffe (bench/run.py).

Runs with the bench-only PyTorch environment (bench/README.md), not the project's
.venv. Same computation as prototxt/alexnet_pvcnn/train_val.prototxt:

- one AlexNet tower (bvlc_alexnet without fc8: grouped conv2/conv4/conv5, LRN after
  relu1 and relu2 with Caffe's parameters, max pooling 3/2, dropout 0.5 after fc6 and
  fc7) applied to I1 and to I2 (shared weights: the same module, called once per
  image batch, as Caffe runs its two towers), and one shared score layer 4096 -> 1;
- the ranking loss of virality/model/ranking.py with its defaults (lambda 0.001, epsilon 0.1), summed
  over the batch (Eq. 1);
- SGD with the solver's settings: lr 0.001 (biases x2), momentum 0.9, L2 weight decay
  0.05 on weights (biases not decayed).

    python bench/torch_worker.py [--pairs 16] [--iters 3] [--warmup 1] [--infer-batch 32] [--infer-only]
                                 [--gemm 1]

The last stdout line is a JSON object with step, forward+backward and inference times, the
float32 GEMM rate of torch.mm (2048^3, right after the steps: a candidate for the honest
ceiling) and what torch runs its GEMMs with (BLAS_INFO, MKL version, CPU capability).
"""
import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (standard library only, like hardware)
import hardware  # noqa: E402  (standard library only)

LAMBDA = 0.001
EPSILON = 0.1


class AlexNetTower(nn.Module):
    def __init__(self):
        super().__init__()
        lrn = dict(size=5, alpha=1e-4, beta=0.75, k=1.0)   # Caffe LRN: k=1, alpha divided by size
        self.features = nn.Sequential(
            nn.Conv2d(3, 96, 11, stride=4), nn.ReLU(inplace=True),
            nn.LocalResponseNorm(**lrn), nn.MaxPool2d(3, 2),
            nn.Conv2d(96, 256, 5, padding=2, groups=2), nn.ReLU(inplace=True),
            nn.LocalResponseNorm(**lrn), nn.MaxPool2d(3, 2),
            nn.Conv2d(256, 384, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(384, 384, 3, padding=1, groups=2), nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, 3, padding=1, groups=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2),
        )
        self.fc = nn.Sequential(
            nn.Flatten(),
            nn.Linear(256 * 6 * 6, 4096), nn.ReLU(inplace=True), nn.Dropout(0.5),
            nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Dropout(0.5),
        )
        self.score = nn.Linear(4096, 1)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.normal_(m.weight, std=0.01 if isinstance(m, nn.Conv2d) else 0.005)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.score.weight, std=0.05)

    def forward(self, x):
        return self.score(self.fc(self.features(x))).reshape(-1)


def ranking_loss(f1, f2, y):
    """Eqs. 1-4 as in virality/model/ranking.py (tanh form of g1 - g2, bounded E_r)."""
    d = f1 - f2
    t = torch.tanh(0.5 * d)
    hinge = torch.clamp(-y * t, min=0.0)
    e_c = hinge * hinge
    e_r = 1.0 / (d * d + EPSILON)
    return torch.sum(e_c + LAMBDA * e_r)


def gemm_gflops(size=2048, min_time=0.3, repeats=2):
    a = torch.randn(size, size)
    b = torch.randn(size, size)
    c = torch.empty(size, size)
    return 2.0 * size ** 3 / common.time_call(lambda: torch.mm(a, b, out=c), min_time, repeats) / 1e9


def torch_blas():
    """What torch's GEMMs run on: its build's BLAS_INFO, the MKL line of its config, the
    CPU capability its kernels dispatch to."""
    config = torch.__config__.show()
    blas = next((m.split("=", 1)[1] for m in config.replace(",", " ").split() if m.startswith("BLAS_INFO=")), "?")
    mkl = next((l.strip(" -") for l in config.splitlines() if "Math Kernel Library" in l), None)
    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except AttributeError:
        capability = next((l.split(":", 1)[1].strip() for l in config.splitlines()
                           if "CPU capability usage" in l), "?")
    return {"kind": blas, "config": mkl or blas, "kernels": f"{capability} (torch CPU capability)",
            "threads": torch.get_num_threads()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=16)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--infer-batch", type=int, default=0)
    ap.add_argument("--infer-iters", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--infer-only", action="store_true", help="no training steps, inference only")
    ap.add_argument("--gemm", type=int, default=1, help="also time torch.mm 2048^3 (1) or not (0)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = AlexNetTower()
    weights = [p for n, p in net.named_parameters() if n.endswith("weight")]
    biases = [p for n, p in net.named_parameters() if n.endswith("bias")]
    opt = torch.optim.SGD([dict(params=weights, lr=0.001, weight_decay=0.05),
                           dict(params=biases, lr=0.002, weight_decay=0.0)], momentum=0.9)
    gen = torch.Generator().manual_seed(0)
    x1 = torch.randn(args.pairs, 3, 227, 227, generator=gen) * 50
    x2 = torch.randn(args.pairs, 3, 227, 227, generator=gen) * 50
    y = torch.randint(0, 2, (args.pairs,), generator=gen).float() * 2 - 1

    def fwdbwd():
        opt.zero_grad(set_to_none=True)
        loss = ranking_loss(net(x1), net(x2), y)
        loss.backward()
        return loss

    def step():
        loss = fwdbwd()
        opt.step()
        return loss

    net.train()
    for _ in range(0 if args.infer_only else args.warmup):
        step()
    steps, fb = [], []
    for _ in range(0 if args.infer_only else args.iters):
        t0 = time.perf_counter()
        loss = step()
        steps.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        fwdbwd()
        fb.append(time.perf_counter() - t0)
    infer = []
    if args.infer_batch:
        net.eval()
        xi = torch.randn(args.infer_batch, 3, 227, 227, generator=gen) * 50
        with torch.no_grad():
            net(xi)
            for _ in range(args.infer_iters):
                t0 = time.perf_counter()
                net(xi)
                infer.append(time.perf_counter() - t0)
    gemm = [gemm_gflops()] if args.gemm else []
    print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(),
                      "pairs": args.pairs, "step_s": steps, "fwdbwd_s": fb,
                      "loss": float(loss.detach()) if steps else None,
                      "infer_batch": args.infer_batch, "infer_s": infer, "gemm_gflops": gemm,
                      "blas": torch_blas(), "env": hardware.blas_environment()}))


if __name__ == "__main__":
    main()
