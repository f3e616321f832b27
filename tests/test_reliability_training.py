"""Reliability of training (issue 14; docs/FAILURES.md): snapshots are complete or absent, the
latest complete one is found, Ctrl-C/SIGTERM snapshot and say how to resume, a moved run resumes,
and a full disk is an error naming the path."""
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_reliability_data import TMPFS, _file_size_limit, run_on_small_disk
from virality.train.snapshots import SnapshotError, check_caffemodel, latest_snapshot, read_solverstate

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    from toy_data import make_toy_data
    work = tmp_path_factory.mktemp("reliab_train")
    subprocess.run([PY, str(ROOT / "tools/make_nets.py"), "--out", str(work), "--models", "tiny_pvcnn"],
                   check=True, capture_output=True)
    make_toy_data(work)
    return work


def train_cmd(work, out, *extra):
    return [PY, str(ROOT / "tools/train.py"), "--model", "tiny_pvcnn", "--workdir", str(work), "--out", str(out),
            "--val-interval", "1000", *extra]


def train(work, out, *extra, **kw):
    return subprocess.run(train_cmd(work, out, *extra), capture_output=True, text=True, timeout=600, **kw)


def snapshots(out):
    return sorted(int(p.stem.split("_iter_")[1]) for p in Path(out).glob("tiny_pvcnn_iter_*.caffemodel"))


# --------------------------------------------------------------------------- complete or absent

