"""The baseline stage: a scikit-learn classifier on a prepared dataset's pixels or on a network's features, fitted
and scored in a run of its own. The stage reads the packs and keeps network features in the dataset's feature cache;
`genre.models.baselines` sees only arrays."""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genre import __version__
from genre.command_config import BaselineConfig
from genre.cover_model import log_cover_model
from genre.data.feature_cache import CACHE_FOLDER, FeatureCache
from genre.data.folds import all_covers, check_parts_fit, fold_parts, split_digest
from genre.data.pack import DatasetInfo, Pack, open_pack
from genre.errors import EXIT_OK, ConfigError
from genre.figures import confusion_matrix_figure
from genre.models.baselines import (
    FEATURE_FORMAT,
    BaselineResult,
    FeatureLayout,
    describe_pixels,
    fit_and_score,
    pixel_features,
    pixel_side,
)
from genre.models.feature_network import PIXELS, feature_network
from genre.models.features import network_describer
from genre.models.forest_arrays import forest_arrays
from genre.models.inputs import NetworkInput
from genre.predictions import CoverPredictions
from genre.runtime import usable_cores
from genre.stages.model_data import check_quantizable, quantization_covers
from genre.stages.run_facts import Staged, config_params, config_tags, dataset_facts, dataset_tags, log_packs
from genre.stages.scores import accuracies, balanced_metrics, log_fold_split, log_predictions
from genre.stages.startup import ensure_dataset
from genre.stages.train import example_input
from genre.tracking.tracker import Tracker, experiment_name, tracked_run

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")


@dataclass
class FittedBaseline:
    """A fitted baseline's scores and the covers (keys) of each split it scored, in the scores' order."""

    result: BaselineResult
    files: dict[str, list[str]]
    labels: dict[str, np.ndarray]

    @property
    def split_digest(self) -> str:
        return split_digest(self.files)


VIEWS = {"centre": (False,), "mirror": (False, True)}  # a view: whether the covers are mirrored


def feature_description(
    config: BaselineConfig, info: DatasetInfo, network: str, style: bool = False, mirror: bool = False
) -> dict[str, object]:
    """What one backbone's features depend on: the packs' content, the backbone and its weights, whether they carry
    style statistics and whether the covers are mirrored (the cache's key)."""
    weights: object = "pretrained" if config.pretrained else None
    if config.pretrained_params:
        path = Path(config.pretrained_params).expanduser()
        stat = path.stat() if path.exists() else None
        weights = {"file": str(path.resolve()), "bytes": stat.st_size if stat else None,
                   "modified": stat.st_mtime_ns if stat else None}  # fmt: skip
    packs = {key: value for key, value in info.pack_digests.items() if key.startswith(f"{config.variant}/")}
    described = {"packs": packs, "network": network, "weights": weights, "format": FEATURE_FORMAT}
    gram = {"gram": config.style_gram} if style and config.style_gram else {}
    return described | ({"style": True} if style else {}) | gram | ({"mirror": True} if mirror else {})


def backbone_features(
    config: BaselineConfig, network: str, packs: dict[str, Pack], cache: FeatureCache | None, style: bool, mirror: bool
) -> tuple[dict[str, np.ndarray], FeatureLayout | None, int]:
    """One backbone's features of each split in one view, from `cache` where it has them; their layout (with
    `style`), and how many splits were computed. The network is built only when something is missing."""
    describe = None

    def describer(side: int):
        nonlocal describe
        describe = describe or network_describer(config, network, side, style, mirror)
        return describe

    features: dict[str, np.ndarray] = {}
    computed = 0
    for split, pack in packs.items():

        def compute(pack: Pack = pack) -> np.ndarray:
            return describer(pack.images.shape[1])(pack.images)

        if cache is None:
            features[split], cached = compute(), False
        else:
            features[split], cached = cache.load_or_compute(config.variant, split, len(pack), compute)
        computed += not cached
    layout = None
    if style:
        noted = cache.read_note("layout") if cache is not None else None
        if describe is not None or noted is None:
            layout = describer(packs["train"].images.shape[1]).layout
            if cache is not None:
                cache.write_note("layout", layout.to_json())
        else:
            layout = FeatureLayout.from_json(noted)
    return features, layout, computed


