#!/usr/bin/env python3
"""Mutation testing: change one line of a library module at a time and see whether the tests notice.

    make mutants                                        # the modules of TARGETS, 1 worker
    .venv/bin/python tools/mutants.py --jobs 2 --modules virality/experiments/metrics.py
    .venv/bin/python tools/mutants.py --list virality/model/ranking.py     # print the mutants, run nothing

Each mutant is one AST node changed on one line (operators, comparisons, boolean operators,
constants, a call statement replaced by ``pass``; strings and docstrings are left alone). For
each mutant, tests of the module's own selection (TARGETS: the test files that exercise it, fast
ones) run in a private copy of the work tree with ``pytest -x``; a failure or a timeout catches
the mutant. Which tests: one traced run of the selection per module (tools/mutants_trace.py, in
every Python process it starts) records the lines each test executes; a mutant runs the tests
that executed its statement plus any test that started a process the recorder could not follow,
and the whole selection when its line ran outside any test (imports) or in no traced test
(``--no-select``: always the whole selection). Mutants listed in EQUIVALENT (no observable change, with the reason) are
reported apart and left out of the score.

Writes mutants/report.md (per-module score, survivors with their line) and mutants/report.json;
``--write-docs`` also puts the score table into docs/TESTING.md between its markers. Not part of
``make test``: docs/TESTING.md gives the run time.
"""
import argparse
import ast
import json
import os
import queue
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from virality.files import write_text_atomic  # noqa: E402

# module -> pytest arguments: the tests that exercise it (slow paper-size tests left out).
TARGETS = {
    "virality/model/ranking.py": ["tests/test_ranking_loss.py", "tests/test_metrics.py", "tests/test_config_effect.py"],
    "virality/experiments/metrics.py": ["tests/test_metrics.py", "tests/test_protocol.py", "tests/test_workflow.py", "-k",
                            "test_metrics or spearman or wilson or rankdata or pair_scores or pairwise or hand_made "
                            "or user_specific or image_bootstrap"],
    "virality/data/pairs.py": ["tests/test_pairs.py", "tests/test_pairs_edges.py", "tests/test_config_effect.py",
                          "tests/test_datasets_misc.py", "-k", "not ten_million"],
    "virality/train/training.py": ["tests/test_training_driver.py", "tests/test_workflow.py",
                                   "tests/test_reliability_training.py", "tests/test_multigpu.py", "-k",
                                   "driver or dropper or validation or non_finite or resume or signal or snapshot "
                                   "or disk_full or refused or truncated or multigpu"],
    "python_layers/ranking_loss.py": ["tests/test_ranking_loss.py", "tests/test_config_effect.py"],
    "python_layers/pair_data.py": ["tests/test_pair_feeds.py", "tests/test_pair_workers.py",
                                   "tests/test_training_driver.py", "-k",
                                   "layer or pair_index or resume or count_test_records or seek_all"],
}

#: (module, original line, mutated line) -> why the change cannot be observed. Lines as the report prints
#: them (stripped, comments included); a change to the line makes the entry stale, and the mutant runs again.
_RESHAPE = "numpy reads any negative size in reshape as 'infer this dimension': reshape(-2) is reshape(-1)"
_LIMIT = ("a memory limit of the sampler: it changes how many keys one round draws or which lookup is used, "
          "not the contract (distinct, uniform, balanced, deterministic per seed; both paths are tested)")
_PM1 = "labels are +1 or -1, never 0"
_COPY = "whether astype copies is invisible: the arrays are not written to"
_PATH = ("chooses between the enumerating and the drawing path (or the mask and the sorted path) at a "
         "boundary; both give distinct, uniform, balanced pairs (both are tested)")
_LOOKUP = ("moves a boundary between the lookup-table and the binary-search membership test; both give the "
           "same answer there (both are tested)")
_WIDTH = ("a wider key space (or a different floor for an empty one) keeps lo * width + hi one-to-one "
          "on the pairs")
_GPU = "the GPU branch: not observable on the CPU-only machines the tests run on"
_DRAWS = ("how many keys one round draws: the loop draws until it has enough, so only the speed changes "
          "(and which equally valid uniform sample a seed gives)")
_BOOT = ("which equally valid bootstrap sample the fixed seed gives (the seed, or how many rounds are drawn at "
         "once): the documented procedure (docs/PROTOCOL.md: 2000 rounds, images resampled, percentile) is the "
         "same, and the report stays reproducible")
_UNUSED = ("seek_python_feeds' return value (how many feeds it told to seek) is read by no caller (the driver, "
           "virality/train/multigpu.py)")
