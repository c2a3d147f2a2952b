"""The commands that are not stages (no run of their own): register a logged model, list and end stale runs,
launch a distributed job, remove the checkpoints of finished runs, say how to look at the demo's results. The
stages' commands are in `genre.stages`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from genre.stages.common import EXIT_OK
from genre.tracking import runs
from genre.tracking.store import missing_sqlite_store

MLFLOW_UI = "http://127.0.0.1:5000"  # where `mlflow ui` serves, by default

if TYPE_CHECKING:
    from genre.data.pack import DatasetInfo
    from genre.launch.roles import LaunchConfig
    from genre.tracking.stale import RunsConfig


def register_command(run_id: str, name: str, alias: str) -> int:
    """`genre register`: a run's model becomes a new version of `name`, with `alias` pointing at it."""
    from genre.tracking.registry import register_model

    version = register_model(f"runs:/{run_id}/model", name, alias, refused=f"cannot register the model of run {run_id}")
    print(f"registered runs:/{run_id}/model as {name} version {version}; models:/{name}@{alias} now points at it")
    return EXIT_OK


def runs_command(config: RunsConfig) -> int:
    """`genre runs`: the RUNNING runs and whether their process still runs; `--end` ends the stale ones KILLED."""
    import time

    from genre.tracking import stale

    missing = missing_sqlite_store()
    if missing:
        print(f"no runs: the tracking store {missing} does not exist yet")  # and opening it would create it
        return EXIT_OK
    experiment_ids = [runs.experiment_id(config.experiment)] if config.experiment else None
    running = stale.running_runs(experiment_ids)
    names = runs.experiment_names()
    shown = [run for run in running if stale.is_stale(run, config.older_than) or not (config.stale or config.end)]
    for run in shown:
        tags = run.data.tags
        started = time.strftime("%Y-%m-%d %H:%M", time.localtime(run.info.start_time / 1000))
        state = "stale" if stale.is_stale(run, config.older_than) else stale.owner_state(tags)
        print(
            f"{run.info.run_id}  {state:7}  {names.get(run.info.experiment_id, run.info.experiment_id)}/"
            f"{run.info.run_name}  ({tags.get('genre.stage', '?')}, started {started} by {stale.describe_owner(tags)})"
        )
    if config.end:
        ended = stale.end_stale(shown, "genre runs --end", config.older_than)
        print(f"ended {len(ended)} stale run(s) KILLED (tag {stale.ENDED_BY} says why)")
    else:
        counts = {state: 0 for state in (stale.ALIVE, stale.GONE, stale.UNKNOWN)}
        for run in running:
            counts[stale.owner_state(run.data.tags)] += 1
        print(
            f"{len(running)} RUNNING run(s): {counts[stale.ALIVE]} still running, {counts[stale.GONE]} whose process "
            f"is gone, {counts[stale.UNKNOWN]} owned on another host or by an older genre (cannot tell from here)"
            + ("; `genre runs --stale --end` ends the stale ones KILLED" if counts[stale.GONE] else "")
        )
    return EXIT_OK


def launch_command(config: LaunchConfig, command: list[str]) -> int:
    """`genre launch`: run a distributed job; when it fails, end its MLflow run FAILED if worker 0 could not."""
    import sys
    import uuid

    from genre.launch.roles import LOCALHOST, address_towards, free_port, plan_roles, read_hosts
    from genre.launch.supervisor import EXIT_OK, Job
    from genre.tracking.jobs import fail_unfinished_runs

    hosts = read_hosts(Path(config.hosts)) if config.hosts else []
    scheduler_host = config.scheduler_host or (address_towards(hosts[0].name) if hosts else LOCALHOST)
    launch_id = uuid.uuid4().hex
    roles = plan_roles(config, command, hosts, launch_id, config.port or free_port(), scheduler_host)
    status = Job(roles, config.grace_seconds, config.workdir or os.getcwd()).run()
    if status != EXIT_OK:
        for run_id in fail_unfinished_runs(launch_id):
            print(
                f"genre launch: MLflow run {run_id} ended FAILED (worker 0 was stopped before it could)",
                file=sys.stderr,
            )
    return status


