"""Resumable, verified downloads of pretrained weights.

``download(url, dest, expected_sha1=...)``:

- downloads into ``<dest>.part``; an interrupted download (connection lost, the
  server closing early) is resumed with an HTTP ``Range`` request, both within
  one call (``retries``) and by running again later (the ``.part`` file stays);
- draws a progress bar on stderr;
- computes the sha1 of the complete file *after* the download, from disk, and
  only then moves it to ``dest``; on a mismatch the file is deleted and
  ``ChecksumMismatch`` is raised (the final name never holds a bad file);
- with no published checksum (``expected_sha1=None``) the file is kept, and
  the caller is given its sha1 to warn about and to pin;
- a ``dest`` that already exists is verified instead of downloaded again (the
  way to install a manually downloaded file); if it fails the check it is moved
  aside to ``<dest>.sha1-mismatch``.

Errors are ``DownloadError`` subclasses with an ``exit_code`` for the tools.
``fetch_manifest(manifest)`` adds the Model Zoo knowledge: where the file goes,
what to do when offline, and the loud warning for unverifiable files.
"""
import os
import re
import socket
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path

from virality.files import file_digest

USER_AGENT = "virality-caffe-fetch-weights/1"


class DownloadError(Exception):
    exit_code = 1


class OfflineError(DownloadError):
    """The server could not be reached at all."""
    exit_code = 3


class HTTPStatusError(DownloadError):
    """The server answered with an error status (404, 500, ...)."""
    exit_code = 4


class IncompleteDownload(DownloadError):
    """The connection was lost and the retries ran out; the .part file is kept for resuming."""
    exit_code = 5


class ChecksumMismatch(DownloadError):
    """The downloaded (or existing) file does not have the expected sha1."""
    exit_code = 6


@dataclass
class FetchResult:
    path: Path
    sha1: str
    verified: bool           # the sha1 matched a published checksum
    already_present: bool    # dest existed and was verified, nothing downloaded
    downloaded_bytes: int    # bytes received in this call
    resumed_from: int        # size of the .part file this call started from (0: fresh)
    attempts: int


def file_sha1(path):
    return file_digest(path, "sha1")


def _mb(n):
    return f"{n / 1e6:.1f} MB"


class Progress:
    """A progress bar on ``stream``: redrawn in place on a terminal, a line per 10% otherwise."""

    def __init__(self, stream, total, done, label, width=30, min_interval=0.2):
        self.stream, self.total, self.done, self.label = stream, total, done, label
        self.width, self.min_interval = width, min_interval
        self.tty = hasattr(stream, "isatty") and stream.isatty()
        self.start = time.monotonic()
        self.start_done = done
        self.last_draw = 0.0
        self.last_decile = -1

    def update(self, n):
        self.done += n
        now = time.monotonic()
        if self.tty:
            if now - self.last_draw >= self.min_interval:
                self._draw(now, end="\r")
        elif self.total:
            decile = int(10 * self.done / self.total)
            if decile > self.last_decile:
                self.last_decile = decile
                self._draw(now, end="\n")

    def _draw(self, now, end):
        self.last_draw = now
        rate = (self.done - self.start_done) / max(now - self.start, 1e-6)
        if self.total:
            frac = min(self.done / self.total, 1.0)
            bar = "#" * int(frac * self.width)
            text = f"{self.label} [{bar:<{self.width}}] {100 * frac:5.1f}% {_mb(self.done)}/{_mb(self.total)}"
        else:
            text = f"{self.label} {_mb(self.done)}"
        self.stream.write(f"{text} {rate / 1e6:.1f} MB/s{end}")
        self.stream.flush()

    def close(self):
        if self.tty:
            self._draw(time.monotonic(), end="\n")


_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


def _open(url, offset, timeout):
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)


