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


_LEFT_OPEN = []    # node ids after whose teardown more worker-process feeds were open than before


def _open_feeds():
    import sys
    workers = sys.modules.get("virality.data.pair_workers")
    return len(workers._LIVE_FEEDS) if workers is not None else 0


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    before = _open_feeds()
    yield
    if _open_feeds() > before:
        _LEFT_OPEN.append(item.nodeid)


def pytest_sessionfinish(session, exitstatus):
    """A worker-process feed a test left open fails the run: it is closed here (so that the run still
    ends instead of waiting on its workers), the tests after which feeds stayed open are named, and
    the exit status is set to 1 (tests failed)."""
    import sys
    workers = sys.modules.get("virality.data.pair_workers")
    if workers is not None and workers.close_live_feeds():
        named = ", ".join(_LEFT_OPEN) or "(not known: opened outside a test)"
        print(f"\nconftest: a test left a worker-process pair feed (virality/data/pair_workers.py WorkerFeed) "
              f"open; closed at session end. Close it in the test or the library. Left open after: {named}",
              file=sys.stderr)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