EQUIVALENT = {
    ("virality/data/pairs.py", "CHUNK = 1 << 24", "CHUNK = 1 << 25"): _LIMIT,
    ("virality/data/pairs.py", "CHUNK = 1 << 24", "CHUNK = 2 << 24"): _LIMIT,
    ("virality/data/pairs.py", "MASK_LIMIT = 1 << 27", "MASK_LIMIT = 1 << 28"): _LIMIT,
    ("virality/data/pairs.py", "MASK_LIMIT = 1 << 27", "MASK_LIMIT = 2 << 27"): _LIMIT,
    ("virality/data/pairs.py", "TABLE_LIMIT = 1 << 24", "TABLE_LIMIT = 1 << 25"): _LIMIT,
    ("virality/data/pairs.py", "TABLE_LIMIT = 1 << 24", "TABLE_LIMIT = 2 << 24"): _LIMIT,
    ("virality/experiments/metrics.py", "return max(0.0, centre - half), min(1.0, centre + half)",
     "return max(0.0, centre - half), min(2.0, centre + half)"):
        "the Wilson upper bound never exceeds 1 by more than a rounding error; the clamp only removes that",
    ("virality/experiments/metrics.py", "predicted = np.asarray(predicted, dtype=np.float64).reshape(-1)",
     "predicted = np.asarray(predicted, dtype=np.float64).reshape(-2)"): _RESHAPE,
    ("virality/experiments/metrics.py", "actual = np.asarray(actual, dtype=np.float64).reshape(-1)",
     "actual = np.asarray(actual, dtype=np.float64).reshape(-2)"): _RESHAPE,
    ("virality/model/ranking.py", "y = np.asarray(y, dtype=np.float64).reshape(-1)",
     "y = np.asarray(y, dtype=np.float64).reshape(-2)"): _RESHAPE,
    ("virality/model/ranking.py", "f1 = np.asarray(f1, dtype=np.float64).reshape(-1)",
     "f1 = np.asarray(f1, dtype=np.float64).reshape(-2)"): _RESHAPE,
    ("virality/model/ranking.py", "f2 = np.asarray(f2, dtype=np.float64).reshape(-1)",
     "f2 = np.asarray(f2, dtype=np.float64).reshape(-2)"): _RESHAPE,
    ("virality/model/ranking.py", "if label != 1.0 and label != -1.0:", "if label != 1.0 and label != 1.0:"):
        "only decides when check_labels runs (a fast path); check_labels raises iff some label is bad, "
        "and it still runs for every label that is not +1",
    ("virality/model/ranking.py", "if label != 1.0 and label != -1.0:", "if label != 1.0 or label != -1.0:"):
        "check_labels then runs for every pair (slower, same result: it raises iff some label is bad)",
    ("virality/model/ranking.py", "right += 0.5 if d == 0.0 else float(d * label > 0.0)   # as pairwise_accuracy",
     "right += 0.5 if d == 0.0 else float(d * label >= 0.0)   # as pairwise_accuracy"):
        "labels are +-1, so d * label == 0 only when d == 0, which the first branch takes",
    ("virality/model/ranking.py", "right += 0.5 if d == 0.0 else float(d * label > 0.0)   # as pairwise_accuracy",
     "right += 0.5 if d == 0.0 else float(d / label > 0.0)   # as pairwise_accuracy"):
        "labels are +-1: d / label == d * label",
    ("virality/model/ranking.py", "agree = np.sign(f1 - f2) * y", "agree = np.sign(f1 - f2) / y"):
        "labels are checked to be +-1 just before: sign / y == sign * y",
    ("virality/model/ranking.py", "return float(np.mean(np.where(agree == 0, 0.5, agree > 0)))",
     "return float(np.mean(np.where(agree == 0, 0.5, agree >= 0)))"):
        "agree == 0 is taken by the first branch of np.where",
    ("virality/data/pairs.py", "y = np.where(rng.integers(0, 2, size=n, dtype=np.int8) > 0, 1, -1).astype(np.int32)",
     "y = np.where(rng.integers(0, 3, size=n, dtype=np.int8) > 0, 1, -1).astype(np.int32)"):
        "any i.i.d. coins give an exchangeable vector; flipping a random subset of the surplus then makes it "
        "uniform over balanced label vectors all the same",
    ("virality/data/pairs.py", "surplus = int((y > 0).sum()) - n_pos", "surplus = int((y >= 0).sum()) - n_pos"): _PM1,
    ("virality/data/pairs.py", "sign = 1 if surplus > 0 else -1", "sign = 1 if surplus >= 0 else -1"):
        "inside `if surplus:`, so surplus is never 0",
    ("virality/data/pairs.py", "if max(viral.max(initial=0), nonviral.max(initial=0)) > top:",
     "if max(viral.max(initial=0), nonviral.max(initial=1)) > top:"): "the initial value only matters for empty arrays",
    ("virality/data/pairs.py", "if max(viral.max(initial=0), nonviral.max(initial=0)) > top:",
     "if max(viral.max(initial=1), nonviral.max(initial=0)) > top:"): "the initial value only matters for empty arrays",
    ("virality/data/pairs.py", "viral, nonviral = viral.astype(np.int32, copy=False), nonviral.astype(np.int32, copy=False)",
     "viral, nonviral = viral.astype(np.int32, copy=False), nonviral.astype(np.int32, copy=True)"): _COPY,
    ("virality/data/pairs.py", "viral, nonviral = viral.astype(np.int32, copy=False), nonviral.astype(np.int32, copy=False)",
     "viral, nonviral = viral.astype(np.int32, copy=True), nonviral.astype(np.int32, copy=False)"): _COPY,
    ("virality/data/pairs.py", "first = y > 0", "first = y >= 0"): _PM1,
    ("virality/data/pairs.py", "if 2 * n > available:", "if 2 * n >= available:"): _PATH,
    ("virality/data/pairs.py", "if 2 * n > available:", "if 2 / n > available:"): _PATH,
    ("virality/data/pairs.py",
     "drop = _sample_keys(rng, space, excluded, available - n) if available > n else np.empty(0, np.int64)",
     "drop = _sample_keys(rng, space, excluded, available - n) if available >= n else np.empty(0, np.int64)"):
        "at available == n both branches drop nothing",
    ("virality/data/pairs.py", "if space <= MASK_LIMIT:", "if space < MASK_LIMIT:"): _PATH,
    ("virality/data/pairs.py", "mask[excluded] = 2", "mask[excluded] = 3"):
        "the mask only asks 'free (0)?' and 'drawn (1)?'; any other mark for excluded keys reads the same",
    ("virality/data/pairs.py", 'expect = space * np.log(free / max(free - need, 0.5))',
     'expect = space * np.log(free * max(free - need, 0.5))'): _DRAWS,
    ("virality/data/pairs.py", 'expect = space * np.log(free / max(free - need, 0.5))',
     'expect = space * np.log(free / max(free - need, 1.5))'): _DRAWS,
    ("virality/data/pairs.py", 'expect = space * np.log(free / max(free - need, 0.5))',
     'expect = space / np.log(free / max(free - need, 0.5))'): _DRAWS,
    ("virality/data/pairs.py", 'return int(min(CHUNK, expect * 1.03 + 1024))',
     'return int(min(CHUNK, expect * 1.03 + 1025))'): _DRAWS,
    ("virality/data/pairs.py", 'return int(min(CHUNK, expect * 1.03 + 1024))',
     'return int(min(CHUNK, expect * 2.0300000000000002 + 1024))'): _DRAWS,
    ("virality/data/pairs.py", 'return int(min(CHUNK, expect * 1.03 + 1024))',
     'return int(min(CHUNK, expect / 1.03 + 1024))'): _DRAWS,
    ("virality/data/pairs.py", 'while have < n:',
     'while have <= n:'): _DRAWS,
    ("virality/data/pairs.py", 'draws = rng.integers(0, space, size=_draw_count(space, space - excluded.size - have, n - have),',
     'draws = rng.integers(0, space, size=_draw_count(space, space + excluded.size - have, n - have),'): _DRAWS,
    ("virality/data/pairs.py", 'draws = rng.integers(0, space, size=_draw_count(space, space - excluded.size - have, n - have),',
     'draws = rng.integers(0, space, size=_draw_count(space, space - excluded.size + have, n - have),'): _DRAWS,
    ("virality/data/pairs.py", 'draws = rng.integers(0, space, size=_draw_count(space, space - excluded.size - have, n - have),',
     'draws = rng.integers(0, space, size=_draw_count(space, space - excluded.size - have, n + have),'): _DRAWS,
    ("virality/data/pairs.py", "tp = np.asarray(tp) if tp is not None else np.empty((0, 3))",
     "tp = np.asarray(tp) if tp is not None else np.empty((0, 4))"):
        "an empty array either way: the next line returns the (0, 3) empty pairs for any size-0 array",
    ("virality/data/pairs.py", "return np.empty((0, 3), dtype=np.int64)", "return np.empty((0, 4), dtype=np.int64)"):
        "an empty array of test pairs: its column count is never read",
    ("virality/data/pairs.py", "if lo >= 0 and hi < TABLE_LIMIT:", "if lo > 0 and hi < TABLE_LIMIT:"): _LOOKUP,
    ("virality/data/pairs.py", "if lo >= 0 and hi < TABLE_LIMIT:", "if lo >= 1 and hi < TABLE_LIMIT:"): _LOOKUP,
    ("virality/data/pairs.py", "if lo >= 0 and hi < TABLE_LIMIT:", "if lo >= 0 and hi <= TABLE_LIMIT:"): _LOOKUP,
    ("virality/data/pairs.py", "table = np.zeros(int(hi) + 1, dtype=bool)", "table = np.zeros(int(hi) + 2, dtype=bool)"):
        "a lookup table one entry longer than needed answers the same",
    ("virality/data/pairs.py", "if tp.size == 0 or viral.size == 0 or nonviral.size == 0:",
     "if tp.size == 0 and viral.size == 0 and (nonviral.size == 0):"):
        "with an empty pool no test pair is in both pools, so the keys come out empty either way",
    ("virality/data/pairs.py", "if tp.size == 0 or viral.size == 0 or nonviral.size == 0:",
     "if tp.size == 1 or viral.size == 0 or nonviral.size == 0:"): "test_pairs is (M, 3): its size is never 1",
    ("virality/data/pairs.py", "ok = thi < width", "ok = thi <= width"):
        "a test key lo * width + width equals (lo + 1) * width + 0, which no training pair has (lo < hi)",
    ("virality/data/pairs.py", 'while have.size < n:',
     'while have.size <= n:'): _DRAWS,
    ("virality/data/pairs.py", 'draws = rng.integers(0, space, size=_draw_count(space, space - excluded.size - have.size, n - have.size),',
     'draws = rng.integers(0, space, size=_draw_count(space, space + excluded.size - have.size, n - have.size),'): _DRAWS,
    ("virality/data/pairs.py", 'draws = rng.integers(0, space, size=_draw_count(space, space - excluded.size - have.size, n - have.size),',
     'draws = rng.integers(0, space, size=_draw_count(space, space - excluded.size + have.size, n - have.size),'): _DRAWS,
    ("virality/data/pairs.py", 'draws = rng.integers(0, space, size=_draw_count(space, space - excluded.size - have.size, n - have.size),',
     'draws = rng.integers(0, space, size=_draw_count(space, space - excluded.size - have.size, n + have.size),'): _DRAWS,
    ("virality/data/pairs.py", 'width = int(max(hi.max(initial=0), 0)) + 1',
     'width = int(max(hi.max(initial=0), 0)) + 2'): _WIDTH,
    ("virality/data/pairs.py", 'width = int(max(hi.max(initial=0), 0)) + 1',
     'width = int(max(hi.max(initial=0), 1)) + 1'): _WIDTH,
    ("virality/data/pairs.py", 'width = int(max(hi.max(initial=0), 0)) + 1',
     'width = int(max(hi.max(initial=1), 0)) + 1'): _WIDTH,
    ("virality/data/pairs.py", 'width = int(hi.max(initial=0)) + 1',
     'width = int(hi.max(initial=0)) + 2'): _WIDTH,
    ("virality/data/pairs.py", 'width = int(hi.max(initial=0)) + 1',
     'width = int(hi.max(initial=1)) + 1'): _WIDTH,
    ("virality/data/pairs.py", 'winner = np.where(p[:, 2] > 0, p[:, 0], p[:, 1])',
     'winner = np.where(p[:, 2] >= 0, p[:, 0], p[:, 1])'): _PM1,
    ("virality/data/pairs.py", 'loser = np.where(p[:, 2] > 0, p[:, 1], p[:, 0])',
     'loser = np.where(p[:, 2] >= 0, p[:, 1], p[:, 0])'): _PM1,
    ("virality/train/training.py", "return int(load_npy(path, mmap=True).shape[0])",
     "return int(load_npy(path, mmap=False).shape[0])"):
        "mapping the pair file only spares reading it to count its rows; the count (and the truncation check "
        "of load_npy, which reads the header either way) is the same",
    ("virality/experiments/metrics.py", "index = index.reshape(-1, 2)", "index = index.reshape(-2, 2)"): _RESHAPE,
    ("virality/experiments/metrics.py", "while len(stats) < rounds:", "while len(stats) <= rounds:"):
        "stats[:rounds] is kept after the loop: a batch drawn past the first `rounds` statistics is cut off",
    ("virality/experiments/metrics.py", "BOOTSTRAP_SEED = 0", "BOOTSTRAP_SEED = 1"): _BOOT,
    ("virality/experiments/metrics.py",
     "counts = rng.multinomial(images.size, np.full(images.size, 1.0 / images.size), size=256).astype(np.float64)",
     "counts = rng.multinomial(images.size, np.full(images.size, 1.0 / images.size), size=257).astype(np.float64)"):
        _BOOT,
    ("virality/train/training.py", "return seek(iteration) if seek else 0", "return seek(iteration) if seek else 1"):
        _UNUSED,
    ("virality/train/training.py", "return 0", "return 1"): _UNUSED,
    ("python_layers/pair_data.py", """self.source.check_ids(pairs[:, :2].reshape(-1), f"pair file {params['pairs']}")""",
     """self.source.check_ids(pairs[:, :2].reshape(-2), f"pair file {params['pairs']}")"""): _RESHAPE,
    ("python_layers/pair_data.py", '"prefetch": (3, int),', '"prefetch": (4, int),'):
        "how many batches are prepared ahead: the same batches in the same order, only the memory changes",
    ("python_layers/pair_data.py", '"cache_mb": (1024, int),', '"cache_mb": (1025, int),'):
        "the decoded-store cache limit: the test stores are far below 1 GB either way, and a cached image is the "
        "stored one",
    ("virality/train/training.py", 'history = HISTORY_BLOBS.get(solver_type or "SGD", 2) * sum(distinct.values())',
     'history = HISTORY_BLOBS.get(solver_type or "SGD", 3) * sum(distinct.values())'):
        "every solver type Caffe 1.0 accepts is in HISTORY_BLOBS: the fallback only serves a type Caffe refuses "
        "before any snapshot",
    ("virality/train/training.py", "caffe.set_device(cfg.gpu)", "pass"): _GPU,
    ("virality/train/training.py", "caffe.set_mode_gpu()", "pass"): _GPU,
    ("virality/train/training.py", 'eta = (max_iter - done) * per_iter / rate if rate > 0 else float("nan")',
     'eta = (max_iter - done) * per_iter / rate if rate >= 0 else float("nan")'):
        "the rate is never 0: every progress row follows at least one step of its window (a guard only)",
    ("virality/train/training.py", "gc.collect()", "pass"):
        "both calls free a solver that was just dropped (before the next one is built; when training ends) at "
        "once instead of at the next collection: peak memory, not results; no test can tell (the NaN-loss run "
        "through tools/train.py exits 3 cleanly without either)",
    ("virality/train/training.py", "caffe.set_mode_cpu()", "pass"):
        "Caffe starts in CPU mode, and on the CPU-only machines the tests run on nothing sets GPU mode (the "
        "call matters after a GPU run in the same process)",
    ("virality/train/training.py", "self.bad = 0        # validations since the last gain",
     "self.bad = 1        # validations since the last gain"):
        "PlateauDropper's initial count: the first validation is always a gain over best = -inf (the accuracies "
        "are finite: both count right answers), which sets bad = 0 before the count is read",
}


