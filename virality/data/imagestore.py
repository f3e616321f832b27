"""The image store: an LMDB of Caffe Datums keyed by image id, and its robust builder.

Layout of a store directory (``tools/build_lmdb.py images``)::

    images_<size>_lmdb/
        data.mdb, lock.mdb   LMDB: key b"%010d" % image_id -> serialized caffe_pb2.Datum
        store.json           what it holds (size, resize, encoding, counts) and "complete": true
        ids.npy              int64, sorted: the ids that are in the store
        manifest.csv         every image that was converted or skipped, with the reason

Records: 3 channels, BGR, uint8, ``size`` x ``size``. ``raw`` Datums hold C x H x W
bytes (Caffe's layout); ``png``/``jpg`` Datums hold the encoded file with
``encoded: true`` (Caffe's Data layer decodes them). docs/DATA_STORAGE.md gives
the measurements behind the default (raw) and the resize policy (warp: a plain
resize to size x size, as Caffe's ImageNet recipe does, which keeps meme
captions that a centre crop would cut; ``crop`` = shorter side + centre crop).

Robust reading (``load_image_bgr``): the header is read first (Pillow, lazily),
so decompression bombs are refused by their declared size before any pixel is
decoded. Problems are never silent and never crash a build:

    skipped:   missing, unreadable (not an image / corrupt header), oversized,
               decode_error (truncated or corrupt pixel data), error (anything else)
    converted: grayscale, cmyk, alpha (composited on white), 16bit, animated
               (first frame), mode (other colour spaces), exif_orientation

A build writes under a hidden temporary name and renames at the end, so a
killed build never leaves a directory that looks like a complete store.
"""
import csv
import errno
import json
import os
import shutil
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import cv2
import lmdb
import numpy as np

from virality.files import (DiskError, check_free_space, disk_error, file_size_limited, free_bytes, load_npy,
                            ran_out, write_text_atomic)

#: Pillow's own default cap (Image.MAX_IMAGE_PIXELS): ~ 89.5 M pixels.
MAX_PIXELS = 89_478_485
ENCODINGS = ("raw", "png", "jpg")
RESIZE_MODES = ("warp", "crop")
JPEG_QUALITY = 95
META_FILE = "store.json"
IDS_FILE = "ids.npy"
MANIFEST_FILE = "manifest.csv"
STORE_FORMAT = "virality-image-store/1"
SKIP_KINDS = ("missing", "unreadable", "oversized", "decode_error", "error")
CONVERT_KINDS = ("grayscale", "cmyk", "alpha", "16bit", "animated", "mode", "exif_orientation")


def key(image_id):
    """The LMDB key of an image id (or of a record index): 10 zero-padded decimal digits."""
    return b"%010d" % int(image_id)


class ImageProblem(Exception):
    """An image that cannot be stored: ``kind`` (one of SKIP_KINDS) and a readable detail."""

    def __init__(self, kind, detail):
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


# --------------------------------------------------------------------------- reading images

