"""The prepare stage: a dataset (downloaded covers, a folder of images, or the bundled digits) split and packed,
in a run that records its params, counts, the dataset input, the split file, the report and a figure of samples."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from genre import __version__
from genre.data.config import PrepareConfig
from genre.data.prepare import PreparedDataset, check_output_folders, prepare
from genre.data.problems import summarise
from genre.errors import EXIT_INCOMPLETE, EXIT_OK
from genre.figures import sample_grid
from genre.stages.run_facts import config_params, config_tags, dataset_tags
from genre.stages.startup import sigterm_as_interrupt
from genre.tracking.tracker import Tracker, experiment_name, tracked_run


def run(
    config: PrepareConfig, experiment: str | None = None, tags: dict[str, str] | None = None, progress: bool = False
) -> tuple[str, str, PreparedDataset]:
    """Prepare the dataset in a run of its own; returns the run id, its store and what was prepared."""
    check_output_folders(config)  # before a run opens that could only fail
    tags = {"genre.stage": "prepare", **(tags or {})}
    name = experiment_name(experiment, f"genre-{config.dataset_name}")
    with sigterm_as_interrupt(), tracked_run(name, "prepare", tags) as tracker:
        prepared = prepare(config, progress=progress)
        log_prepared(tracker, config, prepared)
    return tracker.run_id, tracker.store, prepared


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
    metrics.update(near_copy_groups=len(info.near_copies), near_copy_covers=sum(map(len, info.near_copies)))
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
    tracker.set_tags({"genre.stage": "prepare", **dataset_tags(info)})
    tracker.log_artifact(prepared.split_file, "dataset")
    tracker.log_artifact(prepared.report_file, "dataset")
    tracker.log_artifact(prepared.near_copies_file, "dataset")
    tracker.log_artifact(Path(prepared.root) / "dataset.json", "dataset")
    tracker.log_figure(sample_grid(prepared.sample_images), "samples.png")


def command(config: PrepareConfig, experiment: str | None, config_file: Path | None, progress: bool) -> int:
    """`genre prepare`: exit 0 when everything was packed, 1 when some covers failed to download."""
    run_id, store, prepared = run(config, experiment, config_tags(config_file), progress)
    counts = prepared.info.counts
    print(
        f"prepared {prepared.info.name}: {sum(counts['full'].values())} images of {len(prepared.info.genres)} genres "
        f"at {prepared.info.image_size}px in {prepared.root} (full {counts['full']}, dev {counts['dev']}); "
        f"digest {prepared.info.digest}; {prepared.seconds:.1f}s"
    )
    groups = prepared.info.near_copies
    if groups:
        print(
            f"{len(groups)} groups of near-copies ({sum(map(len, groups))} covers within "
            f"{prepared.info.near_copy_bits} bits), each kept on one side of every split: {prepared.near_copies_file}"
        )
    if prepared.problems:
        print(summarise(prepared.problems))
        print(f"every left-out item and its reason: {prepared.report_file}")
    print(f"MLflow run {run_id} at {store}")
    if prepared.download_failed:
        failed = len(prepared.download.failures) if prepared.download else 0
        print(f"{failed} cover(s) failed to download; rerun the same command to retry them (finished ones are kept)")
        return EXIT_INCOMPLETE
    return EXIT_OK
