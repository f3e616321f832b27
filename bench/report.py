"""Renders bench/run.py's results (a dict, also saved as bench/out/results.json) as BENCHMARKS.md.

    .venv/bin/python bench/report.py bench/out/results.json > BENCHMARKS.md   # re-render
"""
import json
import statistics
import sys
from collections import OrderedDict

TARGET_VS_TORCH = 1.2
TARGET_CEILING = 0.5
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


def render(res):
    L = []
    w = L.append
    m = res["machine"]
    variants = res["variants"]
    base = variants[0]["label"]
    pairs = res["pairs"]
    alex = res["alexnet"]
    torch_res = res.get("torch_alexnet") or []
    lay = res["layers"].get("alexnet_pvcnn")
    flops_pair = alex[base][0]["flops"]["train"] / pairs
    # The ceiling: the GEMM rate measured inside each Caffe worker, right after its steps.
    gemm_rounds = {v: [med(r.get("gemm_gflops") or [float("nan")]) for r in alex[v]] for v in alex}
    gemm_all = [g for v in gemm_rounds.values() for g in g_list(v)]
    gemm_base = med(g_list(gemm_rounds[base]))
    gemm_best = max(gemm_all) if gemm_all else float("nan")

    w("# Benchmarks")
    w("")
    w(f"Written by `make bench` (`bench/run.py`{' --quick' if res['quick'] else ''}) on {res['date']}; "
      f"{res['elapsed_s'] / 60:.1f} minutes. Command: `{res['command']}`.")
    w("Do not edit by hand: rerun `make bench` (bench/README.md explains the harness). "
      "Decisions drawn from these numbers are in docs/ENGINE.md (\"BLAS\").")
    w("")
    w("## Machine and versions")
    w("")
    w("| | |")
    w("| --- | --- |")
    w(f"| CPU | {m['cpu']}, {m['cores']} cores visible; {', '.join(m['isa'])} |")
    w(f"| memory | {m['memory_gib']} GiB |")
    w(f"| OS | {m['os']}, kernel {m['kernel']}; {m['gcc']}; Python {m['python']} |")
    for name, info in res["engines"].items():
        b = info.get("build", {})
        w(f"| engine `{name}` | `{info['path']}` (BLAS={b.get('blas', '?')}, Caffe {b.get('caffe_version', '?')}, "
          f"built {b.get('built', '?')}) |")
        w(f"| BLAS of `{name}` | {blas_desc(info)}; `{info['blas'].get('real_path')}` |")
    w(f"| PyTorch | {res['torch'] or 'not measured: ' + (res.get('torch_note') or '')} |")
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

    # ---- headline
    cr = {v: round_medians(alex[v], "step_s") for v in alex}
    caffe_pps = pairs / med(iters(alex[base], "step_s"))
    ceiling_pps = gemm_base * 1e9 / flops_pair
    w("## Targets")
    w("")
    w("| target | measured | |")
    w("| --- | --- | --- |")
    if torch_res:
        tr = round_medians(torch_res, "step_s")
        ratios = [t / c for c, t in zip(cr[base], tr)]
        torch_pps = pairs / med(iters(torch_res, "step_s"))
        w(f"| Caffe AlexNet-PVCNN training >= {TARGET_VS_TORCH}x PyTorch's pairs/s | "
          f"{med(ratios):.2f}x (rounds {rng(ratios)}): Caffe {caffe_pps:.1f}, PyTorch {torch_pps:.1f} pairs/s | "
          f"{ok(med(ratios) >= TARGET_VS_TORCH)} |")
    else:
        w(f"| Caffe AlexNet-PVCNN training >= {TARGET_VS_TORCH}x PyTorch's pairs/s | PyTorch not measured "
          f"({res.get('torch_note')}) | - |")
    fracs = [(pairs / st) / (g * 1e9 / flops_pair) for st, g in zip(cr[base], gemm_rounds[base]) if g == g]
    frac = med(fracs)
    w(f"| >= {TARGET_CEILING:.0%} of the GEMM ceiling | {frac:.0%} in-round (rounds {rng(fracs, '{:.0%}')}); "
      f"{caffe_pps / (gemm_best * 1e9 / flops_pair):.0%} of the best GEMM rate seen ({gemm_best:.0f} GFLOP/s) | "
      f"{ok(frac >= TARGET_CEILING)} |")
    if res["layers"]:
        for mname, lr in res["layers"].items():
            share = _loss_share(lr)
            w(f"| Python loss layer < {TARGET_LOSS_SHARE:.0%} of a step ({mname}, {lr['pairs']} pairs) | "
              f"{share:.2%} | {ok(share < TARGET_LOSS_SHARE)} |")
    feeds = res.get("feeds") or {}
    tiny_pps = None
    if "tiny_pvcnn" in res.get("models", {}):
        r0 = res["models"]["tiny_pvcnn"]
        tiny_pps = r0[0]["pairs"] / med(iters(r0, "step_s"))
    feed_rows = feed_lines(feeds, caffe_pps, tiny_pps)
    for row in feed_rows["targets"]:
        w(f"| {row[0]} | {row[1]} | {ok(row[2]) if row[2] is not None else '-'} |")
    w("")

    # ---- 1. training throughput
    w(f"## 1. Training step (forward, backward, SGD update), CPU")
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
    def row(net, label, results, p, fl):
        p = results[0].get("pairs_per_step", p)
        it = results[0].get("iter_size", 1)
        st = med(iters(results, "step_s"))
        fb = med(iters(results, "fwdbwd_s"))
        pps = p / st
        gr = [med(r.get("gemm_gflops") or [float("nan")]) for r in results]
        if not g_list(gr):
            gr = gemm_rounds[base]
        fr = [(p / st) / (g * 1e9 / fl) for st, g in zip(round_medians(results, "step_s"), gr) if g == g]
        pshow = f"{p} ({p // it} x iter_size {it})" if it > 1 else f"{p}"
        w(f"| {net} | {label} | {pshow} | {st:.3f} | {rng(round_medians(results, 'step_s'), '{:.3f}')} | {pps:.2f} | "
          f"{fb:.3f} | {fl / 1e9:.2f} | {med(fr):.0%} |")
    if "tiny_pvcnn" in models:
        r0 = models["tiny_pvcnn"]
        row("tiny_pvcnn", f"Caffe `{base}`", r0, r0[0]["pairs"], r0[0]["flops"]["train"] / r0[0]["pairs"])
    for v in alex:
        row("alexnet_pvcnn", f"Caffe `{v}`", alex[v], pairs, flops_pair)
    if torch_res:
        row("alexnet_pvcnn", f"PyTorch {res['torch']}", torch_res, pairs, flops_pair)
    w(f"| alexnet_pvcnn | ceiling: GEMM rate / FLOPs | {pairs} | {pairs / ceiling_pps:.3f} | | {ceiling_pps:.1f} | | "
      f"{flops_pair / 1e9:.2f} | 100% |")
    if "vgg19_pvcnn" in models:
        r0 = models["vgg19_pvcnn"]
        row("vgg19_pvcnn", f"Caffe `{base}`", r0, r0[0]["pairs"], r0[0]["flops"]["train"] / r0[0]["pairs"])
    w("")
    w("A step is `iter_size` forward+backward passes of the net's batch, then one update (the solvers of "
      "VGG-19 accumulate gradients over 4 passes); pairs/s counts every pair of the step.")
    w("")
    w(f"GEMM ceiling: float32 `cblas_sgemm` 2048x2048x2048 through the engine's own BLAS library, timed in "
      f"each Caffe process right after its training steps (same library instance, same threads, same "
      f"moment), reaches {gemm_base:.0f} GFLOP/s (median; rounds {rng(g_list(gemm_rounds[base]), '{:.0f}')}; "
      f"best seen in this run {gemm_best:.0f}); "
      f"AlexNet-PVCNN needs {flops_pair / 1e9:.2f} GFLOP per pair for a training step (convolution and "
      f"fully connected layers of both towers: forward, weight gradients, data gradients except conv1's), "
      f"so no implementation on this BLAS and these cores can exceed about {ceiling_pps:.0f} pairs/s "
      f"({gemm_best * 1e9 / flops_pair:.0f} at the best GEMM rate seen). The % column divides each round's "
      f"pairs/s by that round's ceiling (PyTorch rows: the Caffe rounds' GEMM rate).")
    w("")

    # ---- BLAS comparison
    w(f"## Engines and settings compared (AlexNet-PVCNN, {pairs} pairs, 227x227)")
    w("")
    w("Each row is an engine (`project`: the one `make caffe` builds; `caffe-1.0`: Debian's Caffe with "
      "patches 0001-0003 only, when one is in the cache) plus environment settings.")
    w("")
    w("| variant | BLAS | forward+backward (s), median | per-round range | training step (s) | "
      "GEMM 2048^3 GFLOP/s | forward+backward time vs first row, in-round (lower is faster) |")
    w("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    fb0 = round_medians(alex[base], "fwdbwd_s")
    for v in variants:
        lab = v["label"]
        fb = round_medians(alex[lab], "fwdbwd_s")
        rat = [a / b for a, b in zip(fb, fb0)]
        info = res["engines"][v["engine"]]
        env = ", ".join(f"{k}={x}" for k, x in v["env"].items())
        w(f"| `{lab}` | {blas_desc(alex[lab][0] if 'blas' in alex[lab][0] else info)}{'; ' + env if env else ''} | "
          f"{med(iters(alex[lab], 'fwdbwd_s')):.3f} | {rng(fb, '{:.3f}')} | {med(iters(alex[lab], 'step_s')):.3f} | "
          f"{med(g_list(gemm_rounds[lab])):.0f} | {med(rat):.2f}x ({rng(rat)}) |")
    w("")

    # ---- 2. inference
    w("## 2. Inference (deploy nets: one tower, image -> score)")
    w("")
    w("| deploy net | engine | batch | forward (s), median | per-round range | images/s |")
    w("| --- | --- | ---: | ---: | ---: | ---: |")
    for mname, results in res.get("infer", {}).items():
        b = results[0]["batch"]
        t = med(iters(results, "forward_s"))
        w(f"| {mname} | Caffe `{base}` | {b} | {t:.4f} | {rng(round_medians(results, 'forward_s'), '{:.4f}')} | "
          f"{b / t:.1f} |")
    if torch_res and torch_res[0].get("infer_s"):
        b = torch_res[0]["infer_batch"]
        t = med(iters(torch_res, "infer_s"))
        w(f"| alexnet tower (PyTorch, eval, no_grad) | PyTorch {res['torch']} | {b} | {t:.4f} | "
          f"{rng(round_medians(torch_res, 'infer_s'), '{:.4f}')} | {b / t:.1f} |")
    w("")

    # ---- 5. loss share
    w("## 5. The Python loss layer's share of a step")
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
        where_time_goes(w, res, lay, alex, base, pairs, torch_res, torch_pps if torch_res else None, ceiling_pps)

    # ---- 3 / 4
    w("## 3. Data feed and 4. pair sampling")
    w("")
    for line in feed_rows["lines"]:
        w(line)
    w("")
    return "\n".join(L)


def where_time_goes(w, res, lay, alex, base, pairs, torch_res, torch_pps, ceiling_pps):
    ref = (res.get("layers_reference") or {}).get("alexnet_pvcnn")
    ref_label = (res.get("layers_reference") or {}).get("engine")
    batched = lay.get("batched_convolution")
    w("## Where Caffe's time goes (AlexNet-PVCNN, per layer)")
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
    gemm_rate = ceiling_pps * alex[base][0]["flops"]["train"] / pairs / 1e9
    met = step <= min(need)
    w(f"**The budget.** Meeting both targets takes a step of at most {min(need):.2f} s "
      + (f"({pairs / (TARGET_VS_TORCH * torch_pps):.2f} s for {TARGET_VS_TORCH}x PyTorch, " if torch_pps else "(")
      + f"{pairs / (TARGET_CEILING * ceiling_pps):.2f} s for half the GEMM ceiling); the median step took "
      f"{step:.2f} s ({'within' if met else 'over'} budget). Of a forward+backward pass ({total:.2f} s in this "
      f"breakdown), the GEMMs take {gemm_t:.2f} s ({gemm_t / total:.0%}; at the GEMM model's times they run "
      f"at {flops_fb / gemm_t / 1e9:.0f} GFLOP/s against {gemm_rate:.0f} for a 2048^3 GEMM), everything else {rest:.2f} s ({rest / total:.0%}; the largest pieces: {top_rest}); "
      f"the SGD update adds {update:.2f} s.")
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
        lines.append(f"- Image store build (virality.imagestore.build_image_store, 1 worker) from the same "
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
        lines.append(f"- Pair sampling (virality.pairs.sample_pairs), {sa['num_pairs'] / 1e6:.0f}M pairs from "
                     f"5,040 viral x 5,040 non-viral images (Deza & Parikh's size) minus 2,000 test pairs: "
                     f"{t:.2f} s (runs {rng(sa['seconds'])}).")
        targets.append(("10M pairs sampled in < 10 s", f"{t:.2f} s", t < 10))
    return {"targets": targets, "lines": lines}


if __name__ == "__main__":
    sys.stdout.write(render(json.load(open(sys.argv[1]))))
