"""The SYNTHETIC virality world: deterministic, in a real dataset's on-disk form, and its
planted attributes really drive both the pixels and the score."""
import csv
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from virality.data.synthetic import (TOPICS, WEIGHTS, WorldConfig, generate_world, ranking_ceiling, render_image,
                                sample_attributes, score_function)

ROOT = Path(__file__).resolve().parent.parent
SMALL = WorldConfig(num_images=40, size=48, seed=5)


def _tree_digest(root):
    h = hashlib.sha256()
    for path in sorted(Path(root).rglob("*")):
        if path.is_file():
            h.update(str(path.relative_to(root)).encode() + path.read_bytes())
    return h.hexdigest()


def test_same_config_gives_identical_bytes_and_another_seed_differs(tmp_path):
    generate_world(tmp_path / "a", SMALL)
    generate_world(tmp_path / "b", SMALL)
    generate_world(tmp_path / "c", WorldConfig(num_images=40, size=48, seed=6))
    assert _tree_digest(tmp_path / "a") == _tree_digest(tmp_path / "b")
    assert _tree_digest(tmp_path / "a") != _tree_digest(tmp_path / "c")


def test_on_disk_form_is_a_scores_table_with_pngs_and_a_synthetic_readme(tmp_path):
    out = tmp_path / "raw"
    generate_world(out, SMALL)
    with open(out / "scores.csv", newline="") as f:
        reader = csv.reader(f)
        assert next(reader) == ["image", "score", "topic"]
        rows = list(reader)
    assert len(rows) == SMALL.num_images
    names = [r[0] for r in rows]
    assert names == sorted(names) and len(set(names)) == len(names)
    assert {r[2] for r in rows} <= set(TOPICS)
    for name in names:
        image = cv2.imread(str(out / "images" / name), cv2.IMREAD_UNCHANGED)
        assert image.shape == (48, 48, 3) and image.dtype == np.uint8
    assert sorted(p.name for p in (out / "images").iterdir()) == names
    readme = (out / "README.md").read_text()
    assert "SYNTHETIC" in readme and "score = 1.2 * animal + 1.0 * caption" in readme
    world = json.loads((out / "world.json").read_text())
    assert world["synthetic"] is True and world["topics"] == list(TOPICS) and world["seed"] == 5
    assert not list(tmp_path.glob(".raw.*")), "no temporary directory left behind"


def test_refuses_to_overwrite_without_force(tmp_path):
    generate_world(tmp_path / "raw", SMALL)
    with pytest.raises(FileExistsError, match="raw"):
        generate_world(tmp_path / "raw", SMALL)
    generate_world(tmp_path / "raw", WorldConfig(num_images=10, seed=1), overwrite=True)
    assert len(list((tmp_path / "raw" / "images").iterdir())) == 10


def test_scores_are_the_documented_function_of_the_attributes_plus_noise(tmp_path):
    out = tmp_path / "raw"
    generate_world(out, SMALL)
    with open(out / "attributes.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    attrs = dict(topic=np.array([TOPICS.index(r["topic"]) for r in rows]),
                 animal=np.array([int(r["animal"]) for r in rows]),
                 caption=np.array([int(r["caption"]) for r in rows]),
                 flat=np.array([int(r["flat"]) for r in rows]),
                 colourfulness=np.array([float(r["colourfulness"]) for r in rows]))
    clean = np.array([float(r["clean_score"]) for r in rows])
    noise = np.array([float(r["noise"]) for r in rows])
    with open(out / "scores.csv", newline="") as f:
        score = np.array([float(r["score"]) for r in csv.DictReader(f)])
    np.testing.assert_allclose(score_function(attrs, SMALL), clean, atol=2e-6)
    np.testing.assert_allclose(clean + noise, score, atol=5e-6)
    # the documented formula, written out by hand
    effect = np.array([0.4, 0.3, -0.2, 0.0, -0.4])[attrs["topic"]]
    by_hand = (1.2 * attrs["animal"] + 1.0 * attrs["caption"] - 0.8 * attrs["flat"]
               + 1.5 * (attrs["colourfulness"] - 0.5) + effect)
    np.testing.assert_allclose(by_hand, clean, atol=2e-6)


