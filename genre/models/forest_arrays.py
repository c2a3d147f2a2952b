"""A fitted random forest as plain arrays, and its probabilities computed from them with numpy.

A forest on network features is logged inside a cover model. Pickling it would make loading the model run whatever
the file holds (MLflow warns about, and can refuse, pickled models); its trees are instead written as the arrays
scikit-learn itself keeps them in (`tree_.children_left`, `children_right`, `feature`, `threshold`, `value`: see
scikit-learn's "Understanding the decision tree structure"), padded to one table per field, and walked here.
"""

from __future__ import annotations

import numpy as np

LEAF = -1  # scikit-learn's child index of a leaf (`sklearn.tree._tree.TREE_LEAF`)
FIELDS = ("left", "right", "feature", "threshold", "value")  # what a saved forest holds


def forest_arrays(forest, classes: int) -> dict[str, np.ndarray]:
    """The trees of a fitted `RandomForestClassifier` (or any ensemble of classification trees in
    `estimators_`) as `(trees, nodes)` tables of children, split feature and threshold, and `(trees, nodes,
    classes)` leaf class shares over `classes` genres (a genre missing from training gets 0)."""
    trees = [estimator.tree_ for estimator in forest.estimators_]
    nodes = max(tree.node_count for tree in trees)
    left = np.full((len(trees), nodes), LEAF, dtype=np.int32)
    right = np.full((len(trees), nodes), LEAF, dtype=np.int32)
    feature = np.zeros((len(trees), nodes), dtype=np.int32)
    threshold = np.zeros((len(trees), nodes), dtype=np.float64)
    value = np.zeros((len(trees), nodes, classes), dtype=np.float64)
    seen = np.asarray(forest.classes_, dtype=np.int64)
    for index, tree in enumerate(trees):
        count = tree.node_count
        left[index, :count], right[index, :count] = tree.children_left, tree.children_right
        feature[index, :count] = np.maximum(tree.feature, 0)  # a leaf's feature is -2: never read
        threshold[index, :count] = tree.threshold
        shares = tree.value[:, 0, :]
        value[index, :count][:, seen] = shares / np.maximum(shares.sum(axis=1, keepdims=True), 1e-300)
    return {"left": left, "right": right, "feature": feature, "threshold": threshold, "value": value}


def forest_probabilities(arrays: dict[str, np.ndarray], features: np.ndarray) -> np.ndarray:
    """`(N, classes)` float64: the mean over trees of the class shares of the leaf each row of `features`
    `(N, width)` reaches, going left where `feature <= threshold` (as `RandomForestClassifier.predict_proba`,
    which compares in float32)."""
    features = np.asarray(features, dtype=np.float32)
    left, right, feature, threshold = arrays["left"], arrays["right"], arrays["feature"], arrays["threshold"]
    trees = np.arange(len(left))[:, None]
    rows = np.arange(len(features))[None, :]
    node = np.zeros((len(left), len(features)), dtype=np.int64)
    while True:
        inner = left[trees, node] != LEAF
        if not inner.any():
            break
        goes_left = features[rows, feature[trees, node]] <= threshold[trees, node]
        node = np.where(inner, np.where(goes_left, left[trees, node], right[trees, node]), node)
    return arrays["value"][trees, node].mean(axis=0)