def clean_command(checkpoint_dir: Path, dry_run: bool = False) -> int:
    """`genre clean`: remove the checkpoint folders of runs that ended FINISHED, as the tracking store says; keep
    those of RUNNING, KILLED and FAILED runs (`genre train --resume` continues them) and of runs it does not hold."""
    import shutil
    from collections import Counter

    from genre.training.checkpoint import folder_bytes, run_folders

    folders = run_folders(checkpoint_dir)
    missing = missing_sqlite_store()
    if not folders or missing:
        why = f"the tracking store {missing} does not exist" if missing else f"no run checkpoints in {checkpoint_dir}"
        print(f"nothing to remove: {why}")
        return EXIT_OK
    statuses = runs.run_statuses([folder.name for folder in folders])
    finished = [folder for folder in folders if statuses.get(folder.name) == "FINISHED"]
    freed = sum(folder_bytes(folder) for folder in finished)
    for folder in finished:
        if dry_run:
            print(f"would remove {folder} ({folder_bytes(folder) / 2**20:.1f} MB)")
        else:
            shutil.rmtree(folder)
    verb = "would remove" if dry_run else "removed"
    print(f"{verb} the checkpoints of {len(finished)} FINISHED run(s) from {checkpoint_dir}: {freed / 2**20:.1f} MB")
    kept = Counter(statuses.get(folder.name, "unknown") for folder in folders if folder not in finished)
    if kept:
        unknown = f"; unknown: not a run of {runs.shown_store()}" if "unknown" in kept else ""
        counts = ", ".join(f"{count} {status}" for status, count in sorted(kept.items()))
        resumable = f"a RUNNING, KILLED or FAILED run continues with `genre train --resume RUN_ID`{unknown}"
        print(f"kept {sum(kept.values())}: {counts} ({resumable})")
    return EXIT_OK


def demo_end_command(experiment: str) -> int:
    """What `make demo` prints last: where its runs are in the MLflow UI, and the `genre predict` command for the
    model of the experiment's newest finished train run, on a real image of that run's test split."""
    import sys

    from genre.data.pack import DatasetInfo
    from genre.errors import TrackingError
    from genre.tracking.store import tracking_uri
    from genre.tracking.ui import serves_ui, ui_address

    experiment_id = runs.experiment_id(experiment)
    query = "attributes.status = 'FINISHED' and tags.`genre.stage` = 'train'"
    found = runs.search([experiment_id], query, newest_first=True, max_results=1)
    if not found:
        raise TrackingError(f"MLflow experiment {experiment} holds no finished train run; run `genre train` first")
    run = found[0]
    data = Path(run.data.params["config.data"])
    variant = run.data.params.get("config.variant", "full")
    image, genre_of = example_image(data, DatasetInfo.read(data), variant)
    bin_folder = Path(sys.executable).parent
    genre, mlflow = (_shown_path(bin_folder / name) for name in ("genre", "mlflow"))
    uri = tracking_uri()
    print(f"The runs are in MLflow experiment {experiment} of {runs.shown_store()}. Browse them:")
    if serves_ui(uri):
        print(f"  {ui_address(runs.shown_store(), experiment_id)}")
    else:
        page = ui_address(MLFLOW_UI, experiment_id)
        print(f"  {mlflow} ui --backend-store-uri {runs.shown_store()}   # then open {page}")
    print(f"Predict with the model of train run {run.info.run_id}, on a test image of genre {genre_of}:")
    print(f"  {genre} predict --model-uri runs:/{run.info.run_id}/model {_shown_path(image)}")
    return EXIT_OK


def example_image(data: Path, info: DatasetInfo, variant: str) -> tuple[Path, str]:
    """The first image of the test split of prepared dataset `data` as a file, and its genre: the digits' rendering
    under `data/images/` or the source folder's file, else (a manifest's covers, or a moved folder) its packed
    pixels written to `data/examples/` as a PNG."""
    from urllib.parse import urlparse
    from urllib.request import url2pathname

    from genre.data.sources import DIGITS_SOURCE

    relpath = info.files[f"{variant}/test"][0]
    genre_of = relpath.split("/", 1)[0]
    if info.source == DIGITS_SOURCE:
        source = data / "images" / relpath
    elif info.source.startswith("file:"):
        source = Path(url2pathname(urlparse(info.source).path)) / relpath
    else:
        source = None
    if source is not None and source.is_file():
        return source, genre_of
    import numpy as np
    from PIL import Image

    from genre.data.pack import open_pack

    written = data / "examples" / relpath.replace("/", "-")
    written = written.with_suffix(".png")
    written.parent.mkdir(exist_ok=True)
    Image.fromarray(np.asarray(open_pack(data, variant, "test").images[0])).save(written)
    return written, genre_of


def _shown_path(path: Path) -> str:
    """`path` relative to the working folder when it is inside it (`.venv/bin/genre`), else as it is."""
    shown = Path(os.path.abspath(path))  # symlinks kept: a linked .venv is still .venv/bin/genre
    try:
        return str(shown.relative_to(Path.cwd()))
    except ValueError:
        return str(shown)
