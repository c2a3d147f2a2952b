"""A `Tracker` that keeps what a stage logged in memory: a stage's logging is tested without a tracking store."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from genre.tracking.tracker import flatten


class RecordingTracker:
    """Records each call of the `Tracker` interface as MLflow would store it (params flattened to strings, a param
    never changed once logged, metrics by step)."""

    def __init__(self, run_id: str = "recorded-run", store: str = "memory") -> None:
        self.run_id = run_id
        self.store = store
        self.params: dict[str, str] = {}
        self.metrics: dict[str, dict[int | None, float]] = defaultdict(dict)
        self.tags: dict[str, str] = {}
        self.artifacts: list[tuple[str, str | None]] = []
        self.figures: list[str] = []
        self.texts: dict[str, str] = {}
        self.tables: dict[str, dict[str, list]] = {}
        self.datasets: list[dict[str, Any]] = []
        self.models: list[Callable[[], object]] = []

    def log_params(self, params: Mapping[str, Any]) -> None:
        for name, value in flatten(params).items():
            if self.params.get(name, value) != value:  # MLflow refuses to change a logged param
                raise AssertionError(f"param {name} logged as {self.params[name]!r}, then as {value!r}")
            self.params[name] = value

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        for name, value in metrics.items():
            self.metrics[name][step] = float(value)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        assert Path(path).exists(), path
        self.artifacts.append((Path(path).name, artifact_path))

    def log_figure(self, figure: Any, name: str) -> None:
        import matplotlib.pyplot as plt

        plt.close(figure)
        self.figures.append(name)

    def log_text(self, text: str, name: str) -> None:
        self.texts[name] = text

    def log_table(self, columns: Mapping[str, list], name: str) -> None:
        self.tables[name] = {column: list(values) for column, values in columns.items()}

    def log_dataset(self, name: str, digest: str, source_uri: str, context: str, shape: tuple[int, ...]) -> None:
        self.datasets.append({"name": name, "digest": digest, "source": source_uri, "context": context, "shape": shape})

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self.tags.update(tags)

    def log_model(self, log: Callable[[], object]) -> None:
        self.models.append(log)
