"""Engine patches 0004 and 0005: the rewritten CPU kernels agree with numpy, under every
thread and workspace setting, and the OpenBLAS idle-thread default is in place."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import kernel_reference  # noqa: E402

# The engine reads these once per process, so each setting runs in its own.
SETTINGS = {
    "one-thread": {"CAFFE_CPU_THREADS": "1"},
    # about 2.6 MB per image in the "chunked" case: chunks of 2, 2 and 1 images
    "two-threads-chunks-of-2": {"CAFFE_CPU_THREADS": "2", "CAFFE_CONV_WORKSPACE_MB": "5"},
    # one image per chunk, and more threads than this machine has cores
    "three-threads-one-image-chunks": {"CAFFE_CPU_THREADS": "3", "CAFFE_CONV_WORKSPACE_MB": "0"},
}


def _python(code_or_script, env_extra, *args):
    env = dict(os.environ, GLOG_minloglevel="2")
    env.pop("OPENBLAS_THREAD_TIMEOUT", None)
    env.update(env_extra)
    cmd = [sys.executable] + ([str(code_or_script)] if isinstance(code_or_script, Path)
                              else ["-c", code_or_script]) + list(args)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("name", list(SETTINGS))
def test_rewritten_kernels_match_numpy(name):
    out = _python(HERE / "kernel_reference.py", SETTINGS[name])
    assert out.returncode == 0, out.stdout + out.stderr
    assert ", 0 mismatches" in out.stdout


def test_the_checker_catches_a_wrong_answer(tmp_path, monkeypatch):
    """The comparison above can fail: a reference that is off by a little is reported."""
    exact = kernel_reference.conv_forward
    monkeypatch.setattr(kernel_reference, "conv_forward",
                        lambda *a, **k: exact(*a, **k) * (1 + 1e-3))
    failures = []
    kernel_reference.check_convolution(str(tmp_path), failures)
    assert len(failures) == len(kernel_reference.CONV_CASES)
    assert all("forward" in f for f in failures)
    # and the pooling reference sends the gradient to the maximum, not elsewhere
    y, dy, dx = kernel_reference.pool_forward_backward(
        np.array([[[[1.0, 3.0], [2.0, 0.0]]]]), np.ones, "MAX", (2, 2), (0, 0), (2, 2))
    assert dx.tolist() == [[[[0.0, 1.0], [0.0, 0.0]]]] and y.item() == 3.0


@pytest.mark.parametrize("key,value", [("CAFFE_CPU_THREADS", "two"), ("CAFFE_CPU_THREADS", "0"),
                                       ("CAFFE_CONV_WORKSPACE_MB", "lots")])
def test_bad_thread_or_workspace_setting_is_a_clear_error(key, value, tmp_path):
    net = tmp_path / "net.prototxt"
    net.write_text('layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 dim: 8 dim: 8 } } }\n'
                   'layer { name: "c" type: "Convolution" bottom: "x" top: "c" convolution_param { '
                   'num_output: 4 kernel_size: 3 } }\n'
                   'layer { name: "r" type: "ReLU" bottom: "c" top: "c" }\n')
    code = ("import caffe, numpy as np\n"
            f"net = caffe.Net({str(net)!r}, caffe.TEST)\n"
            "net.blobs['x'].data[...] = np.random.randn(2, 3, 8, 8)\n"
            "net.forward()\n"
            "print('ran')\n")
    out = _python(code, {key: value})
    assert out.returncode != 0 and "ran" not in out.stdout
    assert key in out.stderr and value in out.stderr
    good = _python(code, {key: "2"})
    assert good.returncode == 0 and "ran" in good.stdout, good.stderr


def test_pycaffe_lets_openblas_threads_sleep_unless_told_otherwise():
    code = "import caffe, os; print(os.environ['OPENBLAS_THREAD_TIMEOUT'])"
    assert _python(code, {}).stdout.split() == ["4"]
    assert _python(code, {"OPENBLAS_THREAD_TIMEOUT": "20"}).stdout.split() == ["20"]


def test_caffe_tool_wrapper_sets_the_same_default(root):
    wrapper = (root / ".venv" / "bin" / "caffe").read_text()
    assert 'OPENBLAS_THREAD_TIMEOUT="${OPENBLAS_THREAD_TIMEOUT:-4}"' in wrapper
    assert "export OPENBLAS_THREAD_TIMEOUT" in wrapper