@dataclass
class Mutant:
    module: str
    line: int           # 1-based
    before: str         # the line as it was (stripped)
    after: str          # the line as mutated (stripped)
    kind: str
    status: str = ""    # caught, survived, timeout, equivalent, error
    seconds: float = 0.0
    tests: int = 0      # how many tests ran for it (0: the module's whole selection, TARGETS)


# ------------------------------------------------------------------ generating mutants

_SWAP_OPS = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.FloorDiv: ast.Div,
             ast.Mod: ast.FloorDiv, ast.Pow: ast.Mult, ast.BitAnd: ast.BitOr, ast.BitOr: ast.BitAnd}
_SWAP_CMP = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq,
             ast.NotEq: ast.Eq, ast.Is: ast.IsNot, ast.IsNot: ast.Is, ast.In: ast.NotIn, ast.NotIn: ast.In}


def _docstring_nodes(tree):
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def _variants(node):
    """(kind, replacement node) for each one-node change of ``node``."""
    if isinstance(node, ast.BinOp) and type(node.op) in _SWAP_OPS:
        yield "operator", ast.BinOp(node.left, _SWAP_OPS[type(node.op)](), node.right)
    elif isinstance(node, ast.AugAssign) and type(node.op) in _SWAP_OPS:
        yield "operator", ast.AugAssign(node.target, _SWAP_OPS[type(node.op)](), node.value)
    elif isinstance(node, ast.Compare):
        for i, op in enumerate(node.ops):
            if type(op) in _SWAP_CMP:
                ops = list(node.ops)
                ops[i] = _SWAP_CMP[type(op)]()
                yield "comparison", ast.Compare(node.left, ops, node.comparators)
    elif isinstance(node, ast.BoolOp):
        yield "boolean", ast.BoolOp(ast.Or() if isinstance(node.op, ast.And) else ast.And(), node.values)
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Not, ast.USub)):
        yield "unary", node.operand
    elif isinstance(node, ast.Constant) and type(node.value) in (bool, int, float):
        value = node.value
        new = (not value) if isinstance(value, bool) else value + 1
        yield "constant", ast.Constant(new)
    elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
        yield "statement", ast.Pass()


