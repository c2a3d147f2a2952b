"""What a cross-validated feature baseline costs: the features of every cover once, then each fold in seconds.

Usage, from the project root with the package importable::

    python benchmarks/cross_validation.py [--data data/prepared/covers-discogs-256] [--folds 5]
        [--experiment features-logreg-lite0-covers-discogs,features-style-lite0-covers-discogs]
        [--wait-idle SECONDS]

Each experiment is measured in turn in the same process: the plain probe (the pooled features, one view) is the
baseline the style probe (every block's statistics, two views, C by inner cross-validation) is read against.

The pack (prepared beforehand: `genre prepare --dataset covers-discogs`) is linked into a temporary folder, so its
feature cache starts empty there and the real one is untouched. Then, in one process, with no tracking store:

- fold 1: `genre.stages.baseline.fit` with `--folds K --fold 0`: extracts the backbone's features for every cover
  of the static packs (into the temporary cache; each backbone and view once) and fits the classifier on the fold
  (with `logreg_cs`, its inner cross-validation too);
- folds 2..K: the same with `--fold k`; each must extract nothing (the script fails if one does);
- the static split from the same cache: the baseline these fold fits compare with (one fit on 80% of the covers).

"others" is how many cores the machine's other processes took during a row (from /proc/stat): trust a time only
when it is near 0. Progress goes to stderr, the table to stdout.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from machine import cpu_model, load_average, machine_busy_seconds, markdown_table, ram_gib, wait_until_idle

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))

from genre.command_config import BaselineConfig  # noqa: E402
from genre.config import build, read_config_file  # noqa: E402
from genre.stages import baseline  # noqa: E402


def linked_pack(source: Path, into: Path) -> Path:
    """`into` holding links to `source`'s dataset files and packs, and no feature cache."""
    into.mkdir(parents=True)
    for name in ("dataset.json", "split.csv", "full", "dev"):
        (into / name).symlink_to((source / name).resolve())
    return into


def timed(work) -> tuple[object, float, float]:
    """`work()`'s result, its wall seconds and the cores other processes used meanwhile."""
    busy, started = machine_busy_seconds(), time.perf_counter()
    cpu = time.process_time()
    result = work()
    wall = time.perf_counter() - started
    others = max(0.0, (machine_busy_seconds() - busy) - (time.process_time() - cpu)) / wall
    return result, wall, others


def measure(config: BaselineConfig, source: Path, folds: int) -> tuple[list[list[str]], int] | None:
    """The table rows of one experiment (every fold, then the static split) in a fresh feature cache, and the
    covers; None when a fold after the first extracted features again."""
    rows: list[list[str]] = []
    extracted: list[int] = []
    per_cover = len(config.networks) * len(baseline.VIEWS[config.views])  # extractions of one cover's features
    with tempfile.TemporaryDirectory() as folder:
        root = linked_pack(source, Path(folder) / source.name)
        original = baseline.network_describer

        class Counted:
            """The describer, counting the covers it describes (its `layout` says what its columns are)."""

            def __init__(self, describe) -> None:
                self.describe = describe
                self.layout = getattr(describe, "layout", None)

            def __call__(self, images):
                extracted.append(len(images))
                return self.describe(images)

        def counting(*args, **kwargs):
            return Counted(original(*args, **kwargs))

        baseline.network_describer = counting
        covers = 0
        try:
            for fold in range(folds):
                before = sum(extracted)
                settings = dataclasses.replace(config, data=str(root), folds=folds, fold=fold)
                fitted, wall, others = timed(lambda s=settings: baseline.fit(s, workers=os.cpu_count() or 1))
                new = (sum(extracted) - before) // per_cover
                covers = covers or sum(len(files) for files in fitted.files.values())
                test = fitted.result.scores["test"]
                what = f"fold {fold + 1}/{folds}" + (" (extracts every cover's features)" if new else " (cached)")
                rows.append([what, str(new), f"{wall:.1f}", f"{test.accuracy:.1%}", f"{test.balanced_accuracy:.1%}",
                             f"{others:.2f}"])  # fmt: skip
                print(f"{config.network} {what}: {wall:.1f} s", file=sys.stderr)
                if fold and new:
                    print(f"fold {fold + 1} extracted {new} covers' features again", file=sys.stderr)
                    return None
            settings = dataclasses.replace(config, data=str(root))
            fitted, wall, others = timed(lambda: baseline.fit(settings, workers=os.cpu_count() or 1))
            test = fitted.result.scores["test"]
            rows.append(["static split (cached)", "0", f"{wall:.1f}", f"{test.accuracy:.1%}",
                         f"{test.balanced_accuracy:.1%}", f"{others:.2f}"])  # fmt: skip
        finally:
            baseline.network_describer = original
    return rows, covers


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/prepared/covers-discogs-256")
    parser.add_argument(
        "--experiment",
        default="features-logreg-lite0-covers-discogs,features-style-lite0-covers-discogs",
        help="baseline experiments, comma-separated: the first is the baseline the others are read against",
    )
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--wait-idle", type=float, default=0.0, help="wait up to this many seconds for a quiet machine")
    args = parser.parse_args()
    source = Path(args.data)
    if not (source / "dataset.json").exists():
        print(f"{source} is not prepared; run `genre prepare --dataset covers-discogs` first", file=sys.stderr)
        return 2
    if args.wait_idle:
        wait_until_idle(args.wait_idle)
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores, {ram_gib()} RAM, {platform.platform()}; "
          f"load {load_average()}")  # fmt: skip
    for name in [part.strip() for part in args.experiment.split(",") if part.strip()]:
        file = PROJECT / "experiments" / "baselines" / f"{name}.yaml"
        config = build(BaselineConfig, (str(file), read_config_file(file)))
        measured = measure(config, source, args.folds)
        if measured is None:
            return 1
        rows, covers = measured
        print()
        print(f"{name} on {source} ({covers} covers), {args.folds} folds")
        print()
        header = ["run", "covers extracted", "wall s", "test accuracy", "test balanced accuracy", "others"]
        print(markdown_table(header, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
