"""Reading runs back from the tracking store: what a suite already did, and what a report shows."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genre.errors import TrackingError
from genre.tracking.store import check_reachable, mask_password, tracking_uri

# Tags a suite puts on each of its runs; `genre.dataset_digest` comes from the stage itself.
SUITE, NAME, CONFIG_DIGEST, SETTINGS_DIGEST, DATA_DIGEST, SEED = (
    "genre.suite",
    "genre.experiment_name",
    "genre.config_digest",
    "genre.settings_digest",
    "genre.dataset_digest",
    "genre.seed",
)


def client():
    """An `MlflowClient` on the configured store, failing fast (one line) when it cannot be reached."""
    return _client_for(tracking_uri())


@functools.cache
def _client_for(uri: str):
    """One client per store: a report or a suite asks many times, and the reachability check is a round trip."""
    from mlflow.tracking import MlflowClient

    check_reachable(uri)
    return MlflowClient(uri)


def _quote(value: str) -> str:
    return value.replace("'", "\\'")


def matching_runs(experiment_id: str, name: str, config_digest: str, data_digest: str) -> list[Any]:
    """Every run of experiment `name` with these settings and data, in any state, newest first."""
    query = (
        f"tags.`{NAME}` = '{_quote(name)}' and tags.`{CONFIG_DIGEST}` = '{config_digest}' "
        f"and tags.`{DATA_DIGEST}` = '{data_digest}'"
    )
    return client().search_runs([experiment_id], query, order_by=["attributes.start_time DESC"])


@dataclass(frozen=True)
class MemberRun:
    """A finished run of a suite, as a report reads it."""

    run_id: str
    suite: str
    name: str
    kind: str  # train or baseline
    seed: int
    settings_digest: str
    data_digest: str
    dataset: str
    variant: str
    model: str
    classes: int  # 0 when the run does not say
    val_accuracy: float
    test_accuracy: float
    seconds: float
    start_time: int
    val_balanced_accuracy: float | None = None  # None: the run predates balanced accuracy
    test_balanced_accuracy: float | None = None


def _member(run: Any) -> MemberRun | None:
    tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
    kind = tags.get("genre.stage", "")
    best = "best_val" if kind == "train" else "val"  # a network's val_* are per-epoch curves; best_val_* its kept epoch
    val = metrics.get(f"{best}_accuracy")
    if val is None or "test_accuracy" not in metrics:
        return None
    model = describe_model(kind, params)
    return MemberRun(
        run_id=run.info.run_id,
        suite=tags.get(SUITE, ""),
        name=tags[NAME],
        kind=kind,
        seed=int(tags.get(SEED, params.get("config.seed", 0))),
        settings_digest=tags.get(SETTINGS_DIGEST, ""),
        data_digest=tags.get(DATA_DIGEST, ""),
        dataset=params.get("dataset_name", "?"),
        variant=params.get("config.variant", "full"),
        model=model,
        classes=len(params["genres"].split(",")) if params.get("genres") else 0,
        val_accuracy=val,
        test_accuracy=metrics["test_accuracy"],
        seconds=((run.info.end_time or run.info.start_time) - run.info.start_time) / 1000,
        start_time=run.info.start_time,
        val_balanced_accuracy=metrics.get(f"{best}_balanced_accuracy"),
        test_balanced_accuracy=metrics.get("test_balanced_accuracy"),
    )


def describe_model(kind: str, params: dict[str, str]) -> str:
    """'rf on 50x50 gray pixels', 'convnet 32,64,128 x2', 'mlp 512', 'resnet18_v1b pretrained'."""
    model = params.get("config.model", "?")
    if kind == "baseline":
        return f"{model} on {params.get('feature_set', 'pixels')}"
    if model == "convnet":
        per_block = params.get("config.convs_per_block", "1")
        return f"convnet {params.get('config.conv_filters', '')}" + (f" x{per_block}" if per_block != "1" else "")
    if model == "mlp":
        return f"mlp {params.get('config.hidden_units', '')}"
    pretrained = params.get("config.pretrained") == "True" or params.get("config.pretrained_params") not in ("", None)
    return f"{model} pretrained" if pretrained else model


def suite_members(experiment: str) -> list[MemberRun]:
    """The FINISHED runs a suite made in MLflow experiment `experiment` (by name)."""
    store = client()
    found = store.get_experiment_by_name(experiment)
    if found is None:
        raise TrackingError(
            f"no MLflow experiment named '{experiment}' at {mask_password(tracking_uri())}; "
            "run `genre suite` first, or name one with --experiment"
        )
    runs = store.search_runs(
        [found.experiment_id], f"attributes.status = 'FINISHED' and tags.`{NAME}` != ''", max_results=50_000
    )
    return [member for member in map(_member, runs) if member is not None]


def newest_suite_experiment() -> str | None:
    """The MLflow experiment of the most recently started suite run, if any."""
    from mlflow.entities import ViewType

    store = client()
    experiments = store.search_experiments(view_type=ViewType.ACTIVE_ONLY)
    if not experiments:
        return None
    runs = store.search_runs(
        [e.experiment_id for e in experiments],
        "tags.`genre.stage` = 'suite'",
        max_results=1,
        order_by=["attributes.start_time DESC"],
    )
    return store.get_experiment(runs[0].info.experiment_id).name if runs else None


def metric_history(run_id: str, key: str) -> list[tuple[int, float]]:
    """`[(step, value), ...]` of one metric of one run, by step."""
    return sorted((m.step, m.value) for m in client().get_metric_history(run_id, key))


def params_with_passwords(run_id: str) -> dict[str, str]:
    """The params of run `run_id` whose value holds a URL with a password (`mlflow run` logs each -P as given);
    empty when there is no such run."""
    from mlflow.exceptions import MlflowException

    try:
        params = client().get_run(run_id).data.params
    except MlflowException:
        return {}
    return {name: value for name, value in params.items() if mask_password(value) != value}


def download(run_id: str, artifact: str, into: Path) -> Path | None:
    """One artifact of a run into folder `into`; None if the run has no such artifact."""
    from mlflow.exceptions import MlflowException

    into.mkdir(parents=True, exist_ok=True)
    try:
        return Path(client().download_artifacts(run_id, artifact, str(into)))
    except (MlflowException, OSError):
        return None
