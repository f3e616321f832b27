"""The download path of tools/fetch_weights.py against a local HTTP server (never the internet).

The server (127.0.0.1, a random port, a thread of this process) serves stand-in
files: a good one, a corrupted one (not the expected bytes), one cut off
half-way (the server announces the full length and closes early), a 404, and it
honours (or, for one path, ignores) HTTP Range requests. Every request is logged
so that the tests can check what was asked for.
"""
import hashlib
import io
import json
import os
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from virality.pretrained.download import (ChecksumMismatch, HTTPStatusError, IncompleteDownload, OfflineError, download,
                               fetch_manifest, file_sha1)
from virality.paths import ROOT
from virality.pretrained.zoo import load_manifest

GOOD = np.random.default_rng(7).integers(0, 256, size=300_000, dtype=np.uint8).tobytes()
GOOD_SHA1 = hashlib.sha1(GOOD).hexdigest()
CORRUPT = GOOD[:1000] + bytes([GOOD[1000] ^ 0xFF]) + GOOD[1001:]


class _State:
    def __init__(self):
        self.requests = []          # (path, Range header or None)
        self.cut = {}               # path -> how many more responses to cut off half-way
        self.lock = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    files = {"/good.caffemodel": GOOD, "/corrupt.caffemodel": CORRUPT,
             "/cut.caffemodel": GOOD, "/norange.caffemodel": GOOD}

    def log_message(self, *args):   # keep pytest output clean
        pass

    def do_GET(self):
        state = self.server.state
        rng = self.headers.get("Range")
        with state.lock:
            state.requests.append((self.path, rng))
            cut = state.cut.get(self.path, 0) > 0
            if cut:
                state.cut[self.path] -= 1
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404, "Not Found")
            return
        start = 0
        if rng and self.path != "/norange.caffemodel":
            assert rng.startswith("bytes=") and rng.endswith("-"), rng
            start = int(rng[len("bytes="):-1])
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        payload = body[start:]
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if cut:
            # Announce everything, send half, hang up.
            self.wfile.write(payload[: len(payload) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(payload)


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.state = _State()
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def srv(server):
    server.state.requests.clear()
    server.state.cut.clear()
    server.base = f"http://127.0.0.1:{server.server_address[1]}"
    return server


def _closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_good_file_is_downloaded_verified_and_moved_into_place(srv, tmp_path):
    dest = tmp_path / "w" / "good.caffemodel"
    err = io.StringIO()
    result = download(f"{srv.base}/good.caffemodel", dest, expected_sha1=GOOD_SHA1, stream=err, chunk_size=16384)
    assert dest.read_bytes() == GOOD
    assert result.verified and result.sha1 == GOOD_SHA1 and not result.already_present
    assert result.downloaded_bytes == len(GOOD) and result.resumed_from == 0
    assert not (tmp_path / "w" / "good.caffemodel.part").exists()
    assert srv.state.requests == [("/good.caffemodel", None)]
    # The progress bar (not a terminal: one line per 10%) ends at 100%.
    assert "100.0%" in err.getvalue() and "[" in err.getvalue()


def test_existing_verified_file_is_not_downloaded_again(srv, tmp_path):
    dest = tmp_path / "good.caffemodel"
    dest.write_bytes(GOOD)
    result = download(f"{srv.base}/good.caffemodel", dest, expected_sha1=GOOD_SHA1, stream=io.StringIO())
    assert result.already_present and result.verified
    assert srv.state.requests == []


def test_corrupted_download_fails_and_leaves_nothing_under_the_final_name(srv, tmp_path):
    dest = tmp_path / "corrupt.caffemodel"
    with pytest.raises(ChecksumMismatch) as err:
        download(f"{srv.base}/corrupt.caffemodel", dest, expected_sha1=GOOD_SHA1, stream=io.StringIO())
    msg = str(err.value)
    assert hashlib.sha1(CORRUPT).hexdigest() in msg and GOOD_SHA1 in msg and "deleted" in msg
    assert not dest.exists() and not dest.with_name(dest.name + ".part").exists()


def test_bad_file_already_at_destination_is_moved_aside(srv, tmp_path):
    dest = tmp_path / "good.caffemodel"
    dest.write_bytes(CORRUPT)
    with pytest.raises(ChecksumMismatch, match="moved it aside"):
        download(f"{srv.base}/good.caffemodel", dest, expected_sha1=GOOD_SHA1, stream=io.StringIO())
    assert not dest.exists()
    assert (tmp_path / "good.caffemodel.sha1-mismatch").read_bytes() == CORRUPT
    # Running again downloads a good copy.
    download(f"{srv.base}/good.caffemodel", dest, expected_sha1=GOOD_SHA1, stream=io.StringIO())
    assert dest.read_bytes() == GOOD


def test_cut_off_download_is_resumed_within_one_call(srv, tmp_path):
    srv.state.cut["/cut.caffemodel"] = 1
    dest = tmp_path / "cut.caffemodel"
    err = io.StringIO()
    result = download(f"{srv.base}/cut.caffemodel", dest, expected_sha1=GOOD_SHA1, retries=2, retry_wait=0,
                      stream=err, chunk_size=8192)
    assert dest.read_bytes() == GOOD and result.verified and result.attempts == 2
    half = len(GOOD) // 2
    assert srv.state.requests == [("/cut.caffemodel", None), ("/cut.caffemodel", f"bytes={half}-")]
    assert "connection lost" in err.getvalue()


def test_cut_off_download_keeps_the_part_file_and_the_next_run_resumes(srv, tmp_path):
    srv.state.cut["/cut.caffemodel"] = 1
    dest = tmp_path / "cut.caffemodel"
    part = tmp_path / "cut.caffemodel.part"
    with pytest.raises(IncompleteDownload, match="run again to resume") as err:
        download(f"{srv.base}/cut.caffemodel", dest, expected_sha1=GOOD_SHA1, retries=0, stream=io.StringIO())
    assert err.value.exit_code == 5
    half = len(GOOD) // 2
    assert not dest.exists() and part.read_bytes() == GOOD[:half]
    result = download(f"{srv.base}/cut.caffemodel", dest, expected_sha1=GOOD_SHA1, stream=io.StringIO())
    assert result.resumed_from == half and result.downloaded_bytes == len(GOOD) - half
    assert srv.state.requests[-1] == ("/cut.caffemodel", f"bytes={half}-")
    assert dest.read_bytes() == GOOD and not part.exists()


def test_range_resume_from_an_existing_part_file(srv, tmp_path):
    dest = tmp_path / "good.caffemodel"
    (tmp_path / "good.caffemodel.part").write_bytes(GOOD[:12345])
    result = download(f"{srv.base}/good.caffemodel", dest, expected_sha1=GOOD_SHA1, stream=io.StringIO())
    assert srv.state.requests == [("/good.caffemodel", "bytes=12345-")]
    assert result.resumed_from == 12345 and dest.read_bytes() == GOOD


def test_stale_part_file_with_wrong_bytes_is_caught_by_the_checksum(srv, tmp_path):
    dest = tmp_path / "good.caffemodel"
    part = tmp_path / "good.caffemodel.part"
    part.write_bytes(CORRUPT[:5000])
    with pytest.raises(ChecksumMismatch):
        download(f"{srv.base}/good.caffemodel", dest, expected_sha1=GOOD_SHA1, stream=io.StringIO())
    assert not dest.exists() and not part.exists()          # the next run starts afresh
    download(f"{srv.base}/good.caffemodel", dest, expected_sha1=GOOD_SHA1, stream=io.StringIO())
    assert dest.read_bytes() == GOOD


def test_complete_part_file_gets_416_and_starts_over(srv, tmp_path):
    dest = tmp_path / "good.caffemodel"
    (tmp_path / "good.caffemodel.part").write_bytes(GOOD)
    result = download(f"{srv.base}/good.caffemodel", dest, expected_sha1=GOOD_SHA1, retry_wait=0,
                      stream=io.StringIO())
    assert [r for _, r in srv.state.requests] == [f"bytes={len(GOOD)}-", None]
    assert result.verified and dest.read_bytes() == GOOD


def test_server_without_range_support_restarts_from_zero(srv, tmp_path):
    dest = tmp_path / "norange.caffemodel"
    (tmp_path / "norange.caffemodel.part").write_bytes(GOOD[:777])
    err = io.StringIO()
    download(f"{srv.base}/norange.caffemodel", dest, expected_sha1=GOOD_SHA1, stream=err)
    assert dest.read_bytes() == GOOD and "starting again from 0" in err.getvalue()


def test_404_fails_without_leaving_files(srv, tmp_path):
    dest = tmp_path / "missing.caffemodel"
    with pytest.raises(HTTPStatusError, match="404") as err:
        download(f"{srv.base}/missing.caffemodel", dest, expected_sha1=GOOD_SHA1, stream=io.StringIO())
    assert err.value.exit_code == 4
    assert list(tmp_path.iterdir()) == []


def test_unreachable_server_is_reported_as_offline(tmp_path):
    with pytest.raises(OfflineError, match="cannot reach"):
        download(f"http://127.0.0.1:{_closed_port()}/x.caffemodel", tmp_path / "x.caffemodel",
                 expected_sha1=GOOD_SHA1, stream=io.StringIO())
    assert list(tmp_path.iterdir()) == []


def test_no_published_checksum_warns_loudly_and_prints_the_sha1(srv, tmp_path):
    vgg = load_manifest("VGG_ILSVRC_19_layers")
    assert vgg.sha1 is None
    dest = tmp_path / vgg.file
    err = io.StringIO()
    result = fetch_manifest(vgg, dest=dest, url=f"{srv.base}/good.caffemodel", stream=err)
    assert not result.verified and result.sha1 == GOOD_SHA1 and dest.read_bytes() == GOOD
    assert "NO published checksum" in err.getvalue() and GOOD_SHA1 in err.getvalue()
    # ... and again on every use, also when the file is already there.
    err2 = io.StringIO()
    fetch_manifest(vgg, dest=dest, url=f"{srv.base}/good.caffemodel", stream=err2)
    assert "NO published checksum" in err2.getvalue() and GOOD_SHA1 in err2.getvalue()


# ---------------------------------------------------------------- the tool, end to end
def _tool(*args):
    return subprocess.run([sys.executable, str(ROOT / "tools" / "fetch_weights.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT, timeout=60,
                          env=dict(os.environ, GLOG_minloglevel="2"))


def _standin_manifest(tmp_path, sha1):
    data = json.loads((ROOT / "model_zoo" / "bvlc_alexnet.json").read_text())
    data.update(name="standin_model", file="standin_model.caffemodel", sha1=sha1)
    path = tmp_path / "standin_model.json"
    path.write_text(json.dumps(data))
    return path


def test_tool_downloads_and_verifies(srv, tmp_path):
    dest = tmp_path / "out" / "standin_model.caffemodel"
    proc = _tool(_standin_manifest(tmp_path, GOOD_SHA1), "--url", f"{srv.base}/good.caffemodel", "--dest", dest)
    assert proc.returncode == 0, proc.stderr
    assert dest.read_bytes() == GOOD and "sha1 verified" in proc.stdout


def test_tool_exits_nonzero_on_checksum_mismatch(srv, tmp_path):
    # The real AlexNet manifest: the stand-in cannot have its sha1.
    dest = tmp_path / "bvlc_alexnet.caffemodel"
    proc = _tool("bvlc_alexnet", "--url", f"{srv.base}/good.caffemodel", "--dest", dest)
    assert proc.returncode == 6
    assert "checksum mismatch" in proc.stderr and "9116a64c0fbe4459d18f4bb6b56d647b63920377" in proc.stderr
    assert not dest.exists() and not (tmp_path / "bvlc_alexnet.caffemodel.part").exists()


def test_tool_404(srv, tmp_path):
    proc = _tool("bvlc_alexnet", "--url", f"{srv.base}/nope.caffemodel", "--dest", tmp_path / "a.caffemodel")
    assert proc.returncode == 4 and "404" in proc.stderr


def test_tool_offline_says_where_to_put_the_file(tmp_path):
    dest = tmp_path / "bvlc_alexnet.caffemodel"
    proc = _tool("bvlc_alexnet", "--url", f"http://127.0.0.1:{_closed_port()}/bvlc_alexnet.caffemodel",
                 "--dest", dest)
    assert proc.returncode == 3
    assert "offline" in proc.stderr and str(dest) in proc.stderr
    assert "http://dl.caffe.berkeleyvision.org/bvlc_alexnet.caffemodel" in proc.stderr
    assert "make weights MODEL=bvlc_alexnet" in proc.stderr


def test_tool_unknown_manifest(tmp_path):
    proc = _tool("no_such_model")
    assert proc.returncode == 2 and "no such manifest" in proc.stderr and "bvlc_alexnet" in proc.stderr


def test_tool_vgg_warns_and_prints_sha1(srv, tmp_path):
    dest = tmp_path / "VGG_ILSVRC_19_layers.caffemodel"
    proc = _tool("VGG_ILSVRC_19_layers", "--url", f"{srv.base}/good.caffemodel", "--dest", dest)
    assert proc.returncode == 0
    assert "NO published checksum" in proc.stderr and GOOD_SHA1 in proc.stderr
    assert "NOT VERIFIED" in proc.stdout and file_sha1(dest) == GOOD_SHA1
