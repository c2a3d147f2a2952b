"""Epochs saved by pruning: the same Optuna study run with the median pruner and with no pruner.

Usage, from the project root with the package importable::

    python benchmarks/pruning.py [--trials 25] [--seeds 0,1,2] [--space experiments/spaces/convnet-digits.yaml]
        [--epochs N]

Each arm is one real `genre tune -q` process (`python -m genre.cli tune ...`, the code path a user runs) with the
same space, sampler (TPE) and sampler seed and the same trial budget; only `--pruner` differs (`median`, then
`none`). Both run in one temporary working folder that holds:

- `experiments` -> the project's experiments/ folder (a space's `base:` names an experiment relative to the working
  folder), and the space file itself (a copy with `settings.epochs` replaced when `--epochs` is given);
- the space's dataset: a symlink to the project's prepared copy when there is one, else the bundled digits prepared
  there by `genre prepare -q` before anything is timed;
- its own MLflow store (`MLFLOW_TRACKING_URI=sqlite:///<tmp>/mlflow.db`), Optuna storage
  (`--storage sqlite:///<tmp>/optuna.db`, one `--study` per arm) and checkpoints. It is removed afterwards
  unless `--keep` is given.

The results are read back with `optuna.load_study`. Per arm the table shows the epochs actually trained (the sum
over trials of `len(trial.intermediate_values)`: every trial reports its validation accuracy once per epoch), the
trials that completed and were pruned, the wall time of the `genre tune` process (start-up, MLflow logging and the
logged models included), the CPU its process took and the cores the machine's other processes took meanwhile (from
/proc/stat; wall times are only comparable when that is near 0 for both arms), and the best validation accuracy of
the study (`study.best_value`, over complete trials). Below it: the ratio of epochs (pruned / unpruned), the
difference of best accuracies in validation images, and one line per trial to show where the pruner stopped what.
With several `--seeds`, each seed is a pair of arms (studies of their own) and a last table puts the seeds side by
side: one seed's best accuracy is decided by a handful of validation images, so the goal is judged over seeds.

TPE samples its first trials at random from the seed (10 start-up trials), so both arms train the same first
settings; after that each arm's sampler learns from its own history (a pruned trial counts with its last reported
value) and the settings diverge, so the best accuracies differ also by what each arm happened to try. The default
run (25 trials per arm on the bundled digits, 6 epochs per trial) takes about 2 minutes on 2 idle cores and up to
about 7 when other processes take half the CPU. Progress goes to stderr, results to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import optuna
import yaml
from machine import cpu_model, machine_busy_seconds, markdown_table, ram_gib  # benchmarks/machine.py

from genre.data.config import DEFAULT_DATASET
from genre.runtime import usable_cores

PROJECT = Path(__file__).resolve().parents[1]
DEFAULT_SPACE = PROJECT / "experiments" / "spaces" / "convnet-digits.yaml"
ARMS = ("median", "none")  # pruned first, then the reference


@dataclass(frozen=True)
class Arm:
    """One `genre tune` run, as measured from outside and read back from its study."""

    pruner: str
    study: optuna.Study
    wall_seconds: float
    cpu_seconds: float
    others_cores: float

    def trials(self) -> list[optuna.trial.FrozenTrial]:
        return self.study.get_trials(deepcopy=False)

    def count(self, state: optuna.trial.TrialState) -> int:
        return sum(trial.state == state for trial in self.trials())

    @property
    def epochs(self) -> int:
        return sum(len(trial.intermediate_values) for trial in self.trials())

    @property
    def best(self) -> float | None:
        complete = self.count(optuna.trial.TrialState.COMPLETE)
        return self.study.best_value if complete else None


def machine_description() -> list[str]:
    import mlflow
    import mxnet as mx

    return [
        f"CPU: {cpu_model()} ({os.cpu_count()} logical CPUs, {usable_cores()} usable by this process)",
        f"RAM: {ram_gib()}",
        f"OS: {platform.platform()}",
        f"Python: {platform.python_version()}; MXNet {mx.__version__} (CPU); Optuna {optuna.__version__}; "
        f"MLflow {mlflow.__version__}",
        "Load average (1, 5, 15 min) at start: " + ", ".join(f"{load:.2f}" for load in os.getloadavg()),
    ]


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def resolve_space(name_or_path: str) -> Path:
    """A space file given as a path (relative to the current folder) or as a name in experiments/spaces/."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return path.resolve()
    return PROJECT / "experiments" / "spaces" / f"{name_or_path}.yaml"


