"""What each `genre` command runs once `genre.cli` has parsed its settings: a handler per command, named in the CLI's
table, that hands the settings to the stage (`genre.stages`), or does the work itself for the commands that own no
run: register a logged model, list and end stale runs, launch a distributed job, remove the checkpoints of finished
runs, say how to look at the demo's results.

Each handler imports its own stage when it runs, so that a quick command (`genre runs`) never loads MXNet.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse
from urllib.request import url2pathname

from genre.command_config import (
    DEFAULT_SUITE,
    BaselineConfig,
    CompareConfig,
    DemoEndConfig,
    EvaluateConfig,
    InterpretConfig,
    PredictConfig,
    ReportConfig,
    SuiteConfig,
)
from genre.config import resolve
from genre.data.config import PrepareConfig
from genre.data.images import png_bytes
from genre.data.pack import DatasetInfo, open_pack
from genre.data.sources import DIGITS_SOURCE
from genre.errors import EXIT_OK, TrackingError
from genre.launch.config import LaunchConfig
from genre.launch.roles import LOCALHOST, address_towards, free_port, plan_roles, read_hosts
from genre.launch.supervisor import EXIT_OK as JOB_OK
from genre.launch.supervisor import Job
from genre.tracking import runs, stale
from genre.tracking.config import RegisterConfig, RunsConfig, ServeConfig, ServerConfig
from genre.tracking.jobs import fail_unfinished_runs
from genre.tracking.registry import register_model
from genre.tracking.store import missing_sqlite_store, tracking_uri
from genre.tracking.ui import serves_ui, ui_address
from genre.training.checkpoint import folder_bytes, run_folders
from genre.training.config import CleanConfig, TrainConfig
from genre.tuning.config import TuneConfig

MLFLOW_UI = "http://127.0.0.1:5000"  # where `mlflow ui` serves, by default


@dataclass(frozen=True)
class CommandLine:
    """What the command line said besides the settings: the MLflow experiment (`--mlflow-experiment`), the named
    config file, whether to show progress (not `-q`), the settings given as flags, and the positional arguments that
    are not settings."""

    experiment: str | None = None
    config_file: Path | None = None
    progress: bool = True
    given: dict[str, Any] = field(default_factory=dict)
    arguments: dict[str, Any] = field(default_factory=dict)


def prepare(config: PrepareConfig, line: CommandLine) -> int:
    from genre.stages import prepare

    return prepare.command(config, line.experiment, line.config_file, progress=line.progress)


def baseline(config: BaselineConfig, line: CommandLine) -> int:
    from genre.stages import baseline

    return baseline.command(config, line.experiment, line.config_file, progress=line.progress)


def train(config: TrainConfig, line: CommandLine) -> int:
    """No experiment named: covers take the cover recipe; `--resume` refuses (or applies) what the flags gave."""
    from genre.stages import train
    from genre.stages.recipes import with_cover_recipe

    config, path = with_cover_recipe(config, line.given, line.config_file)
    return train.command(config, line.experiment, path, progress=line.progress, given=set(line.given))


def evaluate(config: EvaluateConfig, line: CommandLine) -> int:
    from genre.stages import evaluate

    return evaluate.command(config, line.experiment, progress=line.progress)


def interpret(config: InterpretConfig, line: CommandLine) -> int:
    from genre.stages import interpret

    return interpret.command(config, line.experiment, progress=line.progress)


def tune(config: TuneConfig, line: CommandLine) -> int:
    from genre.stages import tune

    return tune.command(config, line.experiment, progress=line.progress)


def suite(config: SuiteConfig, line: CommandLine) -> int:
    """No suite and no experiments named: the default suite. A suite's name is its file's, unless it says one."""
    from genre.stages import suite

    path = line.config_file
    if path is None and "experiments" not in line.given:
        config, path = resolve(SuiteConfig, DEFAULT_SUITE, "suites", line.given)
    if path and not config.name:
        config = dataclasses.replace(config, name=path.stem)
    return suite.command(config, line.experiment, progress=line.progress)


def report(config: ReportConfig, line: CommandLine) -> int:
    from genre.stages import report

    return report.command(config)


def compare(config: CompareConfig, line: CommandLine) -> int:
    from genre.stages import compare

    return compare.command(config)


def predict(config: PredictConfig, line: CommandLine) -> int:
    from genre.stages import predict

    inputs = [Path(name) for name in line.arguments.get("inputs") or [] if name]  # `mlflow run` passes "" for none
    return predict.command(config, inputs, line.experiment, progress=line.progress)


def server(config: ServerConfig, line: CommandLine) -> int:
    from genre.tracking.tracking_server import run_server

    return run_server(config)


def serve(config: ServeConfig, line: CommandLine) -> int:
    from genre.tracking.model_server import serve_model

    serve_model(config)  # becomes the model server; returns only by raising


def register(config: RegisterConfig, line: CommandLine) -> int:
    """`genre register`: a run's model becomes a new version of `name`, with `alias` pointing at it."""
    run_id, name, alias = config.run_id, config.name, config.alias
    version = register_model(f"runs:/{run_id}/model", name, alias, refused=f"cannot register the model of run {run_id}")
    print(f"registered runs:/{run_id}/model as {name} version {version}; models:/{name}@{alias} now points at it")
    return EXIT_OK


