"""The baseline stage: a scikit-learn classifier on a prepared dataset's pixels or on a network's features, fitted
and scored in a run of its own. The stage reads the packs and keeps network features in the dataset's feature cache;
`genre.models.baselines` sees only arrays."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genre import __version__
from genre.config import setting
from genre.data.choice import DatasetChoice
from genre.data.feature_cache import FeatureCache
from genre.data.folds import FoldChoice, all_covers, check_folds_fit, fold_parts, split_digest
from genre.data.pack import DatasetInfo, Pack, open_pack
from genre.models.baselines import (
    FEATURE_FORMAT,
    BaselineResult,
    BaselineSpec,
    describe_pixels,
    fit_and_score,
    network_describer,
    pixel_features,
    pixel_side,
)
from genre.predictions import CoverPredictions
from genre.runtime import usable_cores
from genre.stages.common import (
    EXIT_OK,
    Staged,
    accuracies,
    balanced_metrics,
    config_params,
    config_tags,
    dataset_facts,
    dataset_tags,
    ensure_dataset,
    log_fold_split,
    log_packs,
    log_predictions,
)
from genre.tracking.tracker import Tracker, experiment_name, tracked_run

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class BaselineConfig(BaselineSpec, FoldChoice, DatasetChoice):
    """A baseline: which dataset and which part of it (the static split or a fold), which classifier, and what it
    sees (shrunk pixels or a network's features)."""

    cache_features: bool = setting(
        True, "features=network: keep the features in <data>/features/ so the next baseline reuses them"
    )

    def __post_init__(self) -> None:
        BaselineSpec.__post_init__(self)
        FoldChoice.__post_init__(self)


@dataclass
class FittedBaseline:
    """A fitted baseline's scores and the covers (keys) of each split it scored, in the scores' order."""

    result: BaselineResult
    files: dict[str, list[str]]
    labels: dict[str, np.ndarray]

    @property
    def split_digest(self) -> str:
        return split_digest(self.files)


def feature_description(config: BaselineConfig, info: DatasetInfo) -> dict[str, object]:
    """What network features depend on: the packs' content, the backbone and its weights (the cache's key)."""
    weights: object = "pretrained" if config.pretrained else None
    if config.pretrained_params:
        path = Path(config.pretrained_params).expanduser()
        stat = path.stat() if path.exists() else None
        weights = {"file": str(path.resolve()), "bytes": stat.st_size if stat else None,
                   "modified": stat.st_mtime_ns if stat else None}  # fmt: skip
    packs = {key: value for key, value in info.pack_digests.items() if key.startswith(f"{config.variant}/")}
    return {"packs": packs, "network": config.network.strip().lower(), "weights": weights, "format": FEATURE_FORMAT}


def network_features(
    config: BaselineConfig, packs: dict[str, Pack], cache: FeatureCache | None
) -> tuple[dict[str, np.ndarray], int]:
    """Each split's network features, from `cache` where it has them; returns them and how many were computed.

    The network is built only when some split is missing from the cache.
    """
    describe = None
    features: dict[str, np.ndarray] = {}
    computed = 0
    for split, pack in packs.items():

        def compute(pack: Pack = pack) -> np.ndarray:
            nonlocal describe
            describe = describe or network_describer(config, pack.images.shape[1])
            return describe(pack.images)

        if cache is None:
            features[split], cached = compute(), False
        else:
            features[split], cached = cache.load_or_compute(config.variant, split, len(pack), compute)
        computed += not cached
    return features, computed


def split_features(
    config: BaselineConfig, packs: dict[str, Pack], info: DatasetInfo, root: Path
) -> tuple[dict[str, np.ndarray], str]:
    """Each split's feature matrix, and a description of the features.

    Network features are kept in the feature cache of the dataset at `root` when `config.cache_features`.
    """
    if config.features == "network":
        cache = FeatureCache(root, feature_description(config, info)) if config.cache_features else None
        features, computed = network_features(config, packs, cache)
        if cache is not None:
            log.info("%s features: %d of %d splits computed, the rest from %s", config.network, computed,
                     len(packs), cache.folder)  # fmt: skip
        return features, f"{config.network} features ({features['train'].shape[1]})"
    side = pixel_side(config, packs["train"].images.shape[1])
    features = {split: pixel_features(pack.images, side, config.grayscale) for split, pack in packs.items()}
    return features, describe_pixels(side, config.grayscale)


def fit(config: BaselineConfig, workers: int) -> FittedBaseline:
    """Read the packs, make the features, fit on the training part and score every part.

    The features are always made for the static split's packs (so the feature cache serves every fold); a fold's
    parts are then rows of them (`genre.data.folds`)."""
    root = Path(config.data)
    packs = {split: open_pack(root, config.variant, split) for split in SPLITS}
    features, described = split_features(config, packs, DatasetInfo.read(root), root)
    labels = {split: pack.labels for split, pack in packs.items()}
    files = {split: list(pack.files) for split, pack in packs.items()}
    if config.folds:
        covers = all_covers(root, config.variant)
        everything = np.concatenate([features[split] for split in SPLITS])
        parts = fold_parts(covers, config)
        features = {split: everything[indices] for split, indices in parts.items()}
        labels = {split: covers.labels[indices] for split, indices in parts.items()}
        files = {split: [covers.files[i] for i in indices] for split, indices in parts.items()}
    result = fit_and_score(config, features, labels, packs["train"].genres, described, workers)
    return FittedBaseline(result, files, labels)


def run(
    config: BaselineConfig,
    experiment: str | None = None,
    tags: Mapping[str, str] | None = None,
    nested: bool = False,
    run_name: str | None = None,
    progress: bool = False,
) -> Staged:
    """Fit and score a scikit-learn baseline in its own run."""
    ensure_dataset(config.data, progress)
    check_folds_fit(Path(config.data), config.variant, config)  # before the run opens
    info = DatasetInfo.read(Path(config.data))
    workers = config.workers or usable_cores()
    name = None if nested else experiment_name(experiment, f"genre-{info.name}")
    tags = {"genre.stage": "baseline", **(tags or {})}
    with tracked_run(name, run_name or f"baseline-{config.model}", tags, nested=nested) as tracker:
        fitted = fit(config, workers)
        log_baseline(tracker, config, fitted, info)
    return Staged(tracker.run_id, tracker.store, info, config, fitted.result)


def log_baseline(tracker: Tracker, config: BaselineConfig, fitted: FittedBaseline, info: DatasetInfo) -> None:
    """Params, accuracies (plain and per genre) per split, a confusion-matrix figure, the per-genre report and the
    per-cover predictions of the validation and test parts."""
    from genre.figures import confusion_matrix_figure  # matplotlib: imported when a figure is made

    result = fitted.result
    facts = dataset_facts(info) | {
        "feature_set": result.features,  # not "features": `mlflow run` logs that -P parameter itself
        "genres": ",".join(info.genres),
        "genre_version": __version__,
        "split_digest": fitted.split_digest,
    }
    tracker.log_params(config_params(dataclasses.asdict(config)) | facts)
    tracker.set_tags({"genre.stage": "baseline", **dataset_tags(info)})
    log_packs(tracker, info, config.data, config.variant, "training")
    if config.folds:
        log_fold_split(tracker, fitted.files)
    metrics = {f"{split}_accuracy": score.accuracy for split, score in result.scores.items()}
    for split, score in result.scores.items():
        metrics |= balanced_metrics(split, score.confusion, result.genres)
    metrics["fit_seconds"] = result.fit_seconds
    tracker.log_metrics(metrics)
    for split in ("val", "test"):
        score = result.scores[split]
        title = f"{config.model} baseline, {split} {accuracies(score.accuracy, score.balanced_accuracy)}"
        tracker.log_figure(confusion_matrix_figure(score.confusion, result.genres, title), f"confusion_{split}.png")
        tracker.log_text(score.report, f"classification_report_{split}.txt")
        labels = fitted.labels[split]
        predictions = CoverPredictions(fitted.files[split], result.genres, labels, score.predicted, score.probabilities)
        log_predictions(tracker, split, predictions)


def command(config: BaselineConfig, experiment: str | None, config_file: Path | None, progress: bool = False) -> int:
    """`genre baseline`: fit and score a baseline on a prepared dataset."""
    staged = run(config, experiment, config_tags(config_file), progress=progress)
    result: BaselineResult = staged.result
    scores = ", ".join(f"{split} {score.accuracy:.1%}" for split, score in result.scores.items())
    print(f"{config.model} baseline on {staged.info.name}/{config.variant} ({result.features}): {scores}")
    print(f"MLflow run {staged.run_id} at {staged.store}")
    return EXIT_OK
