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
