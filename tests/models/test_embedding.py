"""Maps of penultimate-layer features (PCA, t-SNE) and nearest neighbours by cosine similarity, on two Gaussian
blobs of covers in 20-D that any good map must keep apart."""

from __future__ import annotations

import numpy as np
import pytest

from genre.models.embedding import METHODS, nearest_neighbours, project


def blobs(per_blob: int = 60, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`(2 * per_blob, 20)` features of two genres whose centres point different ways, and their labels."""
    rng = np.random.default_rng(seed)
    centres = np.zeros((2, 20))
    centres[0, :10], centres[1, 10:] = 2.0, 2.0
    labels = np.repeat([0, 1], per_blob)
    return centres[labels] + rng.normal(size=(len(labels), 20)), labels


@pytest.mark.parametrize("method", METHODS)
def test_the_map_keeps_two_separate_genres_apart(method: str) -> None:
    features, labels = blobs()
    points = project(features, method)
    assert points.shape == (len(features), 2) and points.dtype == np.float64
    centroids = np.stack([points[labels == genre].mean(axis=0) for genre in (0, 1)])
    distances = np.linalg.norm(points[:, None, :] - centroids[None], axis=2)  # (N, 2)
    assert np.array_equal(distances.argmin(axis=1), labels)  # every cover nearer its own genre's centre
    spread = distances[np.arange(len(labels)), labels].mean()
    assert np.linalg.norm(centroids[0] - centroids[1]) > 3 * spread


def test_tsne_gives_the_same_map_for_the_same_seed() -> None:
    features, _ = blobs(40)
    np.testing.assert_array_equal(project(features, "tsne", seed=3), project(features, "tsne", seed=3))


def test_a_covers_place_does_not_depend_on_the_length_of_its_features() -> None:
    features, _ = blobs(20)
    louder = features * np.random.default_rng(1).uniform(0.1, 10.0, size=(len(features), 1))
    np.testing.assert_allclose(project(louder, "pca"), project(features, "pca"), atol=1e-9)


def test_tsne_maps_a_handful_of_covers() -> None:
    features, _ = blobs(2)  # 4 covers: perplexity 1
    assert np.isfinite(project(features, "tsne")).all()


@pytest.mark.parametrize(
    ("features", "method", "message"),
    [
        (np.ones((10, 4)), "umap", "choose one of tsne, pca"),
        (np.ones((2, 4)), "pca", "at least 3 covers"),
        (np.ones((10, 1)), "tsne", "at least 2 features"),
    ],
)
def test_what_cannot_be_mapped_is_a_clear_error(features: np.ndarray, method: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        project(features, method)


def test_the_neighbours_of_a_cover_are_in_its_genre_most_similar_first_and_never_itself() -> None:
    features, labels = blobs()
    queries = [0, 59, 60, 119]
    indices, similarities = nearest_neighbours(features, queries, k=5)
    assert indices.shape == similarities.shape == (4, 5)
    for query, found in zip(queries, indices, strict=True):
        assert query not in found
        assert np.all(labels[found] == labels[query])
    assert np.all(np.diff(similarities, axis=1) <= 0)
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    np.testing.assert_allclose(similarities[0], unit[indices[0]] @ unit[0])


def test_an_identical_cover_is_a_neighbour_but_the_query_never_is() -> None:
    features = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])  # cover 1 points the same way as 0
    indices, similarities = nearest_neighbours(features, [0, 1], k=10)  # only 3 other covers
    assert indices.tolist() == [[1, 3, 2], [0, 3, 2]]
    np.testing.assert_allclose(similarities[0], [1.0, np.sqrt(0.5), 0.0])


def test_a_query_outside_the_covers_is_refused() -> None:
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        nearest_neighbours(np.ones((4, 3)), [4], k=2)