def space_settings(space: dict) -> dict:
    """The fixed training settings of a space's trials: its base experiment overlaid with its `settings`."""
    settings: dict = {}
    if space.get("base"):
        base = PROJECT / "experiments" / f"{space['base']}.yaml"
        if base.is_file():
            settings |= yaml.safe_load(base.read_text()) or {}
    return settings | (space.get("settings") or {})


def genre_command(arguments: list[str], workdir: Path, env: dict[str, str], log_name: str) -> None:
    """Run `python -m genre.cli ARGUMENTS` in `workdir`; its output goes to a log file, shown if it fails."""
    log_path = workdir / f"{log_name}.log"
    with log_path.open("w") as log_file:
        done = subprocess.run(
            [sys.executable, "-m", "genre.cli", *arguments],
            cwd=workdir,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if done.returncode != 0:
        tail = "\n".join(log_path.read_text().splitlines()[-20:])
        raise SystemExit(f"genre {' '.join(arguments[:1])} exited with {done.returncode}; its output ends:\n{tail}")
    summary = [line for line in log_path.read_text().splitlines() if line.startswith("study ")]
    if summary:
        print(f"  {summary[-1]}", file=sys.stderr)


def prepare_workdir(workdir: Path, space_path: Path, epochs: int | None, env: dict[str, str]) -> Path:
    """Link experiments/ and the dataset into `workdir` and write the space the arms use; its path."""
    (workdir / "experiments").symlink_to(PROJECT / "experiments", target_is_directory=True)
    space = yaml.safe_load(space_path.read_text()) or {}
    if epochs is not None:
        space["settings"] = (space.get("settings") or {}) | {"epochs": epochs}
    used = workdir / space_path.name
    used.write_text(yaml.safe_dump(space, sort_keys=False))

    data = Path(space_settings(space).get("data", DEFAULT_DATASET))
    if not data.is_absolute():
        if (PROJECT / data / "dataset.json").is_file():
            (workdir / data).parent.mkdir(parents=True, exist_ok=True)
            (workdir / data).symlink_to(PROJECT / data, target_is_directory=True)
        elif str(data) == DEFAULT_DATASET:
            print(f"preparing the bundled digits in {workdir / data} (not timed)", file=sys.stderr)
            genre_command(["prepare", "-q"], workdir, env, "prepare")
        else:
            raise SystemExit(f"the space's dataset {PROJECT / data} is not prepared; run `genre prepare` for it first")
    return used


def run_arm(pruner: str, seed: int, args: argparse.Namespace, space: Path, workdir: Path, env: dict[str, str]) -> Arm:
    study = f"pruning-{pruner}-seed{seed}"
    storage = f"sqlite:///{workdir / 'optuna.db'}"
    arguments = ["tune", "-q", "--space", str(space), "--study", study, "--storage", storage]
    arguments += ["--pruner", pruner, "--sampler", "tpe", "--seed", str(seed), "--n-trials", str(args.trials)]
    print(f"seed {seed}, arm --pruner {pruner}: {args.trials} trials ...", file=sys.stderr)
    machine, cpu, wall = machine_busy_seconds(), children_cpu_seconds(), time.perf_counter()
    genre_command(arguments, workdir, env, study)
    wall, cpu = time.perf_counter() - wall, children_cpu_seconds() - cpu
    others = max(0.0, machine_busy_seconds() - machine - cpu) / wall
    loaded = optuna.load_study(study_name=study, storage=storage)
    return Arm(pruner, loaded, wall, cpu, others)


def accuracy(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def summary_row(arm: Arm) -> list[str]:
    state = optuna.trial.TrialState
    return [
        f"--pruner {arm.pruner}",
        str(len(arm.trials())),
        str(arm.epochs),
        str(arm.count(state.COMPLETE)),
        str(arm.count(state.PRUNED)),
        str(arm.count(state.FAIL)),
        f"{arm.wall_seconds:.0f}",
        f"{arm.cpu_seconds / arm.wall_seconds:.2f}",
        f"{arm.others_cores:.2f}",
        accuracy(arm.best),
    ]


def trial_cell(trial: optuna.trial.FrozenTrial | None) -> str:
    if trial is None:
        return "-"
    values = trial.intermediate_values
    last = values[max(values)] if values else None
    shown = trial.value if trial.state == optuna.trial.TrialState.COMPLETE else last
    return f"{len(values)} ep, {trial.state.name.lower()}, {accuracy(shown)}"


def settings_cell(trial: optuna.trial.FrozenTrial | None) -> str:
    if trial is None:
        return "-"
    params = trial.params
    if params.get("model") == "convnet":
        filters = ",".join(str(params[f"conv_filters_{i + 1}"]) for i in range(int(params.get("conv_layers", 0))))
        shape = f"convnet {filters}/{params.get('dense_units') or '-'}"
    elif params.get("model") == "mlp":
        shape = f"mlp {params.get('hidden_units')}"
    else:
        return ", ".join(
            f"{name}={value:.3g}" if isinstance(value, float) else f"{name}={value}" for name, value in params.items()
        )
    return f"{shape}, lr {params['learning_rate']:.3f}, bs {params['batch_size']}"


def validation_size(workdir: Path, space: Path) -> int | None:
    """Images in the validation split the studies score (from the prepared dataset's description)."""
    settings = space_settings(yaml.safe_load(space.read_text()) or {})
    data = Path(settings.get("data", DEFAULT_DATASET))
    try:
        info = json.loads(((data if data.is_absolute() else workdir / data) / "dataset.json").read_text())
        return int(info["counts"][settings.get("variant", "full")]["val"])
    except (OSError, KeyError, TypeError, ValueError):
        return None


def describe_median_pruner() -> str:
    """The median pruner `genre tune` builds, as configured in the package (not a copy of its numbers)."""
    from genre.tuning.study import make_pruner

    pruner = make_pruner("median", epochs=1)
    # MedianPruner is a PercentilePruner; its settings are only kept as private attributes.
    return f"MedianPruner(n_startup_trials={pruner._n_startup_trials}, n_warmup_steps={pruner._n_warmup_steps})"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n", 1)[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=25, help="trials per arm (the study's budget)")
    parser.add_argument(
        "--seeds", default="0", help="seeds of the TPE sampler, comma-separated: one pair of arms per seed"
    )
    parser.add_argument("--space", default=str(DEFAULT_SPACE), help="search space: a YAML file or a name in spaces/")
    parser.add_argument("--epochs", type=int, default=None, help="override the space's settings.epochs")
    parser.add_argument("--keep", action="store_true", help="keep the temporary working folder and print its path")
    args = parser.parse_args(argv)
    try:
        seeds = [int(part) for part in args.seeds.split(",")]
    except ValueError:
        parser.error(f"--seeds must be comma-separated integers, got {args.seeds!r}")
    if args.trials < 1 or (args.epochs is not None and args.epochs < 1):
        parser.error("--trials and --epochs must be at least 1")
    space_path = resolve_space(args.space)
    if not space_path.is_file():
        parser.error(f"no space file {space_path}")

    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # in order with stderr's progress
    print("\n".join(machine_description()))
    workdir = Path(tempfile.mkdtemp(prefix="genre-bench-pruning-"))
    try:
        env = os.environ | {
            "MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'mlflow.db'}",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT), os.environ.get("PYTHONPATH")])),
        }
        env.pop("MLFLOW_RUN_ID", None)
        env.pop("MLFLOW_EXPERIMENT_NAME", None)
        env.pop("MLFLOW_EXPERIMENT_ID", None)
        space = prepare_workdir(workdir, space_path, args.epochs, env)
        epochs = (yaml.safe_load(space.read_text()).get("settings") or {}).get("epochs", "the base's")
        print(
            f"Study: space {space_path} ({epochs} epochs per trial), TPE sampler seeds {args.seeds}, "
            f"{args.trials} trials per arm; median pruner = {describe_median_pruner()}"
        )
        validation = validation_size(workdir, space)
        outcomes = []
        for seed in seeds:
            arms = [run_arm(pruner, seed, args, space, workdir, env) for pruner in ARMS]
            print_seed(seed, arms, validation)
            outcomes.append((seed, arms))
    finally:
        if args.keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    if len(outcomes) > 1:
        print_summary(outcomes, validation)