def test_regression_on_the_attributes_recovers_the_weights():
    config = WorldConfig(num_images=6000, seed=11)
    a = sample_attributes(config)
    onehot = np.eye(len(TOPICS))[a["topic"]]
    X = np.column_stack([a["animal"], a["caption"], a["flat"], a["colourfulness"] - 0.5, onehot])
    coef, *_ = np.linalg.lstsq(X, a["score"], rcond=None)
    expected = [WEIGHTS["animal"], WEIGHTS["caption"], WEIGHTS["flat"], WEIGHTS["colourfulness"]]
    np.testing.assert_allclose(coef[:4], expected, atol=0.2)
    np.testing.assert_allclose(coef[4:], config.topic_effect, atol=0.2)
    # topics differ in base rates (both in share and in mean score)
    shares = np.bincount(a["topic"], minlength=len(TOPICS)) / config.num_images
    np.testing.assert_allclose(shares, config.topic_rates, atol=0.03)
    means = [a["score"][a["topic"] == t].mean() for t in range(len(TOPICS))]
    assert means[0] > means[4] + 0.5            # animals far above "other"
    ceiling = ranking_ceiling(a)
    assert 0.75 < ceiling < 0.95                # learnable, but not trivially


def _attrs(n, **fixed):
    a = dict(topic=np.zeros(n, int), animal=np.zeros(n, int), caption=np.zeros(n, int), flat=np.zeros(n, int),
             colourfulness=np.full(n, 0.5))
    for k, v in fixed.items():
        a[k] = np.asarray(v)
    return a


def test_the_planted_attributes_are_visible_in_the_pixels():
    n = 60
    config = WorldConfig(num_images=n, seed=3)
    rng = np.random.default_rng(0)
    colour = rng.uniform(0, 1, n)
    # caption: a white bar across the top rows
    for caption in (0, 1):
        a = _attrs(n, caption=np.full(n, caption), flat=np.zeros(n, int), colourfulness=colour)
        white = np.array([(render_image(a, i, config)[:2] >= 245).all(axis=2).mean() for i in range(n)])
        assert (white > 0.6).mean() == (1.0 if caption else 0.0)
    # flat graphics have almost no fine texture; photo-like images are grainy
    texture = {}
    for flat in (0, 1):
        a = _attrs(n, flat=np.full(n, flat), colourfulness=colour)
        texture[flat] = np.array([cv2.Laplacian(cv2.cvtColor(render_image(a, i, config), cv2.COLOR_BGR2GRAY),
                                                cv2.CV_64F).var() for i in range(n)])
    assert texture[1].max() < texture[0].min()
    # colourfulness drives the saturation
    a = _attrs(n, flat=np.ones(n, int), colourfulness=colour)
    sat = np.array([cv2.cvtColor(render_image(a, i, config), cv2.COLOR_BGR2HSV)[..., 1].mean() for i in range(n)])
    assert np.corrcoef(sat, colour)[0, 1] > 0.8
    # animal: the same scene with and without the animal differs in a body-sized region
    with_animal = _attrs(n, animal=np.ones(n, int), flat=np.ones(n, int), colourfulness=colour)
    without = _attrs(n, animal=np.zeros(n, int), flat=np.ones(n, int), colourfulness=colour)
    changed = [(np.abs(render_image(with_animal, i, config).astype(int)
                       - render_image(without, i, config).astype(int)).sum(axis=2) > 0).mean() for i in range(n)]
    assert min(changed) > 0.05


def test_default_world_is_made_in_seconds_by_the_tool(tmp_path):
    out = tmp_path / "raw"
    start = time.time()
    run = subprocess.run([sys.executable, str(ROOT / "tools/make_synthetic.py"), "--out", str(out)],
                         capture_output=True, text=True, cwd=ROOT)
    took = time.time() - start
    assert run.returncode == 0, run.stderr
    assert "SYNTHETIC" in run.stdout
    assert len(list((out / "images").iterdir())) == 3000
    assert took < 30, f"default world took {took:.1f} s"
    again = subprocess.run([sys.executable, str(ROOT / "tools/make_synthetic.py"), "--out", str(out)],
                           capture_output=True, text=True, cwd=ROOT)
    assert again.returncode == 2 and "--force" in again.stderr


def test_dataset_adapter_reads_the_world_as_synthetic(tmp_path):
    from virality.datasets import registry

    out = tmp_path / "raw"
    generate_world(out, SMALL)
    dataset = registry.load_dataset("synthetic", data_dir=out)
    assert dataset.synthetic and list(dataset.topic_names) == list(TOPICS)
    assert len(dataset.ids) == SMALL.num_images
    assert all(Path(dataset.image_path(i)).is_file() for i in dataset.ids)