def load_image_bgr(path, max_pixels=MAX_PIXELS, shrink_to=None):
    """Decode one image file to BGR uint8 (H, W, 3).

    Returns ``(image, notes)`` where notes lists ``(kind, detail)`` conversions
    (kinds in CONVERT_KINDS). Raises ImageProblem when the image must be skipped.

    ``shrink_to=S`` (prediction: the net's image_size) bounds memory for large images: a JPEG
    is decoded at the smallest DCT scale (1/2, 1/4, 1/8) that keeps both sides >= 2 S, and any
    image whose sides are at least four times S is box-filtered down by whole factors (keeping
    both sides >= 2 S) before any colour conversion, so no float copy of the full image is made.
    """
    from PIL import Image, UnidentifiedImageError   # Pillow: installed with scikit-image

    path = Path(path)
    if not path.is_file():
        raise ImageProblem("missing", "no such file")
    notes = []
    try:
        with warnings.catch_warnings():
            # We check the size ourselves against max_pixels, below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
    except Image.DecompressionBombError as err:
        raise ImageProblem("oversized", f"refused from the header: {err}") from None
    except UnidentifiedImageError:
        raise ImageProblem("unreadable", "not a recognised image (corrupt header or not an image file)") from None
    except OSError as err:
        raise ImageProblem("unreadable", str(err)) from None
    with im:
        width, height = im.size
        if width * height > max_pixels:
            raise ImageProblem("oversized", f"{width}x{height} = {width * height} pixels > cap {max_pixels} "
                                            "(read from the header; not decoded)")
        if width == 0 or height == 0:
            raise ImageProblem("unreadable", f"empty image ({width}x{height})")
        png = getattr(im, "png", None)      # Pillow drops it after load(): look before
        if png is not None and str(getattr(png, "im_rawmode", "")).endswith(";16B") and im.mode in ("RGB", "RGBA"):
            notes.append(("16bit", "16-bit colour reduced to 8 bits (high byte)"))
        try:
            frames = getattr(im, "n_frames", 1)
            if frames > 1:
                im.seek(0)
                notes.append(("animated", f"first of {frames} frames"))
            if shrink_to and im.format == "JPEG":
                im.draft(im.mode, (2 * int(shrink_to), 2 * int(shrink_to)))
            im.load()
        except Exception as err:  # Pillow raises OSError, SyntaxError, ValueError, EOFError ...
            raise ImageProblem("decode_error",
                               f"truncated or corrupt image data ({type(err).__name__}: {err})") from None
        decoded = _shrink(im, shrink_to) if shrink_to else im
        image = _to_bgr(decoded, notes)
        image = _apply_exif_orientation(im, image, notes)
    return np.ascontiguousarray(image), notes


_REDUCIBLE = ("L", "LA", "La", "RGB", "RGBA", "RGBa", "CMYK", "I", "F", "YCbCr")


def _shrink(im, side):
    """Box-filter a decoded Pillow image down by whole factors that keep both sides >= 2 x side
    (the final resize then averages many source pixels per output pixel, as on the full image)."""
    fx, fy = max(1, im.width // (2 * int(side))), max(1, im.height // (2 * int(side)))
    if max(fx, fy) < 2:
        return im
    if im.mode == "1":
        im = im.convert("L")
    elif im.mode in ("P", "PA"):           # palette indices cannot be averaged: to colours first
        im = im.convert("RGBA" if im.mode == "PA" or "transparency" in im.info else "RGB")
    if im.mode not in _REDUCIBLE:          # 16-bit grey: left as it is (2 bytes a pixel)
        return im
    # BOX resampling: each output pixel averages the source pixels it covers, partial ones weighted
    # by coverage (Image.reduce would give the last row and column a whole pixel's weight).
    from PIL import Image
    return im.resize((round(im.width / fx), round(im.height / fy)), Image.Resampling.BOX)


def _to_bgr(im, notes):
    """A decoded Pillow image of any mode -> BGR uint8, noting every conversion."""
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(im).astype(np.float64)
        if mode != "I" or arr.max(initial=0) > 255:
            notes.append(("16bit", f"{mode} pixels scaled to 8 bits (/257)"))
            arr = arr / 257.0
        return _gray_to_bgr(np.clip(np.rint(arr), 0, 255).astype(np.uint8), notes)
    if mode == "F":
        notes.append(("16bit", "float pixels clipped to [0, 255]"))
        return _gray_to_bgr(np.clip(np.rint(np.asarray(im)), 0, 255).astype(np.uint8), notes)
    if mode in ("1", "L"):
        return _gray_to_bgr(np.asarray(im.convert("L")), notes)
    if mode in ("LA", "La", "PA") or (mode == "P" and "transparency" in im.info):
        return _composite_on_white(np.asarray(im.convert("RGBA")), notes, gray=mode in ("LA", "La"))
    if mode == "P":
        return cv2.cvtColor(np.asarray(im.convert("RGB")), cv2.COLOR_RGB2BGR)
    if mode == "CMYK":
        notes.append(("cmyk", "CMYK converted to RGB"))
        return cv2.cvtColor(np.asarray(im.convert("RGB")), cv2.COLOR_RGB2BGR)
    if mode in ("RGBA", "RGBa"):
        return _composite_on_white(np.asarray(im.convert("RGBA")), notes)
    if mode == "RGB":
        return cv2.cvtColor(np.asarray(im), cv2.COLOR_RGB2BGR)
    notes.append(("mode", f"{mode} converted to RGB"))
    return cv2.cvtColor(np.asarray(im.convert("RGB")), cv2.COLOR_RGB2BGR)


def _gray_to_bgr(gray, notes):
    notes.append(("grayscale", "single channel replicated to BGR"))
    return cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)