def print_seed(seed: int, arms: list[Arm], validation: int | None) -> None:
    """One seed's two arms: the summary, the ratios, and trial by trial."""
    print(f"\n### Seed {seed}")
    header = ["arm", "trials", "epochs trained", "complete", "pruned", "failed", "wall s", "CPU busy", "others",
              "best val accuracy"]  # fmt: skip
    print()
    print(markdown_table(header, [summary_row(arm) for arm in arms]))
    pruned, unpruned = arms
    print()
    print(f"Epochs, pruned / unpruned: {pruned.epochs} / {unpruned.epochs} = {pruned.epochs / unpruned.epochs:.2f}")
    print(f"Wall time, pruned / unpruned: {pruned.wall_seconds / unpruned.wall_seconds:.2f}")
    if pruned.best is not None and unpruned.best is not None:
        gap = pruned.best - unpruned.best
        images = f" ({gap * validation:+.0f} of {validation} validation images)" if validation else ""
        print(f"Best validation accuracy, pruned - unpruned: {gap:+.2%}{images}")

    print()
    rows = []
    for number in range(max(len(arm.trials()) for arm in arms)):
        trials = [arm.trials()[number] if number < len(arm.trials()) else None for arm in arms]
        same = trials[0] is not None and trials[1] is not None and trials[0].params == trials[1].params
        rows.append(
            [
                str(number),
                settings_cell(trials[0]),
                trial_cell(trials[0]),
                "same" if same else settings_cell(trials[1]),
                trial_cell(trials[1]),
            ]
        )
    header = [
        "trial",
        "median: settings",
        "median: epochs, state, val acc",
        "none: settings",
        "none: epochs, state, val acc",
    ]
    print(markdown_table(header, rows))


