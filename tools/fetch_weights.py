#!/usr/bin/env python3
"""Download and verify the pretrained Model Zoo weights of a manifest in model_zoo/.

    .venv/bin/python tools/fetch_weights.py bvlc_alexnet          # make weights MODEL=bvlc_alexnet
    .venv/bin/python tools/fetch_weights.py VGG_ILSVRC_19_layers
    .venv/bin/python tools/fetch_weights.py bvlc_alexnet --dest /data/bvlc_alexnet.caffemodel
    .venv/bin/python tools/fetch_weights.py --list

The file goes to models/pretrained/<file> (or --dest). The download resumes an
interrupted one (<file>.part, HTTP Range), shows a progress bar on stderr, and
the sha1 of the complete file is checked after the download: on a mismatch the
file is deleted and the exit status is non-zero. A file already at the
destination (e.g. downloaded by hand on another machine) is verified instead.
VGG_ILSVRC_19_layers has no published checksum: the tool says so loudly and
prints the sha1 of the file so that it can be pinned in its manifest.

Exit status: 0 ok, 2 usage / unknown manifest, 3 server unreachable (offline),
4 HTTP error (e.g. 404), 5 download incomplete (run again to resume),
6 checksum mismatch, 1 other download errors.
"""
import argparse
import sys
from pathlib import Path

from virality.pretrained.download import DownloadError, fetch_manifest
from virality.pretrained.zoo import ManifestError, load_manifest, manifest_names


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", nargs="?", help=f"manifest name: {', '.join(manifest_names())}")
    parser.add_argument("--dest", type=Path, help="where to put the file (default: models/pretrained/<file>)")
    parser.add_argument("--url", help="download from this URL instead of the manifest's (a mirror; tests)")
    parser.add_argument("--retries", type=int, default=3, help="resume attempts after a lost connection (default 3)")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="seconds without data before giving up (default 60)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--list", action="store_true", help="list the manifests and exit")
    args = parser.parse_args(argv)

    if args.list:
        for stem in manifest_names():
            m = load_manifest(stem)
            print(f"{m.name:24s} {m.arch:8s} sha1={m.sha1 or 'NONE PUBLISHED'}  {m.url}")
        return 0
    if not args.name:
        parser.error(f"name a manifest: {', '.join(manifest_names())}")
    try:
        manifest = load_manifest(args.name)
    except ManifestError as e:
        print(f"fetch_weights: {e}", file=sys.stderr)
        return 2
    dest = args.dest or manifest.default_dest()
    url = args.url or manifest.url
    print(f"fetch_weights: {manifest.name} ({manifest.licence['name']} licence)\n"
          f"  url:  {url}\n  dest: {dest}\n"
          f"  sha1: {manifest.sha1 or 'none published (the file cannot be verified)'}", file=sys.stderr)
    try:
        result = fetch_manifest(manifest, dest=dest, url=url, retries=args.retries, timeout=args.timeout,
                                progress=not args.no_progress)
    except DownloadError as e:
        print(f"fetch_weights: FAILED: {e}", file=sys.stderr)
        return e.exit_code
    what = "already present" if result.already_present else f"downloaded ({result.downloaded_bytes} bytes)"
    state = "sha1 verified" if result.verified else "NOT VERIFIED (no published checksum)"
    print(f"fetch_weights: {result.path}: {what}, {state}; sha1 {result.sha1}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
