"""Static HTML pages a person looks at: the ranked gallery, test pairs, and neighbours (Fig. 2).

Every page is one self-contained HTML file that works offline: inline CSS and a few lines of
inline JavaScript (sorting), no external script, font or stylesheet. Thumbnails are JPEG files
in a sibling folder ``<page stem>_files/``, referenced by relative paths, so the page and its
folder can be copied or opened from disk (file://) anywhere. A page is written under a
temporary name and renamed, after its thumbnails, so a visible page never lacks its images.

- ``write_ranked_gallery``: one tile per image with its file name, f_r and percentile; the top
  and bottom N first, then every image in a grid sortable by score, percentile or name
  (tools/predict.py --html).
- ``write_pairs_page``: test pairs the model ordered right and wrong, both images side by side
  with their scores (evaluation reports).
- ``neighbours_section``: the query and its nearest neighbours with file names, scores and
  cosine distances (the paper's Fig. 2; tools/neighbours.py and evaluation reports).
"""
import html
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from virality.files import write_text_atomic

THUMB_SIZE = 160          # longer side of a thumbnail, pixels
JPEG_QUALITY = 85


@dataclass
class Tile:
    name: str                       # what the tile is labelled with (a file name, or "id 123")
    thumb: Optional[str] = None     # thumbnail path relative to the page; None: no picture
    score: Optional[float] = None
    percentile: Optional[float] = None
    note: str = ""                  # extra line (a distance, "query", an error)


def thumbnail_jpeg(image_bgr, size=THUMB_SIZE):
    """JPEG bytes of a BGR uint8 image scaled so its longer side is ``size`` (aspect kept)."""
    h, w = image_bgr.shape[:2]
    scale = size / max(h, w)
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_NEAREST   # small synthetic images stay crisp
    thumb = cv2.resize(image_bgr, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=interp)
    ok, buf = cv2.imencode(".jpg", thumb, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise ValueError("thumbnail could not be encoded")
    return buf.tobytes()


class ThumbFolder:
    """The ``<page>_files/`` folder of a page: thumbnails written under a temporary folder name first."""

    def __init__(self, page):
        self.page = Path(page)
        self.final = self.page.with_name(self.page.stem + "_files")
        self.tmp = self.page.with_name(f".{self.page.stem}_files.tmp")
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(parents=True)
        self.count = 0

    def add(self, jpeg_bytes):
        """Store one thumbnail; returns its path relative to the page."""
        self.count += 1
        name = f"{self.count:06d}.jpg"
        (self.tmp / name).write_bytes(jpeg_bytes)
        return f"{self.final.name}/{name}"

    def add_image(self, image_bgr, size=THUMB_SIZE):
        return self.add(thumbnail_jpeg(image_bgr, size))

    def commit(self):
        if self.final.exists():
            shutil.rmtree(self.final)
        self.tmp.rename(self.final)

    def discard(self):
        shutil.rmtree(self.tmp, ignore_errors=True)


_CSS = """
body{font-family:sans-serif;margin:16px;color:#222;background:#fafafa}
h1{font-size:20px;margin:0 0 4px} h2{font-size:16px;margin:20px 0 6px;border-bottom:1px solid #ccc}
p.meta{margin:2px 0;font-size:13px;color:#444}
.grid{display:flex;flex-wrap:wrap;gap:8px}
.tile{width:172px;background:#fff;border:1px solid #ddd;border-radius:4px;padding:5px;font-size:12px}
.tile img{display:block;margin:0 auto 4px;max-width:160px;max-height:160px;image-rendering:auto}
.tile .name{font-weight:bold;word-break:break-all}
.tile .num{font-family:monospace}
.tile.query{border:3px solid #1f77b4}
.tile.wrong{border-color:#d62728}
.pair{display:flex;gap:6px;align-items:stretch;margin:6px 0;padding:6px;border:1px solid #ddd;background:#fff}
.pair.right{border-left:6px solid #2ca02c} .pair.wrong{border-left:6px solid #d62728}
.pair .verdict{width:170px;font-size:12px}
.row{display:flex;gap:6px;align-items:flex-start;margin:6px 0}
.row .label{width:90px;font-size:12px;font-weight:bold}
table.fail{border-collapse:collapse;font-size:12px} table.fail td{border:1px solid #ddd;padding:2px 6px}
.controls{margin:8px 0;font-size:13px}
"""

_SORT_JS = """
function sortTiles(key){
  var grid=document.getElementById('all');
  var tiles=Array.prototype.slice.call(grid.querySelectorAll('.tile'));
  tiles.sort(function(a,b){
    if(key==='name'){return a.dataset.name<b.dataset.name?-1:(a.dataset.name>b.dataset.name?1:0);}
    var x=parseFloat(a.dataset.score),y=parseFloat(b.dataset.score);
    return key==='score-asc'?x-y:y-x;});
  tiles.forEach(function(t){grid.appendChild(t);});
  document.getElementById('sort').value=key;
}
// A link can ask for an order: page.html#sort=name (or score-asc, score-desc).
if(location.hash.indexOf('#sort=')===0){sortTiles(location.hash.slice(6));}
"""


def _fmt(x, digits=3):
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def tile_html(tile, css_class="tile", score_label="f_r"):
    e = html.escape
    img = f'<img src="{e(tile.thumb)}" alt="{e(tile.name)}" loading="lazy">' if tile.thumb else ""
    lines = [f'<div class="name">{e(tile.name)}</div>']
    if tile.score is not None:
        lines.append(f'<div class="num">{e(score_label)} {_fmt(tile.score, 4)}</div>')
    if tile.percentile is not None:
        lines.append(f'<div class="num">percentile {_fmt(tile.percentile, 1)}</div>')
    if tile.note:
        lines.append(f"<div>{e(tile.note)}</div>")
    data = f' data-name="{e(tile.name)}"'
    if tile.score is not None:
        data += f' data-score="{tile.score!r}"'
    return f'<div class="{css_class}"{data}>{img}{"".join(lines)}</div>'


def page(title, meta_lines, body, script=""):
    e = html.escape
    meta = "".join(f'<p class="meta">{e(m)}</p>' for m in meta_lines)
    js = f"<script>{script}</script>" if script else ""
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>'
            f"<style>{_CSS}</style></head><body><h1>{e(title)}</h1>{meta}{body}{js}</body></html>\n")


