"""What each stage records in its run, written against the `Tracker` interface."""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from genre import __version__
from genre.data.pack import DatasetInfo
from genre.data.prepare import PrepareConfig, PreparedDataset
from genre.figures import confusion_matrix_figure, learning_curves, sample_grid
from genre.models.baselines import BaselineConfig, BaselineResult
from genre.tracking.tracker import Tracker
from genre.training.metrics import (
    balanced_accuracy_from_confusion,
    confusion,
    macro_f1_from_confusion,
    per_genre_table,
    recall_from_confusion,
)

log = logging.getLogger(__name__)

if TYPE_CHECKING:  # the training modules import mxnet, which `prepare` and `baseline` do not need
    import optuna

    from genre.training.config import TrainConfig
    from genre.training.evaluate import EvaluateConfig
    from genre.training.loop import Evaluation
    from genre.training.train import TrainOutcome
    from genre.tuning.space import SearchSpace
    from genre.tuning.study import TuneConfig


def config_params(settings: dict[str, Any]) -> dict[str, Any]:
    """The resolved settings as `config.<name>` params.

    `mlflow run` logs its `-P` parameters under their plain names (unset ones as "''"), and MLflow
    forbids changing a param, so the values actually used get a prefix of their own.
    """
    return {f"config.{key}": value for key, value in settings.items()}


def log_prepared(tracker: Tracker, config: PrepareConfig, prepared: PreparedDataset) -> None:
    """Params, counts, the dataset input, the split file, the report and a figure of samples."""
    info = prepared.info
    settings = dataclasses.asdict(config) | {
        "name": info.name,
        "out": str(prepared.root.resolve()),
        "image_size": info.image_size,
    }
    tracker.log_params(
        config_params(settings)
        | {
            "source_kind": config.source_kind,
            "dataset_name": info.name,
            "dataset_digest": info.digest,
            "genres": ",".join(info.genres),
            "genre_count": len(info.genres),
            "genre_version": __version__,
        }
    )
    metrics = {f"{variant}_{split}_count": n for variant, splits in info.counts.items() for split, n in splits.items()}
    metrics.update(problem_count=len(prepared.problems), prepare_seconds=prepared.seconds)
    if prepared.download:
        metrics.update(
            downloaded_count=len(prepared.download.fetched),
            already_present_count=len(prepared.download.already_present),
            download_failed_count=len(prepared.download.failures),
        )
    tracker.log_metrics(metrics)
    total = sum(info.counts["full"].values())
    tracker.log_dataset(
        info.name,
        info.digest,
        prepared.root.resolve().as_uri(),
        "prepare",
        (total, info.image_size, info.image_size, 3),
    )
    tracker.set_tags({"genre.stage": "prepare", "genre.dataset": info.name, "genre.dataset_digest": info.digest})
    tracker.log_artifact(prepared.split_file, "dataset")
    tracker.log_artifact(prepared.report_file, "dataset")
    tracker.log_artifact(Path(prepared.root) / "dataset.json", "dataset")
    tracker.log_figure(sample_grid(prepared.sample_images), "samples.png")


def genre_keys(genres: list[str]) -> list[str]:
    """Each genre as it can end a metric name: MLflow allows letters, digits and `_ - . / : space`, so anything else
    (and, to keep names easy to search, a space, a slash or a colon) becomes `_`; a genre that would then clash with
    an earlier one gets its label appended (`R&B`, `R_B` -> `R_B`, `R_B_1`)."""
    keys: list[str] = []
    for label, genre in enumerate(genres):
        key = re.sub(r"[^\w.-]", "_", genre)
        keys.append(f"{key}_{label}" if key in keys else key)
    return keys


def balanced_metrics(prefix: str, matrix: np.ndarray, genres: list[str]) -> dict[str, float]:
    """The metrics that weigh every genre alike, from a split's `(genres, genres)` confusion counts:
    `<prefix>_balanced_accuracy`, `<prefix>_macro_f1` and `<prefix>_recall_<genre>` for every genre (NaN for a
    genre with no examples in the split). See `genre.training.metrics` for the conventions."""
    metrics = {
        f"{prefix}_balanced_accuracy": balanced_accuracy_from_confusion(matrix),
        f"{prefix}_macro_f1": macro_f1_from_confusion(matrix),
    }
    recall = recall_from_confusion(matrix)
    metrics.update({f"{prefix}_recall_{key}": float(r) for key, r in zip(genre_keys(genres), recall, strict=True)})
    return metrics


