"""The baseline's settings: every one out of range is a one-line error before a run opens."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from genre.command_config import BaselineConfig
from tests.conftest import refused


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"pixels": 0}, "pixels"),  # once silently the default side
        ({"trees": 0}, "trees"),
        ({"max_depth": 0}, "max_depth"),
        ({"svm_alpha": 0.0}, "svm_alpha"),
        ({"svm_epochs": 0}, "svm_epochs"),
        ({"logreg_c": -1.0}, "logreg_c"),
        ({"logreg_c": float("inf")}, "logreg_c"),
        ({"seed": -1}, "seed"),
        ({"workers": -1}, "workers"),
    ],
)
def test_a_setting_out_of_range_is_a_one_line_error_naming_it(settings: dict, named: str) -> None:
    refused(BaselineConfig, settings, named)


def test_unset_pixels_and_depth_mean_the_defaults() -> None:
    assert BaselineConfig(pixels=None, max_depth=None) == BaselineConfig()


def test_the_inner_cross_validation_chooses_c_on_the_training_covers_and_keeps_near_copies_together() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    from genre.models.baselines import fit_classifier
    from genre.models.spec import BaselineSpec

    rng = np.random.default_rng(0)
    labels = np.arange(90) % 3
    features = rng.normal(size=(90, 40)) + 0.8 * labels[:, None]
    groups = np.arange(90) // 3  # near-copy triples: one genre each in turn, never split
    spec = BaselineSpec(model="logreg", logreg_cs="0.0001,0.01,100", inner_folds=3)

    classifier, chosen = fit_classifier(spec, features, labels, groups, workers=1)

    assert set(chosen) == {"logreg_c"} and chosen["logreg_c"] in (0.0001, 0.01, 100)
    search = classifier[-1]
    for train, test in search.cv:
        assert not set(groups[train]) & set(groups[test])
    expected = max(
        (0.0001, 0.01, 100),
        key=lambda c: np.mean(
            [
                cross_val_score(
                    make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=3000)),
                    features, labels, cv=[split], scoring="balanced_accuracy",
                )[0]
                for split in search.cv
            ]
        ),
    )  # fmt: skip
    assert chosen["logreg_c"] == expected


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"style_blocks": "some"}, "style_blocks"),
        ({"logreg_cs": "0.1,x"}, "logreg_cs"),
        ({"logreg_cs": "0.1,-1"}, "logreg_cs"),
        ({"pca": 2.5}, "pca"),
        ({"pca": -1.0}, "pca"),
        ({"inner_folds": 1}, "inner_folds"),
        ({"features": "network", "pretrained": True, "style_blocks": "all", "style_gram": 65}, "style_gram"),
        ({"features": "network", "pretrained": True, "style_blocks": "all", "style_gram": 1}, "style_gram"),
        ({"features": "network", "pretrained": True, "style_gram": 8}, "style_gram"),
    ],
)
def test_absurd_feature_settings_are_refused_naming_the_setting(settings: dict, named: str) -> None:
    from genre.models.spec import BaselineSpec

    refused(BaselineSpec, {"model": "logreg", **settings}, named)


def test_style_statistics_and_views_need_network_features() -> None:
    from genre.errors import ConfigError
    from genre.models.spec import BaselineSpec

    with pytest.raises(ConfigError, match="set features network"):
        BaselineSpec(model="logreg", style_blocks="all")
