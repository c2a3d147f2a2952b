"""The tune stage: an Optuna study over a search space, in a parent run with one nested run per trial. A trial is
the train stage itself (`genre.stages.train.run`, nested), reporting each epoch's validation accuracy to the pruner,
or, for a baseline space, the baseline stage (`genre.stages.baseline.run`, nested) scored by a cross-validation
inside its training part; running again with the same study name continues the study."""

from __future__ import annotations

import dataclasses
import logging
import math
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import yaml
from optuna.visualization import matplotlib as plots

from genre import devices
from genre.credentials import mask_password
from genre.data.pack import DatasetInfo
from genre.disk import check_writable
from genre.errors import EXIT_OK, GenreError
from genre.stages import baseline, train
from genre.stages.run_facts import config_params, dataset_facts, dataset_tags, library_versions
from genre.stages.startup import ensure_dataset, sigterm_as_interrupt
from genre.tracking import runs
from genre.tracking.registry import register_model
from genre.tracking.stale import end_stale_matching
from genre.tracking.store import limit_database_connections
from genre.tracking.tracker import Tracker, experiment_name, tracked_run
from genre.training.config import TrainConfig
from genre.training.progress import duration
from genre.tuning.space import SearchSpace, config_from, load_space, suggest, trial_settings
from genre.tuning.study import InvocationSampler, TuneConfig, check_storage, open_study


def space_stages() -> dict[str, type]:
    """What a trial of a space can run (its `stage:`), and that stage's config."""

    return {"train": TrainConfig, "baseline": baseline.BaselineConfig}


