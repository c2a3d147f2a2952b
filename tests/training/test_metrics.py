"""Accuracy, top-k, confusion counts and the per-genre table."""

from __future__ import annotations

import numpy as np

from genre.training.metrics import accuracy, confusion, per_genre_table, top_k_accuracy


def test_accuracy_top_k_and_confusion() -> None:
    probabilities = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.5, 0.4, 0.1], [0.2, 0.3, 0.5]])
    labels = np.array([0, 1, 1, 2])
    assert accuracy(probabilities, labels) == 0.5
    assert top_k_accuracy(probabilities, labels, 2) == 1.0
    matrix = confusion(np.argmax(probabilities, axis=1), labels, 3)
    assert matrix.tolist() == [[1, 0, 0], [1, 0, 1], [0, 0, 1]]


def test_per_genre_table_has_precision_recall_f1_support() -> None:
    table = per_genre_table(np.array([[8, 2], [1, 9]]), ["jazz", "metal"]).splitlines()
    assert table[0] == "genre,precision,recall,f1,support"
    assert table[1] == "jazz,0.8889,0.8000,0.8421,10"
    assert table[2] == "metal,0.8182,0.9000,0.8571,10"
