"""Where a network puts its covers: penultimate-layer features projected to a 2-D map (PCA or t-SNE), and each
cover's nearest neighbours by cosine similarity (`genre interpret`, issue 15). Pure numpy + scikit-learn."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

METHODS = ("tsne", "pca")
NEIGHBOURS_SHOWN = 5  # nearest neighbours `genre interpret` shows beside each chosen cover
TSNE_PERPLEXITY = 30.0  # scikit-learn's default, lowered for small sets (see `project`)


def unit_rows(features: np.ndarray) -> np.ndarray:
    """`(N, D)` -> `(N, D)` float64, each row scaled to length 1 (an all-zero row stays zero)."""
    features = np.asarray(features, dtype=np.float64)
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return features / np.maximum(norms, np.finfo(np.float64).tiny)


def project(features: np.ndarray, method: str, seed: int = 0) -> np.ndarray:
    """`(N, D)` features -> `(N, 2)` float64 points of a map, by "pca" or "tsne".

    The rows are L2-normalised first, not standardised: a penultimate layer (after ReLU and pooling) tells covers
    apart by the direction of their features more than by their length, which grows with contrast and busy
    artwork; on unit rows Euclidean distance is a function of cosine similarity, so the map agrees with
    `nearest_neighbours`. Standardising would instead blow up the noise of nearly dead units to full weight.

    t-SNE uses scikit-learn's Barnes-Hut, initialised by PCA, with perplexity min(30, (N - 1) / 3) (it must stay
    below N); the same features and seed give the same map. Needs N >= 3 and D >= 2.
    """
    if method not in METHODS:
        raise ValueError(f"unknown projection method {method!r}: choose one of {', '.join(METHODS)}")
    features = np.asarray(features)
    if features.ndim != 2:
        raise ValueError(f"features must be (N, D), got shape {features.shape}")
    count, width = features.shape
    if count < 3:
        raise ValueError(f"a map needs at least 3 covers, got {count}")
    if width < 2:
        raise ValueError(f"a 2-D map needs at least 2 features per cover, got {width}")
    rows = unit_rows(features)
    if method == "pca":
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=seed).fit_transform(rows)
    from sklearn.manifold import TSNE

    perplexity = min(TSNE_PERPLEXITY, (count - 1) / 3)
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed)
    return tsne.fit_transform(rows).astype(np.float64)


def nearest_neighbours(
    features: np.ndarray, queries: Sequence[int] | np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """For each query (a row index of `features` `(N, D)`), the k other covers most similar to it by cosine
    similarity, most similar first: `(Q, k)` int64 indices and `(Q, k)` float64 similarities in [-1, 1].

    The query itself is never among its neighbours, even when other covers are identical to it; ties keep the lower
    index first. With fewer than k other covers, every other cover is returned (k becomes N - 1).
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    rows = unit_rows(features)
    queries = np.asarray(queries, dtype=np.int64).reshape(-1)
    count = len(rows)
    if np.any((queries < 0) | (queries >= count)):
        raise ValueError(f"query indices must lie in [0, {count}), got {queries.tolist()}")
    k = min(k, count - 1)
    similarities = rows[queries] @ rows.T  # (Q, N)
    similarities[np.arange(len(queries)), queries] = -np.inf  # never a cover's own neighbour
    order = np.argsort(-similarities, axis=1, kind="stable")[:, :k]
    return order, np.clip(np.take_along_axis(similarities, order, axis=1), -1.0, 1.0)
