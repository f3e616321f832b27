"""A SYNTHETIC "virality world": small images with planted attributes and known scores.

Not real data. It exists so the whole pipeline (image store, pair sampling,
LMDBs, training, evaluation) runs in minutes on two CPU cores, and so that a
model's pairwise accuracy can be checked against a ground truth that is known.

Generating process (``WorldConfig`` holds every number; ``README.md`` in the
output repeats it):

1. Topic ``t`` of each image, drawn with the base rates ``TOPIC_RATES``
   (animals, memes, gaming, pics, other).
2. Given ``t``, four visual attributes (``ATTRIBUTE_PROBS``):
   - ``animal``  (0/1): an animal-like blob (body ellipse, head, two ears, tail);
   - ``caption`` (0/1): meme-like white caption bar(s) with black text;
   - ``flat``    (0/1): flat synthetic graphics (solid background, crisp shapes)
     instead of a noisy, photo-like textured scene;
   - ``colourfulness`` in [0, 1] (Beta per topic): the palette's saturation.
   Each topic also prefers a background hue (``TOPIC_HUES``), visible in
   colourful images: the only direct visual hint of the topic.
3. Score (``score_function``)::

       score = 1.2 * animal + 1.0 * caption - 0.8 * flat
               + 1.5 * (colourfulness - 0.5) + TOPIC_EFFECT[t] + noise,
       noise ~ Normal(0, 1.0^2)

   with TOPIC_EFFECT = animals +0.4, memes +0.3, gaming -0.2, pics 0, other -0.4.

Everything is seeded: the same ``WorldConfig`` gives byte-identical files.
The on-disk form is that of a real scores-table dataset::

    <out>/images/syn_000000.png ...   BGR PNGs, size x size
    <out>/scores.csv                  image,score,topic  (sorted by image name)
    <out>/attributes.csv              the planted attributes (ground truth)
    <out>/world.json                  the generating configuration
    <out>/README.md                   says SYNTHETIC and gives the generating function
"""
import csv
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from virality.files import umask

TOPICS = ("animals", "memes", "gaming", "pics", "other")
#: Share of images in each topic (sums to 1).
TOPIC_RATES = (0.22, 0.20, 0.15, 0.28, 0.15)
#: Additive score effect of each topic (its "base rate" of virality).
TOPIC_EFFECT = (0.4, 0.3, -0.2, 0.0, -0.4)
#: P(animal), P(caption), P(flat) and Beta(a, b) of colourfulness, per topic.
ATTRIBUTE_PROBS = {
    "animals": dict(animal=0.80, caption=0.15, flat=0.15, colour=(2.0, 2.0)),
    "memes": dict(animal=0.25, caption=0.85, flat=0.30, colour=(1.5, 2.5)),
    "gaming": dict(animal=0.10, caption=0.15, flat=0.80, colour=(3.0, 1.5)),
    "pics": dict(animal=0.20, caption=0.05, flat=0.10, colour=(2.0, 2.0)),
    "other": dict(animal=0.10, caption=0.20, flat=0.40, colour=(1.5, 1.5)),
}
#: Preferred background hue of each topic (OpenCV hue units, 0..179).
TOPIC_HUES = (60, 0, 130, 15, 100)
#: Score weights of the planted attributes.
WEIGHTS = dict(animal=1.2, caption=1.0, flat=-0.8, colourfulness=1.5)
CAPTION_WORDS = ("LOL", "WOW", "OMG", "YES", "NOPE", "WHY", "MEME", "DOGE", "WIN", "FAIL")


@dataclass(frozen=True)
class WorldConfig:
    """Every knob of the synthetic world (defaults: 3000 images of 48x48)."""

    num_images: int = 3000
    size: int = 48
    seed: int = 20160101
    noise: float = 1.0
    topic_rates: tuple = TOPIC_RATES
    topic_effect: tuple = TOPIC_EFFECT
    weights: dict = field(default_factory=lambda: dict(WEIGHTS))

    def __post_init__(self):
        if self.num_images < 2:
            raise ValueError(f"num_images must be >= 2, got {self.num_images}")
        if self.size < 24:
            raise ValueError(f"size must be >= 24 pixels, got {self.size}")
        if self.noise < 0:
            raise ValueError(f"noise must be >= 0, got {self.noise}")
        if len(self.topic_rates) != len(TOPICS) or abs(sum(self.topic_rates) - 1) > 1e-9:
            raise ValueError(f"topic_rates must be {len(TOPICS)} shares summing to 1, got {self.topic_rates}")


