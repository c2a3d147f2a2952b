"""A forest written as arrays gives scikit-learn's own probabilities, so the logged cover model needs no pickle."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier

from genre.models.forest_arrays import FIELDS, forest_arrays, forest_probabilities


@pytest.mark.parametrize("depth", [None, 3])
def test_the_arrays_of_a_forest_give_its_predict_proba_with_a_genre_unseen_in_training(depth: int | None) -> None:
    rng = np.random.default_rng(0)
    features = rng.normal(size=(300, 12)).astype(np.float32)
    labels = rng.integers(0, 4, size=300)
    labels[labels == 2] = 1  # genre 2 has no training cover: the forest knows 3 of 4 genres
    forest = RandomForestClassifier(40, max_depth=depth, random_state=0).fit(features, labels)
    arrays = forest_arrays(forest, classes=4)
    unseen = rng.normal(size=(80, 12)).astype(np.float32)

    probabilities = forest_probabilities(arrays, unseen)

    expected = np.zeros((80, 4))
    expected[:, forest.classes_] = forest.predict_proba(unseen)
    np.testing.assert_allclose(probabilities, expected, atol=1e-12)
    assert set(arrays) == set(FIELDS)
    assert (probabilities[:, 2] == 0).all()


def test_a_row_on_a_threshold_goes_left_as_scikit_learn_sends_it() -> None:
    features = np.array([[0.0], [1.0], [2.0], [3.0]], dtype=np.float32)
    forest = RandomForestClassifier(1, bootstrap=False, random_state=0).fit(features, [0, 0, 1, 1])
    arrays = forest_arrays(forest, classes=2)
    threshold = np.float32(forest.estimators_[0].tree_.threshold[0])

    on_the_line = np.array([[threshold], [np.nextafter(threshold, np.float32(9))]], dtype=np.float32)

    np.testing.assert_array_equal(forest_probabilities(arrays, on_the_line), forest.predict_proba(on_the_line))
