"""The `genre` command line: argument parsing only; each command calls one function of `genre.commands`."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from genre import __version__, config
from genre.data.prepare import PrepareConfig
from genre.errors import GenreError
from genre.models.baselines import BaselineConfig

EXIT_ERROR, EXIT_INTERRUPTED = 2, 130


def _common(parser: argparse.ArgumentParser, named: str, folder: str) -> None:
    """`--<named> NAME|FILE` picks a YAML of settings in experiments/<folder>; flags override it."""
    parser.add_argument(
        f"--{named}",
        dest="named_config",
        metavar="NAME|FILE",
        help=f"a named {named} in experiments/{folder + '/' if folder else ''} or a YAML file of settings "
        "(flags override it)",
    )
    parser.set_defaults(config_folder=folder)
    parser.add_argument(
        "--mlflow-experiment",
        metavar="NAME",
        help="MLflow experiment (default: MLFLOW_EXPERIMENT_NAME, else genre-<dataset>)",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars, warnings only")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="genre",
        description="Infer a music release's genre from its album cover. Every command logs an MLflow run "
        "(MLFLOW_TRACKING_URI, default sqlite:///mlflow.db).",
    )
    parser.add_argument("--version", action="version", version=f"genre {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    prepare = commands.add_parser(
        "prepare",
        help="download/decode/validate images, split them and pack them for training",
        description="Pack a dataset: the bundled digits (default), a folder ROOT/<genre>/<file> (--folder), "
        "or the covers of a manifest of 'URL<TAB>genre/file.jpg' lines (--manifest data/dataset-links.tsv).",
    )
    _common(prepare, "dataset", "datasets")
    config.add_arguments(prepare, PrepareConfig, "dataset")
    prepare.set_defaults(handler=_prepare)

    baseline = commands.add_parser(
        "baseline",
        help="the original work's random forest / linear SVM on raw pixels",
        description="Fit a scikit-learn baseline on a prepared dataset and log its accuracy and confusion matrix.",
    )
    _common(baseline, "experiment", "baselines")
    config.add_arguments(baseline, BaselineConfig, "baseline")
    baseline.set_defaults(handler=_baseline)
    return parser


def _prepare(args: argparse.Namespace) -> int:
    from genre.commands import prepare_command

    settings, path = config.load(PrepareConfig, args, args.config_folder)
    return prepare_command(settings, args.mlflow_experiment, path, progress=not args.quiet)


def _baseline(args: argparse.Namespace) -> int:
    from genre.commands import baseline_command

    settings, path = config.load(BaselineConfig, args, args.config_folder)
    return baseline_command(settings, args.mlflow_experiment, path)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return args.handler(args)
    except GenreError as error:
        print(f"genre {args.command}: error: {error}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"genre {args.command}: interrupted; finished work is kept, rerun to continue", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
