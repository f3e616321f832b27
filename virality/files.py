"""Small file helpers shared by the tools: atomic writes and content digests.

Atomic writes go through a temporary file in the destination's directory and a
rename, so a killed run never leaves a half-written file under the final name.
"""
import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np


def _atomic(path, mode, write):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path, text):
    return _atomic(path, "w", lambda f: f.write(text))


def save_npy_atomic(path, array):
    return _atomic(path, "wb", lambda f: np.save(f, array))


def file_digest(path, algorithm="sha256", chunk_size=1 << 20):
    """Hex digest of a file's bytes (sha256, sha1, ...), read in chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk_size), b""):
            h.update(block)
    return h.hexdigest()
