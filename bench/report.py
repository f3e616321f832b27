"""Renders bench/run.py's results (a dict, also saved as bench/out/results.json) as this CPU's
section of BENCHMARKS.md (bench/document.py keeps one section per CPU model).

    .venv/bin/python bench/report.py bench/out/results.json --out BENCHMARKS.md   # re-render a run
"""
import json
import statistics
import sys
from collections import OrderedDict

# Issue 11's targets (benchmarks, never timed tests).
TARGET_VS_TORCH = 1.5          # AlexNet-PVCNN training, Caffe pairs/s over PyTorch's
TARGET_CEILING = 0.6           # ... and over the GEMM ceiling's pairs/s
TARGET_INFER_VS_TORCH = 2.0    # AlexNet deploy forward, batch 32, images/s over PyTorch's
TARGET_PREDICT = 0.8           # tools/predict.py end to end over the deploy forward alone
TARGET_LOSS_SHARE = 0.02


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else float("nan")


def rng(xs, fmt="{:.2f}"):
    xs = [x for x in xs if x is not None]
    if not xs:
        return "-"
    return f"{fmt.format(min(xs))}-{fmt.format(max(xs))}"


def round_medians(results, key):
    return [med(r[key]) for r in results if r.get(key)]


def iters(results, key):
    return [x for r in results for x in r.get(key, [])]


def g_list(xs):
    return [x for x in xs if x == x]


def ok(flag):
    return "**met**" if flag else "**not met**"


def blas_desc(info):
    b = info.get("blas", {})
    if not b:
        return "?"
    kern = b.get("kernels", "")
    return f"{b.get('config', b.get('kind', '?'))}" + (f"; kernels: {kern}" if kern and kern not in b.get("config", "") else "") \
        + f"; {b.get('threads', '?')} threads"


def group_layers(layers):
    """Merge the two towers' layers (conv1 and conv1_p) into one row per role."""
    out = OrderedDict()
    for l in layers:
        key = l["name"][:-2] if l["name"].endswith("_p") else l["name"]
        g = out.setdefault(key, {"name": key, "type": l["type"], "n": 0, "fwd": 0.0, "bwd": 0.0, "gemm": 0.0})
        g["n"] += 1
        g["fwd"] += l["forward_s"]
        g["bwd"] += l["backward_s"]
        g["gemm"] += l["gemm_forward_s"] + l["gemm_backward_s"]
    return list(out.values())


CATEGORIES = ("GEMM (BLAS) in conv + fc", "conv outside GEMM (im2col/col2im, copies, bias)",
              "fc outside GEMM", "LRN", "Pooling", "ReLU", "Dropout", "Python loss", "other")


def categories(layers):
    """Seconds per category of one forward+backward, from the per-layer breakdown."""
    cat = OrderedDict((k, 0.0) for k in CATEGORIES)
    for l in layers:
        t = l["forward_s"] + l["backward_s"]
        g = min(l["gemm_forward_s"] + l["gemm_backward_s"], t)
        if l["type"] == "Convolution":
            cat["GEMM (BLAS) in conv + fc"] += g
            cat["conv outside GEMM (im2col/col2im, copies, bias)"] += t - g
        elif l["type"] == "InnerProduct":
            cat["GEMM (BLAS) in conv + fc"] += g
            cat["fc outside GEMM"] += t - g
        elif l["type"] in ("LRN", "Pooling", "ReLU", "Dropout"):
            cat[l["type"]] += t
        elif l["type"] == "Python":
            cat["Python loss"] += t
        else:
            cat["other"] += t
    return cat


def short_blas(info):
    """'OpenBLAS 0.3.21, Haswell kernels' from a blas dict (bench/hardware.py)."""
    if not info:
        return "?"
    cfg = (info.get("config") or info.get("kind") or "?").split()
    name = " ".join(cfg[:2]) if cfg and cfg[0] == "OpenBLAS" else (info.get("config") or info.get("kind") or "?")
    kern = info.get("kernels")
    return f"{name}, {kern} kernels" if kern else name


def honest_ceiling(res):
    """The GEMM ceiling: per round, the best float32 2048^3 GEMM rate any library reached in that
    round (each variant's engine BLAS and numpy, timed in the Caffe processes right after their
    steps; torch.mm in the PyTorch process right after its steps).

    Returns {"libraries": {label: {"rates": [per round], "kernels": str}}, "rounds": [(rate, label)],
    "median": median of the per-round ceilings, "library": the library that set it most often}."""
    alex = res["alexnet"]
    torch_res = res.get("torch_alexnet") or []
    rounds = len(next(iter(alex.values())))
    libs = OrderedDict()
    for v, results in alex.items():
        lab = f"engine `{v}` (cblas_sgemm): {short_blas(results[0].get('blas'))}"
        libs[lab] = [med(r.get("gemm_gflops") or [float("nan")]) for r in results]
    numpy_rates = [max(g_list([med(alex[v][r].get("numpy_gemm_gflops") or [float("nan")]) for v in alex])
                       or [float("nan")]) for r in range(rounds)]
    if g_list(numpy_rates):
        nb = next(iter(alex.values()))[0].get("numpy_blas") or {}
        libs[f"numpy {nb.get('numpy', '?')} (np.matmul): {short_blas(nb)}"] = numpy_rates
    if torch_res and any(t.get("gemm_gflops") for t in torch_res):
        tb = torch_res[0].get("blas") or {}
        libs[f"PyTorch {res.get('torch')} (torch.mm): {tb.get('kind', '?')}, {tb.get('kernels', '?')}"] = \
            [med(t.get("gemm_gflops") or [float("nan")]) for t in torch_res]
    per_round = []
    for r in range(rounds):
        cands = [(rates[r], lab) for lab, rates in libs.items() if r < len(rates) and rates[r] == rates[r]]
        per_round.append(max(cands) if cands else (float("nan"), "?"))
    winners = [lab for _, lab in per_round]
    # the library that set the ceiling in most rounds; a tie goes to the higher median rate
    library = max(libs, key=lambda lab: (winners.count(lab), med(g_list(libs[lab])))) if libs else "?"
    return {"libraries": libs, "rounds": per_round, "median": med(g_list([g for g, _ in per_round])),
            "library": library}


def gap_text(measured, target, unit_now, unit_need, what):
    """'met' or how far off, in words."""
    if measured >= target:
        return f"met with {measured / target - 1:.0%} to spare"
    return (f"missed by {1 - measured / target:.0%}: {what} must get {target / measured:.2f}x faster "
            f"({unit_now} -> {unit_need})")