def write_ranked_gallery(path, tiles, title, meta_lines=(), failures=(), top_n=12, thumbs=None,
                         score_label="f_r"):
    """The ranked gallery: ``tiles`` (Tile, any order, thumbnails already in ``thumbs``) sorted by score.

    Sections: the top ``top_n`` and the bottom ``top_n`` (highest and lowest score), then
    ``#all``: every tile, highest score first, with buttons that re-sort it; then the files
    that could not be scored (``failures`` = [(name, reason)]). Returns the page's path.
    """
    path = Path(path)
    ranked = sorted(tiles, key=lambda t: (-t.score, t.name))
    n = len(ranked)
    k = min(top_n, n)
    body = []
    if n > 2 * k:
        body.append(f'<h2>Top {k} (highest {html.escape(score_label)})</h2><div class="grid" id="top">'
                    + "".join(tile_html(t, score_label=score_label) for t in ranked[:k]) + "</div>")
        body.append(f'<h2>Bottom {k} (lowest {html.escape(score_label)})</h2><div class="grid" id="bottom">'
                    + "".join(tile_html(t, score_label=score_label) for t in ranked[::-1][:k]) + "</div>")
    body.append(f'<h2>All {n} images</h2><div class="controls">sort by <select id="sort" '
                'onchange="sortTiles(this.value)"><option value="score-desc">score, highest first</option>'
                '<option value="score-asc">score, lowest first</option><option value="name">file name</option>'
                '</select></div><div class="grid" id="all">'
                + "".join(tile_html(t, score_label=score_label) for t in ranked) + "</div>")
    if failures:
        rows = "".join(f"<tr><td>{html.escape(str(a))}</td><td>{html.escape(str(b))}</td></tr>" for a, b in failures)
        body.append(f'<h2>Not scored ({len(failures)})</h2><table class="fail" id="failed">{rows}</table>')
    return _write(path, page(title, meta_lines, "".join(body), _SORT_JS), thumbs)


