"""Network features of a prepared dataset, computed once and kept beside its packs.

Extracting pretrained features is the slow part of a feature baseline (seconds to minutes on a CPU), while the
classifiers on top fit in seconds; a second baseline on the same dataset and backbone (a logistic regression after
a forest, another seed) reads them back. Entries live in `<dataset>/features/<key>/`, one `.npy` per pack, where
the key is a digest of everything the features depend on: the pack's content digest, the backbone, its weights
and its input. A changed pack or backbone is a different key, never a stale hit.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

CACHE_FOLDER = "features"


def cache_key(description: Mapping[str, Any]) -> str:
    """A short digest of what the features depend on (JSON-serialisable values)."""
    payload = json.dumps(dict(description), sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


class FeatureCache:
    """`<dataset root>/features/<key>/`: `<variant>-<split>.npy` float32 `(N, D)` and `description.json`."""

    def __init__(self, dataset_root: Path, description: Mapping[str, Any]) -> None:
        self.description = dict(description)
        self.folder = Path(dataset_root) / CACHE_FOLDER / cache_key(self.description)

    def path(self, variant: str, split: str) -> Path:
        return self.folder / f"{variant}-{split}.npy"

    def load_or_compute(
        self, variant: str, split: str, rows: int, compute: Callable[[], np.ndarray]
    ) -> tuple[np.ndarray, bool]:
        """The features of one pack of `rows` images, and whether they came from the cache.

        A cached file of the wrong row count or an unreadable one is recomputed (and said so), never used.
        """
        path = self.path(variant, split)
        if path.exists():
            try:
                features = np.load(path)
            except (OSError, ValueError) as error:
                log.warning("feature cache %s is unreadable (%s); computing the features again", path, error)
            else:
                if features.ndim == 2 and len(features) == rows:
                    return features, True
                log.warning(
                    "feature cache %s has shape %s, expected %d rows; computing again", path, features.shape, rows
                )
        features = np.ascontiguousarray(compute(), dtype=np.float32)
        self._write(path, features)
        return features, False

    def read_note(self, name: str) -> dict | None:
        """A JSON note kept beside the features (what their columns are), or None when there is none."""
        try:
            return json.loads((self.folder / f"{name}.json").read_text())
        except (OSError, ValueError):
            return None

    def write_note(self, name: str, data: Mapping[str, Any]) -> None:
        """Keep a JSON note beside the features; an unwritable folder only warns, as for the features."""
        path = self.folder / f"{name}.json"
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(path.name + f".{os.getpid()}.tmp")
            partial.write_text(json.dumps(dict(data), sort_keys=True) + "\n")
            partial.replace(path)
        except OSError as error:
            log.warning("could not keep %s (%s)", path, error)

    def _write(self, path: Path, features: np.ndarray) -> None:
        """Atomically, so a killed run leaves either the whole file or none; an unwritable folder only warns."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            description = self.folder / "description.json"
            if not description.exists():
                description.write_text(json.dumps(self.description, indent=1, sort_keys=True, default=str) + "\n")
            partial = path.with_name(path.name + f".{os.getpid()}.tmp")
            with open(partial, "wb") as handle:
                np.save(handle, features)
            partial.replace(path)
        except OSError as error:
            log.warning("could not keep features in %s (%s); they will be computed again next time", path, error)
