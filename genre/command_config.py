"""The settings of each command whose work is a stage (`genre.stages`) or one of `genre.commands`; the other commands'
settings live in the part that does their work (`genre.data.config`, `genre.training.config`, `genre.tuning.config`,
`genre.tracking.config`, `genre.launch.config`).

Leaves: nothing here imports MXNet, MLflow or Optuna, so `genre --help` and `genre <command> --help` list every flag
at once, and a stage and the command line share one definition of each setting.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from genre.config import check_range, setting
from genre.data.config import MAX_FOLDS, MAX_REPEATS, DatasetChoice, FoldChoice, ModelDataChoice, check_fold_count
from genre.errors import ConfigError
from genre.models.embedding import METHODS, NEIGHBOURS_SHOWN
from genre.models.spec import BaselineSpec, QuantizeChoice

DEFAULT_SUITE = "digits"  # the suite `genre suite` runs when it is given no experiments
PREDICTIONS_EXPERIMENT = "genre-predictions"  # the experiment of a `genre predict --log-run` run outside `mlflow run`
SECTION_NAME = re.compile(r"[A-Za-z0-9_-]+")  # a report's page section: it names a folder and sits in marker lines
MODEL_URI_EXAMPLES = "runs:/<run id>/model or models:/genre-classifier@champion"


def require_model_uri(model_uri: str) -> None:
    """The one-line `ConfigError` of a command that scores a logged model but was given none."""
    if not model_uri:
        raise ConfigError(f"--model-uri is required, e.g. {MODEL_URI_EXAMPLES}")


@dataclass(frozen=True)
class BaselineConfig(BaselineSpec, QuantizeChoice, FoldChoice, DatasetChoice):
    """A baseline: which dataset and which part of it (the static split or a fold), which classifier, and what it
    sees (shrunk pixels or a network's features)."""

    cache_features: bool = setting(
        True, "features=network: keep the features in <data>/features/ so the next baseline reuses them"
    )

    def __post_init__(self) -> None:
        BaselineSpec.__post_init__(self)
        QuantizeChoice.__post_init__(self)
        FoldChoice.__post_init__(self)
        if self.quantize and self.features != "network":
            raise ConfigError(
                f"'quantize' puts an INT8 copy of a network in the logged model, got features={self.features} (a pixel "
                "baseline logs no model): add --features network or leave it off"
            )


@dataclass(frozen=True)
class EvaluateConfig(QuantizeChoice, ModelDataChoice):
    """Which model, on which split of which dataset (by default the one the model was trained on); `quantize` scores
    it through an INT8 copy calibrated on that dataset's training covers."""

    model_uri: str = setting("", "the model: runs:/<run id>/model, models:/<name>@<alias>, or a local path")
    split: str = setting("test", "split to evaluate on", ("train", "val", "test"))
    batch_size: int = setting(256, "images per prediction call")

    def __post_init__(self) -> None:
        QuantizeChoice.__post_init__(self)
        check_range(self, "batch_size", 1)


@dataclass(frozen=True)
class InterpretConfig(ModelDataChoice):
    """Which model, on which split of which dataset, and how much of the findings to show."""

    model_uri: str = setting(
        "", "the model: runs:/<run id>/model (logs into that run), models:/<name>@<alias>, or a path"
    )
    split: str = setting("test", "split to interpret", ("train", "val", "test"))
    batch_size: int = setting(256, "images per prediction call")
    top_pairs: int = setting(10, "most confused pairs to show and plot (the CSV lists every confused pair)")
    heatmaps: int = setting(
        4, "covers per genre in the Grad-CAM grids (the most confidently right ones, the worst mistakes); 0: none"
    )
    heatmap_layer: str = setting("", "the layer Grad-CAM reads (default: the network's last spatial map)")
    cover_map: str = setting("tsne", "2-D map of the covers' penultimate-layer embeddings", (*METHODS, "none"))
    neighbours: int = setting(6, f"covers shown with their {NEIGHBOURS_SHOWN} nearest neighbours on the map; 0: none")
    calibrate: bool = setting(
        False, "fit a temperature on the validation split and log the calibrated model beside the model"
    )
    register: str = setting(
        "",
        "with --calibrate: register the calibrated model as a new version of this name (default: the registered "
        "model --model-uri names, if any)",
    )

    def __post_init__(self) -> None:
        check_range(self, "batch_size", 1)
        check_range(self, "top_pairs", 1)
        check_range(self, "heatmaps", 0)
        check_range(self, "neighbours", 0)
        if self.register and not self.calibrate:
            raise ConfigError(f"'register' {self.register} names where the calibrated model goes: add --calibrate")


@dataclass(frozen=True)
class PredictConfig(QuantizeChoice):
    """Which model, where the predictions go, and how the covers go through it (`quantize`: an INT8 copy calibrated
    on the training covers of `calibration_data`, by default the model's dataset)."""

    model_uri: str = setting(
        "", "runs:/<run id>/model, models:/<name>@<alias> or a path", metavar="MODEL_URI", short="-m", required=True
    )
    output: str = setting(
        "",
        "CSV to write, one row per readable cover: path, genre, p_<genre>... (default: print each cover's genres)",
        metavar="CSV",
    )
    top: int = setting(3, "genres to print per cover", metavar="N")
    batch_size: int = setting(64, "covers per pass through the network", metavar="N")
    workers: int = setting(0, "processes decoding covers (0: one per usable core)", metavar="N")
    explain: bool = setting(
        False,
        "also write each cover's Grad-CAM heatmap for its top genre, as <cover>.heatmap.png in --explain-dir",
        switch=True,
    )
    explain_dir: str = setting(".", "where --explain writes", metavar="DIR")
    log_run: bool = setting(False, "log the CSV and the unreadable files as artifacts of an MLflow run", switch=True)
    calibration_data: str = setting(
        "",
        "with --quantize: prepared dataset whose training covers calibrate the INT8 copy (default: the one the model "
        "was trained on, read from its run)",
        metavar="DIR",
    )

    def __post_init__(self) -> None:
        QuantizeChoice.__post_init__(self)
        check_range(self, "top", 1)
        check_range(self, "batch_size", 1)
        check_range(self, "workers", 0, note=" (0 = one per usable core)")


@dataclass(frozen=True)
class SuiteConfig:
    """Which experiments, with which seeds. A suite file in experiments/suites/ holds these keys."""

    name: str = setting("", "the suite's name: its tag and MLflow experiment genre-suite-<name> (default: the file's)")
    experiments: str = setting("", "experiments to run, comma-separated: names in experiments/ or its baselines/")
    seeds: str = setting("0", "seeds to run each experiment with, comma-separated")
    folds: int = setting(
        0, f"cross-validate: run every experiment on each of K folds over all covers, 2..{MAX_FOLDS} (0: static split)"
    )
    repeats: int = setting(1, f"cross-validate: repetitions of the K folds, each reshuffled, 1..{MAX_REPEATS}")
    static_only: str = setting(
        "", "experiments run on the static split only, left out when cross-validating (comma-separated)"
    )
    system_metrics: bool = setting(
        True,
        "log the machine's CPU, memory, disk and network use (GPU where present) every 10 s to the System metrics "
        "tab of the suite's run, over all of its runs (MLflow's system metrics; "
        "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL changes the period)",
    )

    def __post_init__(self) -> None:
        check_fold_count(self.folds)
        check_range(self, "repeats", 1, MAX_REPEATS)

    @property
    def mlflow_experiment(self) -> str:
        """`genre-suite-<name>`, with `-cv<K>` (`-cv<K>x<R>`) when cross-validating: the folds' runs pool only
        with each other."""
        name = f"genre-suite-{self.name or 'custom'}"
        if not self.folds:
            return name
        return f"{name}-cv{self.folds}" + (f"x{self.repeats}" if self.repeats > 1 else "")


@dataclass(frozen=True)
class ReportConfig:
    """Which MLflow experiment to report on (a suite's, or any other), and where to write the page."""

    experiment: str = setting(
        "",
        "MLflow experiment whose finished train, trial and baseline runs to compare: a suite's (genre-suite-NAME) or "
        "any other, e.g. a dataset's (genre-digits) (default: the newest suite run's)",
    )
    format: str = setting("md", "page format: Markdown or self-contained HTML", ("md", "html"))  # noqa: A003
    output: str = setting("", "file to write (default: reports/<experiment>.<format>); figures go in <stem>/ beside it")
    section: str = setting(
        "",
        "write the report as section NAME of the Markdown --output (replacing that section, or appended; the rest of "
        "the file is kept); figures go in <stem>/NAME/",
    )

    def __post_init__(self) -> None:
        if self.section and not SECTION_NAME.fullmatch(self.section):
            raise ConfigError(f"'section' must be letters, digits, '-' and '_' only, got {self.section!r}")
        if self.section and self.format != "md":
            raise ConfigError(
                f"'section' needs --format md (an HTML page is self-contained); got --format {self.format}"
            )


@dataclass(frozen=True)
class CompareConfig:
    """Which two models to compare, and whether to keep the result as a run."""

    a: str = setting(
        "",
        "model A: a run id (or run ids, comma-separated, pooled), or an experiment name (tag genre.experiment_name, as "
        "a suite names its runs; MLFLOW-EXPERIMENT:NAME to look it up there) whose newest runs are pooled: its seeds, "
        "and the folds and repeats of a cross-validated suite",
    )
    b: str = setting("", "model B, named as A; every difference is B minus A")
    experiment: str = setting(
        "",
        "MLflow experiment in which to look experiment names up, e.g. genre-suite-covers-dev-cv5 (default: every "
        "active one, as long as the name's runs are in only one)",
    )
    log_run: bool = setting(
        False, "also log the result as a `compare` run, in --experiment or else the MLflow experiment of A's runs"
    )

    def __post_init__(self) -> None:
        for name in ("a", "b"):
            if not getattr(self, name).strip():
                raise ConfigError(f"'{name}' must name a run id or an experiment, got {getattr(self, name)!r}")


@dataclass(frozen=True)
class DemoEndConfig:
    """What `make demo` prints at its end is about this experiment's newest train run."""

    experiment: str = setting("genre-digits", "the demo's MLflow experiment", metavar="EXPERIMENT")
