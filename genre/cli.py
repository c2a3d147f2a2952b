"""The `genre` command line: argument parsing only. `COMMANDS` is the table of commands: each one's name, config
dataclass (its flags, `genre.config.add_arguments`), handler (a function of `genre.commands`) and help. The flags
several commands share are added once, in `_shared`.

To list every flag, this imports only the config dataclasses (`genre.command_config` and each part's `config`
module), which import no MXNet, MLflow or Optuna: `genre --help` and `genre <command> --help` answer at once. The
handler's module, and with it the stage and its libraries, is imported once the arguments are parsed.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from genre import __version__, command_config, config
from genre.command_config import PREDICTIONS_EXPERIMENT
from genre.credentials import keep_password_off_command_line
from genre.data.config import PrepareConfig
from genre.data.transforms import AugmentSpec
from genre.disk import disk_fault
from genre.errors import EXIT_ERROR, EXIT_INTERRUPTED, GenreError, StoreUnreachable
from genre.launch.config import LaunchConfig
from genre.models.spec import NetworkSpec
from genre.tracking.config import RegisterConfig, RunsConfig, ServeConfig, ServerConfig
from genre.tracking.runs import params_with_passwords
from genre.tracking.store import limit_http_retries, quiet_full_database, quiet_mlflow, tracking_failure
from genre.training.config import CleanConfig, TrainConfig
from genre.tuning.config import TuneConfig

QUIET_RUN = "no progress bars or epoch lines, warnings only"
QUIET = "warnings only"


@dataclass(frozen=True)
class Argument:
    """A positional argument that is not a setting (the covers to predict, a worker's command)."""

    name: str
    nargs: str
    metavar: str
    help: str
    dest: str | None = None


@dataclass(frozen=True)
class Command:
    """One `genre` command. `handler` names the function of `genre.commands` that runs it. `named` is the flag that
    picks a YAML of settings and the folder of experiments/ it looks in (`--dataset NAME` in datasets/); `experiment`
    the default `--mlflow-experiment` shows, for a command that logs runs (None: no such flag). `positional` names
    settings given as positional arguments; `arguments` are positional arguments that are not settings."""

    name: str
    config: type
    handler: str
    help: str | None
    description: str | None = None
    named: tuple[str, str] | None = None
    experiment: str | None = None
    positional: tuple[str, ...] = ()
    arguments: tuple[Argument, ...] = ()
    groups: tuple[tuple[type, str], ...] = ()  # parts of `config` listed as groups of their own: (dataclass, title)
    title: str = "settings"


COMMANDS: tuple[Command, ...] = (
    Command(
        "prepare",
        PrepareConfig,
        "prepare",
        "download/decode/validate images, split them and pack them for training",
        "Pack a dataset: the bundled digits (default), a folder ROOT/<genre>/<file> (--folder), or the covers of a "
        "manifest of 'URL<TAB>genre/file.jpg' lines (--manifest data/dataset-links.tsv).",
        named=("dataset", "datasets"),
        experiment="genre-<dataset>",
        title="dataset",
    ),
    Command(
        "baseline",
        command_config.BaselineConfig,
        "baseline",
        "the original work's random forest / linear SVM on raw pixels",
        "Fit a scikit-learn baseline on a prepared dataset and log its accuracy and confusion matrix.",
        named=("experiment", "baselines"),
        experiment="genre-<dataset>",
        title="baseline",
    ),
    Command(
        "train",
        TrainConfig,
        "train",
        "train an MXNet/Gluon network (mlp, convnet or a GluonCV zoo model) and log it to MLflow",
        "Train on a prepared dataset (the bundled digits by default, prepared on first use), a chunk at a time, on the "
        "CPU or --gpus; checkpoint every epoch; log metrics, reports and an mlflow.pyfunc model. On covers (any --data "
        "but the digits) with no --experiment, the settings start from the cover recipe measured best, which it names "
        "(docs/training.md); flags override it.",
        named=("experiment", ""),
        experiment="genre-<dataset>",
        groups=((NetworkSpec, "network"), (AugmentSpec, "augmentation")),
        title="training",
    ),
    Command(
        "evaluate",
        command_config.EvaluateConfig,
        "evaluate",
        "re-evaluate a logged model on a split and log the report",
        "Evaluate an mlflow.pyfunc cover model (runs:/ID/model, models:/NAME@ALIAS) on a split.",
        experiment="genre-<dataset>",
        title="evaluation",
    ),
    Command(
        "interpret",
        command_config.InterpretConfig,
        "interpret",
        "a logged model's most confused genres and its calibration (ECE), logged into the model's run",
        "Predict a split with an mlflow.pyfunc cover model and log, under interpret/ in the model's own run "
        "(runs:/ID/model; a new run for any other URI), the most confused genre pairs, the confusion matrix normalised "
        "per true genre, a reliability diagram and the expected calibration error (docs/interpret.md).",
        experiment="genre-<dataset>; unused when logging into the model's run",
        title="interpretation",
    ),
    Command(
        "tune",
        TuneConfig,
        "tune",
        "an Optuna study over a search space: pruned trials as nested MLflow runs",
        "Search training (or feature-baseline) settings with Optuna. Training trials run the training code, report "
        "validation accuracy every epoch and are pruned when they lag; a baseline space's trials (stage: baseline) "
        "are scored by a cross-validation inside the training part. The study lives in an RDB (SQLite by default, "
        "PostgreSQL to share it between workers); the same --study name continues it.",
        experiment="genre-<dataset>",
        title="study",
    ),
    Command(
        "suite",
        command_config.SuiteConfig,
        "suite",
        "run a catalogue of experiments x seeds as runs of one MLflow experiment; resumable",
        "Run experiments (names in experiments/ and experiments/baselines/), each with every seed, as child runs of "
        "one suite run. Finished runs with the same settings and data are skipped and killed network runs resume from "
        "their checkpoint, so rerunning the command finishes an interrupted suite. With no names, runs the suite "
        f"--suite (default: {command_config.DEFAULT_SUITE}, the bundled-data suite).",
        named=("suite", "suites"),
        experiment="genre-suite-<name>",
        arguments=(Argument("names", "*", "EXPERIMENT", "experiments to run (instead of the suite's)", "experiments"),),
        title="suite",
    ),
    Command(
        "report",
        command_config.ReportConfig,
        "report",
        "the results table and figures of a suite, or of any experiment's models (Markdown or HTML)",
        "Read the finished runs of a suite's MLflow experiment, or the train, trial and baseline runs of any other "
        "(--experiment genre-digits), back from MLflow and write the results table (mean +- std over seeds, best "
        "first) with figures; the page is also logged as a run's artifacts.",
        title="report",
    ),
    Command(
        "compare",
        command_config.CompareConfig,
        "compare",
        "is model B better than model A? paired on the test covers both scored, with 95%% intervals",
        "Compare two models on the test covers both scored: each a run id or an experiment name (a suite's), whose "
        "runs (seeds; folds and repeats of a cross-validated suite) are pooled. Prints B minus A in accuracy and "
        "balanced accuracy with a paired stratified bootstrap interval and McNemar's exact p, as sentences to quote; "
        "runs that logged no per-cover predictions are compared unpaired, by their logged metrics, and the command "
        "says so.",
        positional=("a", "b"),
        title="comparison",
    ),
    Command(
        "server",
        ServerConfig,
        "server",
        "start an MLflow tracking server (SQLite by default, PostgreSQL for a team)",
        "Run `mlflow server` with the project's defaults: SQLite backend, proxied artifacts, bound to 127.0.0.1; one "
        "line says where the UI is once it answers, and Ctrl-C stops every process of it. Point every command at it "
        "with MLFLOW_TRACKING_URI=http://HOST:PORT.",
        title="server",
    ),
    Command(
        "serve",
        ServeConfig,
        "serve",
        "serve a logged model over HTTP (mlflow models serve, from any shell)",
        "Run `mlflow models serve` on a cover model in this environment (on 127.0.0.1 unless --host), with the "
        "environment's scripts first on PATH so that MLflow finds uvicorn even when the venv is not activated. POST "
        "covers as base64 to /invocations (docs/serving.md).",
        title="serving",
    ),
    Command(
        "register",
        RegisterConfig,
        "register",
        "register a run's model in the MLflow model registry and point an alias at it",
        title="registry",
    ),
    Command(
        "predict",
        command_config.PredictConfig,
        "predict",
        "the genres of covers in files and folders: printed, or a CSV (--output)",
        "Predict the genre of each cover in the files and folders given (a folder's .jpg, .png, ... files, "
        "recursively) with a logged model, a batch at a time, the covers decoded in worker processes. Prints each "
        "cover's top genres, or writes a CSV (path, genre, p_<genre>...). A file that is not an image is listed with "
        "the reason and the rest go on (exit status 1). --log-run also logs the CSV in an MLflow run, as `mlflow run . "
        "-e predict` does.",
        experiment=f"{PREDICTIONS_EXPERIMENT}; used with --log-run",
        arguments=(Argument("inputs", "+", "COVER_OR_FOLDER", "image files and folders of them"),),
        title="prediction",
    ),
    Command(
        "runs",
        RunsConfig,
        "list_runs",
        "list RUNNING runs and whether their process still runs; end the stale ones KILLED",
        "A run whose process was killed (SIGKILL, out of memory, a reboot) stays RUNNING in MLflow. Each run records "
        "its host and process; this lists the RUNNING runs, says which of them no longer have a process, and with "
        "--end marks those KILLED with a tag saying why. Runs owned on another host are only ended with --older-than.",
        title="runs",
    ),
    Command(
        "clean",
        CleanConfig,
        "clean",
        "remove the checkpoints of FINISHED runs (never those --resume needs)",
        "Every epoch of a training run is checkpointed in <checkpoint dir>/<run id>/; a finished run keeps only its "
        "best and last parameters there. This asks the tracking store which runs ended FINISHED and removes their "
        "folders; those of RUNNING, KILLED and FAILED runs (which `genre train --resume` continues) and of runs the "
        "store does not hold are kept.",
        title="checkpoints",
    ),
    Command(
        "demo-end",  # no help: not listed; the last step of `make demo`
        command_config.DemoEndConfig,
        "demo_end",
        None,
        "What `make demo` prints at its end: the predict command for the model its train run logged, with a real "
        "image of the dataset, and the MLflow UI address of the experiment.",
        title="demo",
    ),
    Command(
        "launch",
        LaunchConfig,
        "launch",
        "run distributed training: a scheduler, servers and workers, here or over ssh",
        "Start MXNet's parameter-server job (scheduler, --servers, --workers) on this machine or on the --hosts over "
        "ssh; each worker runs the command after --, e.g. `genre launch --workers 2 --servers 1 -- genre train "
        "--kvstore dist_sync`. Output is prefixed with each role; when one role dies, all are stopped.",
        # not `command`: that names the genre command in error messages
        arguments=(Argument("worker_command", argparse.REMAINDER, "-- COMMAND", "what each worker runs"),),
        title="job",
    ),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="genre",
        description="Infer a music release's genre from its album cover. Every command logs an MLflow run "
        "(MLFLOW_TRACKING_URI, default sqlite:///mlflow.db).",
    )
    parser.add_argument("--version", action="version", version=f"genre {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        shown = {"help": command.help} if command.help is not None else {}
        sub = commands.add_parser(command.name, description=command.description, **shown)
        for argument in command.arguments:  # a positional `dest` is its name; one naming a setting is unset if empty
            unset = {"default": argparse.SUPPRESS} if argument.dest else {}
            sub.add_argument(argument.dest or argument.name, nargs=argument.nargs, metavar=argument.metavar,
                             help=argument.help, **unset)  # fmt: skip
        groups = tuple(group for group, _ in command.groups)
        config.add_arguments(sub, command.config, command.title, exclude=groups, positional=command.positional)
        for group, title in command.groups:
            config.add_arguments(sub, group, title)
        _shared(sub, command)
        sub.set_defaults(command_entry=command)
    return parser


def _shared(parser: argparse.ArgumentParser, command: Command) -> None:
    """The flags several commands share: `--<named> NAME|FILE` picks a YAML of settings in experiments/<folder>
    (flags override it), `--mlflow-experiment` where the command logs runs, and `-q`."""
    if command.named:
        named, folder = command.named
        parser.add_argument(
            f"--{named}",
            dest="named_config",
            metavar="NAME|FILE",
            help=f"a named {named} in experiments/{folder + '/' if folder else ''} or a YAML file of settings "
            "(flags override it)",
        )
    if command.experiment is not None:
        parser.add_argument(
            "--mlflow-experiment",
            metavar="NAME",
            help=f"MLflow experiment (default: MLFLOW_EXPERIMENT_NAME, else {command.experiment})",
        )
    quiet = QUIET_RUN if command.experiment is not None else QUIET
    parser.add_argument("-q", "--quiet", action="store_true", help=quiet)


def _call(args: argparse.Namespace) -> int:
    """Turn the flags (and the named config) into the command's settings, then run its handler."""
    from genre import commands  # the handlers (and the launcher, PIL, ...): loaded once a command runs, not for --help

    command: Command = args.command_entry
    folder = command.named[1] if command.named else ""
    flags = config.flag_values(args, command.config)
    settings, path = config.resolve(command.config, getattr(args, "named_config", None), folder, flags)
    line = commands.CommandLine(
        experiment=getattr(args, "mlflow_experiment", None),
        config_file=path,
        progress=not args.quiet,
        given=flags,
        arguments={argument.name: getattr(args, argument.name, None) for argument in command.arguments},
    )
    return getattr(commands, command.handler)(settings, line)


def main(argv: Sequence[str] | None = None) -> int:
    name = next((arg for arg in (sys.argv[1:] if argv is None else argv) if not arg.startswith("-")), "")
    try:
        if argv is None:  # this process's own arguments, which `ps` shows: a database password leaves them first
            keep_password_off_command_line(name, params_with_passwords)
        args = build_parser().parse_args(argv)
        name = args.command
        _quiet_libraries(args.quiet)
        return _call(args)
    except (GenreError, StoreUnreachable) as error:
        print(f"genre {name}: error: {error}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"genre {name}: interrupted; finished work is kept, rerun to continue", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:
        refused = tracking_failure(error)  # an MLflow call no stage turned into an error of ours
        if full := disk_fault(error):  # a full or read-only disk no stage expected (SQLite full is not "unreachable")
            refused = f"{full}; free some space (or make it writable) and rerun: finished work is kept"
        if refused is None:
            raise
        print(f"genre {name}: error: {refused}", file=sys.stderr)
        return EXIT_ERROR


def _quiet_libraries(quiet: bool) -> None:
    """A user sees genre's lines: not MLflow's bars and INFO lines, not a library's retries or tracebacks of what we
    report in one line ourselves."""
    quiet_mlflow()  # before anything imports MLflow
    if quiet:
        logging.getLogger("optuna").setLevel(logging.WARNING)
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    limit_http_retries()  # a tracking server that stops answering fails a command in seconds, not minutes
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)  # its retries: a failure is one line of ours
    # Ctrl-C or SIGTERM inside a query makes SQLAlchemy's pool log the cursor it then cannot close, with a traceback;
    # the interruption itself is reported in one line, and any real database error reaches us as an exception
    logging.getLogger("sqlalchemy.pool").setLevel(logging.CRITICAL)
    quiet_full_database()  # a full SQLite store is one line of ours, not MLflow's two tracebacks


if __name__ == "__main__":
    sys.exit(main())