def list_runs(config: RunsConfig, line: CommandLine) -> int:
    """`genre runs`: the RUNNING runs and whether their process still runs; `--end` ends the stale ones KILLED."""
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


def launch(config: LaunchConfig, line: CommandLine) -> int:
    """`genre launch`: run a distributed job; when it fails, end its MLflow run FAILED if worker 0 could not."""
    given = line.arguments.get("worker_command") or []
    command = given[1:] if given[:1] == ["--"] else given
    hosts = read_hosts(Path(config.hosts)) if config.hosts else []
    scheduler_host = config.scheduler_host or (address_towards(hosts[0].name) if hosts else LOCALHOST)
    launch_id = uuid.uuid4().hex
    roles = plan_roles(config, command, hosts, launch_id, config.port or free_port(), scheduler_host)
    status = Job(roles, config.grace_seconds, config.workdir or os.getcwd()).run()
    if status != JOB_OK:
        for run_id in fail_unfinished_runs(launch_id):
            print(
                f"genre launch: MLflow run {run_id} ended FAILED (worker 0 was stopped before it could)",
                file=sys.stderr,
            )
    return status


def clean(config: CleanConfig, line: CommandLine) -> int:
    """`genre clean`: remove the checkpoint folders of runs that ended FINISHED, as the tracking store says; keep
    those of RUNNING, KILLED and FAILED runs (`genre train --resume` continues them) and of runs it does not hold."""
    checkpoint_dir, dry_run = Path(config.checkpoint_dir), config.dry_run
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


def demo_end(config: DemoEndConfig, line: CommandLine) -> int:
    """What `make demo` prints last: where its runs are in the MLflow UI, and the `genre predict` command for the
    model of the experiment's newest finished train run, on a real image of that run's test split."""
    experiment = config.experiment
    experiment_id = runs.experiment_id(experiment)
    query = "attributes.status = 'FINISHED' and tags.`genre.stage` = 'train'"
    found = runs.search([experiment_id], query, newest_first=True, max_results=1)
    if not found:
        raise TrackingError(f"MLflow experiment {experiment} holds no finished train run; run `genre train` first")
    run = found[0]
    data = Path(run.data.params["config.data"])
    variant = run.data.params.get("config.variant", "full")
    image, genre_of = example_cover_file(data, DatasetInfo.read(data), variant)
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


def example_cover_file(data: Path, info: DatasetInfo, variant: str) -> tuple[Path, str]:
    """The first image of the test split of prepared dataset `data` as a file, and its genre: the digits' rendering
    under `data/images/` or the source folder's file, else (a manifest's covers, or a moved folder) its packed
    pixels written to `data/examples/` as a PNG."""
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
    written = data / "examples" / relpath.replace("/", "-")
    written = written.with_suffix(".png")
    written.parent.mkdir(exist_ok=True)
    written.write_bytes(png_bytes(open_pack(data, variant, "test").images[0]))
    return written, genre_of


def _shown_path(path: Path) -> str:
    """`path` relative to the working folder when it is inside it (`.venv/bin/genre`), else as it is."""
    shown = Path(os.path.abspath(path))  # symlinks kept: a linked .venv is still .venv/bin/genre
    try:
        return str(shown.relative_to(Path.cwd()))
    except ValueError:
        return str(shown)
