"""One function per `genre` command: run the stage inside a tracked run and say what happened.

These are the only places that join a stage to tracking; `cli.py` only turns arguments into configs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from genre.data.pack import DatasetInfo, open_pack
from genre.data.prepare import PrepareConfig, check_output_folders, prepare
from genre.data.problems import summarise
from genre.disk import check_writable
from genre.errors import ConfigError, StoreUnreachable
from genre.models.baselines import BaselineConfig, BaselineResult
from genre.stages import baseline_stage, ensure_dataset, example_image, resume_config, train_stage
from genre.tracking.reports import log_evaluation, log_prepared, log_training_outcome
from genre.tracking.store import mask_password, tracking_uri
from genre.tracking.tracker import experiment_name, tracked_run

if TYPE_CHECKING:  # training modules import mxnet, which prepare and baseline do not need
    from genre.launch.roles import LaunchConfig
    from genre.report import ReportConfig
    from genre.suite import SuiteConfig
    from genre.tracking.stale import RunsConfig
    from genre.training.config import TrainConfig
    from genre.training.evaluate import EvaluateConfig
    from genre.tuning.study import TuneConfig

log = logging.getLogger(__name__)
EXIT_OK, EXIT_INCOMPLETE = 0, 1


def _config_tags(config_file: Path | None) -> dict[str, str]:
    return {"genre.config_file": str(config_file)} if config_file else {}


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM (`kill PID`) stops the command the way Ctrl-C does: `KeyboardInterrupt` in the
    main thread, so worker processes are stopped, the run ends KILLED and finished work is kept."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def prepare_command(config: PrepareConfig, experiment: str | None, config_file: Path | None, progress: bool) -> int:
    """`genre prepare`: exit 0 when everything was packed, 1 when some covers failed to download."""
    tags = {"genre.stage": "prepare", **_config_tags(config_file)}
    check_output_folders(config)  # before a run opens that could only fail
    with (
        sigterm_as_interrupt(),
        tracked_run(experiment_name(experiment, f"genre-{config.dataset_name}"), "prepare", tags) as tracker,
    ):
        prepared = prepare(config, progress=progress)
        log_prepared(tracker, config, prepared)
    counts = prepared.info.counts
    print(
        f"prepared {prepared.info.name}: {sum(counts['full'].values())} images of {len(prepared.info.genres)} genres "
        f"at {prepared.info.image_size}px in {prepared.root} (full {counts['full']}, dev {counts['dev']}); "
        f"digest {prepared.info.digest}; {prepared.seconds:.1f}s"
    )
    if prepared.problems:
        print(summarise(prepared.problems))
        print(f"every left-out item and its reason: {prepared.report_file}")
    print(f"MLflow run {tracker.run_id} at {mask_password(tracking_uri())}")
    if prepared.download_failed:
        failed = len(prepared.download.failures) if prepared.download else 0
        print(f"{failed} cover(s) failed to download; rerun the same command to retry them (finished ones are kept)")
        return EXIT_INCOMPLETE
    return EXIT_OK


def baseline_command(config: BaselineConfig, experiment: str | None, config_file: Path | None) -> int:
    """`genre baseline`: fit and score a baseline on a prepared dataset."""
    staged = baseline_stage(config, experiment, _config_tags(config_file))
    result: BaselineResult = staged.result
    scores = ", ".join(f"{split} {score.accuracy:.1%}" for split, score in result.scores.items())
    print(f"{config.model} baseline on {staged.info.name}/{config.variant} ({result.features}): {scores}")
    print(f"MLflow run {staged.run_id} at {mask_password(tracking_uri())}")
    return EXIT_OK


def train_command(config: TrainConfig, experiment: str | None, config_file: Path | None, progress: bool) -> int:
    """`genre train`: train, evaluate on the test split, log everything and the model; or `--resume RUN_ID`."""
    if config.resume:
        resume = config.resume
        config, completed = resume_config(resume, config.checkpoint_dir, config.kvstore)
        print(f"resuming run {resume} after epoch {completed} of {config.epochs}")
    try:
        with sigterm_as_interrupt():
            staged = train_stage(config, experiment, _config_tags(config_file), progress)
    except StoreUnreachable as error:
        raise StoreUnreachable(_with_resume_hint(error, config), error.run_id) from None
    if staged is None:  # a distributed worker other than 0: worker 0 reports the job
        return EXIT_OK
    outcome = staged.result
    print(
        f"{config.model} on {staged.info.name}/{config.variant}: test accuracy {outcome.test.accuracy:.2%} "
        f"(top-3 {outcome.test.top3_accuracy:.2%}), best validation {outcome.validation.accuracy:.2%} "
        f"at epoch {outcome.state.best_epoch}"
    )
    print(f"MLflow run {staged.run_id} at {mask_password(tracking_uri())}; model: runs:/{staged.run_id}/model")
    return EXIT_OK


def _with_resume_hint(error: StoreUnreachable, config: TrainConfig) -> str:
    """The store's failure, and how to continue once it answers: the finished epochs are checkpointed."""
    from genre.training.checkpoint import CheckpointStore

    message = str(error)
    if not error.run_id or not CheckpointStore(Path(config.checkpoint_dir) / error.run_id).exists():
        return message
    folder = "" if config.checkpoint_dir == "checkpoints" else f" --checkpoint-dir {config.checkpoint_dir}"
    return (
        message.split("; ")[0] + f"; every finished epoch is checkpointed: once the store answers again, "
        f"`genre train --resume {error.run_id}{folder}` continues the run"
    )


