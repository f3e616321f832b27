"""BENCHMARKS.md as one section per CPU model, side by side.

A speed figure means little without the CPU it was taken on, and our machines are not
all one CPU. So BENCHMARKS.md keeps, for every CPU model `make bench` has run on
(vendor, model name, family and model numbers: bench/hardware.cpu_key), the section its
latest run wrote, and a table of the key figures of every section side by side. A new
run replaces its own CPU's section and leaves the others as they are.

Each section sits between marker comments, with its key figures as JSON:

    <!-- cpu-section: AuthenticAMD AMD EPYC, family 26 model 2 -->
    <!-- summary: {"title": ..., "date": ..., ...} -->
    ## AMD EPYC (AuthenticAMD, family 26 model 2; avx2, avx512f, ...)
    ...
    <!-- end cpu-section -->

A BENCHMARKS.md from before these sections (one run, no markers) becomes one section,
keyed by the CPU name its machine table gives, since it recorded no vendor or family.
"""
import json
import re

BEGIN = "<!-- cpu-section: {key} -->"
END = "<!-- end cpu-section -->"
_SECTION = re.compile(r"<!-- cpu-section: (?P<key>.+?) -->\n<!-- summary: (?P<summary>\{.*?\}) -->\n"
                      r"(?P<body>.*?)\n<!-- end cpu-section -->", re.S)

TITLE = "# Benchmarks"
INTRO = ("Written by `make bench` (`bench/run.py`; bench/README.md explains the harness): one section per "
         "CPU model it has run on, each from that CPU's latest run; a run replaces only its own CPU's "
         "section. Do not edit by hand. Decisions drawn from these numbers are in docs/ENGINE.md (\"BLAS\").")

#: Rows of the side-by-side table: summary key -> label.
SUMMARY_ROWS = (
    ("date", "run"),
    ("kernels", "BLAS kernels: engine / numpy / PyTorch"),
    ("coretype", "OPENBLAS_CORETYPE in force"),
    ("ceiling", "GEMM ceiling (float32 2048^3, best library)"),
    ("train", "AlexNet-PVCNN training, 16 pairs: Caffe / PyTorch pairs/s"),
    ("train_ceiling", "Caffe training, % of the ceiling"),
    ("infer", "AlexNet deploy, batch 32: Caffe / PyTorch images/s"),
    ("predict", "tools/predict.py end to end, images/s (% of the forward alone)"),
    ("targets", "targets met"),
)


class DocumentError(ValueError):
    pass


def parse(text):
    """[(key, summary dict, body)] of a BENCHMARKS.md, in file order."""
    sections = []
    for m in _SECTION.finditer(text):
        try:
            summary = json.loads(m.group("summary"))
        except json.JSONDecodeError as err:
            raise DocumentError(f"section '{m.group('key')}': its summary comment is not JSON ({err})") from None
        sections.append((m.group("key"), summary, m.group("body")))
    return sections


def legacy_section(text):
    """The one run of a BENCHMARKS.md written before per-CPU sections, as a section."""
    cpu = re.search(r"^\| CPU \| (?P<name>.+?), \d+ cores visible; (?P<flags>[^|]*?) \|$", text, re.M)
    if not cpu:
        raise DocumentError("it has no per-CPU sections and no '| CPU | ... |' row to key its one run by")
    date = re.search(r" on (\d{4}-\d\d-\d\d \d\d:\d\d UTC)", text)
    name, flags = cpu.group("name").strip(), cpu.group("flags").strip()
    key = f"{name}, vendor/family/model not recorded"
    title = f"{name} (vendor, family and model not recorded; {flags})"
    lines = text.splitlines()
    if lines and lines[0].startswith("# "):
        lines = lines[1:]
    body = [f"## {title}", "",
            "Written before BENCHMARKS.md kept one section per CPU: this run recorded the CPU's name and "
            "flags only, and its \"GEMM ceiling\" was the engine's own BLAS, not the best library on the machine."]
    for line in lines:
        body.append("#" + line if line.startswith("#") else line)
    summary = {"title": title, "date": date.group(1) if date else "?"}
    return key, summary, "\n".join(body).rstrip()


def compose(sections):
    out = [TITLE, "", INTRO, ""]
    if sections:
        out += ["## Side by side", "",
                "| | " + " | ".join(s.get("title", k) for k, s, _ in sections) + " |",
                "| --- |" + " --- |" * len(sections)]
        for field, label in SUMMARY_ROWS:
            out.append(f"| {label} | " + " | ".join(str(s.get(field, "-")) for _, s, _ in sections) + " |")
        out.append("")
    for key, summary, body in sections:
        out += [BEGIN.format(key=key), f"<!-- summary: {json.dumps(summary, sort_keys=True)} -->", body, END, ""]
    return "\n".join(out)


def merge(existing, key, summary, body):
    """``existing`` BENCHMARKS.md text (or None) with the section of ``key`` replaced (or added)."""
    if "\n" in key or "-->" in key:
        raise DocumentError(f"CPU key {key!r} cannot be a marker")
    sections = []
    if existing and existing.strip():
        sections = parse(existing)
        if not sections:
            sections = [legacy_section(existing)]
    new = (key, summary, body.rstrip())
    for i, (k, _s, _b) in enumerate(sections):
        if k == key:
            sections[i] = new
            break
    else:
        sections.append(new)
    return compose(sections)


def write(path, key, summary, body):
    """Merge a run's section into the file at ``path``, atomically."""
    from pathlib import Path
    from virality.files import write_text_atomic
    path = Path(path)
    existing = path.read_text() if path.exists() else None
    try:
        text = merge(existing, key, summary, body)
    except DocumentError as err:
        raise DocumentError(f"{path}: {err}; move it away or pass --out elsewhere") from None
    write_text_atomic(path, text)
    return path
