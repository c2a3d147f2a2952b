"""The addresses of MLflow UI pages, as genre prints them.

MLflow 3.17's UI opens an experiment in its GenAI view (traces, judges, prompts) unless the browser remembers a
switch to Model training; the experiment's `mlflow.experimentKind` tag does not change that. The page an address
names opens in the Model training view (runs, models, the model registry) when the address carries
`workflowType=machine_learning` in the query after its `#/` route, so every UI address genre prints carries it.
MLflow keeps it on the experiment's sidebar links only: an experiment's link on the home page, a run's link in the
runs table, a breadcrumb or the model registry opens in GenAI again, until the user switches the sidebar to Model
training, which the browser remembers (docs/tracking.md#browsing).
"""

from __future__ import annotations

from urllib.parse import quote

MODEL_TRAINING_VIEW = "workflowType=machine_learning"


def ui_address(server: str, experiment_id: str | None = None, run_id: str | None = None) -> str:
    """A UI page of the MLflow server at `server` (`http://host:port`, as MLFLOW_TRACKING_URI names it), opening in
    the Model training view: the home page; with `experiment_id`, the experiment's runs; with `run_id` too, the run."""
    if run_id is not None and experiment_id is None:
        raise ValueError("a run's UI page needs its experiment id")
    route = "#/"
    if experiment_id is not None:
        route += f"experiments/{quote(experiment_id, safe='')}"
        if run_id is not None:
            route += f"/runs/{quote(run_id, safe='')}"
    return f"{server.rstrip('/')}/{route}?{MODEL_TRAINING_VIEW}"


def serves_ui(uri: str) -> bool:
    """Whether tracking URI `uri` is an MLflow server, whose UI has pages for its runs (a database has none)."""
    return uri.startswith(("http://", "https://"))
