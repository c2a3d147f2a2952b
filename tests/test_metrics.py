"""Accuracy, top-k, confusion counts, the per-genre table, the genre-balanced metrics against scikit-learn, the most
confused pairs and calibration (reliability bins, ECE) on hand-computed cases, and temperature scaling on the
predictions of synthetic models whose calibration is known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from genre.metrics import (
    ConfusedPair,
    accuracy,
    apply_temperature,
    balanced_accuracy,
    balanced_accuracy_from_confusion,
    confused_pairs_table,
    confusion,
    expected_calibration_error,
    fit_temperature,
    macro_f1,
    macro_f1_from_confusion,
    mean_top1_confidence,
    most_confused,
    negative_log_likelihood,
    per_genre_recall,
    per_genre_table,
    recall_from_confusion,
    reliability,
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


def test_most_confused_pairs_are_off_diagonal_largest_first_ties_in_row_order() -> None:
    matrix = np.array([[5, 2, 1], [3, 4, 0], [0, 3, 2]])  # rows: true genre; 8, 7 and 5 covers
    pairs = most_confused(matrix, ["ambient", "jazz", "metal"])
    assert pairs == [
        ConfusedPair("jazz", "ambient", 3, pytest.approx(3 / 7)),
        ConfusedPair("metal", "jazz", 3, pytest.approx(3 / 5)),  # the same count: after jazz's row
        ConfusedPair("ambient", "jazz", 2, 0.25),
        ConfusedPair("ambient", "metal", 1, 0.125),
    ]
    assert most_confused(matrix, ["ambient", "jazz", "metal"], top=2) == pairs[:2]
    assert most_confused(np.diag([4, 5]), ["jazz", "metal"]) == []  # nothing confused, no zero-count rows
    assert confused_pairs_table(pairs[2:]).splitlines() == [
        "true,predicted,count,share",
        "ambient,jazz,2,0.2500",
        "ambient,metal,1,0.1250",
    ]


def two_genres(confidences: list[float], correct: list[bool]) -> tuple[np.ndarray, np.ndarray]:
    """Covers of two genres whose top-1 confidence is `confidences[i]`, the top-1 genre right where `correct`."""
    probabilities = np.array([[c, 1 - c] for c in confidences])
    labels = np.array([0 if right else 1 for right in correct])
    return probabilities, labels


def test_a_calibrated_model_has_ece_zero() -> None:
    # 5 covers at 0.8 confidence, 4 of them right; 4 at 0.75, 3 right; 2 at 1.0, both right.
    probabilities, labels = two_genres(
        [0.8] * 5 + [0.75] * 4 + [1.0] * 2, [True] * 4 + [False] + [True] * 3 + [False] + [True] * 2
    )
    bins = reliability(probabilities, labels)
    assert bins.count.tolist() == [0, 0, 0, 0, 0, 0, 0, 9, 0, 2]  # 0.8 and 0.75 in (0.7, 0.8]; 1.0 in the last
    assert bins.confidence[7] == pytest.approx((5 * 0.8 + 4 * 0.75) / 9) and bins.accuracy[7] == pytest.approx(7 / 9)
    assert np.isnan(bins.accuracy[0]) and np.isnan(bins.confidence[0])  # an empty bin has no mean
    assert expected_calibration_error(probabilities, labels) == pytest.approx(0.0)


def test_an_overconfident_model_has_the_ece_computed_by_hand() -> None:
    # 4 covers at 0.9, 2 right (gap 0.4); 6 at 0.7, 3 right (gap 0.2): ECE = 4/10 * 0.4 + 6/10 * 0.2 = 0.28.
    probabilities, labels = two_genres([0.9] * 4 + [0.7] * 6, [True, True, False, False] + [True] * 3 + [False] * 3)
    bins = reliability(probabilities, labels)
    assert bins.count[8] == 4 and bins.count[6] == 6  # 0.9 in (0.8, 0.9], 0.7 in (0.6, 0.7]
    assert bins.accuracy[8] == 0.5 and bins.accuracy[6] == 0.5
    assert expected_calibration_error(probabilities, labels) == pytest.approx(0.28)
    assert mean_top1_confidence(probabilities) == pytest.approx(0.78)
    assert bins.edges.tolist() == pytest.approx([b / 10 for b in range(11)])


def test_reliability_bins_are_right_closed_and_the_ece_depends_on_the_binning() -> None:
    # Four genres, top-1 confidence exactly 0.3 (a bin's upper edge), 0.5 and 0.55; every top-1 prediction right.
    probabilities = np.array([[0.3, 0.25, 0.25, 0.2], [0.5, 0.2, 0.2, 0.1], [0.55, 0.15, 0.15, 0.15]])
    labels = np.array([0, 0, 0])
    assert reliability(probabilities, labels).count.tolist() == [0, 0, 1, 0, 1, 1, 0, 0, 0, 0]
    assert reliability(probabilities, labels, bins=2).count.tolist() == [2, 1]  # 0.5 belongs to [0, 0.5]
    # One bin: |1 - mean(0.3, 0.5, 0.55)| = 0.55; ten bins: (0.7 + 0.5 + 0.45) / 3 = 0.55 as well (all right).
    assert expected_calibration_error(probabilities, labels, bins=1) == pytest.approx(0.55)
    assert expected_calibration_error(probabilities, labels, bins=10) == pytest.approx(0.55)
    # A wrong 0.3 and a right 0.55: one bin pools them (|0.5 - 0.425| = 0.075), ten bins do not ((0.3 + 0.45) / 2).
    mixed, truth = probabilities[[0, 2]], np.array([1, 0])
    assert expected_calibration_error(mixed, truth, bins=1) == pytest.approx(0.075)
    assert expected_calibration_error(mixed, truth, bins=10) == pytest.approx(0.375)
    assert math.isnan(expected_calibration_error(np.zeros((0, 4)), np.zeros(0, dtype=int)))
    with pytest.raises(ValueError, match="bins must be at least 1"):
        reliability(probabilities, labels, bins=0)


def calibrated_model(covers: int = 10_000, genres: int = 5, seed: int = 15) -> tuple[np.ndarray, np.ndarray]:
    """Logits `(covers, genres)` of a model that is calibrated by construction (each cover's genre is drawn from the
    softmax of its logits), and those genres."""
    rng = np.random.default_rng(seed)
    logits = 2.0 * rng.normal(size=(covers, genres))
    probabilities = softmax(logits)
    labels = (rng.random((covers, 1)) > np.cumsum(probabilities, axis=1)).sum(axis=1)
    return logits, labels


def softmax(logits: np.ndarray) -> np.ndarray:
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


@pytest.mark.parametrize(
    ("sharpness", "temperature"), [(3.0, 3.0), (0.5, 0.5)], ids=["overconfident", "underconfident"]
)
def test_temperature_scaling_undoes_over_and_underconfidence_without_changing_a_prediction(
    sharpness: float, temperature: float
) -> None:
    logits, labels = calibrated_model()
    miscalibrated = softmax(sharpness * logits)  # the calibrated model's logits, multiplied
    fitted = fit_temperature(miscalibrated, labels)
    assert fitted == pytest.approx(temperature, rel=0.05)

    calibrated = apply_temperature(miscalibrated, fitted)
    assert expected_calibration_error(miscalibrated, labels) > 0.15
    assert expected_calibration_error(calibrated, labels) < 0.02
    assert negative_log_likelihood(calibrated, labels) < negative_log_likelihood(miscalibrated, labels) - 0.1
    assert negative_log_likelihood(calibrated, labels) == pytest.approx(
        negative_log_likelihood(softmax(logits), labels), abs=0.002
    )
    assert np.array_equal(calibrated.argmax(axis=1), miscalibrated.argmax(axis=1))
    assert accuracy(calibrated, labels) == accuracy(miscalibrated, labels)
    np.testing.assert_allclose(calibrated.sum(axis=1), 1.0)
    # The fitted temperature is the best one: a tenth either way does worse.
    for other in (0.9 * fitted, 1.1 * fitted):
        assert negative_log_likelihood(apply_temperature(miscalibrated, other), labels) > negative_log_likelihood(
            calibrated, labels
        )


def test_a_calibrated_model_keeps_a_temperature_near_one() -> None:
    logits, labels = calibrated_model()
    probabilities = softmax(logits)
    fitted = fit_temperature(probabilities, labels)
    assert fitted == pytest.approx(1.0, abs=0.05)
    assert fit_temperature(probabilities, labels) == fitted  # deterministic
    assert expected_calibration_error(apply_temperature(probabilities, fitted), labels) < 0.02


def test_applying_a_temperature_is_dividing_the_logits_by_it() -> None:
    logits = np.array([[2.0, 0.0, -1.0], [-3.0, 4.0, 0.5]])
    probabilities = softmax(logits).astype(np.float32)  # what a network hands over
    for temperature in (0.5, 1.0, 2.0, 7.0):
        np.testing.assert_allclose(
            apply_temperature(probabilities, temperature), softmax(logits / temperature), rtol=1e-5
        )
    # A genre the float32 softmax rounded to 0 stays finite and stays last.
    hard = softmax(np.array([[0.0, -200.0, 5.0]])).astype(np.float32)
    assert hard[0, 1] == 0.0
    softened = apply_temperature(hard, 20.0)
    assert np.all(np.isfinite(softened)) and softened.argmax() == 2 and softened.argmin() == 1
    assert negative_log_likelihood(hard, np.array([1])) == pytest.approx(87.3, abs=0.1)  # clipped, not infinite
    for temperature in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="positive"):
            apply_temperature(probabilities, temperature)


def test_fitting_a_temperature_needs_predictions_with_their_labels() -> None:
    with pytest.raises(ValueError, match="N > 0"):
        fit_temperature(np.zeros((0, 3)), np.zeros(0, dtype=int))
    with pytest.raises(ValueError, match="N > 0"):
        fit_temperature(np.full((4, 3), 1 / 3), np.zeros(3, dtype=int))
    with pytest.raises(ValueError, match=r"labels must be integers in \[0, 3\)"):
        fit_temperature(np.full((2, 3), 1 / 3), np.array([0, 3]))
    with pytest.raises(ValueError, match="NaN"):
        fit_temperature(np.array([[np.nan, 0.5, 0.5]]), np.array([0]))
    assert math.isnan(negative_log_likelihood(np.zeros((0, 3)), np.zeros(0, dtype=int)))
