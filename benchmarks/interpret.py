"""How long `genre interpret --calibrate` takes on a ~250-image test split, against issue 15's bound of 2 minutes.

Usage, from the project root with the package importable::

    python benchmarks/interpret.py [--covers ../shared/data/covers-dev] [--epochs N] [--model-uri URI]
        [--digits-model-uri URI] [--workdir DIR] [--tracking-uri URI] [--repeats 1] [--wait-idle SECONDS] [--no-phases]
        [--figures docs/img/interpret] [--keep]

Two datasets, each interpreted the way a user runs it: a subprocess `python -m genre.cli interpret -q --model-uri
runs:/ID/model --data PACK --split test --calibrate`, timed from outside (wall time including Python's start, the
imports, loading the model, predicting the test and validation splits, Grad-CAM, the t-SNE map, the neighbours,
the figures and logging everything into the model's MLflow run):

- real covers: covers-dev (6 genres, 1,264 covers, see its README) packed at 256 px as
  experiments/datasets/covers-dev.yaml says, but split 70/10/20 so the test split holds 252 covers; the model is
  the one users would interpret, EfficientNet-Lite0 fine-tuned by experiments/finetune-lite0-covers-dev.yaml
  (`--epochs` trains fewer epochs than its 6, and the table says so), or `--model-uri`;
- the bundled digits (179 test images) with the default conv net (`genre train`), or `--digits-model-uri`.

Preparing and training happen first and are not timed. Everything lives in a working folder (a temporary one,
removed afterwards unless `--keep`, or `--workdir`, where an already prepared pack is reused) with its own SQLite
tracking store, unless `--tracking-uri` names another (needed for a `--model-uri` from an existing store; a model
trained on other data than this pack is interpreted into a new run, see docs/interpret.md).

Unless `--no-phases`, two lighter commands run before the full one, so the difference shows where the time goes:
`--heatmaps 0 --cover-map none --neighbours 0` with and without `--calibrate`; and a bare `python -c` of the
imports the command needs (MXNet, MLflow, the pyfunc model, matplotlib, scikit-learn). "others" is how many cores
the machine's other processes took during a command (from /proc/stat): trust a time only when that is near 0
(`--wait-idle` waits for a quiet machine before each command).

`--figures DIR` copies the covers run's logged figures there, each under 400 KB (in 256 dithered colours, and
shrunk, only where needed).
Progress goes to stderr, results to stdout. Exits 1 when a full interpret takes longer than the bound.
About 15 minutes on 2 cores with the defaults: 9 of them training Lite0, 2 each round of timed commands.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from machine import cpu_model, markdown_table, ram_gib  # benchmarks/machine.py
from PIL import Image
from train_throughput import machine_busy_seconds, wait_until_idle  # benchmarks/train_throughput.py

PROJECT = Path(__file__).resolve().parents[1]
COVERS = PROJECT.parent / "shared" / "data" / "covers-dev"
RECIPE = PROJECT / "experiments" / "finetune-lite0-covers-dev.yaml"
COVERS_DATASET = PROJECT / "experiments" / "datasets" / "covers-dev.yaml"
DIGITS = "data/prepared/digits-32"  # genre.data.config.DEFAULT_DATASET, relative to the working folder
BOUND_SECONDS = 120.0
FIGURES = (
    "heatmaps_right_test.png",
    "heatmaps_mistakes_test.png",
    "cover_map_test.png",
    "neighbours_test.png",
    "reliability_test.png",
    "reliability_test_calibrated.png",
    "confused_pairs_test.png",
)
FIGURE_BYTES = 400_000
IMPORTS = "import mxnet, mlflow.pyfunc, matplotlib.pyplot, sklearn.manifold, genre.cover_model, genre.stages.interpret"
LIGHT = ["--heatmaps", "0", "--cover-map", "none", "--neighbours", "0"]
SUMMARY = re.compile(r"^test: accuracy (?P<accuracy>[\d.]+)%, .* ECE (?P<ece>[\d.]+) over (?P<images>\d+) images", re.M)
CALIBRATION = re.compile(r"^calibration: temperature (?P<t>[\d.]+) .* test ECE [\d.]+ -> (?P<after>[\d.]+)", re.M)
LOGGED_RUN = re.compile(r"^MLflow run (\S+) at ", re.M)
MODEL_URI = re.compile(r"model: (runs:/\S+)")


@dataclass(frozen=True)
class Timed:
    """One command, measured from outside: its wall time, the CPU it took, the cores others took, its output."""

    wall_seconds: float
    cpu_seconds: float
    others_cores: float
    output: str


@dataclass(frozen=True)
class Subject:
    """A dataset and the model interpreted on it, as the tables name them."""

    dataset: str
    model: str
    pack: Path
    model_uri: str


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(command: list[str], workdir: Path, env: dict[str, str]) -> Timed:
    """Run `command` in `workdir`; stop the benchmark with the end of its output if it fails."""
    machine, cpu, wall = machine_busy_seconds(), children_cpu_seconds(), time.perf_counter()
    done = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, check=False)
    wall, cpu = time.perf_counter() - wall, children_cpu_seconds() - cpu
    if done.returncode:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-25:])
        raise SystemExit(f"{' '.join(command[2:5])} ... exited with {done.returncode}; its output ends:\n{tail}")
    others = max(0.0, machine_busy_seconds() - machine - cpu) / wall
    return Timed(wall, cpu, others, done.stdout)


def genre(arguments: list[str], workdir: Path, env: dict[str, str]) -> Timed:
    return timed([sys.executable, "-m", "genre.cli", *arguments], workdir, env)


def load() -> str:
    return ", ".join(f"{value:.2f}" for value in os.getloadavg())


def machine_description() -> list[str]:
    import mxnet as mx

    from genre.runtime import usable_cores

    return [
        f"CPU: {cpu_model()} ({os.cpu_count()} logical CPUs, {usable_cores()} usable by this process)",
        f"RAM: {ram_gib()}; OS: {platform.platform()}; Python {platform.python_version()}; MXNet {mx.__version__}",
        f"Load average (1, 5, 15 min) at start: {load()}",
    ]


def prepared(pack: Path) -> bool:
    return (pack / "dataset.json").is_file()


def covers_subject(args: argparse.Namespace, workdir: Path, env: dict[str, str]) -> Subject:
    """Pack covers-dev with a 20% test split and fine-tune Lite0 on it (or take `--model-uri`); not timed."""
    pack = workdir / "data" / "prepared" / "covers-dev-256"
    if not prepared(pack):
        print(f"preparing {args.covers} into {pack} (not timed) ...", file=sys.stderr)
        split = ["--train-fraction", "0.7", "--val-fraction", "0.1", "--test-fraction", "0.2"]
        dataset = ["--dataset", str(COVERS_DATASET), "--folder", str(args.covers), "--out", str(pack)]
        genre(["prepare", "-q", *dataset, *split], workdir, env)
    if args.model_uri:
        return Subject("covers-dev", given_model(args.model_uri, env), pack, args.model_uri)
    recipe = "finetune-lite0-covers-dev, " + (f"{args.epochs} of its 6 epochs" if args.epochs else "6 epochs")
    epochs = ["--epochs", str(args.epochs)] if args.epochs else []
    print(f"training efficientnet_lite0 ({recipe}; not timed) ...", file=sys.stderr)
    trained = genre(["train", "-q", "--experiment", str(RECIPE), "--data", str(pack), *epochs], workdir, env)
    print(f"  trained in {trained.wall_seconds:.0f} s", file=sys.stderr)
    return Subject("covers-dev", f"efficientnet_lite0 ({recipe})", pack, model_uri(trained.output))


def digits_subject(args: argparse.Namespace, workdir: Path, env: dict[str, str]) -> Subject:
    """The bundled digits (the project's prepared copy, linked, or prepared here) and the default conv net."""
    pack = workdir / DIGITS
    if not prepared(pack):
        if prepared(PROJECT / DIGITS):
            pack.parent.mkdir(parents=True, exist_ok=True)
            pack.symlink_to(PROJECT / DIGITS, target_is_directory=True)
        else:
            print("preparing the bundled digits (not timed) ...", file=sys.stderr)
            genre(["prepare", "-q"], workdir, env)
    if args.digits_model_uri:
        return Subject("digits", given_model(args.digits_model_uri, env), pack, args.digits_model_uri)
    print("training the default conv net on the digits (not timed) ...", file=sys.stderr)
    trained = genre(["train", "-q", "--data", str(pack)], workdir, env)
    return Subject("digits", "convnet (default, 15 epochs)", pack, model_uri(trained.output))


def given_model(uri: str, env: dict[str, str]) -> str:
    """A given model as the table names it: its network and epochs when its run says so, and the URI."""
    found = re.fullmatch(r"runs:/([^/]+)/.+", uri)
    if found is None:
        return f"given: {uri}"
    from mlflow.tracking import MlflowClient

    params = MlflowClient(env["MLFLOW_TRACKING_URI"]).get_run(found.group(1)).data.params
    return f"{params.get('config.model', '?')}, {params.get('config.epochs', '?')} epochs (given: {uri})"


def model_uri(train_output: str) -> str:
    found = MODEL_URI.search(train_output)
    if found is None:
        raise SystemExit(f"genre train printed no model URI:\n{train_output[-2000:]}")
    return found.group(1)


def interpret(subject: Subject, extra: list[str], workdir: Path, env: dict[str, str]) -> Timed:
    base = ["interpret", "-q", "--model-uri", subject.model_uri, "--data", str(subject.pack), "--split", "test"]
    return genre([*base, *extra], workdir, env)


def measure(subject: Subject, args: argparse.Namespace, workdir: Path, env: dict[str, str]) -> dict[str, list[Timed]]:
    """Each arm `--repeats` times, round-robin, the full command last in each round (its figures stay logged)."""
    arms: dict[str, list[str] | None] = {}
    if args.phases:
        arms |= {"imports only (python -c)": None, "predict + confusions": LIGHT,
                 "+ --calibrate": [*LIGHT, "--calibrate"]}  # fmt: skip
    arms["full: --calibrate, heatmaps, t-SNE map, neighbours"] = ["--calibrate"]
    times: dict[str, list[Timed]] = {name: [] for name in arms}
    for round_number in range(args.repeats):
        for name, extra in arms.items():
            if args.wait_idle:
                wait_until_idle(args.wait_idle)
            print(f"{subject.dataset}, round {round_number + 1}: {name} ...", file=sys.stderr)
            if extra is None:
                times[name].append(timed([sys.executable, "-c", IMPORTS], workdir, env))
            else:
                times[name].append(interpret(subject, extra, workdir, env))
    return times


def findings(output: str) -> str:
    """Images, accuracy, ECE before and after and the temperature, from the command's own summary lines."""
    summary, calibration = SUMMARY.search(output), CALIBRATION.search(output)
    if summary is None:
        return "(no summary line)"
    text = f"{summary['images']} test images, accuracy {summary['accuracy']}%, ECE {summary['ece']}"
    if calibration is not None:
        text += f" -> {calibration['after']} with temperature {calibration['t']} (fitted on val)"
    return text


def small_png(image: Image.Image, target: Path) -> str:
    """Save `image` as a PNG under FIGURE_BYTES: as it is if it fits, else in 256 dithered colours, shrunk by 15%
    steps until it fits; how it was saved."""
    rgb, scale, how = image.convert("RGB"), 1.0, "RGB"
    rgb.save(target, optimize=True)
    while target.stat().st_size > FIGURE_BYTES:
        shown = (
            rgb if scale == 1.0 else rgb.resize((round(rgb.width * scale), round(rgb.height * scale)), Image.LANCZOS)
        )
        palette = shown.quantize(colors=256, method=Image.Quantize.FASTOCTREE, kmeans=3)
        shown.quantize(palette=palette, dither=Image.Dither.FLOYDSTEINBERG).save(target, optimize=True)
        how = f"256 colours, {shown.width}x{shown.height}"
        scale *= 0.85
    return how


def copy_figures(output: str, into: Path, tracking_uri: str) -> None:
    """The logged figures of the run `output` names, into `into`, each under FIGURE_BYTES."""
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    from mlflow.tracking import MlflowClient

    found = LOGGED_RUN.search(output)
    if found is None:
        raise SystemExit("genre interpret named no MLflow run")
    client = MlflowClient(tracking_uri)
    into.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        for name in FIGURES:
            source = Path(client.download_artifacts(found.group(1), f"interpret/{name}", scratch))
            with Image.open(source) as image:
                how = small_png(image, into / name)
            print(f"  {into / name}: {how}, {(into / name).stat().st_size:,} B", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n", 1)[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--covers", type=Path, default=COVERS, help="folder of real covers, ROOT/<genre>/<file>")
    parser.add_argument("--epochs", type=int, default=0, help="train Lite0 this many epochs (0: the recipe's 6)")
    parser.add_argument("--model-uri", default="", help="interpret this covers model instead of training one")
    parser.add_argument("--digits-model-uri", default="", help="interpret this digits model instead of training one")
    parser.add_argument("--workdir", type=Path, default=None, help="working folder (kept; default: a temporary one)")
    parser.add_argument("--tracking-uri", default="", help="MLflow store (default: SQLite in the working folder)")
    parser.add_argument("--repeats", type=int, default=1, help="times each command runs (the table: the median)")
    parser.add_argument("--wait-idle", type=float, default=0, help="before each timed command, wait up to this many "
                        "seconds for the machine's other processes to go quiet (0: don't wait)")  # fmt: skip
    parser.add_argument("--no-phases", dest="phases", action="store_false", help="time the full command only")
    parser.add_argument("--figures", type=Path, default=None, help="copy the covers run's figures into this folder")
    parser.add_argument("--keep", action="store_true", help="keep the temporary working folder")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.epochs < 0:
        parser.error("--repeats must be at least 1 and --epochs at least 0")
    if not args.model_uri and not args.covers.is_dir():
        parser.error(f"no folder of covers at {args.covers}")
    args.covers = args.covers.resolve()

    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # in order with stderr's progress
    print("\n".join(machine_description()))
    workdir = (args.workdir or Path(tempfile.mkdtemp(prefix="genre-bench-interpret-"))).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    tracking_uri = args.tracking_uri or f"sqlite:///{workdir / 'mlflow.db'}"
    env = os.environ | {
        "MLFLOW_TRACKING_URI": tracking_uri,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT), os.environ.get("PYTHONPATH")])),
    }
    for name in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID", "OMP_NUM_THREADS"):
        env.pop(name, None)  # as a user's shell: genre picks its own thread count
    from genre.runtime import usable_cores

    try:
        subjects = [covers_subject(args, workdir, env), digits_subject(args, workdir, env)]
        print(f"Load average (1, 5, 15 min) before timing: {load()}")
        measured = [(subject, measure(subject, args, workdir, env)) for subject in subjects]
        if args.figures is not None:
            covers_full = list(measured[0][1].values())[-1][-1]
            copy_figures(covers_full.output, args.figures, tracking_uri)
    finally:
        if args.keep or args.workdir is not None:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    cores, rows, phase_rows, over = str(usable_cores()), [], [], False
    for subject, times in measured:
        full = list(times.values())[-1]
        wall = statistics.median(t.wall_seconds for t in full)
        over |= wall > BOUND_SECONDS
        images = SUMMARY.search(full[-1].output)
        rows.append([subject.dataset, subject.model, images["images"] if images else "?", cores, f"{wall:.1f}",
                     f"{BOUND_SECONDS:.0f}", "pass" if wall <= BOUND_SECONDS else "FAIL"])  # fmt: skip
        for name, runs in times.items():
            walls = [t.wall_seconds for t in runs]
            phase_rows.append([subject.dataset, name, f"{statistics.median(walls):.1f}",
                               f"{min(walls):.1f}-{max(walls):.1f}",
                               f"{statistics.median(t.cpu_seconds / t.wall_seconds for t in runs):.2f}",
                               f"{max(t.others_cores for t in runs):.2f}"])  # fmt: skip
    repeats = f"median of {args.repeats} runs" if args.repeats > 1 else "one run"
    print(f"\n`genre interpret --split test --calibrate` as a user runs it ({repeats} each; wall time of the whole "
          "process)\n")  # fmt: skip
    print(markdown_table(["dataset", "model", "images", "cores", "wall s", "bound s", "result"], rows))
    print("\nWhere the time goes (each row a whole process; the difference between rows is the added work)\n")
    print(markdown_table(["dataset", "command", "wall s", "range", "CPU busy", "others"], phase_rows))
    print()
    for subject, times in measured:
        print(f"{subject.dataset}: {findings(list(times.values())[-1][-1].output)}")
    print(f"Load average (1, 5, 15 min) at end: {load()}")
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
