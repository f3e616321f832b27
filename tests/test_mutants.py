"""tools/mutants.py generates one-line mutants: exactly one line differs, strings and docstrings stay."""
import importlib.util
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("mutants_tool", ROOT / "tools/mutants.py")
mutants = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mutants)

SOURCE = '''"""Docstring 1 + 1."""
LIMIT = 3


def f(a, b):
    """Also left alone: a < b."""
    if a < b and not b:
        return a + b * 2, "text < more"
    print(a)
    return -a
'''


def test_each_mutant_changes_exactly_one_line():
    generated = mutants.generate("m.py", SOURCE)
    original = SOURCE.splitlines()
    afters = set()
    for mutant, text in generated:
        changed = [i for i, (x, y) in enumerate(zip(original, text.splitlines())) if x != y]
        assert changed == [mutant.line - 1] and len(text.splitlines()) == len(original)
        compile(text, "m.py", "exec")
        afters.add(mutant.after)
    assert afters == {
        "LIMIT = 4",
        "if a <= b and not b:", "if a < b or not b:", "if a < b and b:",
        'return a - b * 2, "text < more"', 'return a + b / 2, "text < more"', 'return a + b * 3, "text < more"',
        "pass",
        "return a",
    }
    assert not any("Docstring" in m.after or "left alone" in m.after for m, _ in generated)


# ------------------------------------------------------------------ per-mutant test selection

def test_select_tests_runs_what_saw_the_line_and_falls_back_to_everything():
    cov = mutants.Coverage(order=["t1", "t2", "t3", "t4"],
                           lines={"t1": {10, 11}, "t2": {11, 20}, "t3": set(), "t4": {30}},
                           outside={1, 2}, opaque={"t3"})
    assert mutants.select_tests(cov, {20}) == ["t2", "t3"]            # opaque t3 always runs, run order kept
    assert mutants.select_tests(cov, {11}) == ["t1", "t2", "t3"]
    assert mutants.select_tests(cov, {30, 31}) == ["t3", "t4"]        # any line of the statement counts
    assert mutants.select_tests(cov, {2}) is None                     # run at import: every test
    assert mutants.select_tests(cov, {11, 2}) is None
    assert mutants.select_tests(cov, {40}) is None                    # no in-process test: every test


def test_selected_tests_run_file_by_file_the_quickest_first():
    cov = mutants.Coverage(order=["a.py::s", "a.py::q", "b.py::x", "a.py::late"],
                           lines={"a.py::s": {5}, "a.py::q": {5}, "b.py::x": {5}, "a.py::late": {5}},
                           outside=set(), opaque=set(), seconds={"a.py::s": 9.0, "a.py::q": 1.0, "b.py::x": 0.1,
                                                                 "a.py::late": 5.0})
    assert mutants.select_tests(cov, {5}) == ["a.py::q", "a.py::late", "a.py::s", "b.py::x"]


def test_a_saved_recording_is_reused_only_for_the_same_files(tmp_path):
    cov = mutants.Coverage(order=["t"], lines={"t": {3}}, outside={1}, opaque=set(), seconds={"t": 2.0}, startup=1.0)
    inputs = mutants.coverage_inputs("virality/experiments/metrics.py")
    assert "virality/experiments/metrics.py" in inputs and "tests/test_metrics.py" in inputs and "tests/conftest.py" in inputs
    mutants.save_coverage(tmp_path / "c.json", cov, 7.5, inputs)
    assert mutants.load_coverage(tmp_path / "c.json", inputs) == (cov, 7.5)
    changed = dict(inputs, **{"tests/test_metrics.py": "0" * 40})
    assert mutants.load_coverage(tmp_path / "c.json", changed) is None
    assert mutants.load_coverage(tmp_path / "missing.json", inputs) is None


def test_statement_lines_cover_a_whole_simple_statement_and_a_compound_header():
    source = "x = f(1,\n      2)\nif (x and\n        y):\n    z = 3\n"
    lines = mutants.statement_lines(source)
    assert lines[1] == lines[2] == {1, 2}
    assert lines[3] == lines[4] == {3, 4}                              # the header, not the body
    assert lines[5] == {5}


TARGET = '''import os


def in_process():
    return 1


def in_child():
    return 2


def in_fixture():
    return 3


def in_fork():
    return 4


def untraced():
    return 5
'''

TESTS = '''import multiprocessing as mp
import os
import time
import subprocess
import sys

import pytest

import target


@pytest.fixture(scope="module")
def shared():
    return target.in_fixture()


def test_a():
    assert target.in_process() == 1


def test_b():
    subprocess.run([sys.executable, "-c", "import target; target.in_child()"], check=True)


def test_c(shared):
    assert shared == 3


def test_d(shared):
    assert shared == 3


def test_e():
    p = mp.get_context("fork").Process(target=target.in_fork)
    p.start()
    p.join()
    assert p.exitcode == 0


def test_f():
    subprocess.run([sys.executable, "-c", "pass"], env={"PATH": os.environ["PATH"]}, check=True)
'''


