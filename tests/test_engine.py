"""The engine: pycaffe with Python layers, and Caffe's command-line tool, from .venv."""
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import caffe

# A Python layer used by the nets below: doubles its input (forward) and its gradient (backward).
DOUBLER = textwrap.dedent('''
    import caffe

    class Doubler(caffe.Layer):
        def setup(self, bottom, top):
            if len(bottom) != 1:
                raise Exception("Doubler needs one bottom")
        def reshape(self, bottom, top):
            top[0].reshape(*bottom[0].data.shape)
        def forward(self, bottom, top):
            top[0].data[...] = 2 * bottom[0].data
        def backward(self, top, propagate_down, bottom):
            bottom[0].diff[...] = 2 * top[0].diff
''')

NET = textwrap.dedent('''
    name: "doubler_net"
    force_backward: true
    layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
    layer { name: "double" type: "Python" bottom: "x" top: "y"
            python_param { module: "doubler_layer" layer: "Doubler" } }
    layer { name: "loss" type: "EuclideanLoss" bottom: "y" bottom: "x" top: "loss" }
''')


def test_python_is_the_venv_and_caffe_has_python_layers(root):
    assert sys.prefix == str(root / ".venv"), "tests must run with .venv/bin/python"
    assert "Python" in caffe.layer_type_list()


def test_python_layer_forward_backward_in_pycaffe(tmp_path, monkeypatch):
    (tmp_path / "doubler_layer.py").write_text(DOUBLER)
    (tmp_path / "net.prototxt").write_text(NET)
    monkeypatch.syspath_prepend(str(tmp_path))
    net = caffe.Net(str(tmp_path / "net.prototxt"), caffe.TRAIN)
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    net.blobs["x"].data[...] = x
    out = net.forward()
    np.testing.assert_allclose(net.blobs["y"].data, 2 * x)
    # EuclideanLoss(y, x) = sum((2x - x)^2) / (2N) with N = 2
    np.testing.assert_allclose(out["loss"], np.sum(x ** 2) / 4, rtol=1e-6)
    net.backward()
    # d loss / d x through both paths: (y - x)/N * 2 (via Doubler) - (y - x)/N (direct) = x / 2
    np.testing.assert_allclose(net.blobs["x"].diff, x / 2, rtol=1e-6)


def test_caffe_cli_answers_version(caffe_cli):
    out = subprocess.run([str(caffe_cli), "--version"], capture_output=True, text=True, check=True)
    assert "caffe version 1.0.0" in (out.stdout + out.stderr)


def test_caffe_cli_runs_a_python_layer_forward_and_backward(tmp_path, caffe_cli):
    (tmp_path / "doubler_layer.py").write_text(DOUBLER)
    (tmp_path / "net.prototxt").write_text(NET)
    env = {"PYTHONPATH": str(tmp_path), "GLOG_minloglevel": "0", "GLOG_logtostderr": "1",
           "PATH": "/usr/bin:/bin"}
    # `caffe time` runs forward and backward passes of the net.
    out = subprocess.run([str(caffe_cli), "time", "-model", str(tmp_path / "net.prototxt"), "-iterations", "2"],
                         capture_output=True, text=True, env=env, timeout=120)
    log = out.stdout + out.stderr
    assert out.returncode == 0, log
    assert "double\tforward" in log and "double\tbackward" in log, log