def _split_confusion(evaluation: Evaluation, genres: list[str]) -> np.ndarray:
    return confusion(evaluation.predictions, evaluation.labels, len(genres))


def _accuracies(accuracy: float, balanced: float) -> str:
    return f"accuracy {accuracy:.1%}, balanced {balanced:.1%}"


def log_baseline(tracker: Tracker, config: BaselineConfig, result: BaselineResult, info: DatasetInfo) -> None:
    """Params, accuracies (plain and per genre) per split, a confusion-matrix figure and the per-genre report."""
    settings = dataclasses.asdict(config)
    facts = {
        "dataset_name": info.name,
        "dataset_digest": info.digest,
        "feature_set": result.features,  # not "features": `mlflow run` logs that -P parameter itself
        "genres": ",".join(info.genres),
        "genre_version": __version__,
    }
    tracker.log_params(config_params(settings) | facts)
    tracker.set_tags({"genre.stage": "baseline", "genre.dataset": info.name, "genre.dataset_digest": info.digest})
    size = info.image_size
    tracker.log_dataset(
        info.name,
        info.digest,
        Path(config.data).resolve().as_uri(),
        "training",
        (sum(info.counts[config.variant].values()), size, size, 3),
    )
    metrics = {f"{split}_accuracy": score.accuracy for split, score in result.scores.items()}
    for split, score in result.scores.items():
        metrics |= balanced_metrics(split, score.confusion, result.genres)
    metrics["fit_seconds"] = result.fit_seconds
    tracker.log_metrics(metrics)
    for split in ("val", "test"):
        score = result.scores[split]
        title = f"{config.model} baseline, {split} {_accuracies(score.accuracy, score.balanced_accuracy)}"
        tracker.log_figure(confusion_matrix_figure(score.confusion, result.genres, title), f"confusion_{split}.png")
        tracker.log_text(score.report, f"classification_report_{split}.txt")


def library_versions() -> dict[str, str]:
    import mlflow
    import mxnet
    import numpy

    from genre.models.zoo import import_gluoncv

    gluoncv = import_gluoncv()

    return {
        "version.genre": __version__,
        "version.mxnet": mxnet.__version__,
        "version.gluoncv": gluoncv.__version__,
        "version.mlflow": mlflow.__version__,
        "version.numpy": numpy.__version__,
    }


def log_training_start(tracker: Tracker, config: TrainConfig, info: DatasetInfo, contexts: str) -> None:
    """Every resolved setting, the dataset (digest, split counts), the devices and library versions."""
    counts = info.counts[config.variant]
    tracker.log_params(
        config_params(dataclasses.asdict(config))
        | {
            "dataset_name": info.name,
            "dataset_digest": info.digest,
            "dataset_split": ",".join(f"{split}={n}" for split, n in counts.items()),
            "image_size": info.image_size,
            "genres": ",".join(info.genres),
            "contexts": contexts,
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS", ""),
        }
        | library_versions()
    )
    tracker.set_tags({"genre.stage": "train", "genre.dataset": info.name, "genre.dataset_digest": info.digest})
    size = info.image_size
    tracker.log_dataset(
        info.name, info.digest, Path(config.data).resolve().as_uri(), "training", (sum(counts.values()), size, size, 3)
    )


def log_training_outcome(tracker: Tracker, outcome: TrainOutcome, example: bytes) -> None:
    """Test metrics, the best epoch's validation metrics, the per-genre table, the confusion matrix, learning curves
    and the model.

    The best epoch's validation metrics are `best_val_*`: `val_*` are the per-epoch curves.
    """
    test, genres = outcome.test, outcome.info.genres
    tracker.log_metrics(
        {
            "test_accuracy": test.accuracy,
            "test_top3_accuracy": test.top3_accuracy,
            "test_loss": test.loss,
            "best_val_accuracy": outcome.validation.accuracy,
            "best_epoch": outcome.state.best_epoch,
        }
        | balanced_metrics("test", _split_confusion(test, genres), genres)
        | balanced_metrics("best_val", _split_confusion(outcome.validation, genres), genres)
    )
    log_split_report(tracker, test, genres, "test", f"best epoch {outcome.state.best_epoch}")
    tracker.log_figure(learning_curves(outcome.state.history), "learning_curves.png")
    tracker.log_model(outcome.net, genres, outcome.info.image_size, example, outcome.network)


