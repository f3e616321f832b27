"""Progress bars for long steps (prediction, neighbours, evaluation, data building, training).

``progress(iterable, total=..., desc=...)`` is tqdm on stderr. On a terminal it redraws one
line; when stderr is a file or a pipe (CI logs, ``2> log``) it writes a plain line at most
every ``log_interval`` seconds instead of carriage-return redraws, so a log stays readable.
``enabled=False`` (a tool's ``--quiet``) turns it off; the environment variable
``VIRALITY_PROGRESS=0`` turns every bar off, ``=1`` forces terminal-style bars.
"""
import os
import sys

from tqdm import tqdm


class _LineStream:
    """A file-like stream that turns tqdm's carriage-return redraws into whole lines."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text):
        text = text.replace("\r", "").strip("\n")
        if text.strip():
            self.stream.write(text + "\n")

    def flush(self):
        self.stream.flush()


def progress(iterable=None, total=None, desc="", unit="it", enabled=True, stream=None, log_interval=10.0):
    """A tqdm bar over ``iterable`` (or a manual one with ``.update(n)`` when iterable is None)."""
    stream = stream or sys.stderr
    env = os.environ.get("VIRALITY_PROGRESS", "")
    if env == "0":
        enabled = False
    tty = env == "1" or (hasattr(stream, "isatty") and stream.isatty())
    kwargs = dict(total=total, desc=desc, unit=unit, disable=not enabled, dynamic_ncols=tty)
    if tty:
        return tqdm(iterable, file=stream, **kwargs)
    return tqdm(iterable, file=_LineStream(stream), mininterval=log_interval, ascii=True, ncols=100, **kwargs)
