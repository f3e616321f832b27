"""Score image files with a released model (tools/predict.py).

What is scored: every file given, and every file under a folder given (recursively) that looks
like an image, by its extension (IMAGE_EXTENSIONS) or, for any other name (no extension,
``.jfif`` under another spelling, a wrong extension), by its first bytes (``looks_like_image``).
Nothing is left out silently: missing paths, dangling links, FIFOs and other special files,
and files that are not images are all returned as problems with the reason.

Memory is bounded whatever the image size: each image is decoded and shrunk on its own
(``load_image_bgr(..., shrink_to=image_size)``: JPEG DCT-scaled decoding, integer box
reduction of large images before any float conversion), only ``image_size`` x ``image_size``
pixels travel to the forward pass, and at most ``window`` decoded images wait for it.

Speed: decoding runs in worker processes while the main process runs the deploy net
(pycaffe holds the Python GIL during ``forward``, so threads would not overlap it).
"""
import multiprocessing
import os
import stat
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from virality.data.imagestore import ImageProblem, _ordered_map, load_image_bgr, resize_square
from virality.deploy.preprocess import InputSpec, forward_in_batches, to_input
from virality.progress import progress

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".jpe", ".jfif", ".pjpeg", ".pjp", ".png", ".bmp", ".dib", ".gif",
                    ".webp", ".tif", ".tiff"}
#: First bytes of the formats Pillow decodes here (JPEG, PNG, GIF, BMP, TIFF, WebP).
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*")


@dataclass
class Prediction:
    path: str
    score: Optional[float] = None      # f_r for ranking models; top-topic probability for Topic-CNNs
    topic: Optional[int] = None        # Topic-CNNs only: the most probable class
    percentile: Optional[float] = None  # ranking models with a score distribution: % of training images below
    error: Optional[str] = None
    thumb: Optional[str] = None        # gallery thumbnail (path relative to the page), when asked for


