"""Reading a run's per-cover predictions back: the CSV as logged, none for an older run, one line for a broken file."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from genre.errors import DataError
from genre.tracking.runs import logged_predictions
from tests.scored_runs import COVERS, predictions, scored_run


def test_a_runs_predictions_read_back_as_logged_and_an_older_run_has_none(tracking_store: str) -> None:
    logged = predictions(COVERS, [i % 3 == 0 for i in range(len(COVERS))], shuffle=1)
    with_them = scored_run("genre-covers", "cnn", 0, logged)
    without = scored_run("genre-covers", "old-cnn", 0, None, accuracy=0.4)

    found = logged_predictions(with_them)

    assert found is not None and found.covers == logged.covers and found.genres == logged.genres
    assert (found.true == logged.true).all() and (found.predicted == logged.predicted).all()
    assert logged_predictions(without) is None
    assert logged_predictions(with_them, "val") is None


def test_a_predictions_file_that_cannot_be_read_is_a_one_line_error_naming_the_run(tracking_store: str) -> None:
    run_id = scored_run("genre-covers", "cnn", 0, None, accuracy=0.4)
    MlflowClient(tracking_store).log_text(run_id, "path,label\njazz/1.jpg,jazz\n", "predictions/test.csv")

    with pytest.raises(DataError, match=f"^run {run_id}'s predictions/test.csv cannot be read: a predictions CSV "):
        logged_predictions(run_id)
