"""The commands that are not stages (no run of their own): predict with a logged model, register one, list and
end stale runs, launch a distributed job. The stages' commands are in `genre.stages`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from genre.disk import check_writable
from genre.errors import ConfigError
from genre.stages.common import EXIT_INCOMPLETE, EXIT_OK
from genre.tracking import runs
from genre.tracking.store import missing_sqlite_store

if TYPE_CHECKING:
    from genre.launch.roles import LaunchConfig
    from genre.tracking.stale import RunsConfig


def predict_command(model_uri: str, files: list[Path], top: int, explain: Path | None = None) -> int:
    """`genre predict`: the `top` genres of each cover file; a file that is not an image is named, not fatal. With
    `explain` (a folder), each cover's Grad-CAM heatmap for its top genre goes there as `<name>.heatmap.png`."""
    from genre.cover_model import CoverUnreadable, explain_one, load_cover_model, predict_one, reach_model_store

    if top < 1:
        raise ConfigError(f"'top' must be at least 1, got {top}")
    if explain is not None:
        check_writable(explain, "the heatmaps' folder", "--explain-dir")
    reach_model_store(model_uri)
    model = load_cover_model(model_uri)
    explainer = None
    if explain is not None:
        explainer = model.unwrap_python_model().explainer()
        explain.mkdir(parents=True, exist_ok=True)
    failed = 0
    for path in files:
        try:
            row = predict_one(model, path)
        except CoverUnreadable as error:
            failed += 1
            print(f"{path}: {error}")
            continue
        ranked = sorted(((row[c], c.removeprefix("p_")) for c in row.index if c.startswith("p_")), reverse=True)
        print(f"{path}: " + ", ".join(f"{genre} {p:.1%}" for p, genre in ranked[:top]))
        if explainer is not None:
            view, heatmap = explain_one(model, explainer, path)
            written = write_heatmap(view, heatmap, explain / f"{path.name}.heatmap.png")
            print(f"  where the evidence for {ranked[0][1]} lies: {written}")
    return EXIT_INCOMPLETE if failed else EXIT_OK


def write_heatmap(view: np.ndarray, heatmap: np.ndarray, path: Path) -> Path:
    """The cover as the network sees it beside its heatmap overlay, at least 256 px high, as a PNG at `path`."""
    from PIL import Image

    from genre.figures import heatmap_overlay

    side = view.shape[0]
    both = np.concatenate(
        [view, np.full((side, max(1, side // 16), 3), 255, np.uint8), heatmap_overlay(view, heatmap)], 1
    )
    scale = max(1, -(-256 // side))
    picture = Image.fromarray(both).resize((both.shape[1] * scale, side * scale), Image.Resampling.BILINEAR)
    picture.save(path)
    return path


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