def test_project_packages_import_from_anywhere(tmp_path, root):
    """The venv's .pth makes the project importable without PYTHONPATH, from any cwd."""
    code = "import python_layers.ranking_loss, virality.model.nets; print('ok')"
    out = subprocess.run([str(root / ".venv" / "bin" / "python"), "-c", code], cwd=tmp_path,
                         capture_output=True, text=True, env={"GLOG_minloglevel": "2", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


#: The engine settings build_caffe.sh reads from the environment (the GPU images set them): the key tests
#: start from their defaults, so that they hold inside an image as on a host.
BUILD_SETTINGS = ("CUDA", "CUDA_ARCH_BIN", "CUDA_LIBS", "USE_CUDNN", "USE_NCCL", "CUDA_HOST_COMPILER", "BLAS")


def _check(engine_dir, root, env_extra=None, inherit_settings=False):
    """``build_caffe.sh --check``: (exit code, log). The environment's engine settings are dropped unless
    ``inherit_settings`` (the engine this environment builds)."""
    import os
    env = {k: v for k, v in os.environ.items() if inherit_settings or k not in BUILD_SETTINGS}
    env.update(env_extra or {})
    out = subprocess.run(["bash", str(engine_dir / "build_caffe.sh"), "--python", str(root / ".venv/bin/python"),
                          "--check"], capture_output=True, text=True, env=env, timeout=120)
    return out.returncode, out.stdout + out.stderr


def test_second_make_caffe_is_a_no_op_and_linked(root):
    """The engine .venv uses is the cached build for the current recipe: `make caffe` rebuilds nothing."""
    rc, log = _check(root / "engine", root, inherit_settings=True)
    assert rc == 0, log
    prefix = log.split("cached build ")[1].split(")")[0]
    assert (root / ".engine").resolve() == __import__("pathlib").Path(prefix).resolve()


def test_cache_key_covers_patches_and_flags(root, tmp_path):
    import shutil
    engine = tmp_path / "engine"
    shutil.copytree(root / "engine", engine)
    rc, log = _check(engine, root)
    key = log.split("engine-")[1][:16]
    patch = sorted((engine / "patches").glob("*.patch"))[0]
    patch.write_text(patch.read_text() + "\n")
    rc2, log2 = _check(engine, root)
    assert rc2 == 1 and log2.split("engine-")[1][:16] != key
    patch.write_text(patch.read_text()[:-1])
    rc3, log3 = _check(engine, root, {"CUDA_ARCH_BIN": "61"})   # ignored without CUDA=1: same key
    assert log3.split("engine-")[1][:16] == key
    rc4, log4 = _check(engine, root, {"BLAS": "no-such-blas"})
    assert rc4 != 0 and "not supported" in log4


def _fake_nvcc(bin_dir, release):
    """An `nvcc` that only answers --version (all that `build_caffe.sh --check` asks of it)."""
    bin_dir.mkdir(exist_ok=True)
    nvcc = bin_dir / "nvcc"
    nvcc.write_text("#!/bin/sh\necho 'nvcc: NVIDIA (R) Cuda compiler driver'\n"
                    f"echo 'Cuda compilation tools, release {release}, V{release}.88'\n"
                    f"echo 'Build cuda_{release}.r{release}/compiler.0_0'\n")
    nvcc.chmod(0o755)


def test_each_cuda_major_version_gets_the_pins_of_its_own_section(root, tmp_path):
    """engine/cuda_wheels.txt holds one [cudaN] section per CUDA major version; a build installs the
    requirement lines of its nvcc's section only (comments and the other sections left out), and a
    version without a section gets none (build_caffe.sh then stops, the test above)."""
    text = (root / "engine/cuda_wheels.txt").read_text().splitlines()
    expected = {13: [], 12: [], 11: []}
    section = None
    for line in text:                       # the format, parsed independently of cuda_build.sh
        if line.startswith("[cuda") and line.endswith("]"):
            section = int(line[5:-1])
        elif section is not None and line.strip() and not line.startswith("#"):
            expected[section].append(line)
    assert expected[13] and expected[12] and expected[11]
    assert all("-cu11==" in pin for pin in expected[11]) and all("-cu12==" in pin for pin in expected[12])
    assert any(pin.startswith("nvidia-cudnn-cu13==") for pin in expected[13])
    for major, pins in [*expected.items(), (10, [])]:
        out = subprocess.run(["bash", "-c", f'HERE="$1"; source "$1/cuda_build.sh"; wheel_pins {major}', "-",
                              str(root / "engine")], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert out.stdout.splitlines() == pins, major


def test_cuda_only_inputs_change_cuda_keys_and_leave_the_cpu_key_alone(root, tmp_path):
    """engine/cuda_build.sh, engine/cuda_wheels.txt and the patches marked "Builds: CUDA only" (0009,
    cuDNN 8/9) are inputs of CUDA builds alone: editing one gives every CUDA build a new key and leaves
    a CPU engine's key as it was (a CPU rebuild costs 12 minutes of two cores). USE_CUDNN and USE_NCCL
    are part of a CUDA key; a bad value of either, or wheels for another CUDA than nvcc's, stop at once."""
    import os
    import shutil
    engine = tmp_path / "engine"
    shutil.copytree(root / "engine", engine)
    _fake_nvcc(tmp_path / "bin13", "13.0")
    cuda = {"CUDA": "1", "PATH": f"{tmp_path / 'bin13'}:{os.environ['PATH']}"}

    def key(env=None):
        rc, log = _check(engine, root, env)
        assert "engine-" in log, log
        return log.split("engine-")[1][:16]

    cuda_only = [p for p in sorted((engine / "patches").glob("*.patch"))
                 if "\nBuilds: CUDA only\n" in p.read_text().split("\ndiff ")[0]]
    assert [p.name for p in cuda_only] == ["0009-cudnn-8-9.patch", "0010-cuda-13-test-platform.patch",
                                          "0011-cuda-cpu-mode-threads.patch"]
    cpu_key, cuda_key = key(), key(cuda)
    seen = {cpu_key, cuda_key}
    for path in [engine / "cuda_build.sh", engine / "cuda_wheels.txt", *cuda_only]:
        text = path.read_text()
        path.write_text(text + "\n")
        assert key() == cpu_key, f"editing {path.name} changed the CPU key"
        edited = key(cuda)
        assert edited not in seen, f"editing {path.name} left a CUDA key as it was"
        seen.add(edited)
        path.write_text(text)
    assert key(cuda) == cuda_key
    for setting in ({"USE_CUDNN": "0"}, {"USE_NCCL": "0"}):
        assert key({**cuda, **setting}) not in seen, setting
        assert key(setting) == cpu_key, f"{setting} changed the CPU key"
    rc, log = _check(engine, root, {**cuda, "USE_CUDNN": "yes"})
    assert rc != 0 and "USE_CUDNN='yes'" in log, log
    _fake_nvcc(tmp_path / "bin10", "10.2")
    rc, log = _check(engine, root, {"CUDA": "1", "PATH": f"{tmp_path / 'bin10'}:{os.environ['PATH']}"})
    assert rc != 0 and "cuda_wheels.txt pins no wheels for CUDA 10 (nvcc is CUDA 10.2; it has sections for CUDA 13 12 11)" in log, log
    # nvcc 12.6 (a host's CUDA 12, the Docker-daemon current image) takes [cuda12]: a key of its own.
    _fake_nvcc(tmp_path / "bin12", "12.6")
    cuda12 = {"CUDA": "1", "PATH": f"{tmp_path / 'bin12'}:{os.environ['PATH']}"}
    assert key(cuda12) not in seen
    seen.add(key(cuda12))
    # nvcc 11.8 (the TITAN X image) takes the [cuda11] section: a key of its own.
    _fake_nvcc(tmp_path / "bin11", "11.8")
    cuda11 = {"CUDA": "1", "PATH": f"{tmp_path / 'bin11'}:{os.environ['PATH']}"}
    assert key(cuda11) not in seen
    seen.add(key(cuda11))
    # The host compiler nvcc runs is part of the key, and must exist.
    assert key({**cuda11, "CUDA_HOST_COMPILER": "gcc"}) not in seen
    rc, log = _check(engine, root, {**cuda11, "CUDA_HOST_COMPILER": "no-such-gcc"})
    assert rc != 0 and "CUDA_HOST_COMPILER='no-such-gcc' is not a program on PATH" in log, log


# ---- Caffe's command line shows Python errors (engine patch 0007) ----

# A Python layer that raises in the call its param_str names.
FAILING = textwrap.dedent('''
    import caffe

    class Failing(caffe.Layer):
        def setup(self, bottom, top):
            if self.param_str == "setup":
                raise OSError("pair file /nowhere/pairs.npy does not exist")
        def reshape(self, bottom, top):
            if self.param_str == "reshape":
                raise ValueError("cannot reshape to " + str(bottom[0].data.shape))
            top[0].reshape(*bottom[0].data.shape)
        def forward(self, bottom, top):
            if self.param_str == "forward":
                raise KeyError("no batch 7")
            top[0].data[...] = bottom[0].data
        def backward(self, top, propagate_down, bottom):
            if self.param_str == "backward":
                raise ZeroDivisionError("gradient of nothing")
            bottom[0].diff[...] = top[0].diff
''')


def failing_net(where, module="failing_layer"):
    return textwrap.dedent(f'''
        name: "failing_net"
        force_backward: true
        layer {{ name: "x" type: "Input" top: "x" input_param {{ shape {{ dim: 2 dim: 3 }} }} }}
        layer {{ name: "flaky" type: "Python" bottom: "x" top: "y"
                python_param {{ module: "{module}" layer: "Failing" param_str: "{where}" }} }}
        layer {{ name: "loss" type: "EuclideanLoss" bottom: "y" bottom: "x" top: "loss" }}
    ''')


def run_cli(caffe_cli, args, pythonpath, cwd):
    env = {"PYTHONPATH": str(pythonpath), "GLOG_minloglevel": "0", "GLOG_logtostderr": "1", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([str(caffe_cli), *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=120)
    return out.returncode, out.stdout + out.stderr


@pytest.mark.parametrize("where, raised, source_line", [
    ("setup", "OSError: pair file /nowhere/pairs.npy does not exist",
     'raise OSError("pair file /nowhere/pairs.npy does not exist")'),
    ("reshape", "ValueError: cannot reshape to (2, 3)", 'raise ValueError("cannot reshape to "'),
    ("forward", "KeyError: 'no batch 7'", 'raise KeyError("no batch 7")'),
    ("backward", "ZeroDivisionError: gradient of nothing", 'raise ZeroDivisionError("gradient of nothing")'),
])
def test_caffe_cli_prints_the_python_exception_of_a_layer(tmp_path, caffe_cli, where, raised, source_line):
    (tmp_path / "failing_layer.py").write_text(FAILING)
    (tmp_path / "net.prototxt").write_text(failing_net(where))
    rc, log = run_cli(caffe_cli, ["time", "-model", "net.prototxt", "-iterations", "1"], tmp_path, tmp_path)
    assert rc == 1, log
    assert "terminate called" not in log and "error_already_set" not in log, log
    assert "Traceback (most recent call last)" in log, log
    assert f'failing_layer.py", line' in log and f"in {where}" in log and source_line in log, log
    assert raised in log, log
    assert f"in Caffe layer 'flaky' (Python layer failing_layer.Failing), {where}" in log, log
    assert "caffe time stopped: a Python layer raised the exception above" in log, log


def test_caffe_cli_prints_why_a_python_layer_cannot_be_created(tmp_path, caffe_cli):
    (tmp_path / "net.prototxt").write_text(failing_net("none", module="no_such_layer_module"))
    rc, log = run_cli(caffe_cli, ["time", "-model", "net.prototxt", "-iterations", "1"], tmp_path, tmp_path)
    assert rc == 1 and "terminate called" not in log, log
    assert "ModuleNotFoundError: No module named 'no_such_layer_module'" in log, log
    assert "in Caffe layer 'flaky' (Python layer no_such_layer_module.Failing), creation" in log, log
    assert log.count("ModuleNotFoundError") == 1, "printed once, by the tool"


def test_caffe_train_names_the_missing_pair_file_of_the_project_data_layer(tmp_path, caffe_cli, root):
    """The case of issue 11: `caffe train -solver ...` whose pair data layer cannot open its pair file."""
    params = ('{"batch_size": 2, "crop_size": 8, "image_store": "data/none/images_lmdb", '
              '"pairs": "data/none/pairs_train.npy"}')
    (tmp_path / "train.prototxt").write_text(textwrap.dedent(f'''
        name: "pairs_only"
        layer {{ name: "data" type: "Python" top: "data" top: "data_p" top: "label"
                python_param {{ module: "python_layers.pair_data" layer: "PairIndexData"
                               param_str: '{params}' }} }}
        layer {{ name: "sink" type: "Silence" bottom: "data" bottom: "data_p" bottom: "label" }}
    '''))
    (tmp_path / "solver.prototxt").write_text('net: "train.prototxt"\nbase_lr: 0.001\nmax_iter: 1\n'
                                              'lr_policy: "fixed"\nsolver_mode: CPU\n')
    rc, log = run_cli(caffe_cli, ["train", "-solver", "solver.prototxt"], tmp_path, tmp_path)
    assert rc == 1 and "terminate called" not in log, log
    assert "pair file data/none/pairs_train.npy does not exist" in log, log
    assert "in Caffe layer 'data' (Python layer python_layers.pair_data.PairIndexData), setup" in log, log
    assert "caffe train stopped: a Python layer raised the exception above" in log, log


def test_pycaffe_keeps_the_python_exception_and_adds_the_layer_note(tmp_path, monkeypatch):
    (tmp_path / "failing_layer.py").write_text(FAILING)
    (tmp_path / "net.prototxt").write_text(failing_net("forward"))
    monkeypatch.syspath_prepend(str(tmp_path))
    net = caffe.Net(str(tmp_path / "net.prototxt"), caffe.TEST)
    with pytest.raises(KeyError, match="no batch 7") as err:
        net.forward()
    assert err.value.__notes__ == ["in Caffe layer 'flaky' (Python layer failing_layer.Failing), forward"]
    (tmp_path / "missing.prototxt").write_text(failing_net("none", module="no_such_layer_module"))
    with pytest.raises(ModuleNotFoundError, match="no_such_layer_module"):
        caffe.Net(str(tmp_path / "missing.prototxt"), caffe.TEST)


def test_caffe_cli_names_an_lmdb_it_cannot_open(tmp_path, caffe_cli):
    missing = tmp_path / "no_such_lmdb"
    (tmp_path / "net.prototxt").write_text(textwrap.dedent(f'''
        name: "lmdb_net"
        layer {{ name: "data" type: "Data" top: "data" top: "label"
                data_param {{ source: "{missing}" backend: LMDB batch_size: 2 }} }}
    '''))
    rc, log = run_cli(caffe_cli, ["time", "-model", "net.prototxt", "-iterations", "1"], tmp_path, tmp_path)
    assert rc != 0, log
    assert f"cannot open LMDB {missing}: No such file or directory" in log, log


@pytest.mark.parametrize("target, base, expected", [
    ("titanx", "nvidia/cuda:11.8.0-devel-ubuntu22.04",
     ["CUDA=1", "CUDA_ARCH_BIN=52 61", "CUDA_LIBS=wheels", "USE_CUDNN=1", "USE_NCCL=1"]),
    ("current", "nvidia/cuda:12.6.3-devel-ubuntu22.04",
     ["CUDA=1", "CUDA_ARCH_BIN=70 75 80 86 89 90", "CUDA_LIBS=wheels", "USE_CUDNN=1", "USE_NCCL=1"]),
    ("cpu", "debian:12", ["CUDA=0", "CUDA_ARCH_BIN=", "CUDA_LIBS=", "USE_CUDNN=", "USE_NCCL="]),
])
def test_the_docker_daemon_path_builds_each_image_with_its_base_and_settings(root, tmp_path, target, base, expected):
    """No Docker daemon runs here, so `make docker*` with one is checked through a stand-in `docker`
    that records its arguments: the image's base and build arguments, as docs/ENGINE.md's table says."""
    import os
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    (bin_dir / "docker").write_text(f'#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done > {calls}\n')
    (bin_dir / "docker").chmod(0o755)
    out = subprocess.run(["bash", str(root / "engine/images/build.sh"), target], capture_output=True, text=True,
                         env=dict(os.environ, IMAGE_BUILDER="docker", PATH=f"{bin_dir}:{os.environ['PATH']}"),
                         timeout=60)
    assert out.returncode == 0, out.stderr
    args = calls.read_text().splitlines()
    assert args[0] == "build" and args[-1] == "." and args[args.index("-t") + 1] == f"virality-caffe:{target}"
    build_args = [args[i + 1] for i, a in enumerate(args) if a == "--build-arg"]
    assert f"BASE={base}" in build_args
    assert [a for a in build_args if a.split("=")[0] in {e.split("=")[0] for e in expected}] == expected


def test_a_podman_build_reads_a_snapshot_of_the_tree_not_the_tree(root, tmp_path):
    """engine/images/context.sh: what git tracks (as edited on disk) and untracked files git does not
    ignore; ignored and deleted files left out; and later edits of the tree do not reach the snapshot."""
    import os
    import shutil
    if shutil.which("git") is None:
        pytest.skip("no git here (the images have none): the next test checks context.sh without it")
    repo = tmp_path / "repo"
    (repo / "engine/images").mkdir(parents=True)
    shutil.copy(root / "engine/images/context.sh", repo / "engine/images/context.sh")
    (repo / ".gitignore").write_text("data/\n*.log\n")
    for name, text in {"Dockerfile": "FROM x\n", "tracked.txt": "old\n", "gone.txt": "x\n", "sub/b.txt": "b\n"}.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    git = lambda *a: subprocess.run(["git", "-C", str(repo), *a], check=True, capture_output=True,  # noqa: E731
                                    env=dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t",
                                             GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t"))
    git("init", "-q")
    git("add", "-A")
    git("commit", "-qm", "x")
    (repo / "tracked.txt").write_text("edited\n")
    (repo / "gone.txt").unlink()
    (repo / "new.txt").write_text("new\n")
    (repo / "data").mkdir()
    (repo / "data/big.bin").write_text("ignored\n")
    (repo / "run.log").write_text("ignored\n")
    out = subprocess.run(["bash", str(repo / "engine/images/context.sh"), str(tmp_path / "ctx")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    ctx = tmp_path / "ctx"
    files = sorted(str(p.relative_to(ctx)) for p in ctx.rglob("*") if p.is_file())
    assert files == [".gitignore", "Dockerfile", "engine/images/context.sh", "new.txt", "sub/b.txt", "tracked.txt"]
    assert (ctx / "tracked.txt").read_text() == "edited\n"
    (repo / "tracked.txt").write_text("edited during the build\n")
    assert (ctx / "tracked.txt").read_text() == "edited\n"


def test_outside_a_git_checkout_the_snapshot_is_every_file_but_git_s(root, tmp_path):
    import shutil
    tree = tmp_path / "tree"
    (tree / "engine/images").mkdir(parents=True)
    shutil.copy(root / "engine/images/context.sh", tree / "engine/images/context.sh")
    for name in ("Dockerfile", "sub/a.txt", ".git/config"):
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_text(name)
    out = subprocess.run(["bash", str(tree / "engine/images/context.sh"), str(tmp_path / "ctx")],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path,
                         env={"PATH": "/usr/bin:/bin", "GIT_CEILING_DIRECTORIES": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    files = sorted(str(p.relative_to(tmp_path / "ctx")) for p in (tmp_path / "ctx").rglob("*") if p.is_file())
    assert files == ["Dockerfile", "engine/images/context.sh", "sub/a.txt"]