def _composite_on_white(rgba, notes, gray=False):
    if gray:
        notes.append(("grayscale", "single channel replicated to BGR"))
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    if alpha.min() >= 1.0:
        notes.append(("alpha", "opaque alpha channel dropped"))
    else:
        notes.append(("alpha", "transparent pixels composited on white"))
    rgb = rgba[..., :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
    return cv2.cvtColor(np.clip(np.rint(rgb), 0, 255).astype(np.uint8), cv2.COLOR_RGB2BGR)


_EXIF_ORIENTATION = 0x0112
_ORIENT_OPS = {2: [cv2.flip, 1], 3: [cv2.rotate, cv2.ROTATE_180], 4: [cv2.flip, 0],
               6: [cv2.rotate, cv2.ROTATE_90_CLOCKWISE], 8: [cv2.rotate, cv2.ROTATE_90_COUNTERCLOCKWISE]}


def _apply_exif_orientation(im, image, notes):
    """Honour the EXIF orientation tag, as cv2.imread and browsers do."""
    try:
        orientation = int(im.getexif().get(_EXIF_ORIENTATION, 1))
    except Exception as err:
        notes.append(("exif_orientation", f"unreadable EXIF ignored ({type(err).__name__})"))
        return image
    if orientation in (1, 0):
        return image
    if orientation == 5:
        image = cv2.rotate(cv2.flip(image, 1), cv2.ROTATE_90_COUNTERCLOCKWISE)
    elif orientation == 7:
        image = cv2.rotate(cv2.flip(image, 1), cv2.ROTATE_90_CLOCKWISE)
    elif orientation in _ORIENT_OPS:
        op, arg = _ORIENT_OPS[orientation]
        image = op(image, arg)
    else:
        notes.append(("exif_orientation", f"unknown orientation {orientation} ignored"))
        return image
    notes.append(("exif_orientation", f"rotated/flipped per EXIF orientation {orientation}"))
    return image


def resize_square(image, side, mode="warp"):
    """Resize BGR ``image`` to side x side: ``warp`` (plain resize) or ``crop`` (shorter side, centre crop).

    INTER_AREA when shrinking (anti-aliased), INTER_LINEAR when enlarging.
    """
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize mode must be one of {RESIZE_MODES}, got '{mode}'")
    h, w = image.shape[:2]
    if mode == "crop":
        scale = side / min(h, w)
        nh, nw = max(side, int(round(h * scale))), max(side, int(round(w * scale)))
    else:
        nh = nw = side
    interp = cv2.INTER_AREA if nh <= h and nw <= w else cv2.INTER_LINEAR
    out = image if (nh, nw) == (h, w) else cv2.resize(image, (nw, nh), interpolation=interp)
    if mode == "crop":
        y, x = (nh - side) // 2, (nw - side) // 2
        out = out[y:y + side, x:x + side]
    return np.ascontiguousarray(out)


# --------------------------------------------------------------------------- Datums

def encode_payload(image, encoding="raw"):
    """BGR uint8 (H, W, C) -> (Datum data bytes, encoded flag): raw C x H x W bytes, or a PNG/JPEG file."""
    if image.dtype != np.uint8 or image.ndim != 3:
        raise ValueError(f"expected uint8 (H, W, C), got {image.dtype} {image.shape}")
    if encoding == "raw":
        return np.ascontiguousarray(image.transpose(2, 0, 1)).tobytes(), False
    if encoding in ("png", "jpg"):
        params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY] if encoding == "jpg" else [cv2.IMWRITE_PNG_COMPRESSION, 1]
        ok, buf = cv2.imencode(f".{encoding}", image, params)
        if not ok:
            raise ValueError(f"OpenCV could not encode a {image.shape[1]}x{image.shape[0]} image as {encoding}")
        return buf.tobytes(), True
    raise ValueError(f"encoding must be one of {ENCODINGS}, got '{encoding}'")