def _reach_model_store(model_uri: str) -> None:
    """A model held by the tracking store (runs:/, models:/) needs it: check it answers before loading the model,
    which would otherwise retry for minutes."""
    from genre.tracking.store import check_reachable

    if model_uri.startswith(("runs:/", "models:/", "mlflow-artifacts:/")):
        check_reachable(tracking_uri())


def evaluate_command(config: EvaluateConfig, experiment: str | None) -> int:
    """`genre evaluate`: re-evaluate a logged model on a split and log the same report as training does."""
    from genre.tracking.model import load_cover_model
    from genre.training.evaluate import evaluate_model

    if not config.model_uri:
        raise ConfigError("--model-uri is required, e.g. runs:/<run id>/model or models:/genre-classifier@champion")
    pack = open_pack(Path(config.data), config.variant, config.split)
    info = DatasetInfo.read(Path(config.data))
    _reach_model_store(config.model_uri)
    model = load_cover_model(config.model_uri)
    tags = {"genre.stage": "evaluate", "genre.model_uri": config.model_uri}
    with tracked_run(experiment_name(experiment, f"genre-{info.name}"), f"evaluate-{config.split}", tags) as tracker:
        evaluation = evaluate_model(model, pack, config.batch_size)
        log_evaluation(tracker, config, info, evaluation)
    print(
        f"{config.model_uri} on {info.name}/{config.variant}/{config.split}: accuracy {evaluation.accuracy:.2%} "
        f"(top-3 {evaluation.top3_accuracy:.2%}) over {len(evaluation.labels)} images"
    )
    print(f"MLflow run {tracker.run_id} at {mask_password(tracking_uri())}")
    return EXIT_OK


def predict_command(model_uri: str, files: list[Path], top: int) -> int:
    """`genre predict`: the `top` genres of each cover file; a file that is not an image is named, not fatal."""
    import pandas as pd
    from mlflow.exceptions import MlflowException

    from genre.tracking.model import load_cover_model

    if top < 1:
        raise ConfigError(f"'top' must be at least 1, got {top}")
    _reach_model_store(model_uri)
    model = load_cover_model(model_uri)
    failed = 0
    for path in files:
        try:
            row = model.predict(pd.DataFrame({"image": [path.read_bytes()]})).iloc[0]
        except (OSError, MlflowException) as error:
            failed += 1
            print(f"{path}: {getattr(error, 'message', None) or error}")
            continue
        ranked = sorted(((row[c], c.removeprefix("p_")) for c in row.index if c.startswith("p_")), reverse=True)
        print(f"{path}: " + ", ".join(f"{genre} {p:.1%}" for p, genre in ranked[:top]))
    return EXIT_INCOMPLETE if failed else EXIT_OK


def tune_command(config: TuneConfig, experiment: str | None, progress: bool) -> int:
    """`genre tune`: run (or continue) a study; one parent MLflow run, one nested run per trial."""
    import optuna

    from genre import devices
    from genre.errors import GenreError
    from genre.tracking.reports import log_study_progress, log_study_result, log_trial_start, log_tune_start
    from genre.tracking.stale import end_stale_matching
    from genre.tracking.store import limit_database_connections, mask_password
    from genre.tuning.space import load_space
    from genre.tuning.study import InvocationSampler, Objective, check_storage, open_study

    space = load_space(config.space)
    base = space.base_config()
    contexts = devices.contexts(base.gpus, base.cpu_contexts)
    check_storage(config.storage_url)
    check_writable(Path(config.checkpoint_dir), "checkpoint folder", "--checkpoint-dir")
    limit_database_connections(tracking_uri())  # before anything opens MLflow's store
    ensure_dataset(base.data, progress)
    info = DatasetInfo.read(Path(base.data))
    example = example_image(base)
    sampler = InvocationSampler(config.sampler, config.seed)
    study = open_study(config, base.epochs, sampler)
    already = len(study.trials)
    print(f"study {config.study_name} at {mask_password(config.storage_url)}: {already} trial(s) so far")
    tags = {"genre.stage": "tune", "optuna.study": config.study_name}
    described = devices.describe(contexts)

    def trial_run(trial: optuna.trial.Trial):
        trial_tags = {"genre.stage": "trial", "optuna.study": config.study_name, "trial_number": str(trial.number)}
        return tracked_run(None, f"trial-{trial.number}", trial_tags, nested=True, finished_on=(optuna.TrialPruned,))

    name = experiment_name(experiment, f"genre-{info.name}")
    with sigterm_as_interrupt(), tracked_run(name, f"tune-{config.study_name}", tags) as parent:
        study_name = config.study_name.replace("'", "\\'")
        ended = end_stale_matching(f"tags.`optuna.study` = '{study_name}'", f"genre tune continuing study {study_name}")
        if ended:
            print(f"ended {len(ended)} run(s) of the study KILLED: their process had died ({', '.join(ended)})")
        log_tune_start(parent, config, space, info)
        objective = Objective(
            space,
            contexts,
            Path(config.checkpoint_dir),
            trial_run,
            on_trained=lambda tracker, outcome: log_training_outcome(tracker, outcome, example),
            on_started=lambda tracker, trial_config, number, chosen: log_trial_start(
                tracker, trial_config, info, described, number, chosen
            ),
        )
        study.optimize(
            objective,
            n_trials=config.n_trials,
            timeout=config.timeout,
            catch=(GenreError,),
            callbacks=[lambda study, trial: log_study_progress(parent, study, trial.number, sampler.effective_seed)],
            gc_after_trial=True,
        )
        best_run = log_study_result(parent, study)
        if config.register and best_run:
            from genre.tracking.registry import register_model

            version = register_model(f"runs:/{best_run}/model", config.register, config.alias)
            print(f"registered the best model as {config.register} version {version} (@{config.alias})")
    states = [t.state.name for t in study.trials]
    print(
        f"study {config.study_name}: {len(states)} trials ({states.count('COMPLETE')} complete, "
        f"{states.count('PRUNED')} pruned, {states.count('FAIL')} failed)"
        + (f"; best validation accuracy {study.best_value:.2%}, model runs:/{best_run}/model" if best_run else "")
    )
    print(f"MLflow run {parent.run_id} at {mask_password(tracking_uri())}")
    return EXIT_OK


