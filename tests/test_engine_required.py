"""The engine is never optional in `make test`: with a pycaffe that fails to import, collecting the
tests fails (an error), it is never a skip that leaves the run green."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_a_broken_pycaffe_fails_the_test_run_instead_of_skipping(tmp_path):
    broken = tmp_path / "caffe"
    broken.mkdir()
    (broken / "__init__.py").write_text('raise ImportError("pycaffe is broken (test stand-in)")\n')
    # Modules that test the engine (and numpy-only tests beside them); the stand-in shadows the real caffe.
    modules = ["tests/test_ranking_loss.py", "tests/test_config_effect.py", "tests/test_training_driver.py",
               "tests/test_workflow.py"]
    res = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                          "-rs", *modules], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path), "GLOG_minloglevel": "2"})
    out = res.stdout + res.stderr
    assert res.returncode != 0, out
    assert "skipped" not in out.lower(), out
    for module in modules:
        assert f"ERROR collecting {module}" in out, out
    assert "pycaffe is broken" in out