def ranking_ceiling(attrs, num_pairs=100000, seed=0):
    """Pairwise accuracy of the noise-free score on random (top-half, bottom-half) pairs.

    No model can expect to beat it on such pairs: the rest of the score is noise.
    """
    score, clean = np.asarray(attrs["score"]), np.asarray(attrs["clean_score"])
    median = np.median(score)
    high, low = np.flatnonzero(score > median), np.flatnonzero(score <= median)
    rng = np.random.default_rng(seed)
    i, j = rng.choice(high, num_pairs), rng.choice(low, num_pairs)
    return float(np.mean(clean[i] > clean[j]) + 0.5 * np.mean(clean[i] == clean[j]))


def image_name(index):
    return f"syn_{index:06d}.png"


def sample_attributes(config):
    """The planted attributes and scores of every image: a dict of arrays (length num_images)."""
    rng = np.random.default_rng([config.seed, 0])
    n = config.num_images
    topic = rng.choice(len(TOPICS), size=n, p=np.asarray(config.topic_rates, float)).astype(np.int32)
    u = rng.random((n, 3))
    animal = np.zeros(n, np.int32)
    caption = np.zeros(n, np.int32)
    flat = np.zeros(n, np.int32)
    colour = np.zeros(n, np.float64)
    for t, name in enumerate(TOPICS):
        sel = topic == t
        p = ATTRIBUTE_PROBS[name]
        animal[sel] = u[sel, 0] < p["animal"]
        caption[sel] = u[sel, 1] < p["caption"]
        flat[sel] = u[sel, 2] < p["flat"]
        colour[sel] = rng.beta(*p["colour"], size=int(sel.sum()))
    attrs = dict(topic=topic, animal=animal, caption=caption, flat=flat, colourfulness=colour)
    clean = score_function(attrs, config)
    noise = rng.normal(0.0, config.noise, size=n)
    attrs.update(clean_score=clean, noise=noise, score=clean + noise)
    return attrs


def score_function(attrs, config=WorldConfig()):
    """The noise-free score: weighted attributes plus the topic effect (module docstring)."""
    w = config.weights
    return (w["animal"] * attrs["animal"] + w["caption"] * attrs["caption"] + w["flat"] * attrs["flat"]
            + w["colourfulness"] * (np.asarray(attrs["colourfulness"], float) - 0.5)
            + np.asarray(config.topic_effect, float)[np.asarray(attrs["topic"])])


def _hsv_colour(hue, sat, val):
    pixel = np.uint8([[[int(hue) % 180, int(np.clip(sat, 0, 255)), int(np.clip(val, 0, 255))]]])
    return tuple(int(c) for c in cv2.cvtColor(pixel, cv2.COLOR_HSV2BGR)[0, 0])


def _palette(rng, base_hue, colourfulness, count):
    """``count`` BGR colours; saturation follows colourfulness, hues spread around base_hue."""
    sat = 255 * colourfulness
    hues = base_hue + rng.normal(0, 12, count) + np.arange(count) * rng.uniform(25, 60)
    return [_hsv_colour(h, sat * rng.uniform(0.8, 1.0), rng.uniform(110, 230)) for h in hues]