def register_command(run_id: str, name: str, alias: str) -> int:
    """`genre register`: a run's model becomes a new version of `name`, with `alias` pointing at it."""
    import mlflow

    from genre.errors import TrackingError
    from genre.tracking.registry import register_model
    from genre.tracking.store import check_reachable

    uri = tracking_uri()
    check_reachable(uri)
    mlflow.set_tracking_uri(uri)
    try:
        version = register_model(f"runs:/{run_id}/model", name, alias)
    except mlflow.exceptions.MlflowException as error:
        raise TrackingError(f"cannot register the model of run {run_id}: {error.message}") from None
    print(f"registered runs:/{run_id}/model as {name} version {version}; models:/{name}@{alias} now points at it")
    return EXIT_OK


def suite_command(config: SuiteConfig, experiment: str | None, progress: bool) -> int:
    """`genre suite`: run (or finish) a list of experiments x seeds; exit 1 if any of them failed."""
    from genre.suite import run_suite

    with sigterm_as_interrupt():
        run_id, failed = run_suite(config, experiment, progress)
    print(f"MLflow run {run_id} at {mask_password(tracking_uri())}; `genre report` makes the results table")
    if failed:
        print(f"{failed} run(s) failed (see above); rerun the same command to retry them, finished ones are skipped")
    return EXIT_INCOMPLETE if failed else EXIT_OK


def report_command(config: ReportConfig) -> int:
    """`genre report`: the results page of a suite, written to a file and logged as a run's artifacts."""
    from genre.report import write_report

    report = write_report(config)
    tags = {"genre.stage": "report"}
    with tracked_run(report.experiment, "report", tags) as tracker:
        tracker.log_params(
            {"config.format": config.format, "config.section": config.section, "experiments_shown": len(report.rows)}
        )
        tracker.log_artifact(report.page, "report")
        for figure in report.figures.values():  # where the page links them: beside it, as in the file tree
            folder = figure.parent.relative_to(report.page.parent).as_posix()
            tracker.log_artifact(figure, f"report/{folder}")
    from genre.report import best_run

    best = best_run(report.rows)
    section = f", section {config.section}," if config.section else ""
    print(
        f"wrote {report.page}{section} ({len(report.rows)} experiments, {len(report.figures)} figures); "
        f"best: {best.name} on {best.dataset}/{best.variant} at {100 * best.val_accuracy:.2f}% validation"
    )
    print(f"MLflow run {tracker.run_id} at {mask_password(tracking_uri())} holds the report")
    return EXIT_OK


def runs_command(config: RunsConfig) -> int:
    """`genre runs`: the RUNNING runs and whether their process still runs; `--end` ends the stale ones KILLED."""
    import time

    from genre.tracking import stale
    from genre.tracking.runs import client

    uri = tracking_uri()
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).expanduser().exists():
        print(f"no runs: the tracking store {uri} does not exist yet")  # and opening it would create it
        return EXIT_OK
    experiment_ids = None
    if config.experiment:
        found = client().get_experiment_by_name(config.experiment)
        if found is None:
            raise ConfigError(f"no MLflow experiment named '{config.experiment}' at {mask_password(tracking_uri())}")
        experiment_ids = [found.experiment_id]
    running = stale.running_runs(experiment_ids)
    names = {e.experiment_id: e.name for e in client().search_experiments()}
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
