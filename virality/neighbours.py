"""Nearest neighbours in the pre-final-layer feature space (the paper's Fig. 2).

Features are the input of the scoring layer: fc7 for PVCNN, concat(fc7, topic_fc7)
for TPVCNN. Neighbours are by cosine similarity (features L2-normalised).
"""
import numpy as np

from virality.preprocess import chw_to_input, forward_blobs


def feature_blob(net):
    """The bottom blob of the scoring layer of a deploy net."""
    names = list(net._layer_names)
    if "score" not in names:
        raise ValueError("the deploy net has no 'score' layer (a ranking model is needed)")
    return net.bottom_names["score"][0]


def features_and_scores(net, store, ids, spec, batch_size=64):
    """(features (N, D) float32, scores (N,) float64) for image ids from an ImageStore."""
    blobs = [feature_blob(net), "score"]
    ids = np.asarray(ids)
    feats, scores = [], []
    for start in range(0, ids.size, batch_size):       # one batch of pixels in memory at a time
        inputs = chw_to_input(store.read_chw(ids[start:start + batch_size]), spec)
        f, s = forward_blobs(net, inputs, blobs, batch_size)
        feats.append(f.astype(np.float32))
        scores.append(s[:, 0])
    return np.concatenate(feats), np.concatenate(scores)


def nearest(features, queries, k):
    """Indices (len(queries), k) of each query's k nearest other rows, by cosine similarity."""
    norm = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    sims = norm[np.asarray(queries)] @ norm.T
    sims[np.arange(len(queries)), np.asarray(queries)] = -np.inf   # never your own neighbour
    return np.argsort(-sims, axis=1, kind="stable")[:, :k]


def plot_grid(store, ids, scores, queries, neighbours, png, title=""):
    """One row per query: the query (left) and its neighbours, each titled with its score."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows, cols = len(queries), neighbours.shape[1] + 1
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.8 * rows), squeeze=False)
    for r, q in enumerate(queries):
        for c, idx in enumerate([q] + list(neighbours[r])):
            ax = axes[r][c]
            ax.imshow(store.get(ids[idx])[:, :, ::-1])   # BGR -> RGB
            ax.set_title(("query " if c == 0 else "") + f"{scores[idx]:+.2f}", fontsize=7)
            ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
