"""Accuracy, top-k, confusion counts, the per-genre table, and the genre-balanced metrics against scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest

from genre.metrics import (
    accuracy,
    balanced_accuracy,
    balanced_accuracy_from_confusion,
    confusion,
    macro_f1,
    macro_f1_from_confusion,
    per_genre_recall,
    per_genre_table,
    recall_from_confusion,
    top_k_accuracy,
)


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


# Six covers of genre 0, three of genre 1, one of genre 2, none of genres 3 and 4: genre 2 is never predicted,
# genre 3 is predicted without being in the split, genre 4 is neither in the split nor predicted.
UNBALANCED_LABELS = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 2])
UNBALANCED_PREDICTED = np.array([0, 0, 0, 0, 1, 3, 1, 0, 1, 0])


def test_balanced_accuracy_macro_f1_and_recall_agree_with_scikit_learn_on_unbalanced_genres() -> None:
    from sklearn.metrics import balanced_accuracy_score, f1_score, recall_score

    labels, predicted = UNBALANCED_LABELS, UNBALANCED_PREDICTED
    with pytest.warns(UserWarning, match="y_pred contains classes not in y_true"):
        expected_balanced = balanced_accuracy_score(labels, predicted)

    assert balanced_accuracy(predicted, labels, 5) == pytest.approx(expected_balanced)
    assert balanced_accuracy(predicted, labels, 5) == pytest.approx((4 / 6 + 2 / 3 + 0) / 3)
    assert macro_f1(predicted, labels, 5) == pytest.approx(
        f1_score(labels, predicted, average="macro", zero_division=0)
    )
    recall = per_genre_recall(predicted, labels, 5)
    expected_recall = recall_score(labels, predicted, labels=range(5), average=None, zero_division=np.nan)
    assert recall == pytest.approx(expected_recall, nan_ok=True)
    assert recall[2] == 0.0, "a genre never predicted has recall 0"
    assert np.isnan(recall[3]) and np.isnan(recall[4]), "a genre absent from the split has no recall, not 0"


def test_always_predicting_the_largest_genre_scores_well_on_accuracy_only() -> None:
    labels = np.array([0] * 23 + [1] * 5 + [2] * 5)
    predicted = np.zeros_like(labels)

    assert float(np.mean(predicted == labels)) == pytest.approx(0.697, abs=1e-3)
    assert balanced_accuracy(predicted, labels, 3) == pytest.approx(1 / 3)
    assert macro_f1(predicted, labels, 3) == pytest.approx((2 * 23 / (23 + 33)) / 3)


def test_the_same_numbers_come_from_the_confusion_matrix_and_from_an_evaluation() -> None:
    from genre.training.loop import Evaluation

    matrix = confusion(UNBALANCED_PREDICTED, UNBALANCED_LABELS, 5)
    probabilities = np.eye(5)[UNBALANCED_PREDICTED]
    evaluation = Evaluation(0.0, probabilities, UNBALANCED_LABELS)

    assert evaluation.balanced_accuracy == balanced_accuracy_from_confusion(matrix)
    assert evaluation.macro_f1 == macro_f1_from_confusion(matrix)
    assert evaluation.per_genre_recall == pytest.approx(recall_from_confusion(matrix), nan_ok=True)


def test_an_empty_split_has_no_score_rather_than_an_error() -> None:
    from genre.training.loop import Evaluation

    empty = Evaluation(float("nan"), np.zeros((0, 0)), np.zeros(0, dtype=np.int64))

    assert np.isnan(empty.balanced_accuracy) and np.isnan(empty.macro_f1) and len(empty.per_genre_recall) == 0
    assert np.isnan(recall_from_confusion(np.zeros((3, 3), dtype=np.int64))).all()
