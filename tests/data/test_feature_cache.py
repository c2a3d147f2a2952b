"""The feature cache: computed once per (packs, backbone, weights), atomic, and never a stale or broken hit."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from genre.data.feature_cache import FeatureCache


def counting(features: np.ndarray):
    calls = []

    def compute() -> np.ndarray:
        calls.append(1)
        return features

    return compute, calls


def test_features_are_computed_once_then_read_back(tmp_path: Path) -> None:
    features = np.arange(12, dtype=np.float32).reshape(4, 3)
    compute, calls = counting(features)
    cache = FeatureCache(tmp_path, {"packs": {"full/train": "abc"}, "network": "lite0"})

    first, first_cached = cache.load_or_compute("full", "train", 4, compute)
    second, second_cached = FeatureCache(tmp_path, cache.description).load_or_compute("full", "train", 4, compute)

    assert (first_cached, second_cached, len(calls)) == (False, True, 1)
    np.testing.assert_array_equal(second, features)
    assert not list(cache.folder.glob("*.tmp")), "no temporary files left behind"


def test_other_packs_or_another_backbone_are_another_entry(tmp_path: Path) -> None:
    base = {"packs": {"full/train": "abc"}, "network": "lite0", "weights": "pretrained"}

    folders = {
        FeatureCache(tmp_path, base).folder,
        FeatureCache(tmp_path, base | {"packs": {"full/train": "changed"}}).folder,
        FeatureCache(tmp_path, base | {"network": "lite2"}).folder,
        FeatureCache(tmp_path, base | {"weights": {"file": "/x.params"}}).folder,
    }

    assert len(folders) == 4


def test_a_broken_or_mismatched_cache_file_is_recomputed_not_used(tmp_path: Path) -> None:
    features = np.ones((5, 2), dtype=np.float32)
    compute, calls = counting(features)
    cache = FeatureCache(tmp_path, {"network": "lite0"})
    cache.load_or_compute("full", "val", 5, compute)

    cache.path("full", "val").write_bytes(b"not a numpy file")
    again, cached = cache.load_or_compute("full", "val", 5, compute)
    assert not cached and len(calls) == 2
    np.testing.assert_array_equal(again, features)

    _, cached = cache.load_or_compute("full", "val", 6, compute)  # the pack now has another row count
    assert not cached and len(calls) == 3