def _segment(lines, node):
    """(line index, start col, end col) of a node that sits on one line, else None."""
    if not hasattr(node, "lineno") or node.lineno != getattr(node, "end_lineno", None):
        return None
    return node.lineno - 1, node.col_offset, node.end_col_offset


def generate(module, source):
    """Every one-line mutant of ``source``: list of (Mutant, mutated source)."""
    tree = ast.parse(source)
    lines = source.splitlines(keepends=True)
    skip = _docstring_nodes(tree)
    out, seen = [], set()
    for node in ast.walk(tree):
        if id(node) in skip or isinstance(node, ast.JoinedStr):
            continue
        seg = _segment(lines, node)
        if seg is None:
            continue
        row, start, end = seg
        line = lines[row]
        if "no mutate" in line:
            continue
        for kind, replacement in _variants(node):
            new_line = line[:start] + ast.unparse(replacement) + line[end:]
            if new_line == line or (row, new_line) in seen:
                continue
            mutated = "".join(lines[:row] + [new_line] + lines[row + 1:])
            try:
                if ast.dump(ast.parse(mutated)) == ast.dump(tree):
                    continue
            except SyntaxError:
                continue
            seen.add((row, new_line))
            out.append((Mutant(module, row + 1, line.strip(), new_line.strip(), kind), mutated))
    out.sort(key=lambda m: (m[0].line, m[0].after))
    return out


