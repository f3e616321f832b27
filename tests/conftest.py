"""Shared test set-up: quiet Caffe's glog, and the project root."""
import os

os.environ.setdefault("GLOG_minloglevel", "2")

import pytest  # noqa: E402

from virality.paths import ROOT  # noqa: E402


@pytest.fixture(scope="session")
def root():
    return ROOT


@pytest.fixture(scope="session")
def caffe_cli(root):
    return root / ".venv" / "bin" / "caffe"


def pytest_sessionfinish(session, exitstatus):
    """A feed a test left open must not keep the run from ending: close it, and say so."""
    import sys
    workers = sys.modules.get("virality.data.pair_workers")
    if workers is not None and workers.close_live_feeds():
        print("\nconftest: a test left a worker-process pair feed open; closed at session end", file=sys.stderr)
