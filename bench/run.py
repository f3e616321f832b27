"""Benchmark harness: `make bench` runs it and it writes BENCHMARKS.md.

    .venv/bin/python bench/run.py [--quick] [--out BENCHMARKS.md] [--rounds N]
                                  [--engine LABEL=PATH ...] [--variant SPEC ...]

Every measurement runs in a fresh child process (bench/caffe_worker.py for Caffe,
bench/torch_worker.py for PyTorch) and the variants that are compared run
interleaved, round after round, so that a noisy, shared machine hits them alike.
Reported: the median over all timed iterations, the spread of the per-round
medians (min-max), and ratios taken within each round (median of the rounds).

Engines: "project" is the engine `make caffe` linked at .engine. Other engines come
from --engine, or are found in the engine cache (${CAFFE_CACHE_DIR:-~/.cache/virality-caffe}/
engine-*, same Python/numpy, CPU): the newest complete one per other BLAS carrying the
same patches, and "caffe-1.0", the newest with the project's BLAS but without the CPU
patch 0004 (Caffe 1.0's per-image convolution and single-threaded loops), which the
patches are measured against.

Variants (--variant LABEL=ENGINE[:VAR=VAL,VAR=VAL]) are an engine plus environment
settings; the default list is every engine as it is, plus, for a patched OpenBLAS
engine when OPENBLAS_THREAD_TIMEOUT is not already set, the same engine with
OpenBLAS's idle threads spinning (OPENBLAS_THREAD_TIMEOUT=28, OpenBLAS's own default,
which pycaffe's patch 0005 replaces by 4).

PyTorch (bench-only, optional): bench/.venv-torch/bin/python, or $BENCH_TORCH_PYTHON;
skipped with a note when missing (bench/README.md says how to install it).
"""
import argparse
import datetime
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import hardware  # noqa: E402
import predict_e2e  # noqa: E402
from common import ROOT, median  # noqa: E402

PY = sys.executable
WORKER = str(ROOT / "bench" / "caffe_worker.py")
TORCH_WORKER = str(ROOT / "bench" / "torch_worker.py")
#: Sections that stand alone (no AlexNet run needed), so `--add-to` can add them to an earlier run:
#: name -> (the bench script that measures it in a child process, its last stdout line a JSON object;
#: what the log calls it).
STANDALONE = {"feeds": ("feeds.py", "data feed and pair sampling"),
              "gpufeed": ("feed_workers.py", "pair-index feed beside a stand-in GPU step: thread vs worker processes")}
ADDABLE = tuple(STANDALONE)


def log(msg):
    print(f"bench: {msg}", flush=True)


# ---------------------------------------------------------------- engines

def read_build_info(engine):
    """build-info.txt as a dict; its line "cuda=0 blas=open" gives info["cuda"] = "0 blas=open"
    and info["blas"] = "open"."""
    info = {}
    path = Path(engine) / "build-info.txt"
    if path.exists():
        for line in path.read_text().splitlines():
            if "=" in line:
                k, v = line.split("=", 1)
                info[k.strip()] = v.strip()
        m = re.search(r"blas=(\S+)", info.get("cuda", ""))
        if m:
            info["blas"] = m.group(1)
    return info


def discover_engines(project):
    """Other complete CPU engines in the cache with the same Python/numpy, newest first wins:
    per other BLAS, one carrying the same CPU patches as the project engine; and, as
    "caffe-1.0", one with the project's BLAS but without patch 0004 (the reference the
    patches are measured against)."""
    root = Path(os.environ.get("CAFFE_CACHE_DIR") or
                Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "virality-caffe")
    mine = read_build_info(project)
    patched = common.has_cpu_patches(project)
    found = {}
    for eng in sorted(root.glob("engine-*"), key=lambda p: (p / ".complete").stat().st_mtime
                      if (p / ".complete").exists() else 0):
        if not (eng / ".complete").exists() or eng.resolve() == Path(project).resolve():
            continue
        info = read_build_info(eng)
        if info.get("python_numpy") != mine.get("python_numpy") or info.get("cuda", "").split()[:1] != ["0"]:
            continue
        if info.get("blas") and info.get("blas") != mine.get("blas") and common.has_cpu_patches(eng) == patched:
            found[f"{info['blas']} (cached)"] = str(eng)
        elif patched and info.get("blas") == mine.get("blas") and not common.has_cpu_patches(eng):
            found["caffe-1.0"] = str(eng)
    return found


