"""The MLflow side of `genre launch`: the run of a job whose worker 0 could not end it itself.

Worker 0 tags its run `genre.launch_id`; when the job fails, the launcher ends any run with its launch id that
is still RUNNING as FAILED (worker 0 was killed, or blocked in a push when it was stopped).
"""

from __future__ import annotations

from pathlib import Path

from genre.errors import TrackingError
from genre.tracking.store import mask_password, tracking_uri

LAUNCH_TAG = "genre.launch_id"


def fail_unfinished_runs(launch_id: str) -> list[str]:
    """End the RUNNING runs of this launch FAILED; return their ids."""
    from mlflow.tracking import MlflowClient

    uri = tracking_uri()
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).expanduser().exists():
        return []  # no run was ever made (and opening the store would create it)
    client = MlflowClient(uri)
    try:
        experiments = [experiment.experiment_id for experiment in client.search_experiments()]
        runs = client.search_runs(experiments, f"tags.`{LAUNCH_TAG}` = '{launch_id}' and attributes.status = 'RUNNING'")
        for run in runs:
            client.set_terminated(run.info.run_id, "FAILED")
    except Exception as error:  # noqa: BLE001 - any store error means the same here
        raise TrackingError(f"cannot mark the job's MLflow run FAILED at {mask_password(uri)}: {error}") from error
    return [run.info.run_id for run in runs]