def test_recording_follows_fixtures_subprocesses_and_forks(tmp_path):
    (tmp_path / "target.py").write_text(TARGET)
    (tmp_path / "test_m.py").write_text(TESTS)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    os.symlink(ROOT / ".venv", tmp_path / ".venv")
    coverage, _ = mutants.record_coverage(tmp_path, "target.py", ["test_m.py"], timeout=300)
    assert coverage is not None, "the traced run of the toy tests failed"
    ids = [f"test_m.py::test_{c}" for c in "abcdef"]
    assert coverage.order == ids
    body = {name: TARGET.splitlines().index(f"def {name}():") + 2 for name in
            ("in_process", "in_child", "in_fixture", "in_fork", "untraced")}   # 1-based line of each return
    assert {t for t in ids if body["in_process"] in coverage.lines[t]} == {ids[0]}
    assert {t for t in ids if body["in_child"] in coverage.lines[t]} == {ids[1]}     # a Python subprocess
    assert {t for t in ids if body["in_fixture"] in coverage.lines[t]} == {ids[2], ids[3]}  # set up once, used twice
    assert {t for t in ids if body["in_fork"] in coverage.lines[t]} == {ids[4]}      # a forked child
    assert not any(body["untraced"] in lines for lines in coverage.lines.values())
    assert coverage.opaque == {ids[5]}           # its child's environment dropped the recorder
    assert 1 in coverage.outside                 # the import ran during collection
    assert set(mutants.select_tests(coverage, {body["in_fixture"]})) == {ids[2], ids[3], ids[5]}
    assert set(coverage.seconds) == set(ids) and coverage.startup > 0


def test_a_subset_gets_three_times_its_traced_time_with_start_up():
    cov = mutants.Coverage(order=["t1", "t2"], lines={}, outside=set(), opaque=set(),
                           seconds={"t1": 10.0, "t2": 30.0}, startup=5.0)
    assert cov.timeout(["t2"]) == 3 * (5 + 30)
    assert cov.timeout(["t1", "t2"]) == 3 * (5 + 10 + 30)
    assert cov.timeout(["t1"], floor=60) == 60


def test_only_function_bodies_may_run_a_subset():
    source = "X = 1\n\n\nclass C:\n    y = 2\n\n    def f(self, z=3):\n        return z\n\n\ng = lambda: 4\n"
    assert mutants.function_body_lines(source) == {8}       # not the lambda's line: it is module level too


def test_a_module_level_line_run_inside_a_test_still_runs_the_whole_selection():
    """A module imported lazily runs its top level inside the first test that imports it: that test
    alone must not decide a mutant of a constant every later test reads."""
    source = "LIMIT = 3\n\n\ndef f():\n    return LIMIT\n"
    cov = mutants.Coverage(order=["t1", "t2"], lines={"t1": {1, 5}, "t2": {5}}, outside=set(), opaque=set(),
                           seconds={}, startup=0.0)
    stmt, body = mutants.statement_lines(source), mutants.function_body_lines(source)
    top = mutants.Mutant("virality/experiments/metrics.py", 1, "LIMIT = 3", "LIMIT = 4", "constant")
    inner = mutants.Mutant("virality/experiments/metrics.py", 5, "return LIMIT", "return -LIMIT", "unary")
    assert mutants.mutant_args("virality/experiments/metrics.py", top, cov, stmt, body) is mutants.TARGETS["virality/experiments/metrics.py"]
    assert mutants.mutant_args("virality/experiments/metrics.py", inner, cov, stmt, body) == ["t1", "t2"]


def test_a_process_a_test_leaves_behind_is_killed_with_the_run(tmp_path):
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_left.py").write_text(
        "import subprocess, sys\n\n\ndef test_leaves_a_child(tmp_path_factory):\n"
        "    p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        f"    open({str(tmp_path / 'pid')!r}, 'w').write(str(p.pid))\n")
    os.symlink(ROOT / ".venv", tmp_path / ".venv")
    status, _ = mutants.run_tests(tmp_path, ["test_left.py"], timeout=120)
    assert status == "survived"
    pid = int((tmp_path / "pid").read_text())
    for _ in range(50):                       # SIGKILL is asynchronous: give it a moment
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split()[2] == "Z":
                    break
        except FileNotFoundError:
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"the test's child {pid} outlived the run")


def test_the_score_leaves_out_equivalents_names_the_timeouts_and_a_partial_run():
    ms = [mutants.Mutant("m.py", i, "a", "b", "constant", status, 1.0) for i, status in
          enumerate(["caught", "timeout", "caught", "survived", "equivalent"])]
    row = mutants.score_table(ms, ["m.py"], {"m.py": 9}).splitlines()[2]
    # 3 caught (one of them a timeout), 1 survived, 1 equivalent: 3 / 4
    assert row.startswith("| m.py (run: 5 of its 9 mutants, in line order) | 5 | 3 | 1 | 1 | 1 | 75.0% |")