def print_summary(outcomes: list[tuple[int, list[Arm]]], validation: int | None) -> None:
    """Across seeds: epochs saved and best accuracy lost (or not) by pruning, seed by seed and on average."""
    rows, ratios, gaps = [], [], []
    for seed, (pruned, unpruned) in outcomes:
        ratio = pruned.epochs / unpruned.epochs
        gap = (pruned.best or 0.0) - (unpruned.best or 0.0)
        ratios.append(ratio)
        gaps.append(gap)
        images = f"{gap * validation:+.0f}" if validation else "-"
        met = "yes" if ratio <= 0.5 and gap >= 0 else "no"
        rows.append([str(seed), f"{pruned.epochs} / {unpruned.epochs} = {ratio:.2f}", accuracy(pruned.best),
                     accuracy(unpruned.best), images, met])  # fmt: skip
    print("\n### All seeds\n")
    header = ["seed", "epochs pruned / unpruned", "best, median", "best, none", "gap (val images)", "goal met"]
    print(markdown_table(header, rows))
    met = sum(row[-1] == "yes" for row in rows)
    mean_gap = sum(gaps) / len(gaps)
    in_images = f" ({mean_gap * validation:+.2f} validation images)" if validation else ""
    print(
        f"\nGoal (same best accuracy, at most half the epochs) met on {met} of {len(rows)} seeds; mean epoch ratio "
        f"{sum(ratios) / len(ratios):.2f}, mean best-accuracy gap {mean_gap:+.2%}{in_images}"
    )


if __name__ == "__main__":
    main()
