"""A feature baseline folded into one network: the linear classifier's affine map read back exactly, and the
network's probabilities on pixels equal to the classifier's on the describer's features."""

from __future__ import annotations

import mxnet as mx
import numpy as np
import pytest
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from genre.models.feature_network import affine_map, feature_network
from genre.models.features import build_describer
from genre.models.networks import NetworkSpec


def data(classes: int, rows: int = 120, width: int = 30) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(classes)
    labels = np.arange(rows) % classes
    return rng.normal(size=(rows, width)) * rng.uniform(0.1, 10, size=width) + labels[:, None], labels


@pytest.mark.parametrize(
    "pipeline",
    [
        make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000)),
        make_pipeline(StandardScaler(), PCA(8, random_state=0), LogisticRegression(class_weight="balanced")),
        make_pipeline(StandardScaler(), SGDClassifier(loss="hinge", random_state=0)),
    ],
    ids=["scaled logreg", "pca logreg", "sgd svm"],
)
@pytest.mark.parametrize("classes", [2, 4])
def test_the_affine_map_of_a_linear_pipeline_gives_its_scores(pipeline, classes: int) -> None:
    x, y = data(classes)
    pipeline.fit(x, y)

    slope, offset = affine_map(pipeline, x.shape[1])

    scores = x @ slope + offset
    assert scores.shape == (len(x), classes)
    if classes == 2:
        np.testing.assert_allclose(scores[:, 1] - scores[:, 0], pipeline.decision_function(x), rtol=1e-6, atol=1e-8)
    else:
        np.testing.assert_allclose(scores, pipeline.decision_function(x), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("mixtures", [0, 3], ids=["statistics", "and correlations"])
def test_the_folded_network_gives_the_classifier_s_probabilities_on_pixels(mixtures: int) -> None:
    spec = NetworkSpec(model="efficientnet_lite0", pretrained=True)
    pixels = np.random.default_rng(5).integers(0, 256, size=(12, 64, 64, 3), dtype=np.uint8)
    inputs = mx.nd.array(pixels.transpose(0, 3, 1, 2) / 255.0)
    describer, _ = build_describer(spec, 64, mx.cpu(), last_blocks=2, mirror=True, mixtures=mixtures)
    features = describer(inputs).asnumpy()
    labels = np.arange(12) % 3
    classifier = make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=3000)).fit(features, labels)

    net = feature_network([spec], 64, 2, True, classifier, 3, mixtures)

    probabilities = mx.nd.softmax(net(inputs)).asnumpy()
    np.testing.assert_allclose(probabilities, classifier.predict_proba(features), atol=1e-4)