def parse_variant(spec, engines):
    label, rest = spec.split("=", 1)
    eng, _, envs = rest.partition(":")
    if eng not in engines:
        raise SystemExit(f"--variant {spec}: unknown engine '{eng}' (have {', '.join(engines)})")
    env = {}
    for item in filter(None, envs.split(",")):
        k, v = item.split("=", 1)
        env[k] = v
    return {"label": label, "engine": eng, "env": env}


def default_variants(engines, infos):
    """Every engine as it is; for a patched OpenBLAS engine also the same engine with
    OpenBLAS's idle threads spinning (its own default, which patch 0005 turns off)."""
    out = []
    for name in engines:
        out.append({"label": name, "engine": name, "env": {}})
        blas = infos[name]["blas"]
        if (blas.get("kind") == "OpenBLAS" and "OPENBLAS_THREAD_TIMEOUT" not in os.environ
                and common.has_cpu_patches(engines[name])):
            out.append({"label": f"{name}, OpenBLAS threads spinning", "engine": name,
                        "env": {"OPENBLAS_THREAD_TIMEOUT": "28"}})
    return out


# ---------------------------------------------------------------- running

class Runner:
    def __init__(self, engines):
        self.engines = engines

    def caffe(self, engine, args, env=None, timeout=1800):
        return self.caffe_script(engine, WORKER, args, env, timeout)

    def caffe_script(self, engine, script, args, env=None, timeout=1800):
        return common.run_json([PY, str(script)] + [str(a) for a in args],
                               common.engine_env(self.engines[engine], env), timeout=timeout)


def torch_python():
    cand = os.environ.get("BENCH_TORCH_PYTHON") or str(ROOT / "bench" / ".venv-torch" / "bin" / "python")
    if not Path(cand).exists():
        return None, f"no PyTorch environment at {cand} (see bench/README.md)"
    proc = subprocess.run([cand, "-c", "import torch; print(torch.__version__)"],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        return None, f"{cand} cannot import torch"
    return cand, proc.stdout.strip()


def run_torch(tpy, args):
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    return common.run_json([tpy, TORCH_WORKER] + [str(a) for a in args], env)


# ---------------------------------------------------------------- machine

def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=30).stdout.strip()
    except Exception:
        return ""


