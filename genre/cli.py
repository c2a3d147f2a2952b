"""The `genre` command line: argument parsing only; each command calls one function of `genre.commands`."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from genre import __version__, config
from genre.credentials import keep_password_off_command_line
from genre.data.prepare import PrepareConfig
from genre.disk import disk_fault
from genre.errors import GenreError, StoreUnreachable
from genre.stages.baseline import BaselineConfig
from genre.tracking.store import limit_http_retries, quiet_full_database, quiet_mlflow, tracking_failure

EXIT_ERROR, EXIT_INTERRUPTED = 2, 130


def _common(
    parser: argparse.ArgumentParser, named: str | None, folder: str = "", default_experiment: str = "genre-<dataset>"
) -> None:
    """`--<named> NAME|FILE` picks a YAML of settings in experiments/<folder>; flags override it."""
    if named:
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
        help=f"MLflow experiment (default: MLFLOW_EXPERIMENT_NAME, else {default_experiment})",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars or epoch lines, warnings only")


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

    from genre.data.transforms import AugmentSpec
    from genre.models.spec import NetworkSpec
    from genre.training.config import TrainConfig
    from genre.training.evaluate import EvaluateConfig

    train = commands.add_parser(
        "train",
        help="train an MXNet/Gluon network (mlp, convnet or a GluonCV zoo model) and log it to MLflow",
        description="Train on a prepared dataset (the bundled digits by default, prepared on first use), a chunk "
        "at a time, on the CPU or --gpus; checkpoint every epoch; log metrics, reports and an mlflow.pyfunc model. "
        "On covers (any --data but the digits) with no --experiment, the settings start from the cover recipe "
        "measured best, which it names (docs/training.md); flags override it.",
    )
    _common(train, "experiment", "")
    config.add_arguments(train, TrainConfig, "training", exclude=(NetworkSpec, AugmentSpec))
    config.add_arguments(train, NetworkSpec, "network")
    config.add_arguments(train, AugmentSpec, "augmentation")
    train.set_defaults(handler=_train)

    evaluate = commands.add_parser(
        "evaluate",
        help="re-evaluate a logged model on a split and log the report",
        description="Evaluate an mlflow.pyfunc cover model (runs:/ID/model, models:/NAME@ALIAS) on a split.",
    )
    _common(evaluate, None)
    config.add_arguments(evaluate, EvaluateConfig, "evaluation")
    evaluate.set_defaults(handler=_evaluate)

    from genre.stages.interpret import InterpretConfig

    interpret = commands.add_parser(
        "interpret",
        help="a logged model's most confused genres and its calibration (ECE), logged into the model's run",
        description="Predict a split with an mlflow.pyfunc cover model and log, under interpret/ in the model's own "
        "run (runs:/ID/model; a new run for any other URI), the most confused genre pairs, the confusion matrix "
        "normalised per true genre, a reliability diagram and the expected calibration error (docs/interpret.md).",
    )
    _common(interpret, None, default_experiment="genre-<dataset>; unused when logging into the model's run")
    config.add_arguments(interpret, InterpretConfig, "interpretation")
    interpret.set_defaults(handler=_interpret)

    from genre.tuning.config import TuneConfig

    tune = commands.add_parser(
        "tune",
        help="an Optuna study over a search space: pruned trials as nested MLflow runs",
        description="Search training (or feature-baseline) settings with Optuna. Training trials run the training "
        "code, report validation accuracy every epoch and are pruned when they lag; a baseline space's trials "
        "(stage: baseline) are scored by a cross-validation inside the training part. The study lives in an RDB "
        "(SQLite by default, PostgreSQL to share it between workers); the same --study name continues it.",
    )
    _common(tune, None)
    config.add_arguments(tune, TuneConfig, "study")
    tune.set_defaults(handler=_tune)

    from genre.stages.suite import SuiteConfig

    suite = commands.add_parser(
        "suite",
        help="run a catalogue of experiments x seeds as runs of one MLflow experiment; resumable",
        description="Run experiments (names in experiments/ and experiments/baselines/), each with every seed, as "
        "child runs of one suite run. Finished runs with the same settings and data are skipped and killed network "
        "runs resume from their checkpoint, so rerunning the command finishes an interrupted suite. With no names, "
        "runs the suite --suite (default: digits, the bundled-data suite).",
    )
    suite.add_argument("names", nargs="*", metavar="EXPERIMENT", help="experiments to run (instead of the suite's)")
    _common(suite, "suite", "suites", default_experiment="genre-suite-<name>")
    config.add_arguments(suite, SuiteConfig, "suite")
    suite.set_defaults(handler=_suite)

    from genre.stages.report import ReportConfig

    report = commands.add_parser(
        "report",
        help="the results table and figures of a suite, or of any experiment's models (Markdown or HTML)",
        description="Read the finished runs of a suite's MLflow experiment, or the train, trial and baseline runs of "
        "any other (--experiment genre-digits), back from MLflow and write the results table (mean +- std over "
        "seeds, best first) with figures; the page is also logged as a run's artifacts.",
    )
    config.add_arguments(report, ReportConfig, "report")
    report.add_argument("-q", "--quiet", action="store_true", help="warnings only")
    report.set_defaults(handler=_report, config_folder="")

    from genre.stages.compare import CompareConfig

    compare = commands.add_parser(
        "compare",
        help="is model B better than model A? paired on the test covers both scored, with 95%% intervals",
        description="Compare two models on the test covers both scored: each a run id or an experiment name (a "
        "suite's), whose runs (seeds; folds and repeats of a cross-validated suite) are pooled. Prints B minus A in "
        "accuracy and balanced accuracy with a paired stratified bootstrap interval and McNemar's exact p, as "
        "sentences to quote; runs that logged no per-cover predictions are compared unpaired, by their logged "
        "metrics, and the command says so.",
    )
    config.add_arguments(compare, CompareConfig, "comparison", positional=("a", "b"))
    compare.add_argument("-q", "--quiet", action="store_true", help="warnings only")
    compare.set_defaults(handler=_compare, config_folder="")

    from genre.tracking.server import ServerConfig

    server = commands.add_parser(
        "server",
        help="start an MLflow tracking server (SQLite by default, PostgreSQL for a team)",
        description="Run `mlflow server` with the project's defaults: SQLite backend, proxied artifacts, bound to "
        "127.0.0.1; one line says where the UI is once it answers, and Ctrl-C stops every process of it. Point every "
        "command at it with MLFLOW_TRACKING_URI=http://HOST:PORT.",
    )
    config.add_arguments(server, ServerConfig, "server")
    server.add_argument("-q", "--quiet", action="store_true", help="warnings only")
    server.set_defaults(handler=_server, config_folder="")

    from genre.tracking.serving import ServeConfig

    serve = commands.add_parser(
        "serve",
        help="serve a logged model over HTTP (mlflow models serve, from any shell)",
        description="Run `mlflow models serve` on a cover model in this environment (on 127.0.0.1 unless --host), "
        "with the environment's scripts first on PATH so that MLflow finds uvicorn even when the venv is not "
        "activated. POST covers as base64 to /invocations (docs/serving.md).",
    )
    config.add_arguments(serve, ServeConfig, "serving")
    serve.add_argument("-q", "--quiet", action="store_true", help="warnings only")
    serve.set_defaults(handler=_serve, config_folder="")

    register = commands.add_parser(
        "register", help="register a run's model in the MLflow model registry and point an alias at it"
    )
    register.add_argument("--run-id", required=True, help="the training (or trial) run whose model to register")
    register.add_argument(
        "--name", default="genre-classifier", help="registered model name (default: genre-classifier)"
    )
    register.add_argument("--alias", default="champion", help="alias to point at the new version (default: champion)")
    register.add_argument("-q", "--quiet", action="store_true", help="warnings only")
    register.set_defaults(handler=_register)

    from genre.stages.predict import DEFAULT_EXPERIMENT as PREDICTIONS_EXPERIMENT
    from genre.stages.predict import PredictConfig

    about = {  # each setting's help and default, from the dataclass
        f.name: f.metadata["help"] + (f" (default: {f.default})" if f.default not in ("", None, False) else "")
        for f in dataclasses.fields(PredictConfig)
    }
    predict = commands.add_parser(
        "predict",
        help="the genres of covers in files and folders: printed, or a CSV (--output)",
        description="Predict the genre of each cover in the files and folders given (a folder's .jpg, .png, ... "
        "files, recursively) with a logged model, a batch at a time, the covers decoded in worker processes. Prints "
        "each cover's top genres, or writes a CSV (path, genre, p_<genre>...). A file that is not an image is listed "
        "with the reason and the rest go on (exit status 1). --log-run also logs the CSV in an MLflow run, as "
        "`mlflow run . -e predict` does.",
    )
    predict.add_argument(
        "-m", "--model-uri", required=True, help="runs:/<run id>/model, models:/<name>@<alias> or a path"
    )
    predict.add_argument("--output", metavar="CSV", default=argparse.SUPPRESS, help=about["output"])
    predict.add_argument("--top", metavar="N", default=argparse.SUPPRESS, help=about["top"])
    predict.add_argument("--batch-size", metavar="N", default=argparse.SUPPRESS, help=about["batch_size"])
    predict.add_argument("--workers", metavar="N", default=argparse.SUPPRESS, help=about["workers"])
    predict.add_argument(
        "--explain",
        action="store_true",
        help="also write each cover's Grad-CAM heatmap for its top genre, as <cover>.heatmap.png in --explain-dir",
    )
    predict.add_argument("--explain-dir", metavar="DIR", default=argparse.SUPPRESS, help=about["explain_dir"])
    predict.add_argument("--log-run", action="store_true", help=about["log_run"])
    predict.add_argument("inputs", nargs="+", metavar="COVER_OR_FOLDER", help="image files and folders of them")
    _common(predict, None, default_experiment=f"{PREDICTIONS_EXPERIMENT}; used with --log-run")
    predict.set_defaults(handler=_predict)

    runs = commands.add_parser(
        "runs",
        help="list RUNNING runs and whether their process still runs; end the stale ones KILLED",
        description="A run whose process was killed (SIGKILL, out of memory, a reboot) stays RUNNING in MLflow. Each "
        "run records its host and process; this lists the RUNNING runs, says which of them no longer have a process, "
        "and with --end marks those KILLED with a tag saying why. Runs owned on another host are only ended with "
        "--older-than.",
    )
    runs.add_argument("--experiment", help="only this MLflow experiment (default: every active one)")
    runs.add_argument("--stale", action="store_true", help="only runs whose process is gone")
    runs.add_argument("--end", action="store_true", help="end the stale runs KILLED, tagged genre.ended_by")
    runs.add_argument(
        "--older-than",
        type=float,
        metavar="HOURS",
        help="also count as stale a run owned on another host (or by an older genre) started this long ago",
    )
    runs.add_argument("-q", "--quiet", action="store_true", help="warnings only")
    runs.set_defaults(handler=_runs, config_folder="")

    from genre.training.checkpoint import DEFAULT_CHECKPOINT_DIR

    clean = commands.add_parser(
        "clean",
        help="remove the checkpoints of FINISHED runs (never those --resume needs)",
        description="Every epoch of a training run is checkpointed in <checkpoint dir>/<run id>/; a finished run keeps "
        "only its best and last parameters there. This asks the tracking store which runs ended FINISHED and removes "
        "their folders; those of RUNNING, KILLED and FAILED runs (which `genre train --resume` continues) and of runs "
        "the store does not hold are kept.",
    )
    clean.add_argument(
        "--checkpoint-dir",
        type=Path,
        default=Path(DEFAULT_CHECKPOINT_DIR),
        metavar="DIR",
        help=f"folder of per-run checkpoints (default: {DEFAULT_CHECKPOINT_DIR})",
    )
    clean.add_argument("--dry-run", action="store_true", help="say what would be removed, remove nothing")
    clean.add_argument("-q", "--quiet", action="store_true", help="warnings only")
    clean.set_defaults(handler=_clean, config_folder="")

    demo_end = commands.add_parser(  # no help: not listed; the last step of `make demo`
        "demo-end",
        description="What `make demo` prints at its end: the predict command for the model its train run logged, "
        "with a real image of the dataset, and the MLflow UI address of the experiment.",
    )
    demo_end.add_argument("--experiment", default="genre-digits", help="the demo's MLflow experiment")
    demo_end.add_argument("-q", "--quiet", action="store_true", help="warnings only")
    demo_end.set_defaults(handler=_demo_end, config_folder="")

    from genre.launch.roles import LaunchConfig

    launch = commands.add_parser(
        "launch",
        help="run distributed training: a scheduler, servers and workers, here or over ssh",
        description="Start MXNet's parameter-server job (scheduler, --servers, --workers) on this machine or on the "
        "--hosts over ssh; each worker runs the command after --, e.g. `genre launch --workers 2 --servers 1 -- "
        "genre train --kvstore dist_sync`. Output is prefixed with each role; when one role dies, all are stopped.",
    )
    config.add_arguments(launch, LaunchConfig, "job")
    launch.add_argument(
        "worker_command", nargs=argparse.REMAINDER, metavar="-- COMMAND", help="what each worker runs"
    )  # not `command`: that names the genre command in error messages
    launch.add_argument("-q", "--quiet", action="store_true", help="warnings only")
    launch.set_defaults(handler=_launch, config_folder="")
    return parser


def _prepare(args: argparse.Namespace) -> int:
    from genre.stages import prepare

    settings, path = config.load(PrepareConfig, args, args.config_folder)
    return prepare.command(settings, args.mlflow_experiment, path, progress=not args.quiet)


def _baseline(args: argparse.Namespace) -> int:
    from genre.stages import baseline

    settings, path = config.load(BaselineConfig, args, args.config_folder)
    return baseline.command(settings, args.mlflow_experiment, path, progress=not args.quiet)


def _train(args: argparse.Namespace) -> int:
    from genre.stages import train
    from genre.stages.recipes import with_cover_recipe
    from genre.training.config import TrainConfig

    settings, path = config.load(TrainConfig, args, args.config_folder)
    flags = config.flag_values(args, TrainConfig)
    settings, path = with_cover_recipe(settings, flags, path)  # no experiment named: covers take the cover recipe
    given = set(flags)  # what --resume must refuse (or apply)
    return train.command(settings, args.mlflow_experiment, path, progress=not args.quiet, given=given)


def _evaluate(args: argparse.Namespace) -> int:
    from genre.stages import evaluate
    from genre.training.evaluate import EvaluateConfig

    settings, _ = config.load(EvaluateConfig, args, args.config_folder)
    return evaluate.command(settings, args.mlflow_experiment, progress=not args.quiet)


def _interpret(args: argparse.Namespace) -> int:
    from genre.stages import interpret
    from genre.stages.interpret import InterpretConfig

    settings, _ = config.load(InterpretConfig, args, args.config_folder)
    return interpret.command(settings, args.mlflow_experiment, progress=not args.quiet)


def _tune(args: argparse.Namespace) -> int:
    from genre.stages import tune
    from genre.tuning.config import TuneConfig

    settings, _ = config.load(TuneConfig, args, args.config_folder)
    return tune.command(settings, args.mlflow_experiment, progress=not args.quiet)


def _suite(args: argparse.Namespace) -> int:
    from genre.stages import suite
    from genre.stages.suite import DEFAULT_SUITE, SuiteConfig

    if args.names:
        args.experiments = ",".join(args.names)
    if not args.named_config and not getattr(args, "experiments", None):
        args.named_config = DEFAULT_SUITE
    settings, path = config.load(SuiteConfig, args, args.config_folder)
    if path and not settings.name:
        settings = dataclasses.replace(settings, name=path.stem)
    return suite.command(settings, args.mlflow_experiment, progress=not args.quiet)


def _report(args: argparse.Namespace) -> int:
    from genre.stages import report
    from genre.stages.report import ReportConfig

    settings, _ = config.load(ReportConfig, args, "")
    return report.command(settings)


def _compare(args: argparse.Namespace) -> int:
    from genre.stages import compare
    from genre.stages.compare import CompareConfig

    settings, _ = config.load(CompareConfig, args, "")
    return compare.command(settings)


def _server(args: argparse.Namespace) -> int:
    from genre.tracking.server import ServerConfig, run_server

    settings, _ = config.load(ServerConfig, args, "")
    return run_server(settings)


def _serve(args: argparse.Namespace) -> int:
    from genre.tracking.serving import ServeConfig, serve_model

    settings, _ = config.load(ServeConfig, args, "")
    serve_model(settings)


def _register(args: argparse.Namespace) -> int:
    from genre.commands import register_command

    return register_command(args.run_id, args.name, args.alias)


def _predict(args: argparse.Namespace) -> int:
    from genre.stages import predict
    from genre.stages.predict import PredictConfig

    given = {k: v for k, v in config.flag_values(args, PredictConfig).items() if v not in ("", False)}  # "": unset
    settings = config.build(PredictConfig, (config.COMMAND_LINE, given))
    inputs = [Path(name) for name in args.inputs if name]  # `mlflow run` passes "" for no input
    return predict.command(settings, inputs, args.mlflow_experiment, progress=not args.quiet)


def _runs(args: argparse.Namespace) -> int:
    from genre.commands import runs_command
    from genre.tracking.stale import RunsConfig

    settings, _ = config.load(RunsConfig, args, "")
    return runs_command(settings)


def _clean(args: argparse.Namespace) -> int:
    from genre.commands import clean_command

    return clean_command(args.checkpoint_dir, args.dry_run)


def _demo_end(args: argparse.Namespace) -> int:
    from genre.commands import demo_end_command

    return demo_end_command(args.experiment)


def _launch(args: argparse.Namespace) -> int:
    from genre.commands import launch_command
    from genre.launch.roles import LaunchConfig

    settings, _ = config.load(LaunchConfig, args, "")
    command = args.worker_command[1:] if args.worker_command[:1] == ["--"] else args.worker_command
    return launch_command(settings, command)


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:  # this process's own arguments, which `ps` shows: a database password leaves them first
        command = next((arg for arg in sys.argv[1:] if not arg.startswith("-")), "")
        from genre.tracking.runs import params_with_passwords

        try:
            keep_password_off_command_line(command, params_with_passwords)
        except GenreError as error:
            print(f"genre {command}: error: {error}", file=sys.stderr)
            return EXIT_ERROR
    args = build_parser().parse_args(argv)
    quiet_mlflow()  # a user sees genre's lines, not MLflow's bars and INFO lines (before anything imports MLflow)
    if args.quiet:
        logging.getLogger("optuna").setLevel(logging.WARNING)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    limit_http_retries()  # a tracking server that stops answering fails a command in seconds, not minutes
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)  # its retries: a failure is one line of ours
    # Ctrl-C or SIGTERM inside a query makes SQLAlchemy's pool log the cursor it then cannot close, with a traceback;
    # the interruption itself is reported in one line below, and any real database error reaches us as an exception
    logging.getLogger("sqlalchemy.pool").setLevel(logging.CRITICAL)
    quiet_full_database()  # a full SQLite store is one line of ours, not MLflow's two tracebacks
    try:
        return args.handler(args)
    except GenreError as error:
        print(f"genre {args.command}: error: {error}", file=sys.stderr)
        return EXIT_ERROR
    except StoreUnreachable as error:
        print(f"genre {args.command}: error: {error}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"genre {args.command}: interrupted; finished work is kept, rerun to continue", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:
        refused = tracking_failure(error)  # an MLflow call no stage turned into an error of ours
        if full := disk_fault(error):  # a full or read-only disk no stage expected (SQLite full is not "unreachable")
            refused = f"{full}; free some space (or make it writable) and rerun: finished work is kept"
        if refused is None:
            raise
        print(f"genre {args.command}: error: {refused}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