def pairs_section(pairs, heading, thumbs, name_of, image_of):
    """Test pairs, both images side by side: ``pairs`` = [(id_a, id_b, y, f_a, f_b)].

    A pair is right when sign(f_a - f_b) = y (ties count as wrong here; the accuracy counts them half).
    """
    out = [f"<h2>{html.escape(heading)}</h2>"]
    for a, b, y, fa, fb in pairs:
        right = (fa - fb) * y > 0
        higher = "A" if y > 0 else "B"
        cls = "right" if right else "wrong"
        tiles = "".join(tile_html(Tile(name_of(i), thumbs.add_image(image_of(i)), f, note=side), "tile")
                        for i, f, side in ((a, fa, "A"), (b, fb, "B")))
        verdict = (f'<div class="verdict"><b>{"right" if right else "wrong"}</b><br>truth: {higher} is the '
                   f"more viral<br>model: {'A' if fa > fb else 'B'} (f_r difference {_fmt(fa - fb, 4)})</div>")
        out.append(f'<div class="pair {cls}">{verdict}{tiles}</div>')
    return "".join(out)


def neighbours_section(rows, heading, thumbs, note=""):
    """Fig. 2: ``rows`` = [(label, query Tile-args, [neighbour Tile-args])], each tile arg a
    dict(name, image (BGR), score, distance). The query tile comes first, outlined."""
    out = [f"<h2>{html.escape(heading)}</h2>"]
    if note:
        out.append(f'<p class="meta">{html.escape(note)}</p>')
    for label, query, neighbours in rows:
        cells = [tile_html(Tile(query["name"], thumbs.add_image(query["image"]), query["score"], note="query"),
                           "tile query")]
        cells += [tile_html(Tile(n["name"], thumbs.add_image(n["image"]), n["score"],
                                 note=f"cosine distance {_fmt(n['distance'], 3)}")) for n in neighbours]
        out.append(f'<div class="row"><div class="label">{html.escape(label)}</div>{"".join(cells)}</div>')
    return "".join(out)


def write_page(path, title, meta_lines, sections, thumbs):
    """A page of ready sections (pairs_section, neighbours_section) whose thumbnails are in ``thumbs``."""
    return _write(Path(path), page(title, meta_lines, "".join(sections)), thumbs)


def _write(path, text, thumbs):
    try:
        if thumbs is not None:
            thumbs.commit()
        write_text_atomic(path, text)
    except BaseException:
        if thumbs is not None:
            thumbs.discard()
        raise
    return path


def evenly_spaced(items, k):
    """At most k items spread evenly over a list (deterministic)."""
    if len(items) <= k:
        return list(items)
    return [items[i] for i in np.linspace(0, len(items) - 1, k).round().astype(int)]


# ------------------------------------------------------------------ evaluation pages

def dataset_namer(dataset):
    """id -> a file name for people: the dataset's image file name where it has one, else "image <id>"."""
    def name_of(image_id):
        try:
            return Path(dataset.image_path(int(image_id))).name
        except (FileNotFoundError, ValueError, IndexError, TypeError):
            return f"image {int(image_id)}"
    return name_of


def image_namer(dataset_name, data_dir=None):
    """dataset_namer of a dataset by name; plain "image <id>" names when it cannot be loaded."""
    try:
        from virality.datasets import load_dataset
        return dataset_namer(load_dataset(dataset_name, data_dir=data_dir))
    except Exception:     # names are a convenience: any failure to load falls back to ids, said in the name
        return lambda image_id: f"image {int(image_id)}"