def network_features(
    config: BaselineConfig, packs: dict[str, Pack], info: DatasetInfo, root: Path
) -> tuple[dict[str, np.ndarray], int]:
    """Each split's network features: per backbone, its pooled vector and the style statistics of its last
    `style_blocks` blocks, averaged over the views; the backbones side by side. Returns them and how many
    (backbone, view, split) matrices were computed rather than read from the dataset's feature cache."""
    last = config.last_blocks()
    style = last != 0
    computed, per_network = 0, []
    for network in config.networks:
        views = []
        for mirror in VIEWS[config.views]:
            description = feature_description(config, info, network, style, mirror)
            cache = FeatureCache(root, description) if config.cache_features else None
            features, layout, count = backbone_features(config, network, packs, cache, style, mirror)
            views.append(features)
            computed += count
        averaged = {split: np.mean([view[split] for view in views], axis=0, dtype=np.float32) for split in packs}
        if layout is not None:
            columns = layout.columns(len(layout.blocks) if last is None else last)
            averaged = {split: matrix[:, columns] for split, matrix in averaged.items()}
        per_network.append(averaged)
    return {split: np.concatenate([part[split] for part in per_network], axis=1) for split in packs}, computed


def describe_network_features(config: BaselineConfig, width: int) -> str:
    """What the classifier sees, in words: `efficientnet_lite0 features (1280)`,
    `efficientnet_lite0 + style statistics of every block, centre and mirror features (4896)`."""
    last = config.last_blocks()
    style = (
        ""
        if last == 0
        else " + style statistics of every block"
        if last is None
        else f" + style statistics of the last {last} blocks"
    )
    gram = f" and correlations of {config.style_gram} channel mixtures" if last != 0 and config.style_gram else ""
    views = ", centre and mirror" if config.views == "mirror" else ""
    return f"{' + '.join(config.networks)}{style}{gram}{views} features ({width})"


def split_features(
    config: BaselineConfig, packs: dict[str, Pack], info: DatasetInfo, root: Path
) -> tuple[dict[str, np.ndarray], str]:
    """Each split's feature matrix, and a description of the features.

    Network features are kept in the feature cache of the dataset at `root` when `config.cache_features`.
    """
    if config.features == "network":
        features, computed = network_features(config, packs, info, root)
        log.info("%s features: %d of %d matrices computed, the rest from %s/%s", config.network, computed,
                 len(packs) * len(config.networks) * len(VIEWS[config.views]), root, CACHE_FOLDER)  # fmt: skip
        return features, describe_network_features(config, features["train"].shape[1])
    side = pixel_side(config, packs["train"].images.shape[1])
    features = {split: pixel_features(pack.images, side, config.grayscale) for split, pack in packs.items()}
    return features, describe_pixels(side, config.grayscale)


def fit(config: BaselineConfig, workers: int, inner: bool = False) -> FittedBaseline:
    """Read the packs, make the features, fit on the training part and score every part (with `inner`, the
    training part by a cross-validation inside it too, near-copies kept together).

    The features are always made for the static split's packs (so the feature cache serves every fold); a fold's
    parts are then rows of them (`genre.data.folds`)."""
    root = Path(config.data)
    packs = {split: open_pack(root, config.variant, split) for split in SPLITS}
    features, described = split_features(config, packs, DatasetInfo.read(root), root)
    labels = {split: pack.labels for split, pack in packs.items()}
    files = {split: list(pack.files) for split, pack in packs.items()}
    covers = all_covers(root, config.variant) if config.folds or config.candidate_cs() or inner else None
    train_groups = covers.groups[: len(packs["train"])] if covers is not None else None  # pack order: train first
    if config.folds:
        everything = np.concatenate([features[split] for split in SPLITS])
        parts = fold_parts(covers, config)
        features = {split: everything[indices] for split, indices in parts.items()}
        labels = {split: covers.labels[indices] for split, indices in parts.items()}
        files = {split: [covers.files[i] for i in indices] for split, indices in parts.items()}
        train_groups = covers.groups[parts["train"]]
    result = fit_and_score(config, features, labels, packs["train"].genres, described, workers, train_groups, inner)
    return FittedBaseline(result, files, labels)


def run(
    config: BaselineConfig,
    experiment: str | None = None,
    tags: Mapping[str, str] | None = None,
    nested: bool = False,
    run_name: str | None = None,
    progress: bool = False,
    on_started: Callable[[Tracker], None] | None = None,
    inner: bool = False,
) -> Staged[BaselineConfig, BaselineResult]:
    """Fit and score a scikit-learn baseline in its own run; `on_started(tracker)` runs once the run is open, and
    `inner` also scores the training part by a cross-validation inside it (what a study maximises)."""
    ensure_dataset(config.data, progress)
    check_parts_fit(Path(config.data), config.variant, config)  # before the run opens
    check_quantizable(config)
    info = DatasetInfo.read(Path(config.data))
    workers = config.workers or usable_cores()
    name = None if nested else experiment_name(experiment, f"genre-{info.name}")
    tags = {"genre.stage": "baseline", **(tags or {})}
    with tracked_run(name, run_name or f"baseline-{config.model}", tags, nested=nested) as tracker:
        if on_started is not None:
            on_started(tracker)
        fitted = fit(config, workers, inner)
        log_baseline(tracker, config, fitted, info)
    return Staged(tracker.run_id, tracker.store, info, config, fitted.result)