# ------------------------------------------------------------------ running them

def _tracked_files():
    res = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                         text=True, check=True)
    return [p for p in res.stdout.splitlines() if (ROOT / p).is_file()]


def _shadow_venv(copy):
    """copy/.venv: the work tree's venv by symlinks, except bin/caffe, whose wrapper names the copy
    (it puts the project root first on PYTHONPATH, so Caffe's CLI imports the mutated layers)."""
    real = Path(os.path.realpath(ROOT / ".venv"))
    venv = copy / ".venv"
    (venv / "bin").mkdir(parents=True)
    for entry in real.iterdir():
        if entry.name != "bin":
            os.symlink(entry, venv / entry.name)
    for entry in (real / "bin").iterdir():
        if entry.name == "caffe":
            (venv / "bin/caffe").write_text(entry.read_text().replace(str(ROOT), str(copy)))
            (venv / "bin/caffe").chmod(0o755)
        elif entry.is_symlink():
            os.symlink(os.readlink(entry), venv / "bin" / entry.name)
        else:
            os.symlink(entry, venv / "bin" / entry.name)


def make_copy(base):
    """A private copy of the work tree (tracked and untracked files), sharing the venv and the engine."""
    for rel in _tracked_files():
        dst = base / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, dst)
    os.symlink(os.path.realpath(ROOT / ".engine"), base / ".engine")
    _shadow_venv(base)
    return base


def _kill_group(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_tests(copy, args, timeout, extra_path=(), extra_env=None, output=None):
    """(status, seconds): pytest ``args`` in ``copy``; its modules shadow the work tree's (PYTHONPATH).
    ``output``, a list, receives the end of pytest's output."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(copy), *map(str, extra_path)]), GLOG_minloglevel="2",
               PYTHONDONTWRITEBYTECODE="1", **(extra_env or {}))
    cmd = [str(copy / ".venv/bin/python"), "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
           f"--basetemp={copy}/.pytest_tmp", *args]
    start = time.time()
    # pytest in a session of its own: a timeout, or the end of the run, kills what it started too (a
    # hung tools/train.py left behind would take a core from every later mutant).
    proc = subprocess.Popen(cmd, cwd=copy, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        proc.communicate()
        return "timeout", time.time() - start
    except BaseException:
        _kill_group(proc)
        raise
    _kill_group(proc)
    res = subprocess.CompletedProcess(cmd, proc.returncode, out, "")
    if output is not None:
        output.append(out[-3000:])
    # 0 passed; 4 usage error and 5 no tests selected are errors of TARGETS; anything else (1 failed,
    # 2 interrupted, 3 internal error, < 0 Caffe aborted or crashed) means the tests noticed.
    status = {0: "survived", 4: "error", 5: "error"}.get(res.returncode, "caught")
    return status, time.time() - start


# ------------------------------------------------------------------ which tests can see a line

@dataclass
class Coverage:
    """What one traced run of a module's selection executed (tools/mutants_trace.py records it)."""
    order: list         # node ids, in run order
    lines: dict         # node id -> set of lines it executed (its fixtures' lines included)
    outside: set        # lines run outside any test (imports, collection, session end)
    opaque: set         # node ids that started a process the recorder could not follow
    seconds: dict = None   # node id -> seconds of the test, traced (its fixtures' setup included)
    startup: float = 0.0   # seconds of the traced run outside any test (start-up, collection)

    def timeout(self, tests, floor=60.0):
        """A timeout for running ``tests`` alone: 3x their traced time, start-up included, at least
        ``floor`` (tracing only adds time, so the margin is larger than 3x)."""
        return max(floor, 3 * (self.startup + sum(self.seconds.get(t, 0.0) for t in tests)))


def read_coverage(out):
    """Coverage from a recording directory: session.json and the lines-<pid>.txt of every process."""
    session = json.loads((out / "session.json").read_text())
    by_ctx = {}
    for path in sorted(out.glob("lines-*.txt")):
        for row in path.read_text().splitlines():
            ctx, _, line = row.rpartition("\t")
            if ctx:                                     # a row cut short by a killed process is skipped
                by_ctx.setdefault(ctx, set()).add(int(line))
    lines, opaque, seconds = {}, set(), {}
    for test in session["order"]:
        ctxs = [test, *session["fixtures"].get(test, [])]
        lines[test] = set().union(*(by_ctx.get(c, set()) for c in ctxs))
        if any(c in session["opaque"] for c in ctxs):
            opaque.add(test)
        # a fixture another test set up is set up by this one when that test does not run
        seconds[test] = session["seconds"].get(test, 0.0) + sum(session["fixture_seconds"].get(c, 0.0)
                                                                for c in ctxs[1:])
    return Coverage(session["order"], lines, by_ctx.get("<outside>", set()), opaque, seconds)


def statement_lines(source):
    """line -> the lines of the statements whose code that line belongs to: all lines of a simple
    statement, the header lines of a compound one (``if``/``for``/``def`` ... up to its body). A
    node of a multi-line statement may run under another of the statement's lines."""
    out = {}
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.stmt):
            continue
        body = [getattr(node, f) for f in ("body", "handlers", "orelse", "finalbody", "cases")
                if isinstance(getattr(node, f, None), list) and getattr(node, f)]
        last = min(b[0].lineno for b in body) - 1 if body else node.end_lineno
        span = set(range(node.lineno, max(node.lineno, last) + 1))
        for line in span:
            out.setdefault(line, set()).update(span)
    return out


