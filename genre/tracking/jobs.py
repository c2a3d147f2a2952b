"""The MLflow side of `genre launch`: the run of a job whose worker 0 could not end it itself.

Worker 0 tags its run `genre.launch_id`; when the job fails, the launcher ends any run with its launch id that
is still RUNNING as FAILED (worker 0 was killed, or blocked in a push when it was stopped).
"""

from __future__ import annotations

from genre.errors import TrackingError
from genre.tracking import runs
from genre.tracking.store import missing_sqlite_store

LAUNCH_TAG = "genre.launch_id"


def fail_unfinished_runs(launch_id: str) -> list[str]:
    """End the RUNNING runs of this launch FAILED; return their ids."""
    if missing_sqlite_store():
        return []  # no run was ever made (and opening the store would create it)
    try:
        unfinished = runs.search(None, f"tags.`{LAUNCH_TAG}` = '{launch_id}' and attributes.status = 'RUNNING'")
        for run in unfinished:
            runs.client().set_terminated(run.info.run_id, "FAILED")
    except Exception as error:  # noqa: BLE001 - any store error means the same here
        raise TrackingError(f"cannot mark the job's MLflow run FAILED at {runs.shown_store()}: {error}") from error
    return [run.info.run_id for run in unfinished]
