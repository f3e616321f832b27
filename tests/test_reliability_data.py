"""Reliability of the data pipeline (issue 14; docs/FAILURES.md): one writer per output directory,
stamps that certify the output on disk, truncated stores and pair files, full disks, left-out
comparisons, CSV edge cases and file modes."""
import json
import os
import resource
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from virality.datasets.csvs import load_pairs_csv, load_scores_csv, read_table
from virality.files import TruncatedFile, load_npy, save_npy_atomic, write_text_atomic
from virality.data.imagestore import ImageStore, StoreError, build_image_store
from virality.outputs import OutputLock, OutputLocked
from virality.data.pair_batches import PairDataError, load_pairs

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
N_IMAGES = 40


def noise(seed, side=40):
    return np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)


def scores_dataset(d, n=N_IMAGES):
    """A scores-csv dataset of n noise PNGs: <d>/scores.csv and <d>/images/."""
    (d / "images").mkdir(parents=True)
    for i in range(n):
        cv2.imwrite(str(d / "images" / f"im{i:03d}.png"), noise(i))
    (d / "scores.csv").write_text("image,score\n" + "".join(f"im{i:03d}.png,{i}\n" for i in range(n)))
    return d


def make_data_cmd(data_dir, out_root, *extra, dataset="scores-csv"):
    return [PY, str(ROOT / "tools/make_data.py"), "--dataset", dataset, "--data-dir", str(data_dir),
            "--out-root", str(out_root), "--sizes", "36", "--quiet", "--pair-lmdb", "all", *extra]


def run(cmd, **kw):
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, **kw)


def make_data(data_dir, out_root, *extra, dataset="scores-csv"):
    r = run(make_data_cmd(data_dir, out_root, *extra, dataset=dataset))
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return scores_dataset(tmp_path_factory.mktemp("reliab") / "ds")


def lmdb_records(path):
    import lmdb
    env = lmdb.open(str(path), readonly=True, lock=False)
    try:
        return env.stat()["entries"]
    finally:
        env.close()


# --------------------------------------------------------------------------- one writer, certified outputs

def test_a_second_make_data_on_the_same_output_is_refused_naming_the_holder(dataset, tmp_path):
    out = tmp_path / "data"
    with OutputLock(out / "scores-csv", command="make_data --num-pairs 100 (the first run)"):
        r = run(make_data_cmd(dataset, out, "--num-pairs", "50"))
    assert r.returncode == 2
    assert f"pid {os.getpid()}" in r.stderr and "(the first run)" in r.stderr and ".lock" in r.stderr
    assert not (out / "scores-csv" / "random").exists()          # it wrote nothing
    # the lock is released with its holder: the next run builds
    make_data(dataset, out, "--num-pairs", "50")