def datum_bytes(image, encoding="raw", label=0):
    """Serialize BGR uint8 (H, W, C) as a caffe_pb2.Datum (raw C x H x W bytes, or encoded)."""
    h, w, c = image.shape
    data, encoded = encode_payload(image, encoding)
    return _datum(c, h, w, data, encoded, label)


def _datum(c, h, w, data, encoded, label=0):
    from caffe.proto import caffe_pb2

    return caffe_pb2.Datum(channels=c, height=h, width=w, data=data, label=int(label),
                           encoded=encoded).SerializeToString()


def parse_datum(value):
    """A serialized Datum -> (C x H x W uint8 array, label)."""
    from caffe.proto import caffe_pb2

    datum = caffe_pb2.Datum()
    datum.ParseFromString(value)
    if datum.encoded:
        image = cv2.imdecode(np.frombuffer(datum.data, np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError("an encoded Datum could not be decoded")
        return image.transpose(2, 0, 1), datum.label
    chw = np.frombuffer(datum.data, np.uint8)
    if chw.size != datum.channels * datum.height * datum.width:
        raise ValueError(f"Datum holds {chw.size} bytes, expected {datum.channels}x{datum.height}x{datum.width}")
    return chw.reshape(datum.channels, datum.height, datum.width), datum.label


# --------------------------------------------------------------------------- writing LMDBs

def lmdb_bytes(records, value_bytes):
    """About how many bytes an LMDB of ``records`` values of ``value_bytes`` each takes on disk
    (values over a page go to whole overflow pages; keys, page headers and the tree on top)."""
    page = 4096
    per = -(-(value_bytes + 64) // page) * page if value_bytes + 64 > page // 2 else value_bytes + 64
    return int(records * per * 1.05) + 4 * page


class LmdbWriter:
    """Puts records in batched transactions; grows the map when it fills.

    A failed write (LMDB reports a full disk as "Input/output error") raises
    DiskError naming the directory and what ran out, or StoreError for anything else.
    """

    def __init__(self, path, expected_bytes=0, commit_every=1000, final=None):
        self.path = Path(path)
        self.final = Path(final or path)        # the name errors give (path may be a temporary build)
        self.map_size = max(64 << 20, int(expected_bytes * 1.5) + (32 << 20))
        try:
            self.env = lmdb.open(str(path), map_size=self.map_size, subdir=True, meminit=False, sync=False)
        except lmdb.Error as err:
            raise self._error(err) from None
        self.pending, self.commit_every, self.count = [], commit_every, 0

    def _error(self, err):
        if isinstance(err, OSError):
            return disk_error(err, self.final)
        # LMDB reports a failed write(2) as "Input/output error", whatever errno it got.
        if free_bytes(self.path) < (64 << 20):
            code = errno.ENOSPC
        elif file_size_limited():
            code = errno.EFBIG
        else:
            return StoreError(f"cannot write the LMDB {self.final}: {err}")
        return DiskError(code, f"cannot write the LMDB {self.final}: {ran_out(code, self.path)} (LMDB: {err})")

    def put(self, k, value):
        self.pending.append((k, value))
        if len(self.pending) >= self.commit_every:
            self.flush()

    def flush(self):
        while self.pending:
            try:
                with self.env.begin(write=True) as txn:
                    for k, value in self.pending:
                        if not txn.put(k, value, overwrite=False):
                            raise ValueError(f"duplicate LMDB key {k!r}")
                break
            except lmdb.MapFullError:
                self.map_size *= 2
                self.env.set_mapsize(self.map_size)
            except lmdb.Error as err:
                raise self._error(err) from None
        self.count += len(self.pending)
        self.pending = []

    def close(self):
        try:
            self.flush()
            self.env.sync(True)
        except lmdb.Error as err:
            raise self._error(err) from None
        finally:
            self.env.close()


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def atomic_dir(final):
    """Yield a hidden temporary directory path that becomes ``final`` only on success.

    Leftovers of killed builds (``.<name>.tmp-<pid>`` of dead processes) are removed first.
    An existing ``final`` is replaced only after the new one is complete. A write that
    fails for lack of space or permission raises DiskError naming ``final``.
    """
    final = Path(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        for stale in final.parent.glob(f".{final.name}.*-*"):
            pid = stale.name.rsplit("-", 1)[-1]
            if not pid.isdigit() or not _pid_alive(int(pid)) or int(pid) == os.getpid():
                shutil.rmtree(stale, ignore_errors=True)
        tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    except OSError as err:
        raise disk_error(err, final) from err
    try:
        yield tmp
        if final.exists():
            old = final.parent / f".{final.name}.old-{os.getpid()}"
            os.rename(final, old)
            os.rename(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, final)
    except BaseException as err:
        error = disk_error(err, final) if isinstance(err, OSError) else err
        shutil.rmtree(tmp, ignore_errors=True)
        if error is not err:
            raise error from err
        raise


def write_json(path, obj):
    """Write JSON atomically (virality.files.write_text_atomic)."""
    return write_text_atomic(path, json.dumps(obj, indent=1, sort_keys=True) + "\n")


# --------------------------------------------------------------------------- building a store

def _process_one(task):
    """Worker: (id, path, side, resize, encoding, max_pixels) -> (id, path, payload|None, rows).

    payload = (data bytes, encoded flag); rows = manifest rows (status, kind, detail).
    """
    image_id, path, side, resize, encoding, max_pixels = task
    try:
        image, notes = load_image_bgr(path, max_pixels)
        payload = encode_payload(resize_square(image, side, resize), encoding)
    except ImageProblem as err:
        return image_id, path, None, [("skipped", err.kind, err.detail)]
    except Exception as err:  # never crash the build: report it
        return image_id, path, None, [("skipped", "error", f"{type(err).__name__}: {err}")]
    return image_id, path, payload, [("converted", kind, detail) for kind, detail in notes]


def _ordered_map(pool, fn, tasks, window):
    """pool.map with at most ``window`` tasks in flight (bounded memory), results in order."""
    pending = []
    for task in tasks:
        pending.append(pool.submit(fn, task))
        if len(pending) >= window:
            yield pending.pop(0).result()
    for future in pending:
        yield future.result()


def build_image_store(items, out, size, resize="warp", encoding="raw", max_pixels=MAX_PIXELS,
                      workers=1, progress=True, extra_meta=None):
    """Build the image store at ``out`` from ``items`` = [(image_id, path), ...].

    Every image that is converted or skipped is listed in ``out/manifest.csv``
    (id, path, status, kind, detail). Returns the store's metadata (store.json).
    """
    if resize not in RESIZE_MODES:
        raise ValueError(f"resize must be one of {RESIZE_MODES}, got '{resize}'")
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding must be one of {ENCODINGS}, got '{encoding}'")
    items = [(int(i), str(p)) for i, p in items]
    ids = np.array([i for i, _ in items], np.int64)
    if ids.size and (ids.min() < 0 or ids.max() > 9_999_999_999 or np.unique(ids).size != ids.size):
        raise ValueError("image ids must be unique, non-negative and at most 10 digits")
    tasks = [(i, p, size, resize, encoding, max_pixels) for i, p in items]
    stored, manifest, counts = [], [], {}
    start = time.time()
    if encoding == "raw":
        check_free_space(Path(out).parent, lmdb_bytes(len(tasks), 3 * size * size + 32), f"the image store {out}")
    from virality.progress import progress as progress_bar
    bar = progress_bar(total=len(tasks), desc=f"image store {Path(out).name}", unit="img", enabled=progress)
    with atomic_dir(out) as tmp:
        writer = LmdbWriter(tmp, expected_bytes=len(tasks) * (3 * size * size + 256), final=out)
        if workers > 1:
            # Threads: Pillow's decoders and OpenCV's resize release the GIL, and threads avoid
            # fork (the parent may hold Caffe/OpenBLAS/LMDB locks) and spawn (main-module guards).
            pool = ThreadPoolExecutor(workers)
            results = _ordered_map(pool, _process_one, tasks, window=8 * workers)
        else:
            pool, results = None, map(_process_one, tasks)
        try:
            for image_id, path, payload, rows in results:
                if payload is not None:
                    writer.put(key(image_id), _datum(3, size, size, payload[0], payload[1]))
                    stored.append(image_id)
                for status, kind, detail in rows:
                    manifest.append((image_id, path, status, kind, detail))
                    counts[f"{status}:{kind}"] = counts.get(f"{status}:{kind}", 0) + 1
                bar.update()
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)
        writer.close()
        bar.close()
        with open(tmp / MANIFEST_FILE, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["id", "path", "status", "kind", "detail"])
            w.writerows(manifest)
        np.save(tmp / IDS_FILE, np.sort(np.asarray(stored, np.int64)))
        skipped = sorted({row[0] for row in manifest if row[2] == "skipped"})
        converted = sorted({row[0] for row in manifest if row[2] == "converted"} - set(skipped))
        meta = dict(format=STORE_FORMAT, size=size, resize=resize, encoding=encoding, channels=3, color="BGR",
                    key_format="%010d", max_pixels=max_pixels, images=len(items), stored=len(stored),
                    skipped=len(skipped), converted=len(converted), problems=counts,
                    seconds=round(time.time() - start, 2), complete=True, **(extra_meta or {}))
        write_json(tmp / META_FILE, meta)
    return meta


# --------------------------------------------------------------------------- reading a store

class StoreError(RuntimeError):
    """An image store (or pair/topic LMDB) is missing, incomplete or malformed."""


REBUILD_HINT = ("rebuild it: rerun the `make data` (tools/make_data.py) command that made it, which rebuilds a "
                "damaged output, or tools/build_lmdb.py")
#: records parsed when an LMDB is opened (first, last and evenly spaced ones between).
CHECK_RECORDS = 8


def read_meta(path, expected_format=STORE_FORMAT):
    path = Path(path)
    meta_file = path / META_FILE
    if not path.is_dir() or not (path / "data.mdb").is_file():
        raise StoreError(f"{path}: no LMDB there; build it with `make data` (tools/make_data.py) "
                         "or tools/build_lmdb.py")
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, ValueError) as err:
        raise StoreError(f"{path}: missing or unreadable {META_FILE} ({err}); it is incomplete: {REBUILD_HINT}") \
            from None
    if not isinstance(meta, dict) or meta.get("format") != expected_format or meta.get("complete") is not True:
        got = meta if not isinstance(meta, dict) else f"format {meta.get('format')!r}, complete {meta.get('complete')!r}"
        raise StoreError(f"{path}: not a complete {expected_format} ({got}); {REBUILD_HINT}")
    return meta


def open_lmdb(path, entries=None):
    """Open the LMDB at ``path`` read-only after checking it is whole; returns the lmdb Environment.

    LMDB maps its file and would die of SIGBUS (no message, exit 135) on the first page
    past the end of a truncated data.mdb, so before any page is touched the file's size is
    checked against the last page its meta page names, and its entry count against
    ``entries`` (when given). Raises StoreError naming the file and the rebuild.
    """
    path = Path(path)
    data = path / "data.mdb"
    try:
        size = data.stat().st_size
        env = lmdb.open(str(path), readonly=True, lock=False, readahead=False, subdir=True, max_readers=64)
    except (OSError, lmdb.Error) as err:
        raise StoreError(f"{data}: not a readable LMDB ({err}); {REBUILD_HINT}") from None
    try:
        need = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
        if size < need:
            raise StoreError(f"{data}: truncated ({size} bytes, its LMDB needs {need}: a partial copy or a full "
                             f"disk?); {REBUILD_HINT}")
        found = env.stat()["entries"]
        if entries is not None and found != entries:
            raise StoreError(f"{data}: holds {found} records, {META_FILE} says {entries}; {REBUILD_HINT}")
    except BaseException:
        env.close()
        raise
    return env


def spread(n, k=CHECK_RECORDS):
    """Up to ``k`` positions in range(n): the first, the last and evenly spaced ones between."""
    return np.unique(np.linspace(0, n - 1, min(k, n)).round().astype(np.int64)) if n > 0 else np.zeros(0, np.int64)


def check_records(env, path, keys, parse):
    """Parse the records of ``keys`` (a few, see ``spread``): a cheap check when an LMDB is opened."""
    with env.begin(buffers=False) as txn:
        for k in keys:
            value = txn.get(k)
            if value is None:
                raise StoreError(f"{path}: record {k.decode()} is missing; {REBUILD_HINT}")
            try:
                parse(value)
            except Exception as err:
                raise StoreError(f"{path}: record {k.decode()} is damaged ({err}); {REBUILD_HINT}") from None


class ImageStore:
    """Read access to an image store: ``get(id)`` -> BGR (H, W, 3); ``read_chw(ids)`` -> (n, 3, H, W).

    Opening checks the store (``open_lmdb``, ids.npy against store.json, a few records)."""

    def __init__(self, path):
        self.path = Path(path)
        self.meta = read_meta(self.path)
        self.size = int(self.meta["size"])
        try:
            self.ids = load_npy(self.path / IDS_FILE)
        except (OSError, ValueError) as err:
            raise StoreError(f"{self.path / IDS_FILE}: {err}; {REBUILD_HINT}") from None
        if self.ids.ndim != 1 or self.ids.size != self.meta.get("stored"):
            raise StoreError(f"{self.path / IDS_FILE}: lists {self.ids.size} ids, {META_FILE} says "
                             f"{self.meta.get('stored')}; {REBUILD_HINT}")
        self.env = open_lmdb(self.path, entries=self.ids.size)
        check_records(self.env, self.path, [key(i) for i in self.ids[spread(self.ids.size)]], self._check_datum)

    def _check_datum(self, value):
        chw, _ = parse_datum(value)
        if chw.shape != (3, self.size, self.size):
            raise ValueError(f"shape {chw.shape}, expected (3, {self.size}, {self.size})")

    def __len__(self):
        return int(self.ids.size)

    def __contains__(self, image_id):
        i = np.searchsorted(self.ids, image_id)
        return bool(i < self.ids.size and self.ids[i] == image_id)

    def _value(self, txn, image_id):
        value = txn.get(key(image_id))
        if value is None:
            raise KeyError(f"{self.path}: no image id {int(image_id)} (see {self.path / MANIFEST_FILE})")
        return value

    def get(self, image_id):
        with self.env.begin(buffers=False) as txn:
            chw, _ = parse_datum(self._value(txn, image_id))
        return np.ascontiguousarray(chw.transpose(1, 2, 0))

    def read_chw(self, ids, out=None):
        """Images ``ids`` as uint8 (n, 3, size, size), in the given order."""
        ids = np.asarray(ids)
        if out is None:
            out = np.empty((ids.size, 3, self.size, self.size), np.uint8)
        with self.env.begin(buffers=False) as txn:
            for j, image_id in enumerate(ids):
                out[j], _ = parse_datum(self._value(txn, image_id))
        return out

    def close(self):
        self.env.close()