def render_image(attrs, index, config):
    """Render image ``index`` (BGR uint8, size x size) from its attributes; seeded per image."""
    rng = np.random.default_rng([config.seed, 1, index])
    s = config.size
    topic = int(attrs["topic"][index])
    colourfulness = float(attrs["colourfulness"][index])
    hue = TOPIC_HUES[topic] + rng.normal(0, 8)
    bg, fg1, fg2, fg3 = _palette(rng, hue, colourfulness, 4)
    if attrs["flat"][index]:
        # Flat synthetic graphics: a solid background and crisp geometric shapes.
        img = np.empty((s, s, 3), np.uint8)
        img[:] = bg
        for colour in (fg1, fg2):
            x0, y0 = rng.integers(0, s * 2 // 3, 2)
            w, h = rng.integers(s // 5, s // 2, 2)
            if rng.random() < 0.5:
                cv2.rectangle(img, (int(x0), int(y0)), (int(x0 + w), int(y0 + h)), colour, -1)
            else:
                pts = rng.integers(0, s, (3, 2)).astype(np.int32)
                cv2.fillPoly(img, [pts], colour)
    else:
        # Photo-like: a smooth two-colour gradient, soft blobs, and grain.
        t = np.linspace(0, 1, s)[:, None, None]
        img = (1 - t) * np.asarray(bg, float) + t * np.asarray(fg3, float)
        img = np.repeat(img, s, axis=1)
        for _ in range(3):
            c = tuple(float(v) for v in _palette(rng, hue + rng.normal(0, 30), colourfulness, 1)[0])
            cv2.circle(img, tuple(int(v) for v in rng.integers(0, s, 2)), int(rng.integers(s // 8, s // 3)), c, -1)
        img = cv2.GaussianBlur(img, (0, 0), s / 24)
        img += rng.normal(0, 18, (s, s, 1)) + rng.normal(0, 10, img.shape)  # mostly luminance grain
        img = np.clip(img, 0, 255).astype(np.uint8)
    if attrs["animal"][index]:
        _draw_animal(img, rng, fg2 if attrs["flat"][index] else fg1)
    if attrs["caption"][index]:
        _draw_caption(img, rng)
    return img


def _draw_animal(img, rng, colour):
    """An animal-like blob: body ellipse, head circle, two triangular ears, a tail."""
    s = img.shape[0]
    dark = tuple(int(c * 0.45) for c in colour)
    cx = int(s * rng.uniform(0.4, 0.6))
    cy = int(s * rng.uniform(0.55, 0.65))
    bw, bh = int(s * rng.uniform(0.2, 0.26)), int(s * rng.uniform(0.12, 0.16))
    facing = 1 if rng.random() < 0.5 else -1
    hx, hy, hr = cx + facing * int(bw * 0.95), cy - int(bh * 1.1), max(3, int(s * 0.1))
    cv2.ellipse(img, (cx, cy), (bw, bh), 0, 0, 360, dark, -1)
    cv2.line(img, (cx - facing * bw, cy), (cx - facing * int(bw * 1.5), cy - int(bh * 1.4)), dark, max(1, s // 24))
    for dx in (-1, 1):
        ear = np.array([[hx + dx * hr, hy - hr // 3], [hx + dx * hr // 4, hy - hr // 2],
                        [hx + dx * int(hr * 0.9), hy - int(hr * 1.9)]], np.int32)
        cv2.fillPoly(img, [ear], dark)
    cv2.circle(img, (hx, hy), hr, dark, -1)
    for dx in (-1, 1):  # legs
        cv2.line(img, (cx + dx * bw // 2, cy), (cx + dx * bw // 2, cy + int(bh * 1.8)), dark, max(1, s // 24))


def _draw_caption(img, rng):
    """Meme-like caption: a white bar with black text at the top, often one at the bottom too."""
    s = img.shape[0]
    bar = max(6, int(s * 0.22))
    rows = [0] + ([s - bar] if rng.random() < 0.6 else [])
    for y0 in rows:
        img[y0:y0 + bar] = 250
        word = CAPTION_WORDS[int(rng.integers(len(CAPTION_WORDS)))]
        scale = s / 140.0
        (tw, th), _ = cv2.getTextSize(word, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        x = max(1, (s - tw) // 2 + int(rng.integers(-2, 3)))
        cv2.putText(img, word, (x, y0 + (bar + th) // 2), cv2.FONT_HERSHEY_SIMPLEX, scale, (10, 10, 10),
                    max(1, s // 40), cv2.LINE_AA)


def readme_text(config, ceiling):
    w = config.weights
    effects = ", ".join(f"{t} {e:+.1f}" for t, e in zip(TOPICS, config.topic_effect))
    rates = ", ".join(f"{t} {r:.2f}" for t, r in zip(TOPICS, config.topic_rates))
    probs = "\n".join(f"| {t} | {p['animal']:.2f} | {p['caption']:.2f} | {p['flat']:.2f} | "
                      f"Beta{p['colour']} |" for t, p in ATTRIBUTE_PROBS.items())
    return f"""# SYNTHETIC virality world (not real data)

Made by `virality/data/synthetic.py` (`tools/make_synthetic.py`). Every image and score here is
SYNTHETIC: drawn by a seeded program, so that the pipeline can be run and checked end to end.
Accuracies measured on it say nothing about real image virality.

- {config.num_images} images of {config.size}x{config.size} pixels (BGR PNG) in `images/`,
  seed {config.seed}.
- `scores.csv`: `image,score,topic` (one row per image, sorted by image name).
- `attributes.csv`: the planted attributes of each image (ground truth), the noise-free
  score and the noise.
- `world.json`: the generating configuration.

## Generating function
1. topic ~ Categorical({rates})
2. given the topic (and independently of each other):

| topic | P(animal) | P(caption) | P(flat) | colourfulness |
| --- | --- | --- | --- | --- |
{probs}

   - animal: an animal-like blob (body ellipse, head, two ears, legs, tail);
   - caption: meme-like white bar(s) with black text (top; bottom too with p = 0.6);
   - flat: flat graphics (solid background, crisp rectangles/triangles) instead of a
     blurred, grainy photo-like scene;
   - colourfulness: saturation of the palette; each topic prefers a background hue
     ({dict(zip(TOPICS, TOPIC_HUES))}, OpenCV hue units).
3. score = {w['animal']} * animal + {w['caption']} * caption + ({w['flat']}) * flat
           + {w['colourfulness']} * (colourfulness - 0.5) + topic_effect[topic] + noise,
   topic_effect: {effects}; noise ~ Normal(0, {config.noise}^2).

## What a model can reach
On random pairs of a top-half and a bottom-half image (by score), ordering by the
noise-free score is right {100 * ceiling:.1f}% of the time (`ranking_ceiling`): the
ceiling for pairwise accuracy on such pairs here; chance is 50%.
"""


def generate_world(out_dir, config=WorldConfig(), overwrite=False):
    """Write the synthetic world to ``out_dir`` (atomically: built beside it, then renamed).

    Returns a summary dict. Raises FileExistsError when ``out_dir`` exists and
    ``overwrite`` is false.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"{out_dir} exists; remove it or pass overwrite=True (--force)")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-"))
    try:
        os.chmod(tmp, 0o777 & ~umask())          # mkdtemp makes 0700: keep the user's umask instead
        attrs = sample_attributes(config)
        (tmp / "images").mkdir()
        names = [image_name(i) for i in range(config.num_images)]
        for i, name in enumerate(names):
            if not cv2.imwrite(str(tmp / "images" / name), render_image(attrs, i, config)):
                raise OSError(f"could not write {tmp / 'images' / name}")
        with open(tmp / "scores.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["image", "score", "topic"])
            for i, name in enumerate(names):
                writer.writerow([name, f"{attrs['score'][i]:.6f}", TOPICS[attrs["topic"][i]]])
        with open(tmp / "attributes.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["image", "topic", "animal", "caption", "flat", "colourfulness",
                             "clean_score", "noise", "score"])
            for i, name in enumerate(names):
                writer.writerow([name, TOPICS[attrs["topic"][i]], attrs["animal"][i], attrs["caption"][i],
                                 attrs["flat"][i], f"{attrs['colourfulness'][i]:.6f}",
                                 f"{attrs['clean_score'][i]:.6f}", f"{attrs['noise'][i]:.6f}",
                                 f"{attrs['score'][i]:.6f}"])
        ceiling = ranking_ceiling(attrs)
        (tmp / "world.json").write_text(json.dumps(dict(asdict(config), synthetic=True, topics=list(TOPICS),
                                                        ranking_ceiling=round(ceiling, 4)),
                                                   indent=1, sort_keys=True) + "\n")
        (tmp / "README.md").write_text(readme_text(config, ceiling))
        if out_dir.exists():
            old = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.old-"))
            os.rename(out_dir, old / "x")
            os.rename(tmp, out_dir)
            shutil.rmtree(old)
        else:
            os.rename(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    counts = {t: int((attrs["topic"] == i).sum()) for i, t in enumerate(TOPICS)}
    return dict(out=str(out_dir), images=config.num_images, ranking_ceiling=ceiling, size=config.size,
                seed=config.seed, topics=counts,
                score_mean=float(attrs["score"].mean()), score_std=float(attrs["score"].std()))