def machine_info():
    cpu = hardware.cpu()
    mem = sh("free -g | awk '/Mem:/ {print $2}'")
    return {
        "cpu": cpu["model_name"], "cpu_info": cpu, "cpu_key": hardware.cpu_key(cpu), "cores": os.cpu_count(),
        "isa": cpu["flags"], "blas_env": hardware.blas_environment(), "memory_gib": mem,
        "os": sh(". /etc/os-release && echo $PRETTY_NAME"), "kernel": platform.release(),
        "python": platform.python_version(), "gcc": sh("g++ --version | head -1"),
        "loadavg_start": sh("cat /proc/loadavg"),
    }


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2 rounds, fewer iterations, no VGG-19 (about 2-3 min)")
    ap.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    ap.add_argument("--json", default=str(ROOT / "bench" / "out" / "results.json"))
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--pairs", type=int, default=16, help="pairs per AlexNet training step (default 16)")
    ap.add_argument("--engine", action="append", default=[], help="LABEL=PATH of another engine")
    ap.add_argument("--no-discover", action="store_true", help="do not look for other engines in the cache")
    ap.add_argument("--variant", action="append", default=[], help="LABEL=ENGINE[:VAR=VAL,...]")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--sections", default="alexnet,models,infer,predict,layers,feeds,gpufeed",
                    help="comma-separated subset of alexnet,models,infer,predict,layers,feeds,gpufeed, plus gemm (a "
                         "standalone GEMM rate per variant); alexnet always runs; predict needs infer")
    ap.add_argument("--add-to", metavar="RESULTS_JSON",
                    help=f"measure only the --sections among {','.join(ADDABLE)} and add them to an earlier run's "
                         "results (bench/out/results.json) of this same CPU, then write its section again; the "
                         "report names what was added and when")
    ap.add_argument("--predict-images", type=int, default=None,
                    help="photos in the tools/predict.py folder (default 256; 128 with --quick)")
    args = ap.parse_args()

    quick = args.quick
    sections = set(args.sections.split(",")) | {"alexnet"}
    rounds = args.rounds or (2 if quick else 5)
    it_alex = 2 if quick else 3
    started = time.time()
    project = str(ROOT / ".engine")
    if not (Path(project) / "bin" / "caffe").exists():
        raise SystemExit("bench: no engine at .engine; run 'make caffe' first")
    engines = {"project": project}
    for spec in args.engine:
        label, path = spec.split("=", 1)
        engines[label] = str(Path(path).resolve())
    if not args.no_discover and not args.engine:
        engines.update(discover_engines(project))
    runner = Runner(engines)

    log(f"engines: {engines}")
    machine = machine_info()
    log(f"CPU: {hardware.cpu_title(machine['cpu_info'])}; "
        + (f"OPENBLAS_CORETYPE={machine['blas_env']['OPENBLAS_CORETYPE']} (set by the environment, left as it is)"
           if "OPENBLAS_CORETYPE" in machine["blas_env"] else "OPENBLAS_CORETYPE not set"))
    infos = {name: runner.caffe(name, ["info"]) for name in engines}
    for name, info in infos.items():
        b, nb = info["blas"], info.get("numpy_blas") or {}
        log(f"BLAS of engine {name}: {b.get('config', b.get('library'))} (kernels {b.get('kernels', '?')}); "
            f"numpy's: {nb.get('config', nb.get('kind', '?'))} (kernels {nb.get('kernels', '?')})")
    for name in engines:
        infos[name]["build"] = read_build_info(engines[name])
        infos[name]["path"] = str(Path(engines[name]).resolve())
    variants = [parse_variant(v, engines) for v in args.variant] or default_variants(engines, infos)
    log("variants: " + "; ".join(v["label"] for v in variants))

    if args.add_to:
        return add_sections(args.add_to, sections - {"alexnet"}, runner, variants, quick, machine, args)

    tpy, tnote = (None, "disabled (--no-torch)") if args.no_torch else torch_python()
    if tpy:
        log(f"PyTorch {tnote}")
    else:
        log(f"PyTorch skipped: {tnote}")

    res = {"machine": machine, "engines": infos, "variants": variants, "torch": tnote if tpy else None,
           "torch_note": None if tpy else tnote, "command": " ".join(shlex.quote(a) for a in sys.argv),
           "quick": quick, "rounds": rounds, "pairs": args.pairs,
           "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}

    # 1. GEMM rate (the ceiling) with each variant's BLAS, interleaved.
    gemm = {v["label"]: [] for v in variants}
    if "gemm" in sections:
        log("GEMM rate")
    for r in range(rounds if "gemm" in sections else 0):
        for v in variants:
            out = runner.caffe(v["engine"], ["gemm", "--sizes", "2048", "--repeats", "2"], v["env"])
            gemm[v["label"]].extend(out["gflops"]["2048"])
    res["gemm"] = gemm

    # 2. AlexNet-PVCNN training step: every variant and PyTorch, interleaved.
    log(f"AlexNet-PVCNN training step, {args.pairs} pairs, {rounds} rounds x {len(variants)} variants"
        + (" + PyTorch" if tpy else ""))
    alex = {v["label"]: [] for v in variants}
    torch_res = []
    for r in range(rounds):
        for v in variants:
            alex[v["label"]].append(runner.caffe(
                v["engine"], ["train", "--model", "alexnet_pvcnn", "--pairs", args.pairs,
                              "--iters", it_alex, "--warmup", 1], v["env"]))
        if tpy:
            torch_res.append(run_torch(tpy, ["--pairs", args.pairs, "--iters", it_alex, "--warmup", 1]))
            if r == 0:
                tb = torch_res[0]["blas"]
                log(f"PyTorch's BLAS: {tb['config']} (kernels {tb['kernels']})")
        log(f"  round {r + 1}/{rounds}: " + ", ".join(
            f"{k} {median(alex[k][-1]['step_s']):.2f} s" for k in alex)
            + (f", torch {median(torch_res[-1]['step_s']):.2f} s" if tpy else ""))
    res["alexnet"] = alex
    res["torch_alexnet"] = torch_res

    # 3. Other models (project engine), interleaved.
    base = variants[0]
    models = [("tiny_pvcnn", 16, 10), ("alexnet_pvcnn", args.pairs, it_alex)]
    if not quick:
        models.append(("vgg19_pvcnn", 2, 2))
    log("training step of " + ", ".join(f"{m} ({p} pairs)" for m, p, _ in models if m != "alexnet_pvcnn"))
    other = {m: [] for m, _, _ in models if m != "alexnet_pvcnn"}
    for r in range(rounds if "models" in sections else 0):
        for m, p, it in models:
            if m == "alexnet_pvcnn":
                continue
            other[m].append(runner.caffe(base["engine"], ["train", "--model", m, "--pairs", p,
                                                          "--iters", it, "--warmup", 1], base["env"]))
    res["models"] = other

    # 4. Inference (deploy nets), interleaved; PyTorch's AlexNet tower and tools/predict.py end to end
    # on real photos right after Caffe's AlexNet forward, in the same round.
    infer_models = [("tiny_pvcnn", 256, 10), ("alexnet_pvcnn", 32, 3)]
    if not quick:
        infer_models.append(("vgg19_pvcnn", 4, 2))
    log("inference: " + ", ".join(f"{m} (batch {b})" for m, b, _ in infer_models)
        + (" + PyTorch" if tpy else "") + (" + tools/predict.py end to end" if "predict" in sections else ""))
    infer = {m: [] for m, _, _ in infer_models}
    torch_infer = []
    predict = {}
    with tempfile.TemporaryDirectory(prefix="virality-bench-predict-") as pdir:
        if "predict" in sections and "infer" in sections:
            n_photos = args.predict_images or (128 if quick else 256)
            try:
                predict["setup"] = runner.caffe_script(base["engine"], predict_e2e.__file__,
                                                       ["setup", "--dir", pdir, "--images", n_photos], base["env"])
                predict["rounds"] = []
            except RuntimeError as err:
                predict = {"error": str(err).splitlines()[0][:300]}
                log(f"tools/predict.py not measured: {err}")
        for r in range(rounds if "infer" in sections else 0):
            for m, b, it in infer_models:
                infer[m].append(runner.caffe(base["engine"], ["infer", "--model", m, "--batch", b,
                                                              "--iters", it, "--warmup", 1], base["env"]))
                if m != "alexnet_pvcnn":
                    continue
                if tpy:
                    torch_infer.append(run_torch(tpy, ["--infer-only", "--infer-batch", b, "--infer-iters", it,
                                                       "--gemm", 0]))
                if "rounds" in predict:
                    env = common.engine_env(runner.engines[base["engine"]], base["env"])
                    predict["rounds"].append({
                        "one_batch_s": predict_e2e.time_cli(PY, pdir, "photos_one_batch", env),
                        "all_s": predict_e2e.time_cli(PY, pdir, "photos", env)})
    res["infer"] = {m: v for m, v in infer.items() if v}
    res["torch_infer"] = torch_infer
    res["predict"] = predict
    res["models"] = {m: v for m, v in other.items() if v}

    # 5. Where the time goes: per-layer breakdown + GEMM model (project engine).
    log("per-layer breakdown of alexnet_pvcnn and tiny_pvcnn")
    res["layers"] = {} if "layers" not in sections else {
        "alexnet_pvcnn": runner.caffe(base["engine"], ["layers", "--model", "alexnet_pvcnn", "--pairs",
                                                       args.pairs, "--iters", 2 if quick else 3], base["env"]),
        "tiny_pvcnn": runner.caffe(base["engine"], ["layers", "--model", "tiny_pvcnn", "--pairs", 16,
                                                    "--iters", 10], base["env"]),
    }
    if "layers" in sections and "infer" in sections:
        log("per-layer breakdown of the alexnet_pvcnn deploy forward, batch 32")
        res["layers_deploy"] = runner.caffe(base["engine"], ["layers", "--model", "alexnet_pvcnn",
                                                             "--deploy-batch", 32, "--iters", 2 if quick else 3],
                                            base["env"])
    if "layers" in sections and "caffe-1.0" in engines:
        log("per-layer breakdown of alexnet_pvcnn on caffe-1.0")
        res["layers_reference"] = {
            "engine": "caffe-1.0",
            "alexnet_pvcnn": runner.caffe("caffe-1.0", ["layers", "--model", "alexnet_pvcnn", "--pairs",
                                                        args.pairs, "--iters", 2 if quick else 3]),
        }

    # 6. The data feeds and pair sampling (bench/feeds.py), the feed beside a GPU step (bench/feed_workers.py).
    for name in ADDABLE:
        res[name] = measure_standalone(name, sections, runner, base, quick)

    res["machine"]["loadavg_end"] = sh("cat /proc/loadavg")
    res["elapsed_s"] = time.time() - started
    write_results(res, args.json, args.out)


def measure_standalone(name, sections, runner, base, quick):
    """One of the ADDABLE sections, or ``{"error": why}`` when it was not asked for or failed."""
    script, what = STANDALONE[name]
    try:
        if name not in sections:
            raise RuntimeError("not asked for (--sections)")
        log(what)
        return common.run_json([PY, str(ROOT / "bench" / script)] + (["--quick"] if quick else []),
                               common.engine_env(runner.engines[base["engine"]], base["env"]))
    except Exception as err:
        log(f"{what}: not measured: {err}")
        return {"error": f"{type(err).__name__}: {err}"}


def add_sections(path, sections, runner, variants, quick, machine, args):
    """``--add-to``: measure ``sections`` (only ones that stand alone) into an earlier run of this CPU."""
    wrong = sorted(sections - set(ADDABLE))
    if wrong or not sections:
        raise SystemExit(f"bench: --add-to measures only {', '.join(ADDABLE)}; --sections asked for "
                         f"{', '.join(wrong) or 'none of them'}")
    try:
        res = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise SystemExit(f"bench: --add-to {path}: cannot read an earlier run's results ({err}); run "
                         "`make bench` first") from None
    if "machine" not in res or "alexnet" not in res:
        raise SystemExit(f"bench: --add-to {path}: not the results.json of a bench run (no machine/alexnet)")
    then, now = hardware.cpu_key(res["machine"].get("cpu_info") or {}), hardware.cpu_key(machine["cpu_info"])
    if then != now:
        raise SystemExit(f"bench: --add-to {path}: that run was on {then}, this machine is {now}; "
                         "a CPU's section holds only its own measurements: run `make bench` here")
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    added = [a for a in res.get("added", []) if a["section"] not in sections]
    for name in sorted(sections):
        res[name] = measure_standalone(name, sections, runner, variants[0], quick)
        added.append({"section": name, "date": date, "quick": quick,
                      "command": " ".join(shlex.quote(a) for a in sys.argv), "loadavg": sh("cat /proc/loadavg")})
    res["added"] = added
    write_results(res, args.json, args.out)


def write_results(res, json_path, out):
    from virality.files import write_text_atomic
    write_text_atomic(json_path, json.dumps(res, indent=1))
    import document
    import report
    key, summary, body = report.render(res)
    document.write(out, key, summary, body)
    log(f"wrote the section for {key} in {out}, and {json_path}"
        + (f", in {res['elapsed_s'] / 60:.1f} min" if "added" not in res else ""))


if __name__ == "__main__":
    main()
