"""Outputs a builder may trust: content stamps that certify what is on disk, and one writer per directory.

A stamp ``<output>.stamp`` (JSON) holds

- ``digest``: a sha256 of everything the output was built from (input files,
  arrays, options and the builder's source code, :class:`Digest`);
- ``output``: the output's fingerprint as it was when the build finished
  (:func:`virality.files.fingerprint`: every file's size and a content hash).

``is_fresh`` trusts an output only when both match: a changed input rebuilds
it, and so does an output that was truncated, replaced or edited after it was
stamped (a partial copy, an rsync, a second writer).

``OutputLock`` lets one process at a time build into a directory: a second one
fails at once with a message naming the holder (pid, host, command, start
time). It is an ``flock`` on ``<dir>/.lock``, so the kernel releases it when
the holder exits or is killed; a stale lock file is never a problem.
docs/FAILURES.md has the guarantees.
"""
import fcntl
import hashlib
import json
import os
import socket
import sys
import time
from pathlib import Path

import numpy as np

from virality.files import fingerprint, write_text_atomic
from virality.paths import ROOT

LOCK_NAME = ".lock"


class Digest:
    """sha256 over labelled parts: JSON-able values, arrays (dtype, shape, bytes) and files."""

    def __init__(self, kind):
        self.h = hashlib.sha256(kind.encode())

    def value(self, label, obj):
        self.h.update(f"\0{label}=".encode() + json.dumps(obj, sort_keys=True, default=str).encode())
        return self

    def array(self, label, arr):
        arr = np.ascontiguousarray(arr)
        self.h.update(f"\0{label}:{arr.dtype.str}:{arr.shape}".encode())
        self.h.update(arr.tobytes())
        return self

    def code(self, *modules):
        for rel in modules:
            self.h.update(f"\0code:{rel}".encode() + (ROOT / rel).read_bytes())
        return self

    def hexdigest(self):
        return self.h.hexdigest()


def stamp_path(output):
    return Path(f"{output}.stamp")


def read_stamp(output):
    """The stamp of ``output`` as a dict, or None when it is missing or unreadable."""
    try:
        stamp = json.loads(stamp_path(output).read_text())
    except (OSError, ValueError):
        return None
    return stamp if isinstance(stamp, dict) else None


def is_fresh(output, digest, force=False):
    """True when ``output`` exists, its stamp holds ``digest``, and it is on disk as it was stamped."""
    if force or not Path(output).exists():
        return False
    stamp = read_stamp(output)
    if stamp is None or stamp.get("digest") != digest:
        return False
    return stamp.get("fingerprint") == fingerprint(output)


def stale_reason(output, digest):
    """Why ``output`` is not fresh, in a few words (for the builder's log), or None when it is."""
    if not Path(output).exists():
        return "missing"
    stamp = read_stamp(output)
    if stamp is None:
        return "no stamp"
    if stamp.get("digest") != digest:
        return "inputs or options changed"
    if stamp.get("fingerprint") != fingerprint(output):
        return "changed on disk since it was built (truncated, edited or replaced)"
    return None


def write_stamp(output, digest, **inputs):
    """Certify ``output`` as it is now on disk, built from ``digest``."""
    write_text_atomic(stamp_path(output), json.dumps(
        dict(digest=digest, output=Path(output).name, fingerprint=fingerprint(output), inputs=inputs),
        indent=1, sort_keys=True, default=str) + "\n")


class OutputLocked(RuntimeError):
    """Another process is building into the same directory."""


class OutputLock:
    """An exclusive, non-blocking lock on a directory for the life of a ``with`` block (module docstring)."""

    def __init__(self, directory, command=None):
        self.directory = Path(directory)
        self.path = self.directory / LOCK_NAME
        self.command = command or " ".join(sys.argv)
        self.fd = None

    def __enter__(self):
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 4096).decode("utf-8", "replace").strip() or "an unknown process"
            os.close(fd)
            raise OutputLocked(f"{self.directory} is being written by another process ({holder}); wait for it "
                               f"to finish (its lock: {self.path}), or build into another directory") from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.write(fd, (f"pid {os.getpid()} on {socket.gethostname()}, started "
                      f"{time.strftime('%Y-%m-%d %H:%M:%S')}: {self.command}\n").encode())
        self.fd = fd
        return self

    def __exit__(self, *exc):
        os.ftruncate(self.fd, 0)
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = None
        return False
