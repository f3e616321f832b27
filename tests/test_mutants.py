"""tools/mutants.py generates one-line mutants: exactly one line differs, strings and docstrings stay."""
import importlib.util
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