def test_the_lock_dies_with_its_holder(tmp_path):
    holder = subprocess.Popen([PY, "-c", "import sys, time; from virality.outputs import OutputLock\n"
                               f"with OutputLock({str(tmp_path)!r}):\n print('held', flush=True); time.sleep(60)"],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(OutputLocked, match=f"pid {holder.pid}"):
        with OutputLock(tmp_path):
            pass
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with OutputLock(tmp_path):                      # no stale lock after a kill -9
        pass


def test_concurrent_runs_leave_a_consistent_output(dataset, tmp_path):
    """Two runs at once with different --num-pairs: whichever wins, the pair file, its stamp, the pair
    LMDB and data.json agree, and a rerun of the winner's command is up to date."""
    out = tmp_path / "data"
    procs = {n: subprocess.Popen(make_data_cmd(dataset, out, "--num-pairs", str(n)), cwd=ROOT,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for n in (120, 90)}
    results = {n: (p.wait(), p.stdout.read(), p.stderr.read()) for n, p in procs.items()}
    ok = [n for n, (rc, _, _) in results.items() if rc == 0]
    assert ok, results
    for n, (rc, _, err) in results.items():
        assert rc in (0, 2) and (rc == 0 or "being written by another process" in err), err
    root = out / "scores-csv"
    summary = json.loads((root / "data.json").read_text())
    n = summary["num_pairs"]
    for setting in ("random", "random_disjoint"):
        pairs = load_npy(root / setting / "pairs_train.npy")
        stamp = json.loads((root / setting / "pairs_train.npy.stamp").read_text())
        assert len(pairs) == n == stamp["inputs"]["num_pairs"]
        assert lmdb_records(root / setting / "pairs_train_lmdb") == n
    again = make_data(dataset, out, "--num-pairs", str(n))
    assert "sampled" not in again and "records" not in again


def test_an_output_changed_after_it_was_stamped_is_rebuilt_not_trusted(dataset, tmp_path):
    out = tmp_path / "data"
    make_data(dataset, out, "--num-pairs", "60", "--settings", "random")
    root = out / "scores-csv"
    pairs_file = root / "random" / "pairs_train.npy"
    good = load_npy(pairs_file)
    with open(pairs_file, "r+b") as f:                    # a partial copy
        f.truncate(pairs_file.stat().st_size - 100)
    data_mdb = root / "images_36_lmdb" / "data.mdb"
    with open(data_mdb, "r+b") as f:
        f.truncate(data_mdb.stat().st_size // 2)
    lmdb_mdb = root / "random" / "pairs_val_lmdb" / "data.mdb"
    with open(lmdb_mdb, "r+b") as f:                      # same size, other bytes
        f.seek(lmdb_mdb.stat().st_size - 5000)
        f.write(b"\xff" * 100)
    again = make_data(dataset, out, "--num-pairs", "60", "--settings", "random")
    for name in ("pairs_train.npy", "images_36_lmdb", "pairs_val_lmdb"):
        assert f"{name}: changed on disk since it was built" in again, again
    assert "images_36_lmdb: 40/40 images" in again and "pairs_train.npy: 60 pairs sampled" in again
    np.testing.assert_array_equal(load_npy(pairs_file), good)
    assert len(ImageStore(root / "images_36_lmdb")) == N_IMAGES
    assert make_data(dataset, out, "--num-pairs", "60", "--settings", "random").count("up to date") == 6  # store, 3 pair files, 2 pair LMDBs


# --------------------------------------------------------------------------- damaged files are named, never a crash

def _open_in_child(code):
    """Run ``code`` in a child (a SIGBUS there fails this test instead of killing pytest)."""
    return run([PY, "-c", code])


def test_a_truncated_image_store_is_an_error_naming_the_file_not_a_bus_error(tmp_path):
    for i in range(30):
        cv2.imwrite(str(tmp_path / f"{i}.png"), noise(i, 64))
    store = tmp_path / "images_64_lmdb"
    build_image_store([(i, tmp_path / f"{i}.png") for i in range(30)], store, 64, progress=False)
    data = store / "data.mdb"
    with open(data, "r+b") as f:
        f.truncate(data.stat().st_size * 2 // 3)
    code = ("from virality.data.imagestore import ImageStore\n"
            f"s = ImageStore({str(store)!r})\nprint(s.read_chw(s.ids).sum())")
    r = _open_in_child(code)
    assert r.returncode == 1, (r.returncode, r.stderr[-2000:])     # 135 = the Bus error this replaces
    assert f"{data}: truncated" in r.stderr and "make data" in r.stderr
    r = _open_in_child("from virality.data.pair_batches import ImageSource\n"
                       f"ImageSource({str(store)!r})")
    assert r.returncode == 1 and f"{data}: truncated" in r.stderr


def test_a_store_whose_ids_disagree_with_its_records_is_refused(tmp_path):
    for i in range(5):
        cv2.imwrite(str(tmp_path / f"{i}.png"), noise(i, 16))
    store = tmp_path / "s"
    build_image_store([(i, tmp_path / f"{i}.png") for i in range(5)], store, 16, progress=False)
    np.save(store / "ids.npy", np.arange(4, dtype=np.int64))
    with pytest.raises(StoreError, match=r"ids.npy: lists 4 ids, store.json says 5"):
        ImageStore(store)
    np.save(store / "ids.npy", np.array([0, 1, 2, 3, 7], np.int64))
    with pytest.raises(StoreError, match="record 0000000007 is missing"):
        ImageStore(store)


def test_a_truncated_pair_file_is_an_error_naming_the_file(tmp_path):
    path = tmp_path / "pairs_train.npy"
    save_npy_atomic(path, np.array([[0, 1, 1], [2, 3, -1]] * 50, np.int32))
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size - 7)
    with pytest.raises(PairDataError, match=rf"{path}: truncated \(\d+ bytes; its header <i4 \(100, 3\) needs"):
        load_pairs(path)
    with pytest.raises(TruncatedFile, match="truncated"):
        load_npy(path, mmap=True)          # numpy alone: "mmap length is greater than file size"
    from virality.train.training import count_test_records
    from virality.pretrained.weights import read_net_param
    net = tmp_path / "net.prototxt"
    net.write_text('layer { name: "d" type: "Python" top: "data" include { phase: TEST } '
                   f'python_param {{ module: "m" layer: "L" param_str: \'{{"pairs": "{path}"}}\' }} }}')
    with pytest.raises(ValueError, match=f"{path}: truncated"):
        count_test_records(read_net_param(net), tmp_path)


# --------------------------------------------------------------------------- full disks

def _can_mount_tmpfs():
    if not shutil.which("unshare") or os.geteuid() != 0:
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
                           capture_output=True)
    return probe.returncode == 0


TMPFS = _can_mount_tmpfs()


def run_on_small_disk(cmd, mountpoint, size, options=""):
    """Run ``cmd`` with ``mountpoint`` a private tmpfs of ``size`` (gone when it exits); also list what it left."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    script = (f"mount -t tmpfs -o size={size}{options} tmpfs {mountpoint} || exit 99; "
              f'"$@"; rc=$?; echo "LEFT:"; find {mountpoint} -mindepth 1 | sort; exit $rc')
    r = run(["unshare", "-m", "sh", "-c", script, "sh", *cmd])
    assert r.returncode != 99, r.stderr
    return r


@pytest.mark.skipif(not TMPFS, reason="needs root and unshare to mount a private tmpfs (the ulimit test runs)")
def test_disk_full_during_make_data_is_a_clear_error_on_a_small_tmpfs(dataset, tmp_path):
    disk = tmp_path / "disk"
    # a store that cannot fit: refused before anything is written
    r = run_on_small_disk(make_data_cmd(dataset, disk, "--num-pairs", "50"), disk, "96k")
    assert r.returncode == 2, r.stdout + r.stderr
    assert f"not enough space for the image store {disk}/scores-csv/images_36_lmdb" in r.stderr
    assert "MB needed" in r.stderr and "MB free" in r.stderr and "Traceback" not in r.stderr
    # png records have no size known in advance: LMDB fails mid-write ("Input/output error")
    r = run_on_small_disk(make_data_cmd(dataset, disk, "--num-pairs", "50", "--encoding", "png"), disk, "160k")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "no space left on the device" in r.stderr and f"{disk}/scores-csv" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    left = r.stdout.split("LEFT:")[1].split()
    assert not [p for p in left if p.endswith("_lmdb") and "/." not in p], left   # nothing that looks complete
    # a read-only output
    r = run_on_small_disk(make_data_cmd(dataset, disk, "--num-pairs", "50"), disk, "1m", options=",ro")
    assert r.returncode == 2 and "read-only" in r.stderr and str(disk) in r.stderr, r.stderr


def _file_size_limit(limit):
    def set_limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return set_limit


def test_a_write_that_hits_the_file_size_limit_is_a_clear_error(dataset, tmp_path):
    """The unprivileged stand-in for a full disk (ulimit -f): the kernel refuses the write mid-build."""
    out = tmp_path / "data"
    r = subprocess.run(make_data_cmd(dataset, out, "--num-pairs", "50"), cwd=ROOT, capture_output=True, text=True,
                       preexec_fn=_file_size_limit(100_000))
    assert r.returncode == 2, r.stdout + r.stderr
    assert "file size limit" in r.stderr and f"{out}/scores-csv" in r.stderr and "Traceback" not in r.stderr
    assert not (out / "scores-csv" / "images_36_lmdb").exists()
    assert not list((out / "scores-csv").glob(".images_36_lmdb*"))          # the partial build is gone


# --------------------------------------------------------------------------- left-out comparisons

def test_comparisons_naming_missing_or_broken_images_are_counted_and_named(tmp_path):
    d = tmp_path / "pc"
    (d / "images").mkdir(parents=True)
    names = [f"p{i:02d}.png" for i in range(30)]
    for i, name in enumerate(names):
        cv2.imwrite(str(d / "images" / name), noise(i, 24))
    (d / "images" / "p03.png").write_bytes(b"not a png")          # broken
    (d / "images" / "p07.png").unlink()                          # missing
    rng = np.random.default_rng(0)
    rows, seen = [], set()
    while len(rows) < 150:
        a, b = sorted(rng.choice(30, 2, replace=False).tolist())
        if (a, b) not in seen:
            seen.add((a, b))
            rows.append((a, b, 1 if rng.random() < 0.5 else -1))
    (d / "pairs.csv").write_text("image_a,image_b,label\n" + "".join(f"{names[a]},{names[b]},{y}\n"
                                                                    for a, b, y in rows))
    bad_rows = sum(1 for a, b, _ in rows if {a, b} & {3, 7})     # counted from the CSV itself
    assert bad_rows > 0
    out = tmp_path / "data"
    log = make_data(d, out, "--num-pairs", "20", dataset="pairs-csv")
    summary = json.loads((out / "pairs-csv" / "data.json").read_text())
    assert summary["left_out_images"]["count"] == 2
    assert summary["left_out_images"]["reasons"] == {"missing": 1, "unreadable": 1}
    assert "2 of 30 images are not in the image store(s)" in log and "manifest.csv" in log
    dropped = summary["settings"]["random"]["dropped"]
    assert dropped.get("train_pairs", 0) + dropped.get("test_pairs", 0) == bad_rows
    assert dropped["train_pairs"] > 0 and f"'train_pairs': {dropped['train_pairs']}" in log


# --------------------------------------------------------------------------- CSVs

def test_a_non_utf8_csv_names_the_file_and_line(tmp_path):
    path = tmp_path / "scores.csv"
    path.write_bytes(b"image,score\na.png,1\nb\xe9.png,2\n")
    with pytest.raises(ValueError, match=rf"{path}: line 3: not UTF-8"):
        read_table(path, ("image", "score"))


def test_an_over_long_field_names_the_file_and_line(tmp_path):
    path = tmp_path / "scores.csv"
    path.write_text("image,score\na.png,1\n\"" + "x" * 200_000 + "\",2\n")
    with pytest.raises(ValueError, match=rf"{path}: line 3: field larger than field limit"):
        read_table(path, ("image", "score"))


def test_a_repeated_header_column_is_an_error(tmp_path):
    path = tmp_path / "scores.csv"
    path.write_text("image,score,Score\na.png,1,2\n")
    with pytest.raises(ValueError, match=rf"{path}: line 1: the header names column\(s\) 'score' more than once"):
        read_table(path, ("image", "score"))


def test_paths_are_normalised_before_duplicates_are_found(tmp_path):
    path = tmp_path / "scores.csv"
    path.write_text("image,score\n./a.png,1\nb.png,2\na.png,3\nc.png,4\n")
    with pytest.raises(ValueError, match=r"'./a.png' and 'a.png' name the same file \(lines 2 and 4\)"):
        load_scores_csv(path)
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("image_a,image_b,label\n./a.png,b.png,1\nsub//c.png,a.png,-1\nb.png,sub/./c.png,1\n"
                     "d.png,e.png,1\n")
    ds = load_pairs_csv(pairs, test_fraction=0.9)
    assert list(ds.image_names) == ["a.png", "b.png", "d.png", "e.png", "sub/c.png"]


# --------------------------------------------------------------------------- file modes

@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_atomic_writes_follow_the_umask(tmp_path, mask, mode):
    old = os.umask(mask)
    try:
        a = write_text_atomic(tmp_path / "a.json", "{}")
        b = save_npy_atomic(tmp_path / "b.npy", np.zeros(3))
    finally:
        os.umask(old)
    assert stat.S_IMODE(a.stat().st_mode) == mode and stat.S_IMODE(b.stat().st_mode) == mode


def test_generated_directories_follow_the_umask(tmp_path):
    from virality.data.synthetic import WorldConfig, generate_world
    old = os.umask(0o022)
    try:
        generate_world(tmp_path / "raw", WorldConfig(num_images=12, size=24))
        for i in range(3):
            cv2.imwrite(str(tmp_path / f"{i}.png"), noise(i, 16))
        build_image_store([(i, tmp_path / f"{i}.png") for i in range(3)], tmp_path / "store", 8, progress=False)
    finally:
        os.umask(old)
    for path in (tmp_path / "raw", tmp_path / "raw" / "scores.csv", tmp_path / "store",
                 tmp_path / "store" / "store.json", tmp_path / "store" / "data.mdb"):
        assert stat.S_IMODE(path.stat().st_mode) & 0o044 == 0o044, path        # group and others may read


def test_ctrl_c_during_make_data_keeps_only_complete_outputs(tmp_path):
    d = tmp_path / "big"
    (d / "images").mkdir(parents=True)
    n = 1500
    for i in range(n):
        cv2.imwrite(str(d / "images" / f"im{i:04d}.png"), noise(i, 64))
    (d / "scores.csv").write_text("image,score\n" + "".join(f"im{i:04d}.png,{i}\n" for i in range(n)))
    out = tmp_path / "data"
    make_data(d, out, "--num-pairs", "100", "--pair-lmdb", "none")
    proc = subprocess.Popen(make_data_cmd(d, out, "--num-pairs", "100", "--pair-lmdb", "none", "--sizes", "36", "64",
                                          "--workers", "1"),
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})   # the line below must arrive as printed
    for line in proc.stdout:
        if "images_36_lmdb: up to date" in line:      # the next step builds images_64_lmdb
            break
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stdout + stderr
    assert "make_data: interrupted" in stderr and "Traceback" not in stderr
    root = out / "scores-csv"
    assert not (root / "images_64_lmdb").exists()
    assert [p.name for p in root.glob(".*")] == [".lock"], "the partial build is removed"
    again = make_data(d, out, "--num-pairs", "100", "--pair-lmdb", "none")
    assert again.count("up to date") == 7          # the outputs finished before the interrupt are kept: store, 2 x 3 pair files