def function_body_lines(source):
    """Lines inside a function body. The others (module level, class bodies, ``def`` lines with their
    defaults and decorators) run once, at import, in whatever test first imports the module, and
    what they define reaches every later test: a mutant there runs the whole selection."""
    out = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):   # a module-level lambda: whole selection
            for stmt in node.body:
                out.update(range(stmt.lineno, stmt.end_lineno + 1))
    return out


def select_tests(coverage, lines):
    """The node ids to run for a mutant on ``lines`` (run order), or None for the whole selection:
    every test that executed one of the lines, and every opaque test; None when a line ran outside
    any test or when no test executed any of them (it may run only where nothing was traced)."""
    if lines & coverage.outside:
        return None
    seeing = [t for t in coverage.order if coverage.lines[t] & lines]
    if not seeing:
        return None
    chosen = set(seeing) | coverage.opaque
    # file by file as pytest ran them (module fixtures set up once), the quickest tests of a file first:
    # with -x a caught mutant ends at its first failing test
    files = list(dict.fromkeys(t.split("::")[0] for t in coverage.order))
    seconds = coverage.seconds or {}
    return sorted((t for t in coverage.order if t in chosen),
                  key=lambda t: (files.index(t.split("::")[0]), seconds.get(t, 0.0)))


_SITECUSTOMIZE = """# Written by tools/mutants.py for one recording run: trace the target module in every process.
import importlib.machinery, os, sys
import mutants_trace
mutants_trace.start_from_env()
_here = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.machinery.PathFinder.find_spec(        # the sitecustomize this one shadows, if any
    "sitecustomize", [p for p in sys.path if os.path.abspath(p or ".") != _here])
if _spec is not None and _spec.loader is not None:
    _spec.loader.exec_module(type(sys)("_shadowed_sitecustomize"))
"""


def coverage_inputs(module):
    """sha1 of every file a module's recorded coverage depends on: the module, its test files (TARGETS),
    tests/conftest.py and the recorder. A saved recording is reused only while all of them are unchanged."""
    import hashlib
    files = [module, "tests/conftest.py", "tools/mutants_trace.py"]
    files += [a.split("::")[0] for a in TARGETS[module] if a.split("::")[0].endswith(".py")]
    return {f: hashlib.sha1((ROOT / f).read_bytes()).hexdigest() for f in sorted(set(files))}


def save_coverage(path, cov, baseline, inputs):
    write_text_atomic(path, json.dumps(
        {"inputs": inputs, "baseline": baseline, "order": cov.order,
         "lines": {t: sorted(v) for t, v in cov.lines.items()}, "outside": sorted(cov.outside),
         "opaque": sorted(cov.opaque), "seconds": cov.seconds, "startup": cov.startup}, indent=1))


def load_coverage(path, inputs):
    """(Coverage, baseline seconds) saved by an earlier run, or None when missing or made from other files."""
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if d.get("inputs") != inputs:
        return None
    cov = Coverage(d["order"], {t: set(v) for t, v in d["lines"].items()}, set(d["outside"]), set(d["opaque"]),
                   d["seconds"], d["startup"])
    return cov, d["baseline"]


def record_coverage(copy, module, args, timeout):
    """(Coverage or None when the tests fail, seconds): the module's selection run once, traced."""
    site = copy / ".mutants_trace" / "site"
    out = copy / ".mutants_trace" / module.replace("/", "_")
    shutil.rmtree(out, ignore_errors=True)
    site.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True)
    shutil.copy2(ROOT / "tools/mutants_trace.py", site / "mutants_trace.py")
    (site / "sitecustomize.py").write_text(_SITECUSTOMIZE)
    env = {"MUTANTS_TRACE_FILE": str(copy / module), "MUTANTS_TRACE_OUT": str(out)}
    output = []
    status, seconds = run_tests(copy, ["-p", "mutants_trace", *args], timeout, extra_path=[site], extra_env=env,
                                output=output)
    if status != "survived":
        print(f"mutants: the traced run of {module}'s tests ended {status}:\n{''.join(output)}", file=sys.stderr)
        return None, seconds
    coverage = read_coverage(out)
    coverage.startup = max(0.0, seconds - sum(json.loads((out / "session.json").read_text())["seconds"].values()))
    shutil.rmtree(out, ignore_errors=True)
    return coverage, seconds


def mutant_args(module, mutant, coverage, stmt_lines, body_lines):
    """pytest arguments for one mutant: the tests that can see its line, else the module's selection."""
    if coverage is None or mutant.line not in body_lines:
        return TARGETS[module]
    chosen = select_tests(coverage, stmt_lines.get(mutant.line, {mutant.line}))
    return TARGETS[module] if chosen is None else chosen


def _worker(copy, jobs, results, progress, partial):
    while True:
        try:
            mutant, mutated, args, timeout = jobs.get_nowait()
        except queue.Empty:
            return
        path = copy / mutant.module
        original = path.read_text()
        try:
            path.write_text(mutated)
            mutant.status, mutant.seconds = run_tests(copy, args, timeout)
        finally:
            path.write_text(original)
        results.append(mutant)
        progress(mutant)
        partial(results)