def log_split_report(tracker: Tracker, evaluation: Evaluation, genres: list[str], split: str, note: str) -> None:
    """The per-genre precision/recall/F1 table and the confusion-matrix figure of one split."""
    matrix = _split_confusion(evaluation, genres)
    tracker.log_text(per_genre_table(matrix, genres), f"{split}_per_genre.csv")
    title = f"{split} {_accuracies(evaluation.accuracy, balanced_accuracy_from_confusion(matrix))} ({note})"
    tracker.log_figure(confusion_matrix_figure(matrix, genres, title), f"confusion_{split}.png")


def log_evaluation(tracker: Tracker, config: EvaluateConfig, info: DatasetInfo, evaluation: Evaluation) -> None:
    """`genre evaluate`: the same metrics and report as the end of training, for any split."""
    split = config.split
    tracker.log_params(
        config_params(dataclasses.asdict(config)) | {"dataset_name": info.name, "dataset_digest": info.digest}
    )
    tracker.set_tags({"genre.dataset": info.name, "genre.dataset_digest": info.digest})
    tracker.log_metrics(
        {
            f"{split}_accuracy": evaluation.accuracy,
            f"{split}_top3_accuracy": evaluation.top3_accuracy,
            f"{split}_loss": evaluation.loss,
        }
        | balanced_metrics(split, _split_confusion(evaluation, info.genres), info.genres)
    )
    log_split_report(tracker, evaluation, info.genres, split, config.model_uri)


def log_tune_start(tracker: Tracker, config: TuneConfig, space: SearchSpace, info: DatasetInfo) -> None:
    """The invocation's settings (storage password masked), the space file and the dataset."""
    tracker.log_params(
        config_params(dataclasses.asdict(config) | {"study": config.study_name, "storage": config.storage_url})
        | {"dataset_name": info.name, "dataset_digest": info.digest, "space_file": space.source}
        | library_versions()
    )
    tracker.set_tags({"genre.dataset": info.name, "genre.dataset_digest": info.digest})
    tracker.log_artifact(Path(space.source), "study")


def log_trial_start(
    tracker: Tracker, config: TrainConfig, info: DatasetInfo, contexts: str, trial_number: int, chosen: dict[str, Any]
) -> None:
    """A trial run records every resolved setting (what trained), plus what the sampler chose as `trial.*`."""
    log_training_start(tracker, config, info, contexts)
    tracker.set_tags({"genre.stage": "trial"})
    tracker.log_params({"trial_number": trial_number} | {f"trial.{name}": value for name, value in chosen.items()})


def log_study_progress(
    tracker: Tracker, study: optuna.Study, trial_number: int, sampler_seed: int | None = None
) -> None:
    """After each trial: the best value so far and how many trials ended in each state; and the seed this
    invocation's sampler drew with (`sampler_seed`, which differs from `--seed` unless the invocation ran trial 0)."""
    if sampler_seed is not None:
        tracker.log_params({"sampler_seed": sampler_seed})  # the same value after every trial: MLflow accepts it
    states = [trial.state.name for trial in study.get_trials(deepcopy=False)]
    metrics: dict[str, float] = {
        f"trials_{state.lower()}": states.count(state) for state in ("COMPLETE", "PRUNED", "FAIL")
    }
    if "COMPLETE" in states:
        metrics["best_val_accuracy"] = study.best_value
    tracker.log_metrics(metrics, step=trial_number)


def log_study_result(tracker: Tracker, study: optuna.Study) -> str | None:
    """The best trial (value, params, the run holding its model) and the study's figures; returns that run id."""
    import warnings

    from optuna.visualization import matplotlib as plots

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
        tracker.log_metrics({"best_val_accuracy": best.value})
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
            log.info("no %s yet: %s", name, error)
            continue
        figure = np.ravel(axes)[0].figure
        figure.set_size_inches(9, 5.5)
        tracker.log_figure(figure, f"study/{name}")
    return best_run