@dataclasses.dataclass
class Objective:
    """Optuna's objective: sample settings, run them as a nested run of the space's stage and return its
    `objective`: a training's best-epoch validation accuracy or balanced accuracy, or a baseline's balanced
    accuracy by a cross-validation inside its training part (or its validation split's). Each trial's run records
    every resolved setting, what the sampler chose (`trial.*`) and how the trial ended (`trial_state`)."""

    space: SearchSpace
    study_name: str
    checkpoint_dir: str
    example: bytes
    progress: bool = False

    def __call__(self, trial: optuna.trial.Trial) -> float:
        chosen = suggest(trial, self.space)
        config = config_from(self.space, chosen, f"trial {trial.number}")
        opened: list[str] = []

        def started(tracker: Tracker) -> None:
            opened.append(tracker.run_id)
            trial.set_user_attr("mlflow_run_id", tracker.run_id)
            tracker.log_params(
                {"trial_number": trial.number} | {f"trial.{name}": value for name, value in chosen.items()}
            )

        tags = {"genre.stage": "trial", "optuna.study": self.study_name, "trial_number": str(trial.number)}
        trial_run = self._baseline if self.space.stage == "baseline" else self._train
        try:
            value = trial_run(trial, config, tags, started)
        except optuna.TrialPruned:
            self._ended(opened, "PRUNED")
            raise
        except GenreError:
            self._ended(opened, "FAILED")
            raise
        self._ended(opened, "COMPLETE")
        return value

    def _train(self, trial: optuna.trial.Trial, config: TrainConfig, tags: dict[str, str], started) -> float:
        def report(epoch: int, metrics: dict[str, float]) -> None:
            trial.report(metrics[self.space.objective], epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {epoch}")

        staged = train.run(
            dataclasses.replace(config, checkpoint_dir=self.checkpoint_dir), None, tags, self.progress, nested=True,
            run_name=f"trial-{trial.number}", example=self.example, on_started=started, on_epoch_end=report,
            finished_on=(optuna.TrialPruned,),
        )  # fmt: skip
        assert staged is not None  # a trial is never a distributed worker
        return self._validation_value(staged.result.validation)

    def _baseline(
        self, trial: optuna.trial.Trial, config: baseline.BaselineConfig, tags: dict[str, str], started
    ) -> float:
        inner = self.space.objective == "inner_balanced_accuracy"
        staged = baseline.run(
            config, None, tags, nested=True, run_name=f"trial-{trial.number}", progress=self.progress,
            on_started=started, inner=inner,
        )  # fmt: skip
        result = staged.result
        if inner:
            return float(np.mean(result.inner))
        return self._validation_value(result.scores["val"])

    def _validation_value(self, validation) -> float:
        """The validation split's accuracy, or its balanced accuracy for a `val_balanced_accuracy` objective."""
        return validation.balanced_accuracy if self.space.objective == "val_balanced_accuracy" else validation.accuracy

    @staticmethod
    def _ended(opened: list[str], state: str) -> None:
        if opened:
            runs.set_tags(opened[0], {"trial_state": state})


def study_eta(trial_seconds: float, trials_left: int, timeout_left: float | None = None) -> float:
    """Seconds until this invocation's study ends: the trials left at the mean trial time so far (`trial_seconds`);
    with `--timeout`, only the trials that can still start before it runs out (a started trial runs to its end)."""
    if timeout_left is not None and trial_seconds > 0:
        trials_left = min(trials_left, math.ceil(max(0.0, timeout_left) / trial_seconds))
    return trials_left * trial_seconds


@dataclasses.dataclass
class StudyProgress:
    """Optuna's callback that prints a line per finished trial with the study's ETA, e.g.
    `trial 3 complete in 41s: val 97.21%; best 97.77% (trial 1); 4/6 trials, ETA 1m22s`. Made when the study
    starts: the ETA counts this invocation's trials (`--n-trials`, `--timeout`) at their mean time so far."""

    n_trials: int
    timeout: float | None = None
    label: str = "val"  # the objective's name (`objective_label`)
    started: float = dataclasses.field(default_factory=time.monotonic)
    trial_seconds: list[float] = dataclasses.field(default_factory=list)

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        print(self.line(study, trial, time.monotonic()), flush=True)

    def line(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, now: float) -> str:
        elapsed = now - self.started
        self.trial_seconds.append(elapsed - sum(self.trial_seconds))  # since the last trial ended: sampling too
        took = duration(self.trial_seconds[-1])
        state = trial.state.name
        if state == "COMPLETE":
            said = f"trial {trial.number} complete in {took}: {self.label} {trial.value:.2%}"
        elif state == "PRUNED":
            said = f"trial {trial.number} pruned after epoch {trial.last_step} in {took}"
        else:  # FAIL: Optuna has logged why
            said = f"trial {trial.number} failed in {took}"
        if any(t.state.name == "COMPLETE" for t in study.get_trials(deepcopy=False)):
            said += f"; best {study.best_value:.2%} (trial {study.best_trial.number})"
        done, mean = len(self.trial_seconds), elapsed / len(self.trial_seconds)
        timeout_left = None if self.timeout is None else self.timeout - elapsed
        left = study_eta(mean, self.n_trials - done, timeout_left)
        if left > 0:
            limited = left < study_eta(mean, self.n_trials - done)
            return f"{said}; {done}/{self.n_trials} trials, ETA {duration(left)}" + (" (--timeout)" * limited)
        if done < self.n_trials:
            return f"{said}; {done}/{self.n_trials} trials in {duration(elapsed)}: --timeout reached, no more trials"
        return f"{said}; {done}/{self.n_trials} trials in {duration(elapsed)}"


def run(config: TuneConfig, experiment: str | None = None, progress: bool = False) -> tuple[Any, str | None, str, str]:
    """Run (or continue) the study in a parent run; returns the study, the best trial's run id, the parent's run
    id and its store."""

    space = load_space(config.space, space_stages())
    base = space.base_config()
    training = space.stage == "train"
    if training:
        devices.contexts(base.gpus, base.cpu_contexts)  # a missing GPU fails before any work
    check_storage(config.storage_url)
    if training:
        check_writable(Path(config.checkpoint_dir), "checkpoint folder", "--checkpoint-dir")
    limit_database_connections()  # before anything opens MLflow's store
    ensure_dataset(base.data, progress)
    info = DatasetInfo.read(Path(base.data))
    sampler = InvocationSampler(config.sampler, config.seed)
    study = open_study(config, base.epochs if training else 1, sampler)
    study.set_user_attr("objective", space.objective)
    print(f"study {config.study_name} at {mask_password(config.storage_url)}: {len(study.trials)} trial(s) so far")
    tags = {"genre.stage": "tune", "optuna.study": config.study_name}
    name = experiment_name(experiment, f"genre-{info.name}")
    with (
        sigterm_as_interrupt(),
        tracked_run(name, f"tune-{config.study_name}", tags, system_metrics=config.system_metrics) as parent,
    ):
        query = f"tags.`optuna.study` = '{runs.quote(config.study_name)}'"
        ended = end_stale_matching(query, f"genre tune continuing study {runs.quote(config.study_name)}")
        if ended:
            print(f"ended {len(ended)} run(s) of the study KILLED: their process had died ({', '.join(ended)})")
        log_tune_start(parent, config, space, info)
        objective = Objective(space, config.study_name, config.checkpoint_dir, train.example_input(base), progress)
        callbacks: list[Any] = [
            lambda study, trial: log_study_progress(
                parent, study, trial.number, sampler.effective_seed, space.objective
            )
        ]
        if progress:  # its clock starts here, with the study's timeout
            callbacks.append(StudyProgress(config.n_trials, config.timeout, objective_label(space.objective)))
        try:
            study.optimize(
                objective,
                n_trials=config.n_trials,
                timeout=config.timeout,
                catch=(GenreError,),
                callbacks=callbacks,
                gc_after_trial=True,
            )
        finally:  # a study stopped by hand (Ctrl-C, SIGTERM) keeps its best so far on record too, ready to score
            best_run = log_study_result(parent, study, space.objective)
            if best_run:
                log_best_experiment(parent, space, study)
        if config.register and best_run:
            version = register_model(f"runs:/{best_run}/model", config.register, config.alias)
            print(f"registered the best model as {config.register} version {version} (@{config.alias})")
    return study, best_run, parent.run_id, parent.store


def log_tune_start(tracker: Tracker, config: TuneConfig, space: SearchSpace, info: DatasetInfo) -> None:
    """The invocation's settings (storage password masked), the space file and the dataset."""
    tracker.log_params(
        config_params(dataclasses.asdict(config) | {"study": config.study_name, "storage": config.storage_url})
        | dataset_facts(info)
        | {"space_file": space.source, "objective": space.objective}
        | library_versions()
    )
    tracker.set_tags(dataset_tags(info))
    tracker.log_artifact(Path(space.source), "study")


def log_study_progress(
    tracker: Tracker,
    study: optuna.Study,
    trial_number: int,
    sampler_seed: int | None = None,
    objective: str = "val_accuracy",
) -> None:
    """After each trial: the best value so far (`best_<objective>`, e.g. `best_val_accuracy`) and how many trials
    ended in each state; and the seed this invocation's sampler drew with (`sampler_seed`, which differs from
    `--seed` unless the invocation ran trial 0)."""
    if sampler_seed is not None:
        tracker.log_params({"sampler_seed": sampler_seed})  # the same value after every trial: MLflow accepts it
    states = [trial.state.name for trial in study.get_trials(deepcopy=False)]
    metrics: dict[str, float] = {
        f"trials_{state.lower()}": states.count(state) for state in ("COMPLETE", "PRUNED", "FAIL")
    }
    if "COMPLETE" in states:
        metrics[f"best_{objective}"] = study.best_value
    tracker.log_metrics(metrics, step=trial_number)


BEST_EXPERIMENT = "study/best_experiment.yaml"
OBJECTIVE_LABELS = {
    "val_accuracy": "val",
    "val_balanced_accuracy": "val balanced",
    "inner_balanced_accuracy": "inner-CV balanced",
}


def objective_label(objective: str) -> str:
    """How a progress line names the objective: `val`, `val balanced`, `inner-CV balanced`."""
    return OBJECTIVE_LABELS.get(objective, objective)


def best_experiment_text(space: SearchSpace, study: optuna.Study) -> str:
    """The best trial's settings (the space's base with what the trial chose) as an experiment file, to save in
    experiments/ (a baseline's in experiments/baselines/) and score by a cross-validated suite."""

    best = study.best_trial
    chosen = suggest(optuna.trial.FixedTrial(best.params, best.number), space)
    header = (
        f"# The best trial ({best.number}) of Optuna study {study.study_name} over {space.source}: "
        f"{space.objective} {best.value:.4f}.\n# Score it by a cross-validated suite (genre suite --folds 5), "
        "never by the covers it was tuned on.\n"
    )
    return header + yaml.safe_dump(trial_settings(space, chosen), sort_keys=False)


def log_best_experiment(tracker: Tracker, space: SearchSpace, study: optuna.Study) -> None:
    tracker.log_text(best_experiment_text(space, study), BEST_EXPERIMENT)


def log_study_result(tracker: Tracker, study: optuna.Study, objective: str = "val_accuracy") -> str | None:
    """The best trial (value, params, the run holding its model) and the study's figures; returns that run id."""

    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    best_run = None
    if complete:
        best = study.best_trial
        best_run = best.user_attrs.get("mlflow_run_id")
        tracker.log_params({f"best.{name}": value for name, value in best.params.items()})
        tracker.set_tags(
            {"best_trial_number": str(best.number), "best_trial_run_id": str(best_run),
             "best_model_uri": f"runs:/{best_run}/model"}
        )  # fmt: skip
        tracker.log_metrics({f"best_{objective}": best.value})
    figures = {
        "optimization_history.png": plots.plot_optimization_history,
        "intermediate_values.png": plots.plot_intermediate_values,
        "param_importances.png": plots.plot_param_importances,
        "parallel_coordinate.png": plots.plot_parallel_coordinate,
    }
    for name, plot in figures.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # optuna marks its matplotlib plots experimental
                axes = plot(study)
        except (ValueError, RuntimeError, ZeroDivisionError) as error:
            logging.getLogger(__name__).info("no %s yet: %s", name, error)
            continue
        figure = np.ravel(axes)[0].figure
        figure.set_size_inches(9, 5.5)
        tracker.log_figure(figure, f"study/{name}")
    return best_run


def command(config: TuneConfig, experiment: str | None, progress: bool) -> int:
    """`genre tune`: run (or continue) a study; one parent MLflow run, one nested run per trial."""
    study, best_run, run_id, store = run(config, experiment, progress)
    states = [t.state.name for t in study.trials]
    best = objective_label(study.user_attrs.get("objective", "val_accuracy"))
    print(
        f"study {config.study_name}: {len(states)} trials ({states.count('COMPLETE')} complete, "
        f"{states.count('PRUNED')} pruned, {states.count('FAIL')} failed)"
        + (f"; best {best} {study.best_value:.2%}, model runs:/{best_run}/model" if best_run else "")
    )
    if best_run:
        print(f"the best trial's settings as an experiment: {BEST_EXPERIMENT} in run {run_id}'s artifacts")
    print(f"MLflow run {run_id} at {store}")
    return EXIT_OK
