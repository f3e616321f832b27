"""Score image files with a released model (tools/predict.py)."""
from dataclasses import dataclass
from pathlib import Path
from typing import Optional


from virality.imagestore import ImageProblem, load_image_bgr
from virality.preprocess import InputSpec, forward_in_batches, to_input

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


@dataclass
class Prediction:
    path: str
    score: Optional[float] = None      # f_r for ranking models; top-topic probability for Topic-CNNs
    topic: Optional[int] = None        # Topic-CNNs only: the most probable class
    error: Optional[str] = None


def collect_images(paths):
    """Files as given, folders expanded (recursively, image extensions, sorted)."""
    files, missing = [], []
    for p in map(Path, paths):
        if p.is_dir():
            files.extend(sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS))
        elif p.exists():
            files.append(p)
        else:
            missing.append(p)
    return files, missing


def predict_files(release, paths, batch_size=32, net=None):
    """One Prediction per file and per missing path; files that cannot be read get an error."""
    spec = InputSpec.of_release(release.metadata)
    net = net or release.net()
    files, missing = collect_images(paths)
    results = [Prediction(str(p), error="no such file or directory") for p in missing]
    # Decode one batch at a time: a folder of any size costs one batch of pixels.
    for start in range(0, len(files), batch_size):
        good, images = [], []
        for f in files[start:start + batch_size]:
            try:
                image, _notes = load_image_bgr(f)
            except ImageProblem as err:
                results.append(Prediction(str(f), error=f"{err.kind}: {err.detail}"))
                continue
            good.append(f)
            images.append(image)
        if not images:
            continue
        out = forward_in_batches(net, to_input(images, spec), release.output_blob, batch_size)
        for f, row in zip(good, out):
            if release.output_blob == "score":
                results.append(Prediction(str(f), score=float(row[0])))
            else:
                results.append(Prediction(str(f), score=float(row.max()), topic=int(row.argmax())))
    return results


def sort_by_score(results):
    """Scored files first, highest score first; then failures in input order."""
    scored = sorted((r for r in results if r.error is None), key=lambda r: -r.score)
    return scored + [r for r in results if r.error is not None]