def test_latest_snapshot_passes_over_a_truncated_one(toy, tmp_path):
    out = tmp_path / "run"
    r = train(toy, out, "--max-iter", "4", "--snapshot-interval", "2")
    assert r.returncode == 0, r.stderr
    assert snapshots(out) == [2, 4]
    # what `caffe train` leaves when the disk fills while it writes iteration 6
    data = (out / "tiny_pvcnn_iter_4.caffemodel").read_bytes()
    (out / "tiny_pvcnn_iter_6.caffemodel").write_bytes(data[:len(data) // 2])
    skipped = []
    assert latest_snapshot(out, "tiny_pvcnn", log=skipped.append) == out / "tiny_pvcnn_iter_4.caffemodel"
    assert len(skipped) == 1 and "tiny_pvcnn_iter_6.caffemodel" in skipped[0]
    with pytest.raises(SnapshotError, match="runs past the end"):
        check_caffemodel(out / "tiny_pvcnn_iter_6.caffemodel")
    for it in (2, 4):
        (out / f"tiny_pvcnn_iter_{it}.caffemodel").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="no complete tiny_pvcnn_iter_.*3 incomplete"):
        latest_snapshot(out, "tiny_pvcnn")


def test_driver_snapshots_name_their_final_weights(toy, tmp_path):
    out = tmp_path / "run"
    r = train(toy, out, "--max-iter", "3")
    assert r.returncode == 0, r.stderr
    info = read_solverstate(out / "tiny_pvcnn_iter_3.solverstate")
    assert info["iter"] == 3 and info["history"] > 0
    assert info["learned_net"] == str((out / "tiny_pvcnn_iter_3.caffemodel").resolve())
    assert not list((out / ".snapshot-partial").iterdir())          # nothing left in staging


def test_a_snapshot_that_caffe_cannot_finish_never_carries_a_final_name(toy, tmp_path):
    """Caffe aborts when its write fails (here: the file size limit, below the 420 kB caffemodel):
    the partial file is in the staging directory, and nothing under a final name."""
    out = tmp_path / "run"
    r = train(toy, out, "--max-iter", "4", "--snapshot-interval", "2", preexec_fn=_file_size_limit(300_000))
    assert r.returncode != 0
    assert snapshots(out) == [] and not list(out.glob("*.solverstate"))
    partial = list((out / ".snapshot-partial").glob("*.caffemodel"))
    assert partial and partial[0].stat().st_size <= 300_000           # the truncated file Caffe left
    with pytest.raises(FileNotFoundError, match="no complete"):
        latest_snapshot(out, "tiny_pvcnn")
    r = train(toy, out, "--max-iter", "2")                                # the next run clears staging
    assert r.returncode == 0, r.stderr
    assert snapshots(out) == [2] and not list((out / ".snapshot-partial").iterdir())


@pytest.mark.skipif(not TMPFS, reason="needs root and unshare to mount a private tmpfs")
def test_disk_full_during_training_stops_before_the_snapshot_naming_the_last_complete_one(toy, tmp_path):
    disk = tmp_path / "disk"
    # one snapshot (630 kB) fits in 1.2 MB, a second one does not
    r = run_on_small_disk(train_cmd(toy, disk / "run", "--max-iter", "6", "--snapshot-interval", "2"), disk, "1200k")
    assert r.returncode == 4, r.stdout + r.stderr
    assert f"not enough space for the snapshot at iteration 4 in {disk}/run" in r.stderr
    assert f"last complete snapshot: {disk}/run/tiny_pvcnn_iter_2.solverstate" in r.stderr
    left = r.stdout.split("LEFT:")[1].split()
    assert f"{disk}/run/tiny_pvcnn_iter_2.caffemodel" in left
    assert not [p for p in left if "_iter_4" in p or "_iter_6" in p]


# --------------------------------------------------------------------------- interrupts and resume

@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_snapshots_the_current_iteration_and_prints_the_resume_command(toy, tmp_path, signum):
    out = tmp_path / "run"
    # Unbuffered: the test waits for a line the child prints; through a pipe Python's stdout is
    # block-buffered unless the environment says otherwise (our hosts set PYTHONUNBUFFERED, the images not).
    proc = subprocess.Popen(train_cmd(toy, out, "--max-iter", "100000", "--snapshot-interval", "100000"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    for line in proc.stdout:
        if line.startswith("train: 100000 iterations from 0"):
            break
    time.sleep(1.5)
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, stderr
    m = re.search(r"after iteration (\d+); snapshot (\S+)\ntrain: resume with: (.+)", stderr)
    assert m, stderr
    it, state = int(m.group(1)), Path(m.group(2))
    assert it > 0 and state == out / f"tiny_pvcnn_iter_{it}.solverstate" and state.is_file()
    assert snapshots(out) == [it]
    cmd = shlex.split(m.group(3))
    assert cmd[cmd.index("--resume") + 1] == str(state) and "--max-iter" in cmd
    done = subprocess.run(cmd + ["--max-iter", str(it + 2)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert snapshots(out) == [it, it + 2]


def test_resume_works_after_the_run_directory_moved(toy, tmp_path):
    first = tmp_path / "first"
    r = train(toy, first, "--max-iter", "3")
    assert r.returncode == 0, r.stderr
    moved = tmp_path / "elsewhere" / "run"
    moved.parent.mkdir()
    shutil.move(first, moved)
    state = moved / "tiny_pvcnn_iter_3.solverstate"
    assert not Path(read_solverstate(state)["learned_net"]).exists()     # Caffe alone: "File not found"
    r = train(toy, moved, "--max-iter", "5", "--resume", str(state))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "names weights that are gone" in r.stdout and snapshots(moved) == [3, 5]
    assert not list(moved.glob(".snapshot-partial/.resume-*"))
    assert "train: 2 iterations from 3" in r.stdout
    assert read_solverstate(moved / "tiny_pvcnn_iter_5.solverstate")["learned_net"] == \
        str((moved / "tiny_pvcnn_iter_5.caffemodel").resolve())


def test_two_runs_into_one_output_directory_are_refused(toy, tmp_path):
    from virality.outputs import OutputLock
    out = tmp_path / "run"
    with OutputLock(out, command="another train.py"):
        r = train(toy, out, "--max-iter", "2")
    assert r.returncode == 4 and "another train.py" in r.stderr


def test_a_truncated_training_lmdb_is_an_error_naming_it_not_a_crash_in_caffe(toy, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(toy, work, ignore=shutil.ignore_patterns("models"))
    data = work / "data/synthetic/random/pairs_train_lmdb/data.mdb"
    with open(data, "r+b") as f:
        f.truncate(data.stat().st_size // 3)
    r = train(work, tmp_path / "run", "--max-iter", "2")
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])   # Caffe alone: SIGBUS at the first missing page
    assert f"{data}: truncated" in r.stderr and "Traceback" not in r.stderr
