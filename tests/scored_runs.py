"""Finished scoring runs of a suite made directly with MLflow, as a suite run leaves them: tags, params, test metrics
and, unless told otherwise, the per-cover `predictions/test.csv`. Tests of `genre compare` and `genre report` use
them to have seeds, folds and older runs without predictions in seconds, with no network trained."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from genre.predictions import CoverPredictions, predictions_artifact
from genre.stages.run_facts import DATA_DIGEST, NAME, SEED, SETTINGS_DIGEST, SUITE

GENRES = ["folk", "jazz", "rock"]
COVERS = [f"{genre}/{n:03d}.jpg" for genre in GENRES for n in range(20)]  # 60 covers, 20 a genre


def predictions(covers: Sequence[str], right: Sequence[bool], shuffle: int | None = None) -> CoverPredictions:
    """A model's predictions on `covers` (their genre is their folder): right where `right` says, else the next
    genre, with probabilities; `shuffle` puts the rows in another order (runs need not list covers alike)."""
    order = np.random.default_rng(shuffle).permutation(len(covers)) if shuffle is not None else np.arange(len(covers))
    true = np.array([GENRES.index(covers[i].split("/")[0]) for i in order], dtype=np.int64)
    predicted = np.where(np.asarray(right, dtype=bool)[order], true, (true + 1) % len(GENRES))
    probabilities = np.full((len(order), len(GENRES)), 0.1)
    probabilities[np.arange(len(order)), predicted] = 0.8
    return CoverPredictions([covers[i] for i in order], list(GENRES), true, predicted, probabilities)


def balanced(found: CoverPredictions) -> float:
    return float(np.mean([found.correct[found.true == g].mean() for g in np.unique(found.true)]))


def scored_run(
    experiment: str,
    name: str,
    seed: int,
    found: CoverPredictions | None,
    *,
    accuracy: float | None = None,
    stage: str = "train",
    folds: int = 0,
    fold: int = 0,
    repeat: int = 0,
    settings: str = "s1",
    params: dict[str, str] | None = None,
) -> str:
    """A FINISHED run of experiment `name` with `seed` in MLflow experiment `experiment` of the store the test points
    MLflow at; its test metrics are those of `found` (or `accuracy`, for a run without predictions), its predictions
    logged unless `found` is None."""
    from mlflow.tracking import MlflowClient

    from genre.tracking.store import tracking_uri

    client = MlflowClient(tracking_uri())  # not the fluent API: an earlier test's run may have set its store globally
    known = client.get_experiment_by_name(experiment)
    run = client.create_run(
        known.experiment_id if known else client.create_experiment(experiment),
        run_name=f"{name}-seed{seed}",
        tags={"genre.stage": stage, NAME: name, SEED: str(seed), SUITE: "covers-dev", DATA_DIGEST: "d1",
              SETTINGS_DIGEST: settings},
    )  # fmt: skip
    run_id = run.info.run_id
    logged = {"dataset_name": "covers", "config.variant": "dev", "config.model": "convnet", "genres": "folk,jazz,rock"}
    if folds:
        logged |= {"config.folds": str(folds), "config.fold": str(fold), "config.repeat": str(repeat)}
        logged["split_digest"] = "k1"
    for key, value in (logged | (params or {})).items():
        client.log_param(run_id, key, value)
    best = "best_val" if stage != "baseline" else "val"
    test = found.accuracy if found is not None else accuracy
    test_balanced = balanced(found) if found is not None else accuracy
    metrics = {f"{best}_accuracy": 0.5, f"{best}_balanced_accuracy": 0.5, "test_accuracy": test,
               "test_balanced_accuracy": test_balanced}  # fmt: skip
    for key, value in metrics.items():
        client.log_metric(run_id, key, value)
    if stage != "baseline":
        client.log_metric(run_id, "val_accuracy", 0.5, step=1)  # a network's curve, one epoch long
    if found is not None:
        client.log_text(run_id, found.to_csv_text(), predictions_artifact("test"))
    client.set_terminated(run_id, "FINISHED")
    return run_id


def folds_of(covers: Sequence[str], folds: int) -> list[list[str]]:
    """`covers` dealt into `folds` test folds, each genre spread evenly (as a stratified K-fold split would)."""
    return [list(covers[fold::folds]) for fold in range(folds)]