def looks_like_image(path):
    """True when the file starts like an image format we decode (reads 12 bytes)."""
    try:
        with open(path, "rb") as f:
            head = f.read(12)
    except OSError:
        return True          # unreadable: let the decoder say why, as an error for this file
    return head.startswith(_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")


def _special_kind(mode):
    for test, name in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file"


def _check_file(p):
    """None when ``p`` is a regular file (or a link to one), else the reason it cannot be read."""
    try:
        st = os.stat(p)
    except FileNotFoundError:
        return "dangling symbolic link" if os.path.islink(p) else "no such file or directory"
    except OSError as err:
        return f"cannot stat: {err.strerror}"
    return None if stat.S_ISREG(st.st_mode) else f"{_special_kind(st.st_mode)}: not read"


def collect_images(paths):
    """(files, problems, ignored) for the paths given.

    files: image files to score (files given, then each folder's images, sorted);
    problems: [(path, reason)] for paths that cannot be scored (missing, dangling links,
    FIFOs, unreadable folders); ignored: files found in folders that are not images
    (neither an image extension nor an image's first bytes), for the caller to count and name.
    """
    files, problems, ignored = [], [], []
    for p in map(Path, paths):
        if p.is_dir():
            found = []
            for dirpath, dirnames, names in os.walk(p, onerror=lambda e: problems.append(
                    (Path(e.filename), f"folder cannot be read: {e.strerror}"))):
                dirnames.sort()
                for name in sorted(names):
                    f = Path(dirpath) / name
                    reason = _check_file(f)
                    if reason:
                        problems.append((f, reason))
                    elif f.suffix.lower() in IMAGE_EXTENSIONS or looks_like_image(f):
                        found.append(f)
                    else:
                        ignored.append(f)
            files.extend(found)
        else:
            reason = _check_file(p)
            if reason:
                problems.append((p, reason))
            else:
                files.append(p)
    return files, problems, ignored


def decode_for_net(path, image_size, reduced_decode=True, thumb_size=0):
    """Worker: (path, uint8 BGR image_size x image_size image or None, error or None, thumbnail JPEG or None)."""
    from virality.report.gallery import thumbnail_jpeg
    try:
        shrink = max(image_size, thumb_size) if reduced_decode else None
        image, _notes = load_image_bgr(path, shrink_to=shrink)
        thumb = thumbnail_jpeg(image, thumb_size) if thumb_size else None
        return path, resize_square(image, image_size), None, thumb
    except ImageProblem as err:
        return path, None, f"{err.kind}: {err.detail}", None
    except Exception as err:  # a worker never takes the run down: the file gets the error
        return path, None, f"error: {type(err).__name__}: {err}", None


def _decode_task(task):
    return decode_for_net(*task)


def default_workers(num_files):
    """Decode processes: none for a handful of files (start-up costs more), else one per two cores, 1 to 4.

    Decoding a photo costs a fraction of its forward pass, and the forward uses every core: on 2 cores
    one decoder kept up (98% of the forward rate) where two slowed the forward (73%) (docs/PREDICTION.md).
    """
    return 0 if num_files < 48 else min(4, max(1, (os.cpu_count() or 1) // 2))


def score_distribution_percentile(distribution, scores):
    """% of the release's training images scoring below each score (from its stored quantiles)."""
    q = np.asarray(distribution["quantiles"], dtype=np.float64)
    levels = np.linspace(0.0, 100.0, q.size)
    return np.interp(np.asarray(scores, dtype=np.float64), q, levels, left=0.0, right=100.0)


def predict_files(release, paths, batch_size=32, net=None, workers=None, reduced_decode=True,
                  show_progress=False, thumbs=None, thumb_size=0, collected=None):
    """One Prediction per file and per problem path (in no particular order: see sort_by_score).

    Files that cannot be decoded get an error; the others are still scored. With ``thumbs``
    (a virality.report.gallery.ThumbFolder) each scored image also gets a thumbnail of ``thumb_size``.
    ``collected``: what ``collect_images(paths)`` returned, when the caller has it already.
    """
    spec = InputSpec.of_release(release.metadata)
    net = net or release.net()
    files, problems, _ignored = collected or collect_images(paths)
    results = [Prediction(str(p), error=reason) for p, reason in problems]
    workers = default_workers(len(files)) if workers is None else workers
    thumb_size = thumb_size if thumbs is not None else 0
    tasks = [(str(f), spec.image_size, reduced_decode, thumb_size) for f in files]
    pool = None
    if workers > 0:
        # forkserver: workers start from a clean process, never a fork of one holding Caffe's threads.
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("forkserver"))
        decoded = _ordered_map(pool, _decode_task, tasks, window=max(2 * batch_size, 8 * workers))
    else:
        decoded = map(_decode_task, tasks)
    distribution = release.metadata.get("score_distribution") if release.output_blob == "score" else None
    bar = progress(total=len(tasks), desc="predict", unit="img", enabled=show_progress)

    def flush(good, images):
        out = forward_in_batches(net, to_input(images, spec), release.output_blob, batch_size)
        if release.output_blob == "score":
            scores = out[:, 0]
            pct = score_distribution_percentile(distribution, scores) if distribution else [None] * len(scores)
            results.extend(Prediction(p, score=float(s), percentile=None if c is None else float(c), thumb=t)
                           for (p, t), s, c in zip(good, scores, pct))
        else:
            results.extend(Prediction(p, score=float(row.max()), topic=int(row.argmax()), thumb=t)
                           for (p, t), row in zip(good, out))
        bar.update(len(good))

    try:
        good, images = [], []
        for path, image, error, thumb in decoded:
            if error is not None:
                results.append(Prediction(path, error=error))
                bar.update(1)
                continue
            good.append((path, thumbs.add(thumb) if thumb is not None else None))
            images.append(image)
            if len(images) == batch_size:
                flush(good, images)
                good, images = [], []
        if images:
            flush(good, images)
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return results


def sort_by_score(results):
    """Scored files first, highest score first (ties by path); then failures in path order."""
    scored = sorted((r for r in results if r.error is None), key=lambda r: (-r.score, r.path))
    return scored + sorted((r for r in results if r.error is not None), key=lambda r: r.path)
