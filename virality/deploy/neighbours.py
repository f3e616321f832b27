"""Nearest neighbours in the pre-final-layer feature space (the paper's Fig. 2).

Features are the input of the scoring layer: fc7 for PVCNN, concat(fc7, topic_fc7)
for TPVCNN. Neighbours are by cosine similarity (features L2-normalised); figures and pages
show the cosine distance 1 - similarity (0 = the same direction, 2 = opposite).
"""
import numpy as np

from virality.deploy.preprocess import chw_to_input, forward_blobs
from virality.progress import progress


def feature_blob(net):
    """The bottom blob of the scoring layer of a deploy net."""
    names = list(net._layer_names)
    if "score" not in names:
        raise ValueError("the deploy net has no 'score' layer (a ranking model is needed)")
    return net.bottom_names["score"][0]


def features_and_scores(net, store, ids, spec, batch_size=64, show_progress=False):
    """(features (N, D) float32, scores (N,) float64) for image ids from an ImageStore."""
    blobs = [feature_blob(net), "score"]
    ids = np.asarray(ids)
    feats, scores = [], []
    with progress(total=int(ids.size), desc="features", unit="img", enabled=show_progress) as bar:
        for start in range(0, ids.size, batch_size):       # one batch of pixels in memory at a time
            inputs = chw_to_input(store.read_chw(ids[start:start + batch_size]), spec)
            f, s = forward_blobs(net, inputs, blobs, batch_size)
            feats.append(f.astype(np.float32))
            scores.append(s[:, 0])
            bar.update(len(inputs))
    if not feats:
        return np.empty((0, 0), np.float32), np.empty(0)
    return np.concatenate(feats), np.concatenate(scores)


def features_of_images(net, images_bgr, spec, batch_size=64):
    """(features, scores) for decoded BGR images (files given as queries)."""
    from virality.deploy.preprocess import to_input
    f, s = forward_blobs(net, to_input(images_bgr, spec), [feature_blob(net), "score"], batch_size)
    return f.astype(np.float32), s[:, 0]


def _normalise(x):
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def nearest(features, queries, k, query_features=None):
    """(indices (Q, k), cosine distances (Q, k)) of each query's k nearest rows of ``features``.

    ``queries``: row indices into features (a query is never its own neighbour), or None with
    ``query_features`` (Q, D) for queries from outside the searched set.
    """
    norm = _normalise(features)
    if query_features is not None:
        sims = _normalise(np.asarray(query_features, np.float32)) @ norm.T
    else:
        sims = norm[np.asarray(queries)] @ norm.T
        sims[np.arange(len(queries)), np.asarray(queries)] = -np.inf   # never your own neighbour
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return order, 1.0 - np.take_along_axis(sims, order, axis=1)


def plot_grid(rows, png, title=""):
    """Fig. 2 as a PNG: one row per query, the query first (outlined) then its neighbours.

    ``rows``: [(label, query, [neighbour, ...])], each a dict(name, image (BGR), score, distance).
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    nrows, ncols = len(rows), 1 + max((len(r[2]) for r in rows), default=0)
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.3 * ncols, 2.75 * nrows + 0.6), squeeze=False)
    for r, (label, query, neighbours) in enumerate(rows):
        for c in range(ncols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c > len(neighbours):
                ax.axis("off")
                continue
            item = query if c == 0 else neighbours[c - 1]
            ax.imshow(item["image"][:, :, ::-1], interpolation="nearest")          # BGR -> RGB
            name = item["name"] if len(item["name"]) <= 24 else item["name"][:10] + "..." + item["name"][-11:]
            text = f"{name}\nf_r {item['score']:+.3f}"
            if c == 0:
                text = f"QUERY ({label})\n" + text
                for spine in ax.spines.values():
                    spine.set_edgecolor("#1f77b4")
                    spine.set_linewidth(4)
            else:
                text += f"  dist {item['distance']:.3f}"
            ax.set_title(text, fontsize=7.5)
    fig.suptitle(title + "\n(first column: the query; then its nearest neighbours by cosine distance "
                 "of the scoring layer's input features)", fontsize=9)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return png