def render(res):
    """(cpu key, summary dict, markdown body) of one run: BENCHMARKS.md's section for this CPU."""
    import hardware
    L = []
    w = L.append
    m = res["machine"]
    cpu = m.get("cpu_info") or {"vendor": "?", "model_name": m.get("cpu", "?"), "family": "?", "model": "?",
                                "stepping": "?", "flags": m.get("isa", [])}
    variants = res["variants"]
    base = variants[0]["label"]
    pairs = res["pairs"]
    alex = res["alexnet"]
    torch_res = res.get("torch_alexnet") or []
    torch_infer = res.get("torch_infer") or []
    lay = res["layers"].get("alexnet_pvcnn")
    flops_pair = alex[base][0]["flops"]["train"] / pairs
    ceiling = honest_ceiling(res)
    ceil_rounds = [g for g, _ in ceiling["rounds"]]
    ceil_med = ceiling["median"]
    ceiling_pps = ceil_med * 1e9 / flops_pair
    engine_gemm = med(g_list(ceiling["libraries"][next(iter(ceiling["libraries"]))]))
    summary = {"title": hardware.cpu_title(cpu), "date": res["date"]}

    w(f"## {hardware.cpu_title(cpu)}")
    w("")
    w(f"Written by `make bench` (`bench/run.py`{' --quick' if res['quick'] else ''}) on {res['date']}; "
      f"{res['elapsed_s'] / 60:.1f} minutes. Command: `{res['command']}`.")
    w("")
    w("### Machine and versions")
    w("")
    w("| | |")
    w("| --- | --- |")
    w(f"| CPU | {cpu['vendor']} {cpu['model_name']}, family {cpu['family']} model {cpu['model']} stepping "
      f"{cpu['stepping']}; {m['cores']} cores visible; flags: {', '.join(cpu['flags']) or 'no AVX'} |")
    env = m.get("blas_env", {})
    coretype = env.get("OPENBLAS_CORETYPE")
    w(f"| OPENBLAS_CORETYPE | " + (f"`{coretype}`, set by the environment (OpenBLAS then runs these kernels "
                                   f"whatever the CPU; the bench never sets or changes it)" if coretype
                                   else "not set (each OpenBLAS picks its kernels from the CPU)") +
      (f"; also set: {', '.join(f'{k}={v}' for k, v in env.items() if k != 'OPENBLAS_CORETYPE')}"
       if len(env) > 1 else "") + " |")
    w(f"| memory | {m['memory_gib']} GiB |")
    w(f"| OS | {m['os']}, kernel {m['kernel']}; {m['gcc']}; Python {m['python']} |")
    for name, info in res["engines"].items():
        b = info.get("build", {})
        w(f"| engine `{name}` | `{info['path']}` (BLAS={b.get('blas', '?')}, Caffe {b.get('caffe_version', '?')}, "
          f"built {b.get('built', '?')}) |")
        w(f"| BLAS of `{name}` | {blas_desc(info)}; `{info['blas'].get('real_path')}` |")
    nb = alex[base][0].get("numpy_blas")
    if nb:
        w(f"| numpy's BLAS | numpy {nb.get('numpy')}: {nb.get('config', nb.get('kind'))}; kernels: "
          f"{nb.get('kernels', '?')}; {nb.get('threads', '?')} threads; `{nb.get('library')}` |")
    tb = (torch_res[0] if torch_res else (torch_infer[0] if torch_infer else {})).get("blas")
    w(f"| PyTorch | {res['torch'] or 'not measured: ' + (res.get('torch_note') or '')}"
      + (f"; BLAS {tb.get('kind')}: {tb.get('config')}; kernels: {tb.get('kernels')}; {tb.get('threads')} threads"
         if tb else "") + " |")
    w(f"| load average (1, 5, 15 min) | start {m['loadavg_start'].rsplit(' ', 2)[0]}; "
      f"end {m.get('loadavg_end', '').rsplit(' ', 2)[0]} |")
    w("")
    w("How it measures: every figure comes from fresh child processes on random inputs "
      "(bench/caffe_worker.py, bench/torch_worker.py), one warm-up iteration each, and whatever is "
      f"compared runs interleaved: {res['rounds']} rounds, each running every variant once. "
      "Medians are over all timed iterations; the spread is the range of the per-round medians; "
      "ratios are taken within each round and their median reported. The machine is shared with "
      "other jobs, so single numbers move by tens of percent between runs; the in-round ratios are "
      "the stable quantity.")
    w("")
    kern = [short_blas(res["engines"][variants[0]["engine"]].get("blas")).split(", ")[-1].replace(" kernels", ""),
            (nb or {}).get("kernels", "-"), (tb or {}).get("kernels", "-").replace(" (torch CPU capability)", "")]
    summary["kernels"] = " / ".join(kern)
    summary["coretype"] = coretype or "not set"
    summary["ceiling"] = f"{ceil_med:.0f} GFLOP/s ({ceiling['library'].split(' (')[0]})"

    # ---- targets
    cr = {v: round_medians(alex[v], "step_s") for v in alex}
    caffe_pps = pairs / med(iters(alex[base], "step_s"))
    rows = []          # (target, measured, met or None, gap, where the time goes)
    torch_pps = None
    if torch_res:
        tr = round_medians(torch_res, "step_s")
        ratios = [t / c for c, t in zip(cr[base], tr)]
        torch_pps = pairs / med(iters(torch_res, "step_s"))
        r = med(ratios)
        rows.append((f"Caffe AlexNet-PVCNN training >= {TARGET_VS_TORCH}x PyTorch's pairs/s",
                     f"{r:.2f}x (rounds {rng(ratios)}): Caffe {caffe_pps:.1f}, PyTorch {torch_pps:.1f} pairs/s",
                     r >= TARGET_VS_TORCH,
                     gap_text(r, TARGET_VS_TORCH, f"{caffe_pps:.1f}", f"{TARGET_VS_TORCH * torch_pps:.1f} pairs/s",
                              "Caffe's step"), "training step, per layer"))
        summary["train"] = f"{caffe_pps:.1f} / {torch_pps:.1f}"
    else:
        rows.append((f"Caffe AlexNet-PVCNN training >= {TARGET_VS_TORCH}x PyTorch's pairs/s",
                     f"PyTorch not measured ({res.get('torch_note')})", None, "-", "-"))
        summary["train"] = f"{caffe_pps:.1f} / -"
    fracs = [(pairs / st) / (g * 1e9 / flops_pair) for st, g in zip(cr[base], ceil_rounds) if g == g]
    frac = med(fracs)
    rows.append((f"Caffe AlexNet-PVCNN training >= {TARGET_CEILING:.0%} of the GEMM ceiling",
                 f"{frac:.0%} in-round (rounds {rng(fracs, '{:.0%}')}); the ceiling: {ceil_med:.0f} GFLOP/s, set by "
                 f"{ceiling['library']}, = {ceiling_pps:.1f} pairs/s", frac >= TARGET_CEILING,
                 gap_text(frac, TARGET_CEILING, f"{caffe_pps:.1f}", f"{TARGET_CEILING * ceiling_pps:.1f} pairs/s",
                          "Caffe's step"), "training step, per layer"))
    summary["train_ceiling"] = f"{frac:.0%}"
    infer_alex = res.get("infer", {}).get("alexnet_pvcnn")
    fwd_rate_rounds = [32 / med(r["forward_s"]) for r in infer_alex] if infer_alex else []
    if infer_alex and torch_infer:
        t_rates = [t["infer_batch"] / med(t["infer_s"]) for t in torch_infer]
        ratios = [c / t for c, t in zip(fwd_rate_rounds, t_rates)]
        c_rate = 32 / med(iters(infer_alex, "forward_s"))
        t_rate = torch_infer[0]["infer_batch"] / med(iters(torch_infer, "infer_s"))
        r = med(ratios)
        rows.append((f"AlexNet deploy inference, batch 32, >= {TARGET_INFER_VS_TORCH}x PyTorch's images/s",
                     f"{r:.2f}x (rounds {rng(ratios)}): Caffe {c_rate:.1f}, PyTorch {t_rate:.1f} images/s",
                     r >= TARGET_INFER_VS_TORCH,
                     gap_text(r, TARGET_INFER_VS_TORCH, f"{c_rate:.1f}", f"{TARGET_INFER_VS_TORCH * t_rate:.1f} images/s",
                              "Caffe's forward"), "inference, per layer"))
        summary["infer"] = f"{c_rate:.1f} / {t_rate:.1f}"
    else:
        rows.append((f"AlexNet deploy inference, batch 32, >= {TARGET_INFER_VS_TORCH}x PyTorch's images/s",
                     "not measured (" + ("no PyTorch" if infer_alex else "no inference section") + ")",
                     None, "-", "-"))
        summary["infer"] = (f"{32 / med(iters(infer_alex, 'forward_s')):.1f} / -" if infer_alex else "-")
    pred = res.get("predict") or {}
    pred_rates = predict_rates(pred)
    if pred_rates and fwd_rate_rounds:
        ratios = [p / f for p, f in zip(pred_rates, fwd_rate_rounds)]
        r = med(ratios)
        p_rate = med(pred_rates)
        f_rate = 32 / med(iters(infer_alex, "forward_s"))
        rows.append((f"`tools/predict.py` end to end on real photos >= {TARGET_PREDICT:.0%} of the deploy net's "
                     f"forward rate alone", f"{r:.0%} in-round (rounds {rng(ratios, '{:.0%}')}): {p_rate:.1f} "
                     f"images/s end to end, forward alone {f_rate:.1f}", r >= TARGET_PREDICT,
                     gap_text(r, TARGET_PREDICT, f"{p_rate:.1f}", f"{TARGET_PREDICT * f_rate:.1f} images/s",
                              "the tool"), "predict, by stage"))
        summary["predict"] = f"{p_rate:.1f} ({r:.0%})"
    else:
        why = pred.get("error") or ("no inference section" if not fwd_rate_rounds else "not run")
        rows.append((f"`tools/predict.py` end to end >= {TARGET_PREDICT:.0%} of the deploy net's forward rate",
                     f"not measured ({why})", None, "-", "-"))
        summary["predict"] = "-"
    if res["layers"]:
        for mname, lr in res["layers"].items():
            share = _loss_share(lr)
            rows.append((f"Python loss layer < {TARGET_LOSS_SHARE:.0%} of a step ({mname}, {lr['pairs']} pairs)",
                         f"{share:.2%}", share < TARGET_LOSS_SHARE, "-", "-"))
    feeds = res.get("feeds") or {}
    tiny_pps = None
    if "tiny_pvcnn" in res.get("models", {}):
        r0 = res["models"]["tiny_pvcnn"]
        tiny_pps = r0[0]["pairs"] / med(iters(r0, "step_s"))
    feed_rows = feed_lines(feeds, caffe_pps, tiny_pps)
    for row in feed_rows["targets"]:
        rows.append((row[0], row[1], row[2], "-", "-"))
    gpu_feed = gpufeed_lines(res.get("gpufeed"))
    for row in gpu_feed["targets"]:
        rows.append((row[0], row[1], row[2], "-", "3b. beside a GPU step"))
    judged = [r for r in rows if r[2] is not None]
    summary["targets"] = f"{sum(1 for r in judged if r[2])} of {len(judged)}"
    w("### Targets")
    w("")
    w("| target | measured | | gap | where the time goes |")
    w("| --- | --- | --- | --- | --- |")
    for target, measured, met, gap, where in rows:
        w(f"| {target} | {measured} | {ok(met) if met is not None else '-'} | {gap} | {where} |")
    w("")

    # ---- the ceiling
    w("### The GEMM ceiling: the best float32 GEMM any library reaches here")
    w("")
    w("float32 GEMM 2048x2048x2048 in every round, through each library the run has: the engine's own BLAS "
      "(`cblas_sgemm` through ctypes on the very library libcaffe binds to) and numpy's (`np.matmul`), both "
      "timed in each Caffe process right after its training steps, and PyTorch's (`torch.mm`) in the PyTorch "
      "process right after its steps. A round's ceiling is the best of them; every \"% of ceiling\" below "
      "divides a round's rate by that round's ceiling.")
    w("")
    w("| library (call): kernels | GFLOP/s, median | per-round range | rounds it set the ceiling |")
    w("| --- | ---: | ---: | ---: |")
    winners = [lab for _, lab in ceiling["rounds"]]
    for lab, rates in ceiling["libraries"].items():
        w(f"| {lab} | {med(g_list(rates)):.0f} | {rng(g_list(rates), '{:.0f}')} | "
          f"{winners.count(lab)} of {len(winners)} |")
    w("")
    w(f"The ceiling, median over rounds: **{ceil_med:.0f} GFLOP/s** (set by {ceiling['library']}). "
      f"AlexNet-PVCNN needs {flops_pair / 1e9:.2f} GFLOP per pair for a training step (convolution and fully "
      f"connected layers of both towers: forward, weight gradients, data gradients except conv1's), so no "
      f"implementation on these cores can exceed about {ceiling_pps:.0f} pairs/s "
      f"({engine_gemm * 1e9 / flops_pair:.0f} pairs/s at the engine's own BLAS rate, {engine_gemm:.0f} GFLOP/s).")
    w("")

    # ---- 1. training throughput
    w(f"### 1. Training step (forward, backward, SGD update), CPU")
    w("")
    w("Nets: the generated `prototxt/<model>/train_val.prototxt` with its data layers replaced by an "
      "Input layer (random images, labels +-1); the solver settings of `solvers/<model>.prototxt` "
      "(momentum 0.9, weight decay 0.05) in CPU mode. PyTorch: the same AlexNet-PVCNN step "
      "(bench/torch_worker.py: grouped convolutions, LRN, dropout, two towers with shared weights, "
      "the same loss formula and solver settings).")
    w("")
    w("| net | engine / variant | pairs per step | step (s), median | per-round range | pairs/s | "
      "one forward+backward (s) | GFLOP per pair | % of GEMM ceiling |")
    w("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    models = res.get("models", {})

    def row(net, label, results, p, fl, in_round=True):
        p = results[0].get("pairs_per_step", p)
        it = results[0].get("iter_size", 1)
        st = med(iters(results, "step_s"))
        fb = med(iters(results, "fwdbwd_s"))
        pps = p / st
        if in_round:
            fr = [(p / s) / (g * 1e9 / fl) for s, g in zip(round_medians(results, "step_s"), ceil_rounds) if g == g]
        else:                    # measured in other rounds: against the median ceiling
            fr = [pps / (ceil_med * 1e9 / fl)]
        pshow = f"{p} ({p // it} x iter_size {it})" if it > 1 else f"{p}"
        w(f"| {net} | {label} | {pshow} | {st:.3f} | {rng(round_medians(results, 'step_s'), '{:.3f}')} | {pps:.2f} | "
          f"{fb:.3f} | {fl / 1e9:.2f} | {med(fr):.0%} |")
    if "tiny_pvcnn" in models:
        r0 = models["tiny_pvcnn"]
        row("tiny_pvcnn", f"Caffe `{base}`", r0, r0[0]["pairs"], r0[0]["flops"]["train"] / r0[0]["pairs"], False)
    for v in alex:
        row("alexnet_pvcnn", f"Caffe `{v}`", alex[v], pairs, flops_pair)
    if torch_res:
        row("alexnet_pvcnn", f"PyTorch {res['torch']}", torch_res, pairs, flops_pair)
    w(f"| alexnet_pvcnn | ceiling: GEMM ceiling / FLOPs | {pairs} | {pairs / ceiling_pps:.3f} | | {ceiling_pps:.1f} | | "
      f"{flops_pair / 1e9:.2f} | 100% |")
    if "vgg19_pvcnn" in models:
        r0 = models["vgg19_pvcnn"]
        row("vgg19_pvcnn", f"Caffe `{base}`", r0, r0[0]["pairs"], r0[0]["flops"]["train"] / r0[0]["pairs"], False)
    w("")
    w("A step is `iter_size` forward+backward passes of the net's batch, then one update (the solvers of "
      "VGG-19 accumulate gradients over 4 passes); pairs/s counts every pair of the step. tiny and VGG-19 "
      "rows run in rounds of their own: their % is against the median ceiling.")
    w("")

    # ---- BLAS comparison
    w(f"### Engines and settings compared (AlexNet-PVCNN, {pairs} pairs, 227x227)")
    w("")
    w("Each row is an engine (`project`: the one `make caffe` builds; `caffe-1.0`: Debian's Caffe with "
      "patches 0001-0003 only, when one is in the cache) plus environment settings.")
    w("")
    w("| variant | BLAS | forward+backward (s), median | per-round range | training step (s) | "
      "engine GEMM 2048^3 GFLOP/s | forward+backward time vs first row, in-round (lower is faster) |")
    w("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    fb0 = round_medians(alex[base], "fwdbwd_s")
    for v in variants:
        lab = v["label"]
        fb = round_medians(alex[lab], "fwdbwd_s")
        rat = [a / b for a, b in zip(fb, fb0)]
        info = res["engines"][v["engine"]]
        env_s = ", ".join(f"{k}={x}" for k, x in v["env"].items())
        gem = [med(r.get("gemm_gflops") or [float("nan")]) for r in alex[lab]]
        w(f"| `{lab}` | {blas_desc(alex[lab][0] if 'blas' in alex[lab][0] else info)}{'; ' + env_s if env_s else ''} | "
          f"{med(iters(alex[lab], 'fwdbwd_s')):.3f} | {rng(fb, '{:.3f}')} | {med(iters(alex[lab], 'step_s')):.3f} | "
          f"{med(g_list(gem)):.0f} | {med(rat):.2f}x ({rng(rat)}) |")
    w("")

    # ---- 2. inference
    w("### 2. Inference (deploy nets: one tower, image -> score)")
    w("")
    w("| deploy net | engine | batch | forward (s), median | per-round range | images/s |")
    w("| --- | --- | ---: | ---: | ---: | ---: |")
    for mname, results in res.get("infer", {}).items():
        b = results[0]["batch"]
        t = med(iters(results, "forward_s"))
        w(f"| {mname} | Caffe `{base}` | {b} | {t:.4f} | {rng(round_medians(results, 'forward_s'), '{:.4f}')} | "
          f"{b / t:.1f} |")
    if torch_infer:
        b = torch_infer[0]["infer_batch"]
        t = med(iters(torch_infer, "infer_s"))
        w(f"| alexnet tower (PyTorch, eval, no_grad) | PyTorch {res['torch']} | {b} | {t:.4f} | "
          f"{rng(round_medians(torch_infer, 'infer_s'), '{:.4f}')} | {b / t:.1f} |")
    w("")
    w("PyTorch runs in the same rounds, right after Caffe's AlexNet forward (bench/torch_worker.py "
      "`--infer-only`).")
    w("")
    dep = res.get("layers_deploy")
    if dep:
        inference_layers(w, dep, base, ceil_med,
                         torch_infer[0]["infer_batch"] / med(iters(torch_infer, "infer_s")) if torch_infer else None)
    if pred:
        predict_section(w, pred, fwd_rate_rounds, res["machine"]["cores"])

    # ---- 5. loss share
    w("### 5. The Python loss layer's share of a step")
    w("")
    w("| net | loss forward+backward (ms) | whole forward+backward (ms) | share |")
    w("| --- | ---: | ---: | ---: |")
    for mname, lr in res["layers"].items():
        lt = sum(l["forward_s"] + l["backward_s"] for l in lr["layers"] if l["type"] == "Python")
        tot = sum(l["forward_s"] + l["backward_s"] for l in lr["layers"])
        w(f"| {mname} ({lr['pairs']} pairs) | {lt * 1e3:.2f} | {tot * 1e3:.1f} | {lt / tot:.2%} |")
    w("")

    # ---- where the time goes
    if lay:
        where_time_goes(w, res, lay, alex, base, pairs, torch_res, torch_pps, ceiling_pps, engine_gemm)

    # ---- 3 / 4
    w("### 3. Data feed and 4. pair sampling")
    w("")
    for section, lines in (("feeds", feed_rows["lines"]), ("gpufeed", gpu_feed["lines"])):
        if section == "gpufeed":
            w("### 3b. The pair-index feed beside a GPU step: a thread or worker processes")
            w("")
        note = added_note(res, section)
        if note:
            w(note)
            w("")
        for line in lines:
            w(line)
        w("")
    return hardware.cpu_key(cpu), summary, "\n".join(L)


def added_note(res, section):
    """The line that says a section was measured later than the run (bench/run.py --add-to), or ''."""
    for a in res.get("added", []):
        if a["section"] == section:
            return (f"Measured on {a['date']}, after the rest of this section, and added to that run with "
                    f"`{a['command']}` (load average then: {a['loadavg']}).")
    return ""


def predict_rates(pred):
    """Per round: the marginal images/s of tools/predict.py, (N - one batch) / (t(N) - t(one batch))."""
    if not pred or "rounds" not in pred:
        return []
    n = pred["setup"]["photos"]["count"]
    one = pred["setup"]["one_batch"]
    return [(n - one) / (r["all_s"] - r["one_batch_s"]) for r in pred["rounds"] if r["all_s"] > r["one_batch_s"]]


def predict_section(w, pred, fwd_rate_rounds, cores):
    w("### tools/predict.py end to end (decode, resize, forward)")
    w("")
    if "error" in pred:
        w(f"Not measured: {pred['error']}")
        w("")
        return
    st = pred["setup"]
    ph = st["photos"]
    n, one = ph["count"], st["one_batch"]
    rates = predict_rates(pred)
    w(f"The tool as a user runs it, `python tools/predict.py RELEASE FOLDER --out ranking.csv --batch-size 32` "
      f"(a subprocess; every photo must be scored), on a folder of {n} JPEGs and on one of {one} (one batch), "
      f"in every round after the forward-alone measurement. The photos are scikit-image's colour sample "
      f"photographs ({', '.join(ph['sources'])}), each copy resized to a long side of 480, 640 or 800 pixels, "
      f"cropped to 85-100% of its area, sometimes mirrored, saved at JPEG quality 90 (mean "
      f"{ph['mean_megapixels']:.2f} megapixels, {ph['bytes'] / n / 1e3:.0f} kB each); the release is "
      f"`{st['model']}` with its deploy net's initial weights (bench/predict_e2e.py). Rate = ({n} - {one}) / "
      f"(time on {n} - time on {one}): start-up (Python, Caffe, reading and checking the model) is left out, "
      f"and shown beside it.")
    w("")
    w("| | median | per-round range |")
    w("| --- | ---: | ---: |")
    w(f"| {n} photos, wall (s) | {med([r['all_s'] for r in pred['rounds']]):.2f} | "
      f"{rng([r['all_s'] for r in pred['rounds']])} |")
    w(f"| {one} photos, wall (s) | {med([r['one_batch_s'] for r in pred['rounds']]):.2f} | "
      f"{rng([r['one_batch_s'] for r in pred['rounds']])} |")
    w(f"| end to end, marginal images/s | {med(rates):.1f} | {rng(rates, '{:.1f}')} |")
    if fwd_rate_rounds:
        w(f"| deploy forward alone, batch 32, images/s (same rounds) | {med(fwd_rate_rounds):.1f} | "
          f"{rng(fwd_rate_rounds, '{:.1f}')} |")
    fixed = med([r["one_batch_s"] - one / rt for r, rt in zip(pred["rounds"], rates)]) if rates else float("nan")
    w(f"| start-up, estimated (s) | {fixed:.2f} | |")
    w("")
    s = st["stages"]
    tot = s["decode_s"] + s["preprocess_s"] + s["forward_s"]
    w(f"Where the time goes: each stage alone, one after the other, over the {s['images']} photos "
      f"(bench/predict_e2e.py `stage_times`, one process, once):")
    w("")
    w("| stage | s | images/s | share of the sum |")
    w("| --- | ---: | ---: | ---: |")
    for key, label in (("decode_s", "decode (virality.data.imagestore.load_image_bgr)"),
                       ("preprocess_s", "resize, crop, mean (virality.deploy.preprocess.to_input)"),
                       ("forward_s", "forward, batches of 32 (the release's net)")):
        w(f"| {label} | {s[key]:.2f} | {s['images'] / s[key]:.1f} | {s[key] / tot:.0%} |")
    w(f"| sum | {tot:.2f} | {s['images'] / tot:.1f} | 100% |")
    w("")
    fwd_alone = med(fwd_rate_rounds) if fwd_rate_rounds else float("nan")
    w(f"Done one after the other the stages cannot beat the sum ({s['images'] / tot:.1f} images/s, "
      f"{s['images'] / tot / fwd_alone:.0%} of the forward alone). The tool decodes and resizes the next batch "
      f"in worker processes while the forward runs; that overlap can only use CPU time the forward leaves idle. With "
      f"{cores} cores, the forward's BLAS and Caffe's own threads already take one thread per core, so here the "
      f"end-to-end rate lies between the sum and the forward alone, and reaches the forward alone only on a "
      f"machine with cores to spare beside the ones the forward uses.")
    w("")


def inference_layers(w, dep, base, ceiling_gflops, torch_rate):
    w(f"Where the deploy forward's time goes (alexnet_pvcnn, batch {dep['deploy_batch']}, engine `{base}`, "
      f"per layer, median of {len(dep['total_s'])} passes; *GEMM model*: the `cblas_sgemm` calls the engine "
      f"makes for the layer, timed alone on the same BLAS):")
    w("")
    w("| layer | type | forward (ms) | share | GEMM model (ms) | outside GEMM (ms) |")
    w("| --- | --- | ---: | ---: | ---: | ---: |")
    total = sum(l["forward_s"] for l in dep["layers"])
    gemm_total = 0.0
    for l in dep["layers"]:
        t = l["forward_s"]
        if l["type"] in ("Convolution", "InnerProduct"):
            g = l["gemm_forward_s"]
            gemm_total += min(g, t)
            extra = f"{g * 1e3:.1f} | {max(0.0, t - g) * 1e3:.1f}"
        else:
            extra = " | "
        w(f"| {l['name']} | {l['type']} | {t * 1e3:.1f} | {t / total:.1%} | {extra} |")
    fl = dep["flops"]["forward"]
    w(f"| **total** | | {total * 1e3:.0f} | 100% | {gemm_total * 1e3:.0f} | {(total - gemm_total) * 1e3:.0f} |")
    w("")
    at_ceiling = fl / (ceiling_gflops * 1e9)
    batch = dep["deploy_batch"]
    w(f"The GEMMs take {gemm_total / total:.0%} of the forward ({fl / 1e9:.1f} GFLOP for the batch: "
      f"{fl / gemm_total / 1e9:.0f} GFLOP/s inside them, {fl / total / 1e9:.0f} GFLOP/s over the whole forward); "
      f"at the ceiling's {ceiling_gflops:.0f} GFLOP/s they would take {at_ceiling * 1e3:.0f} ms, a forward of "
      f"about {(total - gemm_total + at_ceiling) * 1e3:.0f} ms ({batch / (total - gemm_total + at_ceiling):.0f} "
      f"images/s) with the rest unchanged."
      + (f" {TARGET_INFER_VS_TORCH}x PyTorch takes a forward of at most "
         f"{batch / (TARGET_INFER_VS_TORCH * torch_rate) * 1e3:.0f} ms"
         + (": less than the GEMMs alone need at the ceiling, so out of reach on this CPU for GEMM-based layers, "
            "whatever else gets faster." if batch / (TARGET_INFER_VS_TORCH * torch_rate) < at_ceiling else ".")
         if torch_rate else ""))
    w("")


def where_time_goes(w, res, lay, alex, base, pairs, torch_res, torch_pps, ceiling_pps, engine_gemm):
    ref = (res.get("layers_reference") or {}).get("alexnet_pvcnn")
    ref_label = (res.get("layers_reference") or {}).get("engine")
    batched = lay.get("batched_convolution")
    w("### Where Caffe's training time goes (AlexNet-PVCNN, per layer)")
    w("")
    w(f"Per-layer forward and backward times (pycaffe `Net._forward(i, i)` / `_backward(i, i)`, the "
      f"same per-layer timing `caffe time` does; median of {len(lay['total_s'])} passes, engine `{base}`), "
      f"the two towers' layers summed per row. *GEMM model*: exactly the `cblas_sgemm` calls this engine "
      f"makes for that layer, timed alone on the same BLAS ("
      + ("one call per group for a chunk of images, engine patch 0004" if batched else
         "one call per image and group, as in Caffe 1.0")
      + "); *outside GEMM* is the rest of a conv/fc layer (im2col/col2im, layout copies, bias)."
      + (f" *Caffe 1.0*: the same layer on engine `{ref_label}` (Debian's Caffe with patches 0001-0003 "
         f"only: per-image GEMMs, single-threaded loops), in its own run." if ref else ""))
    w("")
    ref_groups = {g["name"]: g for g in group_layers(ref["layers"])} if ref else {}
    w("| layer (both towers) | type | forward (ms) | backward (ms) | share | GEMM model (ms) | outside GEMM (ms) |"
      + (" Caffe 1.0 forward+backward (ms) |" if ref else ""))
    w("| --- | --- | ---: | ---: | ---: | ---: | ---: |" + (" ---: |" if ref else ""))
    groups = group_layers(lay["layers"])
    total = sum(g["fwd"] + g["bwd"] for g in groups)
    for g in groups:
        t = g["fwd"] + g["bwd"]
        gm = f"{g['gemm'] * 1e3:.1f}" if g["type"] in ("Convolution", "InnerProduct") else ""
        outside = f"{max(0.0, t - g['gemm']) * 1e3:.1f}" if gm else ""
        extra = ""
        if ref:
            r = ref_groups.get(g["name"])
            extra = f" {(r['fwd'] + r['bwd']) * 1e3:.1f} |" if r else " |"
        w(f"| {g['name']} | {g['type']} | {g['fwd'] * 1e3:.1f} | {g['bwd'] * 1e3:.1f} | {t / total:.1%} | "
          f"{gm} | {outside} |{extra}")
    ref_total = sum(g["fwd"] + g["bwd"] for g in ref_groups.values()) if ref else None
    w(f"| **total** | | {sum(g['fwd'] for g in groups) * 1e3:.0f} | {sum(g['bwd'] for g in groups) * 1e3:.0f} | "
      f"100% | {sum(g['gemm'] for g in groups) * 1e3:.0f} | |" + (f" {ref_total * 1e3:.0f} |" if ref else ""))
    w("")
    cat = categories(lay["layers"])
    ref_cat = categories(ref["layers"]) if ref else None
    step = med(iters(alex[base], "step_s"))
    update = med(iters(alex[base], "update_s"))
    w("By category:")
    w("")
    w("| where | ms per step | share | what runs it |" + (" Caffe 1.0 (ms) |" if ref else ""))
    w("| --- | ---: | ---: | --- |" + (" ---: |" if ref else ""))
    threads = "Caffe's CPU threads (patch 0004)" if batched else "one core (Caffe 1.0)"
    runs = {
        "GEMM (BLAS) in conv + fc": "the BLAS and its threads (docs/ENGINE.md); "
                                    + ("one GEMM per group for a chunk of images" if batched
                                       else "one GEMM per image and group"),
        "conv outside GEMM (im2col/col2im, copies, bias)": threads,
        "fc outside GEMM": "-",
        "LRN": threads, "Pooling": threads, "ReLU": threads,
        "Dropout": "one core (random numbers)",
        "Python loss": "ours (python_layers/ranking_loss.py)",
        "other": "Input / Split layers",
    }
    for k, v in cat.items():
        extra = f" {ref_cat[k] * 1e3:.0f} |" if ref else ""
        w(f"| {k} | {v * 1e3:.0f} | {v / total:.1%} | {runs[k]} |{extra}")
    w(f"| SGD update (`Solver::ApplyUpdate`, timed alone) | {update * 1e3:.0f} | | Caffe's solver: weight "
      f"decay, momentum, update, BLAS level 1 over all parameters |" + (" |" if ref else ""))
    w("")
    # The gap, in words.
    need = [pairs / (TARGET_CEILING * ceiling_pps)]
    if torch_pps:
        need.append(pairs / (TARGET_VS_TORCH * torch_pps))
    gemm_t = cat["GEMM (BLAS) in conv + fc"]
    rest = total - gemm_t
    pieces = []
    for g in groups:
        t = g["fwd"] + g["bwd"]
        if g["type"] in ("Convolution", "InnerProduct"):
            pieces.append((max(0.0, t - g["gemm"]), f"{g['name']} outside its GEMMs"))
        elif g["type"] in ("LRN", "Pooling", "ReLU", "Dropout"):
            pieces.append((t, f"{g['name']} ({g['type']})"))
    pieces.sort(reverse=True)
    top_rest = ", ".join(f"{n} {t * 1e3:.0f} ms" for t, n in pieces[:4])
    flops_fb = lay["flops"]["train"]
    ceiling_rate = ceiling_pps * alex[base][0]["flops"]["train"] / pairs / 1e9
    met = step <= min(need)
    w(f"**The budget.** Meeting both targets takes a step of at most {min(need):.2f} s "
      + (f"({pairs / (TARGET_VS_TORCH * torch_pps):.2f} s for {TARGET_VS_TORCH}x PyTorch, " if torch_pps else "(")
      + f"{pairs / (TARGET_CEILING * ceiling_pps):.2f} s for {TARGET_CEILING:.0%} of the GEMM ceiling); the median step took "
      f"{step:.2f} s ({'within' if met else 'over'} budget). Of a forward+backward pass ({total:.2f} s in this "
      f"breakdown), the GEMMs take {gemm_t:.2f} s ({gemm_t / total:.0%}; at the GEMM model's times they run "
      f"at {flops_fb / gemm_t / 1e9:.0f} GFLOP/s against {engine_gemm:.0f} for a 2048^3 GEMM on the same BLAS "
      f"and {ceiling_rate:.0f} for the ceiling), everything else {rest:.2f} s ({rest / total:.0%}; the largest pieces: {top_rest}); "
      f"the SGD update adds {update:.2f} s.")
    at_ceiling = flops_fb / (ceiling_rate * 1e9)
    w("")
    w(f"**The BLAS's part.** The same GEMMs at the ceiling's rate ({ceiling_rate:.0f} GFLOP/s) would take "
      f"{at_ceiling:.2f} s instead of {gemm_t:.2f} s: a step of about {step - gemm_t + at_ceiling:.2f} s "
      f"({pairs / (step - gemm_t + at_ceiling):.1f} pairs/s) with everything else unchanged"
      + (f"; the budget of {min(need):.2f} s is less than the GEMMs alone need at the ceiling, so out of reach on "
         f"this CPU for GEMM-based layers, whatever else gets faster." if min(need) < at_ceiling else
         f"; to meet the budget of {min(need):.2f} s with the GEMMs at the ceiling, everything else in the step "
         f"(now {step - gemm_t:.2f} s: layers outside their GEMMs, the SGD update, the solver's own work) would "
         f"have to fit in {min(need) - at_ceiling:.2f} s."))
    if ref:
        def conv_time(layers):
            return sum(l["forward_s"] + l["backward_s"] for l in layers if l["type"] == "Convolution")
        conv, conv_ref = conv_time(lay["layers"]), conv_time(ref["layers"])
        own, own_ref = (sum(c[k] for k in ("LRN", "Pooling", "ReLU")) for c in (cat, ref_cat))
        w("")
        w(f"**What the engine patches changed** (engine/patches, docs/ENGINE.md \"CPU speed\"; the two "
          f"breakdowns are separate runs, so read them as a rough split of the in-round ratio in "
          f"\"Engines and settings compared\"): a forward+backward pass took {ref_total:.2f} s on Caffe 1.0 "
          f"and {total:.2f} s here ({ref_total / total:.2f}x); the convolution layers {conv_ref:.2f} s -> "
          f"{conv:.2f} s (one GEMM per group for a chunk of images, im2col/col2im on both cores), LRN, "
          f"pooling and ReLU {own_ref:.2f} s -> {own:.2f} s (branch-free and vectorized, on both cores).")
    w("")


def _loss_share(lay):
    lt = sum(l["forward_s"] + l["backward_s"] for l in lay["layers"] if l["type"] == "Python")
    tot = sum(l["forward_s"] + l["backward_s"] for l in lay["layers"])
    return lt / tot



def feed_lines(feeds, alex_pps, tiny_pps):
    """Target rows and report lines for items 3 (data feed) and 4 (pair sampling)."""
    targets, lines = [], []
    if not feeds or "error" in feeds:
        why = (feeds or {}).get("error", "not run")
        targets.append(("data feed >= 5x what a step consumes; 10M pairs sampled in < 10 s",
                        f"not measured ({why})", None))
        lines.append(f"Not measured in this run ({why}); bench/feeds.py holds the measurements.")
        return {"targets": targets, "lines": lines}
    st = feeds.get("store", {})
    if "skipped" in st:
        lines.append(f"- Image store: TODO, not measured ({st['skipped']}).")
    elif st:
        lines.append(f"- JPEG decode alone (cv2.imread, {st['images']} synthetic 500x375 JPEGs): "
                     f"{st['jpeg_decode_images_per_s']:.0f} images/s, one process.")
        lines.append(f"- Image store build (virality.data.imagestore.build_image_store, 1 worker) from the same "
                     f"files: {st['store256_build_images_per_s']:.0f} images/s at 256x256, "
                     f"{st['store36_build_images_per_s']:.0f} images/s at 36x36 "
                     f"({st['store256_build_images_per_s'] / st['jpeg_decode_images_per_s']:.0%} and "
                     f"{st['store36_build_images_per_s'] / st['jpeg_decode_images_per_s']:.0%} of the decode rate).")
    consumers = {256: ("alexnet_pvcnn", alex_pps), 36: ("tiny_pvcnn", tiny_pps)}
    for kind, label in (("pair_lmdb", "pair LMDB through Caffe's Data layer (crop, mirror, mean; prefetch thread)"),
                        ("pair_index", "pair-index Python layer (python_layers.pair_data.PairIndexData)")):
        fr = feeds.get(kind, {})
        if "skipped" in fr:
            lines.append(f"- {label}: TODO, not measured ({fr['skipped']}).")
            targets.append((f"{kind.replace('_', ' ')} feed >= 5x what a step consumes", f"not measured", None))
            continue
        for size in (256, 36):
            r = fr.get(f"{'lmdb' if kind == 'pair_lmdb' else 'index'}{size}")
            if not r:
                continue
            model, need = consumers[size]
            extra = f", built at {r['build_pairs_per_s']:.0f} pairs/s" if "build_pairs_per_s" in r else ""
            if need:
                ratio = r["read_pairs_per_s"] / need
                lines.append(f"- {label}, {size}px store, {r['crop']}px crops: {r['read_pairs_per_s']:.0f} pairs/s"
                             f"{extra}; a {model} step consumes {need:.1f} pairs/s: {ratio:.0f}x.")
                targets.append((f"{kind.replace('_', ' ')} feed >= 5x a {model} step", f"{ratio:.0f}x "
                                f"({r['read_pairs_per_s']:.0f} vs {need:.1f} pairs/s)", ratio >= 5))
            else:
                lines.append(f"- {label}, {size}px store, {r['crop']}px crops: {r['read_pairs_per_s']:.0f} pairs/s{extra}.")
    sa = feeds.get("sampling", {})
    if "skipped" in sa:
        lines.append(f"- Pair sampling: TODO, not measured ({sa['skipped']}).")
        targets.append(("10M pairs sampled in < 10 s", "not measured", None))
    elif sa:
        t = med(sa["seconds"])
        lines.append(f"- Pair sampling (virality.data.pairs.sample_pairs), {sa['num_pairs'] / 1e6:.0f}M pairs from "
                     f"5,040 viral x 5,040 non-viral images (Deza & Parikh's size) minus 2,000 test pairs: "
                     f"{t:.2f} s (runs {rng(sa['seconds'])}).")
        targets.append(("10M pairs sampled in < 10 s", f"{t:.2f} s", t < 10))
    return {"targets": targets, "lines": lines}


#: With worker processes, a GPU step of the published TITAN X cuDNN-class time should wait for the
#: feed less than this share of the step (bench/feed_workers.py).
TARGET_FEED_WAIT = 0.10


def gpufeed_lines(gf):
    """Target rows and report lines for bench/feed_workers.py: the feed while a GIL-holding step runs."""
    if not gf or "error" in gf:
        why = (gf or {}).get("error", "not run")
        return {"targets": [("pair-index feed keeps up with a TITAN X step (worker processes)",
                             f"not measured ({why})", None)],
                "lines": [f"Not measured in this run ({why}); bench/feed_workers.py holds the measurement."]}
    published = gf["published_step_ms"]
    lines = [
        f"`bench/feed_workers.py`: {gf['pairs']} pairs of {gf['crop']}px crops per batch from an in-memory image "
        f"store at 256 px ({gf['images']} synthetic JPEGs), {gf['cores']} cores. A GPU step holds Python's GIL "
        "while the CPU waits for the GPU (pycaffe does not release it), so it is stood in for by `usleep` called "
        "through `ctypes.PyDLL`: it keeps the GIL and leaves the cores idle. Each iteration takes a batch from "
        "the feed, copies it into arrays the size of the net's blobs (what the layer does in either mode) and "
        "steps. Step times, published (soumith/convnet-benchmarks, Titan X Maxwell, AlexNet forward + backward "
        "of 128 images, the size of a 64-pair AlexNet-PVCNN step): "
        + ", ".join(f"{name} {ms:.0f} ms ({gf['pairs'] / ms * 1000:.0f} pairs/s)" for name, ms in published.items())
        + ". H100/H200 step times: not measured here (`bench/gpu.sh` measures them on a GPU). Medians over "
        f"{gf['rows'][0]['iters']} timed iterations per row.", "",
        "| step | feed | iteration, ms | waited for the feed, ms | copy into the blobs, ms | pairs/s delivered |",
        "| --- | --- | ---: | ---: | ---: | ---: |"]
    names = {ms: name for name, ms in published.items()}
    for r in gf["rows"]:
        step = "none (the feed alone)" if r["step_ms"] == 0 else \
            f"{r['step_ms']:.0f} ms" + (f" ({names[r['step_ms']]})" if r["step_ms"] in names else "")
        lines.append(f"| {step} | {'thread' if r['workers'] == 0 else str(r['workers']) + ' worker' + ('s' if r['workers'] > 1 else '')} "
                     f"| {r['iteration_ms']:.1f} | {r['wait_ms']:.1f} | {r['copy_ms']:.1f} | {r['pairs_per_s']:.0f} |")
    targets = []
    fast = min(published.values())
    at_fast = [r for r in gf["rows"] if r["step_ms"] == fast]
    best = min((r for r in at_fast if r["workers"] > 0), key=lambda r: r["wait_ms"], default=None)
    thread = next((r for r in at_fast if r["workers"] == 0), None)
    if best:
        share = best["wait_ms"] / fast
        targets.append((f"a {fast:.0f} ms step (TITAN X, cuDNN-class) waits for the pair-index feed < "
                        f"{TARGET_FEED_WAIT:.0%} of it, with worker processes",
                        f"{share:.1%} ({best['wait_ms']:.1f} ms, {best['workers']} worker"
                        f"{'s' if best['workers'] > 1 else ''}"
                        + (f"; the thread: {thread['wait_ms'] / fast:.0%}" if thread else "") + ")",
                        share < TARGET_FEED_WAIT))
        lines += ["", f"At the {fast:.0f} ms step the best worker count leaves the step waiting {best['wait_ms']:.1f} ms "
                  + (f"against {thread['wait_ms']:.1f} ms with the thread" if thread else "")
                  + f"; an iteration then takes {best['iteration_ms']:.0f} ms against the step's {fast:.0f}: what is "
                  f"left is the copy into the blobs ({best['copy_ms']:.0f} ms, 2 x {gf['pairs']} x 3 x {gf['crop']} x "
                  f"{gf['crop']} float32), which a Python data layer does in either mode."]
    return {"targets": targets, "lines": lines}


if __name__ == "__main__":
    import argparse
    import document
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", help="bench/out/results.json of a run")
    ap.add_argument("--out", default=None, help="merge the run's section into this BENCHMARKS.md "
                                                "(default: print the section)")
    a = ap.parse_args()
    with open(a.results) as f:
        key, summary, body = render(json.load(f))
    if a.out:
        document.write(a.out, key, summary, body)
    else:
        sys.stdout.write(body + "\n")