def log_baseline(tracker: Tracker, config: BaselineConfig, fitted: FittedBaseline, info: DatasetInfo) -> None:
    """Params, accuracies (plain and per genre) per split, a confusion-matrix figure, the per-genre report and the
    per-cover predictions of the validation and test parts."""

    result = fitted.result
    facts = dataset_facts(info) | {
        "feature_set": result.features,  # not "features": `mlflow run` logs that -P parameter itself
        "genres": ",".join(info.genres),
        "genre_version": __version__,
        "split_digest": fitted.split_digest,
    }
    tracker.log_params(config_params(dataclasses.asdict(config)) | facts)
    tracker.set_tags(dataset_tags(info))  # the stage tag is the run's own: `baseline`, or `trial` in a study
    log_packs(tracker, info, config.data, config.variant, "training")
    if config.folds:
        log_fold_split(tracker, fitted.files)
    metrics = {f"{split}_accuracy": score.accuracy for split, score in result.scores.items()}
    for split, score in result.scores.items():
        metrics |= balanced_metrics(split, score.confusion, result.genres)
    metrics["fit_seconds"] = result.fit_seconds
    metrics |= {f"chosen_{name}": value for name, value in result.chosen.items()}  # e.g. chosen_logreg_c
    if result.inner is not None:
        metrics |= {"inner_balanced_accuracy": float(np.mean(result.inner)),
                    "inner_balanced_accuracy_std": float(np.std(result.inner))}  # fmt: skip
    tracker.log_metrics(metrics)
    for split in ("val", "test"):
        score = result.scores[split]
        title = f"{config.model} baseline, {split} {accuracies(score.accuracy, score.balanced_accuracy)}"
        tracker.log_figure(confusion_matrix_figure(score.confusion, result.genres, title), f"confusion_{split}.png")
        tracker.log_text(score.report, f"classification_report_{split}.txt")
        labels = fitted.labels[split]
        predictions = CoverPredictions(fitted.files[split], result.genres, labels, score.predicted, score.probabilities)
        log_predictions(tracker, split, predictions)
    if loggable_model(config):
        log_feature_model(tracker, config, result, info)


def loggable_model(config: BaselineConfig) -> bool:
    """Whether the baseline is logged as a cover model: every classifier on network features is (pixel baselines
    are the original study's floor, not models anyone serves)."""
    return config.features == "network"


def log_feature_model(tracker: Tracker, config: BaselineConfig, result: BaselineResult, info: DatasetInfo) -> None:
    """The fitted baseline as one network (`genre.models.feature_network`) logged as the run's `model`, a cover
    model like a trained network's: a linear classifier is folded into the network's last layer, a forest rides
    beside the features (`genre.models.forest_arrays`). The SVM's margins become probabilities through a
    temperature fitted on the validation covers (`svm_temperature`). A backbone not laid out as `features` then a
    Dense layer (GluonCV's ResNets) cannot be described so, and the run says so and logs none."""

    specs = [config.network_spec(name) for name in config.networks]
    forest = forest_arrays(result.classifier, len(result.genres)) if config.model == "rf" else None
    linear = None if forest is not None else result.classifier
    try:
        net = feature_network(
            specs,
            info.image_size,
            config.last_blocks(),
            config.views == "mirror",
            linear,
            len(result.genres),
            config.style_gram,
        )
    except ConfigError as error:
        log.warning("no model logged: %s", error)
        return
    temperature = result.chosen.get("svm_temperature", 1.0)
    network = NetworkInput(info.image_size, PIXELS.mean, PIXELS.std)
    logger = functools.partial(log_cover_model, net, result.genres, info.image_size, example_input(config),
                            name="model", network=network, temperature=temperature, forest=forest,
                            calibration=quantization_covers(config))  # fmt: skip
    tracker.log_model(logger)


def command(config: BaselineConfig, experiment: str | None, config_file: Path | None, progress: bool = False) -> int:
    """`genre baseline`: fit and score a baseline on a prepared dataset."""
    staged = run(config, experiment, config_tags(config_file), progress=progress)
    result: BaselineResult = staged.result
    scores = ", ".join(f"{split} {score.accuracy:.1%}" for split, score in result.scores.items())
    print(f"{config.model} baseline on {staged.info.name}/{config.variant} ({result.features}): {scores}")
    print(f"MLflow run {staged.run_id} at {staged.store}")
    return EXIT_OK
