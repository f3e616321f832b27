"""The ranked gallery as a person sees it: tools/predict.py --html on real photos, loaded from disk
in headless Chromium (Debian's chromium-headless-shell, installed by `make sysdeps`)."""
import csv
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import cv2
import numpy as np
import pytest

from release_fixture import make_tiny_release

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "hubble_deep_field.jpg", "retina.jpg",
          "motorcycle_left.png", "brick.png", "grass.png", "camera.png", "moon.png", "logo.png", "color.png",
          "ihc.png")


def chromium():
    for name in ("chromium-headless-shell", "chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("no headless Chromium: install it with `make sysdeps` (engine/apt-packages.txt: "
                "chromium-headless-shell)")


def browse(url, *flags, tmp):
    res = subprocess.run([chromium(), "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
                          f"--user-data-dir={tmp}", *flags, url], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout


class Tiles(HTMLParser):
    """Tiles (data-name, data-score, img src) of each grid, by the grid's id, in document order."""

    def __init__(self):
        super().__init__()
        self.grids, self.current, self.depth, self.failed = {}, None, 0, []
        self._in_td = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "div" and a.get("class") == "grid":
            self.current, self.depth = a["id"], 0
            self.grids[self.current] = []
        elif self.current and tag == "div":
            self.depth += 1
            if "tile" in (a.get("class") or "").split():
                self.grids[self.current].append({"name": a["data-name"], "score": float(a["data-score"])})
        elif self.current and tag == "img":
            self.grids[self.current][-1]["src"] = a["src"]
        elif tag == "td":
            self._in_td = True

    def handle_endtag(self, tag):
        if tag == "div" and self.current:
            if self.depth == 0:
                self.current = None
            else:
                self.depth -= 1
        elif tag == "td":
            self._in_td = False

    def handle_data(self, data):
        if self._in_td:
            self.failed.append(data)


def parse(dom):
    p = Tiles()
    p.feed(dom)
    return p


@pytest.fixture(scope="module")
def gallery(tmp_path_factory):
    import skimage
    work = tmp_path_factory.mktemp("gallery")
    release = make_tiny_release(work / "release_work")[0]
    photos = work / "photos"
    photos.mkdir()
    data = Path(skimage.__file__).parent / "data"
    for name in PHOTOS:
        shutil.copy(data / name, photos / name)
    (photos / "broken.jpg").write_bytes((photos / "rocket.jpg").read_bytes()[:2000])
    page = work / "out" / "ranking.html"
    res = subprocess.run([sys.executable, str(ROOT / "tools/predict.py"), str(release), str(photos), "--html",
                          str(page), "--top", "3", "--out", str(work / "out" / "ranking.csv"), "--workers", "2"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 1, res.stderr           # broken.jpg failed, the rest were scored
    with open(work / "out" / "ranking.csv") as f:
        ranking = [r for r in csv.DictReader(f) if not r["error"]]
    return page, ranking, work


def test_the_page_has_one_tile_per_image_in_score_order(gallery):
    page, ranking, work = gallery
    dom = browse(page.as_uri(), "--dump-dom", tmp=work / "chrome1")
    p = parse(dom)
    tiles = p.grids["all"]
    assert len(tiles) == len(PHOTOS) == len(ranking)
    assert [t["name"] for t in tiles] == [Path(r["path"]).name for r in ranking]
    scores = [t["score"] for t in tiles]
    assert scores == sorted(scores, reverse=True)
    np.testing.assert_allclose(scores, [float(r["f_r"]) for r in ranking], rtol=1e-9)
    assert [t["name"] for t in p.grids["top"]] == [t["name"] for t in tiles[:3]]
    assert [t["name"] for t in p.grids["bottom"]] == [t["name"] for t in tiles[::-1][:3]]
    for t in tiles:                                   # thumbnails are local files beside the page
        assert not t["src"].startswith(("http:", "https:", "//")) and (page.parent / t["src"]).is_file()
    assert "broken.jpg" in " ".join(p.failed)
    assert "<script src" not in page.read_text() and "<link" not in page.read_text()   # works offline


def test_the_page_sorts_by_name_in_the_browser(gallery):
    page, ranking, work = gallery
    tiles = parse(browse(page.as_uri() + "#sort=name", "--dump-dom", tmp=work / "chrome2")).grids["all"]
    assert [t["name"] for t in tiles] == sorted(PHOTOS)


def test_the_screenshot_shows_the_photos(gallery):
    page, ranking, work = gallery
    shot = work / "shot.png"
    browse(page.as_uri(), f"--screenshot={shot}", "--window-size=1280,1000", "--hide-scrollbars",
           tmp=work / "chrome3")
    image = cv2.imread(str(shot))
    assert image is not None and image.shape[:2] == (1000, 1280)
    assert image.std() > 30                           # not a blank page
    saturation = cv2.cvtColor(image, cv2.COLOR_BGR2HSV)[..., 1]
    assert (saturation > 80).mean() > 0.02            # colour photos rendered (the page itself is grey)
