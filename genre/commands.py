"""One function per `genre` command: run the stage inside a tracked run and say what happened.

These are the only places that join a stage to tracking; `cli.py` only turns arguments into configs.
"""

from __future__ import annotations

import logging
from pathlib import Path

from genre.data.pack import DatasetInfo
from genre.data.prepare import PrepareConfig, prepare, usable_cores
from genre.data.problems import summarise
from genre.models.baselines import BaselineConfig, run_baseline
from genre.tracking.reports import log_baseline, log_prepared
from genre.tracking.store import mask_password, tracking_uri
from genre.tracking.tracker import experiment_name, tracked_run

log = logging.getLogger(__name__)
EXIT_OK, EXIT_INCOMPLETE = 0, 1


def _config_tags(config_file: Path | None) -> dict[str, str]:
    return {"genre.config_file": str(config_file)} if config_file else {}


def prepare_command(config: PrepareConfig, experiment: str | None, config_file: Path | None, progress: bool) -> int:
    """`genre prepare`: exit 0 when everything was packed, 1 when some covers failed to download."""
    tags = {"genre.stage": "prepare", **_config_tags(config_file)}
    with tracked_run(experiment_name(experiment, f"genre-{config.dataset_name}"), "prepare", tags) as tracker:
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
    """`genre baseline`: fit and score a pixel baseline on a prepared dataset."""
    info = DatasetInfo.read(Path(config.data))
    tags = {"genre.stage": "baseline", **_config_tags(config_file)}
    workers = config.workers or usable_cores()
    with tracked_run(experiment_name(experiment, f"genre-{info.name}"), f"baseline-{config.model}", tags) as tracker:
        result = run_baseline(config, workers)
        log_baseline(tracker, config, result, info)
    scores = ", ".join(f"{split} {score.accuracy:.1%}" for split, score in result.scores.items())
    print(f"{config.model} baseline on {info.name}/{config.variant} ({result.pixels}px features): {scores}")
    print(f"MLflow run {tracker.run_id} at {mask_password(tracking_uri())}")
    return EXIT_OK
