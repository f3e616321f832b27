"""Small file helpers shared by the tools: atomic writes, checked reads, digests, disk space.

Atomic writes go through a temporary file in the destination's directory and a
rename, so a killed run never leaves a half-written file under the final name.
They are created with the user's umask (as ``open`` would), not mkstemp's 0600,
so a group sharing a data directory can read them.

``load_npy`` checks a .npy file's size against its header before reading or
mapping it: a truncated file is an error naming the file, never numpy's
"mmap length is greater than file size".

``fingerprint`` describes a file or directory as it is on disk (sizes and a
content hash), so a stamp can certify an output, not only its inputs
(docs/FAILURES.md).

``disk_error`` turns a failed write into a message naming the path and what ran
out (space, quota, a read-only file system, permission).
"""
import errno
import hashlib
import os
import resource
import shutil
import tempfile
from pathlib import Path

import numpy as np

#: files up to this size are hashed whole by ``fingerprint``; larger ones by SAMPLE_BLOCKS blocks.
FULL_HASH_BYTES = 64 << 20
SAMPLE_BLOCKS = 64
SAMPLE_BLOCK_BYTES = 64 << 10
#: files a reader may change (LMDB's reader table): left out of fingerprints.
VOLATILE_NAMES = ("lock.mdb",)


class TruncatedFile(ValueError):
    """A file shorter (or otherwise other) than its own header says; the message names it."""


def umask():
    """The process's umask (read without changing it for longer than the call)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _atomic(path, mode, write, suffix=None):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                               suffix=path.suffix if suffix is None else suffix)
    try:
        os.fchmod(fd, 0o666 & ~umask())
        with os.fdopen(fd, mode) as f:
            write(f)
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        error = disk_error(err, path) if isinstance(err, OSError) else err
        if error is not err:
            raise error from err
        raise
    return path


def write_text_atomic(path, text):
    return _atomic(path, "w", lambda f: f.write(text))


def write_binary_atomic(path, write, suffix=".part"):
    """``write(f)`` into a temporary file beside ``path`` (named ``.<name>.*<suffix>``), renamed into place."""
    return _atomic(path, "wb", write, suffix=suffix)


def save_npy_atomic(path, array):
    return _atomic(path, "wb", lambda f: np.save(f, array))


def file_digest(path, algorithm="sha256", chunk_size=1 << 20):
    """Hex digest of a file's bytes (sha256, sha1, ...), read in chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk_size), b""):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------- checked reads

def npy_header(path):
    """(shape, dtype, data offset) of a .npy file; TruncatedFile when its bytes do not match the header."""
    path = Path(path)
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
            if version not in read:
                raise ValueError(f"unsupported .npy format version {version}")
            shape, _, dtype = read[version](f)
            offset = f.tell()
    except (ValueError, OSError, EOFError) as err:
        raise TruncatedFile(f"{path}: not a readable .npy file ({err})") from None
    if dtype.hasobject:
        raise TruncatedFile(f"{path}: holds Python objects, not a numeric array")
    need = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if size != need:
        state = "truncated" if size < need else "longer than its header says"
        raise TruncatedFile(f"{path}: {state} ({size} bytes; its header {dtype.str} {shape} needs {need})")
    return shape, dtype, offset


def load_npy(path, mmap=False):
    """np.load of a .npy whose size was checked against its header first (``npy_header``)."""
    npy_header(path)
    return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)


# --------------------------------------------------------------------------- fingerprints

def _file_fingerprint(path):
    size = path.stat().st_size
    h = hashlib.sha256()
    with open(path, "rb") as f:
        if size <= FULL_HASH_BYTES:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
            how = "sha256"
        else:
            step = (size - SAMPLE_BLOCK_BYTES) // (SAMPLE_BLOCKS - 1)
            for k in range(SAMPLE_BLOCKS):
                f.seek(k * step)
                h.update(f.read(SAMPLE_BLOCK_BYTES))
            how = f"sha256 of {SAMPLE_BLOCKS} blocks"
    return dict(size=size, hash=h.hexdigest(), how=how)


def fingerprint(path):
    """What ``path`` is on disk: {relative name: size and hash} of the file, or of every file under the
    directory (LMDB lock files left out). Whole-file sha256 up to FULL_HASH_BYTES; beyond that the size
    and a hash of SAMPLE_BLOCKS evenly spaced blocks (a truncated or resized file always differs)."""
    path = Path(path)
    if path.is_file():
        return {".": _file_fingerprint(path)}
    out = {}
    for p in sorted(path.rglob("*")):
        if p.is_file() and p.name not in VOLATILE_NAMES:
            out[p.relative_to(path).as_posix()] = _file_fingerprint(p)
    return out


# --------------------------------------------------------------------------- disk space

class DiskError(OSError):
    """A write failed for lack of space, quota or permission; the message names the path."""

    def __str__(self):
        return self.strerror


_RAN_OUT = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "the disk quota is exhausted",
            errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
            errno.EPERM: "permission denied", errno.EFBIG: "the file size limit (ulimit -f) was reached"}


def free_bytes(path):
    """Free bytes on the file system holding ``path`` (its nearest existing parent)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def disk_error(err, path, need=None):
    """A DiskError naming ``path`` and what ran out, for an OSError whose errno says so; else ``err``."""
    if isinstance(err, DiskError) or getattr(err, "errno", None) not in _RAN_OUT:
        return err
    return DiskError(err.errno, f"cannot write {path}: {ran_out(err.errno, path, need)}")


def ran_out(code, path, need=None):
    """What ran out for errno ``code`` writing at ``path``, with the numbers and what to do."""
    what = _RAN_OUT[code]
    if code in (errno.EROFS, errno.EACCES, errno.EPERM):
        return f"{what}; choose a writable output directory"
    if code == errno.EFBIG:
        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        return f"{what} ({limit} bytes per file); raise it (ulimit -f unlimited)"
    detail = f"{free_bytes(path) / 1e6:.1f} MB free there"
    if need:
        detail += f", about {need / 1e6:.1f} MB needed"
    return f"{what} ({detail}); free some space or write the output to a larger disk"


def file_size_limited():
    """True when this process runs under a finite file size limit (ulimit -f)."""
    return resource.getrlimit(resource.RLIMIT_FSIZE)[0] != resource.RLIM_INFINITY


def check_free_space(path, need, what):
    """Raise DiskError before a write of about ``need`` bytes that the file system at ``path`` cannot hold."""
    free = free_bytes(path)
    if need > free:
        raise DiskError(errno.ENOSPC, f"not enough space for {what} in {path}: about {need / 1e6:.1f} MB needed, "
                                      f"{free / 1e6:.1f} MB free; free some space or write the output to a "
                                      "larger disk")