def _receive(url, part, timeout, chunk_size, progress, stream, label):
    """One attempt: append to ``part`` from its current size. Returns (complete, total, received)."""
    offset = part.stat().st_size if part.exists() else 0
    try:
        resp = _open(url, offset, timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:
            # Nothing left past our offset: the .part is complete or longer than the file. Start over.
            part.unlink()
            return False, None, 0
        raise HTTPStatusError(f"{url}: the server answered {e.code} {e.reason}") from None
    except (urllib.error.URLError, socket.timeout, ConnectionError, HTTPException) as e:
        reason = getattr(e, "reason", e)
        raise OfflineError(f"{url}: cannot reach the server ({reason})") from None
    with resp:
        status = resp.status
        total = None
        if status == 206:
            m = _CONTENT_RANGE.match(resp.headers.get("Content-Range", ""))
            if not m or int(m.group(1)) != offset:
                raise DownloadError(f"{url}: the server resumed at the wrong place "
                                    f"(Content-Range '{resp.headers.get('Content-Range')}', asked for byte {offset})")
            total = int(m.group(3)) if m.group(3) != "*" else None
            mode = "ab"
        elif status == 200:
            if offset:
                stream.write(f"{label}: the server does not resume (no Range support); starting again from 0\n")
            offset = 0
            length = resp.headers.get("Content-Length")
            total = int(length) if length is not None else None
            mode = "wb"
        else:
            raise HTTPStatusError(f"{url}: unexpected HTTP status {status}")
        bar = Progress(stream, total, offset, label) if progress else None
        received = 0
        interrupted = None
        with open(part, mode) as f:
            while True:
                try:
                    block = resp.read(chunk_size)
                except (HTTPException, ConnectionError, socket.timeout, OSError) as e:
                    interrupted = e
                    break
                if not block:
                    break
                f.write(block)
                received += len(block)
                if bar:
                    bar.update(len(block))
        if bar:
            bar.close()
    size = part.stat().st_size
    if total is not None and size > total:
        part.unlink()
        raise DownloadError(f"{url}: received {size} bytes but the server announced {total}; "
                            "the partial file was deleted, run again")
    complete = interrupted is None and (total is None or size == total)
    if not complete:
        why = f" ({type(interrupted).__name__})" if interrupted else ""
        stream.write(f"{label}: connection lost at {size} of {total if total is not None else '?'} bytes{why}\n")
    return complete, total, received


def download(url, dest, expected_sha1=None, retries=3, timeout=60, chunk_size=1 << 20,
             progress=True, stream=None, retry_wait=1.0):
    """Download ``url`` to ``dest`` (resuming ``<dest>.part``), verify, then move into place."""
    stream = stream or sys.stderr
    dest = Path(dest)
    label = dest.name
    if dest.exists():
        sha1 = file_sha1(dest)
        if expected_sha1 is None or sha1 == expected_sha1:
            return FetchResult(dest, sha1, expected_sha1 is not None, True, 0, 0, 0)
        rejected = dest.with_name(dest.name + ".sha1-mismatch")
        os.replace(dest, rejected)
        raise ChecksumMismatch(f"{dest} existed but its sha1 is {sha1}, expected {expected_sha1}; "
                               f"moved it aside to {rejected}. Run again to download a fresh copy.")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    resumed_from = part.stat().st_size if part.exists() else 0
    if resumed_from:
        stream.write(f"{label}: resuming from {part} ({resumed_from} bytes)\n")
    received = 0
    attempts = 0
    while True:
        attempts += 1
        complete, total, got = _receive(url, part, timeout, chunk_size, progress, stream, label)
        received += got
        if complete:
            break
        if attempts > retries:
            have = part.stat().st_size if part.exists() else 0
            raise IncompleteDownload(
                f"{url}: the download stopped at {have} of {total if total is not None else '?'} bytes "
                f"after {attempts} attempt(s); the partial file {part} is kept: run again to resume.")
        stream.write(f"{label}: resuming (attempt {attempts + 1} of {retries + 1})\n")
        time.sleep(retry_wait)
    sha1 = file_sha1(part)                       # verified after the download, from disk
    if expected_sha1 is not None and sha1 != expected_sha1:
        part.unlink()
        raise ChecksumMismatch(f"{url}: checksum mismatch: the downloaded file's sha1 is {sha1}, expected "
                               f"{expected_sha1}. The file was deleted; {dest} was not written. "
                               "Run again; if it persists, the server's file differs from the published one.")
    os.replace(part, dest)
    return FetchResult(dest, sha1, expected_sha1 is not None, False, received, resumed_from, attempts)


def manual_hint(manifest, dest):
    check = (f"its sha1 must be {manifest.sha1}" if manifest.verifiable
             else "no checksum is published for it, so check its origin yourself")
    return (f"If this machine is offline, download\n    {manifest.url}\n"
            f"elsewhere and put it at\n    {dest}\n({check}); then run "
            f"`make weights MODEL={manifest.name}` again: it verifies the file and does not download it again.")


def fetch_manifest(manifest, dest=None, url=None, stream=None, **kwargs):
    """Fetch the weights of a zoo ``Manifest`` (``url``/``dest`` override the manifest's)."""
    stream = stream or sys.stderr
    dest = Path(dest) if dest else manifest.default_dest()
    try:
        result = download(url or manifest.url, dest, expected_sha1=manifest.sha1, stream=stream, **kwargs)
    except (OfflineError, HTTPStatusError, IncompleteDownload) as e:
        raise type(e)(f"{e}\n{manual_hint(manifest, dest)}") from None
    if not manifest.verifiable:
        stream.write(manifest.unverified_warning(result.sha1))
    return result