def score_table(mutants, modules, totals=None):
    rows = ["| module | mutants | caught | of which timeouts | survived | equivalent (excluded) | score "
            "| tests per mutant (median) | test time (summed) |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for module in modules:
        ms = [m for m in mutants if m.module == module]
        caught = sum(m.status in ("caught", "timeout") for m in ms)
        timeouts = sum(m.status == "timeout" for m in ms)
        survived = sum(m.status in ("survived", "error") for m in ms)
        equivalent = sum(m.status == "equivalent" for m in ms)
        score = f"{100 * caught / (caught + survived):.1f}%" if caught + survived else "n/a"
        ran = sorted(m.tests for m in ms if m.status != "equivalent" and m.seconds)
        subset = [t for t in ran if t]
        per = (f"{subset[len(subset) // 2]} ({len(ran) - len(subset)} ran all)" if subset else
               ("all" if ran else ""))
        seconds = sum(m.seconds for m in ms)
        label = module
        if totals and totals.get(module, 0) > len(ms):
            label = f"{module} (run: {len(ms)} of its {totals[module]} mutants, in line order)"
        rows.append(f"| {label} | {len(ms)} | {caught} | {timeouts} | {survived} | {equivalent} | {score} | {per} "
                    f"| {seconds / 60:.1f} min |")
    return "\n".join(rows)


def machine():
    """The CPU in words ("AMD EPYC family 26 model 2, 2 cores"), for the measurements."""
    info = {}
    try:
        for row in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = row.partition(":")
            info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    name = info.get("model name", "unknown CPU")
    return f"{name} family {info.get('cpu family', '?')} model {info.get('model', '?')}, {os.cpu_count()} cores"


def write_docs(table, note):
    doc = ROOT / "docs/TESTING.md"
    text = doc.read_text()
    start, end = "<!-- mutants:begin -->", "<!-- mutants:end -->"
    if start not in text or end not in text:
        raise SystemExit(f"mutants: {doc} lacks the markers {start} / {end}")
    head, rest = text.split(start, 1)
    write_text_atomic(doc, head + f"{start}\n{table}\n\n{note}\n{end}" + rest.split(end, 1)[1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--modules", nargs="+", default=list(TARGETS), choices=list(TARGETS), metavar="MODULE",
                   help="modules to mutate (default: all of TARGETS)")
    p.add_argument("--jobs", type=int, default=1, help="parallel workers, each with its own copy (default 1)")
    p.add_argument("--list", nargs="?", const="all", metavar="MODULE", help="print the mutants and stop")
    p.add_argument("--out", type=Path, default=ROOT / "mutants", help="report directory (default mutants/)")
    p.add_argument("--write-docs", action="store_true", help="update the score table in docs/TESTING.md")
    p.add_argument("--sample", type=int, metavar="N",
                   help="run a seeded random sample of N mutants per module (the report says so)")
    p.add_argument("--retry", type=Path, metavar="REPORT_JSON",
                   help="run again only what an earlier run did not catch (and new mutants); keep its catches")
    p.add_argument("--no-select", action="store_true",
                   help="run the module's whole selection for every mutant (no traced run, no per-line choice)")
    p.add_argument("--retry-timeouts", action="store_true",
                   help="with --retry: run its timeouts again too (a timeout taken on a loaded machine may be a "
                        "survivor that was only slow)")
    p.add_argument("--skip-new", action="store_true",
                   help="with --retry: leave out mutants the earlier report does not have (re-run its survivors "
                        "only; merge the reports with --rescore)")
    p.add_argument("--reuse-coverage", type=Path, metavar="DIR",
                   help="use the recording an earlier run saved in DIR (coverage-*.json) for each module whose "
                        "source, test files, conftest and recorder are unchanged (sha1), instead of a traced run")
    p.add_argument("--rescore", type=Path, nargs="+", metavar="REPORT_JSON",
                   help="recompute the report of earlier runs (merged, in order; a later file's entry for a "
                        "mutant wins) with the current EQUIVALENT list; run nothing")
    p.add_argument("--docs-note", metavar="TEXT",
                   help="with --write-docs: the text under the table (default: date, machine, workers, wall time, "
                        "load of this run)")
    args = p.parse_args(argv)
    # SIGTERM ends the run like Ctrl-C: the copies are removed and the running pytest is killed.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    if args.rescore:
        merged = {}
        for path in args.rescore:
            for m in json.loads(path.read_text()):
                merged[(m["module"], m["line"], m["before"], m["after"])] = Mutant(**m)
        results = list(merged.values())
        for m in results:
            if (m.module, m.before, m.after) in EQUIVALENT:
                m.status = "equivalent"
        modules = list(dict.fromkeys(m.module for m in results))
        table = write_report(results, modules, args.out, seconds=None, jobs=None,
                             note="rescored from " + ", ".join(map(str, args.rescore)))
        if args.write_docs:
            write_docs(table, args.docs_note or f"Rescored {time.strftime('%Y-%m-%d', time.gmtime())} from "
                       "earlier runs (no wall time recorded).")
            print("mutants: docs/TESTING.md updated")
        return 0

    modules = args.modules if args.list in (None, "all") else [args.list]
    generated = {m: generate(m, (ROOT / m).read_text()) for m in modules}
    sampled = {}
    if args.sample:
        for m in modules:
            if len(generated[m]) > args.sample:
                sampled[m] = len(generated[m])
                generated[m] = sorted(random.Random(f"{m}:{args.sample}").sample(generated[m], args.sample),
                                      key=lambda g: g[0].line)
    if args.list:
        for m in modules:
            for mutant, _ in generated[m]:
                print(f"{m}:{mutant.line} [{mutant.kind}] {mutant.before}  ->  {mutant.after}")
        return 0
    print(f"mutants: {sum(len(g) for g in generated.values())} mutants in {len(modules)} modules, "
          f"{args.jobs} worker(s); tests per module: TARGETS in {Path(__file__).name}", flush=True)
    start, load_start = time.time(), os.getloadavg()[1]
    with tempfile.TemporaryDirectory(prefix="virality-mutants-") as tmp:
        copies = [make_copy(Path(tmp) / f"w{i}") for i in range(max(1, args.jobs))]
        timeouts, coverage = {}, {}
        for m in modules:          # the unmutated tests must pass; their time sets the timeout
            saved = args.out / f"coverage-{m.replace('/', '_')}.json"
            reused = None if args.no_select or not args.reuse_coverage else \
                load_coverage(args.reuse_coverage / saved.name, coverage_inputs(m))
            if args.no_select:
                cov, (status, seconds) = None, run_tests(copies[0], TARGETS[m], timeout=1800)
            elif reused is not None:
                (cov, seconds), status = reused, "survived"
                print(f"  {m}: coverage reused from {args.reuse_coverage} (same module, tests and recorder)")
            else:                  # one traced run: which tests execute each line of m
                cov, seconds = record_coverage(copies[0], m, TARGETS[m], timeout=3600)
                status = "survived" if cov is not None else "caught"
            if status != "survived":
                print(f"mutants: the tests of {m} fail without any mutant ({' '.join(TARGETS[m])}); fix them first",
                      file=sys.stderr)
                return 2
            timeouts[m], coverage[m] = max(60.0, 3 * seconds), cov
            if cov is not None:     # kept: which tests saw which line (and for --reuse-coverage)
                args.out.mkdir(parents=True, exist_ok=True)
                save_coverage(saved, cov, seconds, coverage_inputs(m))
            how = "" if cov is None else (f", traced: {len(cov.order)} tests, {len(cov.opaque)} opaque, "
                                          f"{len(cov.outside)} lines run outside tests")
            print(f"  baseline {m}: {seconds:.1f} s{how}", flush=True)
        jobs, results = queue.Queue(), []
        earlier = {}
        if args.retry:
            earlier = {(m["module"], m["before"], m["after"]): m for m in json.loads(args.retry.read_text())}
        for m in modules:
            stmt_lines = statement_lines((ROOT / m).read_text())
            body_lines = function_body_lines((ROOT / m).read_text())
            for mutant, mutated in generated[m]:
                key = (mutant.module, mutant.before, mutant.after)
                if key in EQUIVALENT:
                    mutant.status = "equivalent"
                    results.append(mutant)
                elif args.skip_new and key not in earlier:
                    continue
                elif key in earlier and earlier[key]["status"] in (("caught",) if args.retry_timeouts
                                                                   else ("caught", "timeout")):
                    mutant.status, mutant.seconds = earlier[key]["status"], earlier[key]["seconds"]
                    mutant.tests = earlier[key].get("tests", 0)
                    results.append(mutant)
                else:
                    chosen = mutant_args(m, mutant, coverage[m], stmt_lines, body_lines)
                    mutant.tests = 0 if chosen is TARGETS[m] else len(chosen)
                    timeout = timeouts[m] if mutant.tests == 0 else coverage[m].timeout(chosen)
                    jobs.put((mutant, mutated, chosen, timeout))
        total, lock, already = jobs.qsize(), threading.Lock(), len(results)

        def progress(mutant):
            with lock:
                done = len(results) - already
                if mutant.status in ("survived", "error"):
                    print(f"  [{done}/{total}] SURVIVED {mutant.module}:{mutant.line} {mutant.before!r} -> "
                          f"{mutant.after!r}", flush=True)
                elif done % 25 == 0:
                    print(f"  [{done}/{total}] {time.time() - start:.0f} s", flush=True)

        def partial(done):     # results so far, so that an interrupted run still leaves them
            with lock:
                write_text_atomic(args.out / "partial.json", json.dumps([asdict(m) for m in done], indent=1))

        args.out.mkdir(parents=True, exist_ok=True)
        threads = [threading.Thread(target=_worker, args=(c, jobs, results, progress, partial))
                   for c in copies]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    seconds = time.time() - start
    notes = ["sampled: " + ", ".join(f"{m} {args.sample} of {n}" for m, n in sampled.items())] if sampled else []
    notes += [f"{m}: per-line selection from a traced run of {len(c.order)} tests ({len(c.opaque)} opaque, "
              f"run for every mutant)" if c else f"{m}: the whole selection for every mutant"
              for m, c in coverage.items()]
    note = "\n".join(notes)
    table = write_report(results, modules, args.out, seconds, args.jobs, note)
    if args.write_docs:
        load = " / ".join(f"{x:.1f}" for x in (load_start, os.getloadavg()[1]))
        write_docs(table, args.docs_note or
                   f"Measured {time.strftime('%Y-%m-%d', time.gmtime())} on {machine()} by `tools/mutants.py` "
                   f"({args.jobs} worker(s), {seconds / 60:.1f} min wall time, 5-min load average {load} "
                   f"at start / end).")
        print("mutants: docs/TESTING.md updated")
    return 0


def write_report(results, modules, out, seconds, jobs, note=""):
    results.sort(key=lambda m: (modules.index(m.module), m.line, m.after))
    table = score_table(results, modules, {m: len(generate(m, (ROOT / m).read_text())) for m in modules})
    when = time.strftime('%Y-%m-%d %H:%M', time.gmtime())
    took = f", {seconds / 60:.1f} min, {jobs} worker(s)" if seconds is not None else ""
    lines = [f"# Mutation testing ({when} UTC{took})", "", *([note, ""] if note else []), table, "",
             "## Survivors", ""]
    lines += [f"- {m.module}:{m.line} `{m.before}` -> `{m.after}` ({m.status})" for m in results
              if m.status in ("survived", "error")] or ["none"]
    lines += ["", "## Equivalent (excluded)", ""]
    lines += [f"- {m.module}:{m.line} `{m.before}` -> `{m.after}`: "
              f"{EQUIVALENT[(m.module, m.before, m.after)]}" for m in results if m.status == "equivalent"] or ["none"]
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "report.md", "\n".join(lines) + "\n")
    write_text_atomic(out / "report.json", json.dumps([asdict(m) for m in results], indent=1))
    print(table)
    if note:
        print(note)
    print(f"mutants: report {out / 'report.md'}" + (f" ({seconds:.0f} s)" if seconds is not None else ""))
    return table


if __name__ == "__main__":
    sys.exit(main())