def write_run_page(run, dataset, store, out_dir, num_pairs=12, num_queries=3, k=6, limit=2000, show_progress=False):
    """One evaluation run as a page: the most confident right and wrong test pairs side by side,
    and Fig. 2-style neighbours of the highest- and lowest-scored test images. Returns its path.

    Scores come from the deploy net on the image store, as evaluation's (virality.deploy.preprocess).
    """
    import caffe
    from virality.model.nets import get_model
    from virality.deploy.neighbours import features_and_scores, nearest, plot_grid
    from virality.paths import PROTOTXT_DIR
    from virality.deploy.preprocess import InputSpec

    model = get_model(run.model)
    spec = InputSpec.of_architecture(model.architecture)
    net = caffe.Net(str(run.deploy or PROTOTXT_DIR / run.model / "deploy.prototxt"), str(run.caffemodel), caffe.TEST)
    setting = dataset.setting(run.setting)
    pairs = np.asarray(setting.test_pairs)
    ids = np.unique(pairs[:, :2]) if len(pairs) else np.unique(np.asarray(setting.test_images))
    ids = np.asarray(evenly_spaced(list(ids[np.isin(ids, store.ids)]), limit))
    features, scores = features_and_scores(net, store, ids, spec, show_progress=show_progress)
    score = dict(zip(ids.tolist(), scores.tolist()))
    name_of = dataset_namer(dataset)
    out_dir = Path(out_dir)
    stem = f"{run.setting}_{run.model}"
    path = out_dir / f"{stem}.html"
    thumbs = ThumbFolder(path)
    sections, meta = [], [f"model {run.model}, setting {run.setting} ({setting.description})",
                          f"snapshot {run.caffemodel}",
                          "f_r: the model's score of an image (no unit); a pair is ordered right when the "
                          "image with the higher f_r is the truly more viral one"]
    try:
        kept = [(int(a), int(b), int(y), score[int(a)], score[int(b)]) for a, b, y in pairs
                if int(a) in score and int(b) in score]
        if kept:
            right = sorted((p for p in kept if (p[3] - p[4]) * p[2] > 0), key=lambda p: -abs(p[3] - p[4]))
            wrong = sorted((p for p in kept if (p[3] - p[4]) * p[2] <= 0), key=lambda p: -abs(p[3] - p[4]))
            meta.append(f"{len(right)} of {len(kept)} test pairs ordered right ({100 * len(right) / len(kept):.1f}%, "
                        "ties counted wrong here)")
            image_of = store.get
            sections.append(pairs_section(right[:num_pairs], f"Right: the {min(num_pairs, len(right))} most "
                                          "confident correct pairs", thumbs, name_of, image_of))
            sections.append(pairs_section(wrong[:num_pairs], f"Wrong: the {min(num_pairs, len(wrong))} most "
                                          "confident mistakes", thumbs, name_of, image_of))
        order = np.argsort(-scores, kind="stable")
        n = min(num_queries, len(order) // 2)
        queries = list(order[:n]) + list(order[::-1][:n])
        labels = [f"highest f_r #{i + 1}" for i in range(n)] + [f"lowest f_r #{i + 1}" for i in range(n)]
        rows = []
        if queries:
            nb, dist = nearest(features, queries, min(k, len(ids) - 1))
            item = lambda j, d=None: dict(name=name_of(ids[j]), image=store.get(ids[j]),  # noqa: E731
                                          score=float(scores[j]), distance=d)
            rows = [(label, item(q), [item(j, d) for j, d in zip(js, ds)])
                    for label, q, js, ds in zip(labels, queries, nb, dist)]
            sections.append(neighbours_section(rows, "Nearest neighbours (Fig. 2)", thumbs,
                                               note=f"among {len(ids)} test images; cosine distance of the "
                                                    "scoring layer's input features"))
            plot_grid(rows, out_dir / f"{stem}_neighbours.png",
                      title=f"{run.model} on {dataset.name}/{run.setting}: nearest neighbours")
    except BaseException:
        thumbs.discard()
        raise
    return write_page(path, f"{run.model} on {dataset.name}/{run.setting}: test pairs and neighbours", meta,
                      sections, thumbs)
