"""Wall time of `genre --help` and `genre <command> --help`, and which heavy libraries each one imports.

Usage, from the project root with the project's venv::

    python benchmarks/cli_startup.py [--runs 5] [--before REV] [--commands train,tune]

Each row runs `python -m genre.cli [COMMAND] --help` in a fresh process, `--runs` times, round-robin over the rows
(so a change of load hits every row alike), and shows the best and the median wall time. The last column names the
libraries among `HEAVY` that the process had imported when it exited: a command's help needs none of them.

With `--before REV` (a commit, e.g. the one before issue 17's fast CLI), the same rows also run on that commit's
`genre/` package, extracted read-only with `git archive` into a temporary folder, interleaved with this tree's runs:
the ratio is measured within one run, under the same load. At the end, `python -X importtime` of
`genre train --help` on this tree lists its slowest imports (cumulative microseconds, as `-X importtime` prints).
Nothing here talks to MLflow or writes outside the temporary folder.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import cpu_model, markdown_table, ram_gib  # benchmarks/machine.py

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = (
    "prepare",
    "baseline",
    "train",
    "evaluate",
    "interpret",
    "tune",
    "suite",
    "report",
    "server",
    "serve",
    "register",
    "predict",
    "runs",
    "launch",
)
HEAVY = ("mxnet", "mlflow", "optuna", "gluoncv", "matplotlib", "sklearn", "scipy", "pandas")
# Runs the CLI as the `genre` script does, then says which heavy libraries are loaded (argparse exits after --help).
PROBE = (
    "import atexit, sys\n"
    f"heavy = {HEAVY!r}\n"
    "atexit.register(lambda: print('HEAVY=' + ','.join(m for m in heavy if m in sys.modules), file=sys.stderr))\n"
    "sys.argv = ['genre', *sys.argv[1:]]\n"
    "from genre.cli import main\n"
    "sys.exit(main())\n"
)


def timed_help(tree: Path, args: list[str]) -> tuple[float, str]:
    """Wall seconds of one `genre ARGS` process run from `tree` (whose `genre/` it imports), and its heavy imports."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args], cwd=tree, capture_output=True, text=True, env=_environment(tree)
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0 or "usage:" not in done.stdout:
        raise SystemExit(f"genre {' '.join(args)} in {tree} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    heavy = next((line[6:] for line in done.stderr.splitlines() if line.startswith("HEAVY=")), "?")
    return seconds, heavy or "none"


def _environment(tree: Path) -> dict[str, str]:
    """`tree` first on the path: the extracted commit's package, not the editable install of this one."""
    return {**os.environ, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1"}


def slowest_imports(args: list[str], count: int) -> list[tuple[int, str]]:
    """The `count` largest cumulative import times (microseconds) of `genre ARGS` on this tree."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", PROBE, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=_environment(ROOT),
    )
    rows = []
    for line in done.stderr.splitlines():
        if line.startswith("import time:") and "|" in line and "cumulative" not in line:
            _, cumulative, name = line.split("|")
            rows.append((int(cumulative), name.rstrip()))
    return sorted(rows, reverse=True)[:count]


def extract(rev: str, into: Path) -> Path:
    """`rev`'s `genre/` and `experiments/` under `into`, read with `git archive` (the work tree is not touched)."""
    archive = subprocess.run(["git", "archive", rev, "genre", "experiments"], cwd=ROOT, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="processes per row and tree (default: 5)")
    parser.add_argument("--before", metavar="REV", help="also time this commit's CLI, interleaved")
    parser.add_argument("--commands", default=",".join(COMMANDS), help="comma-separated commands (default: all)")
    options = parser.parse_args()

    rows = [["--help"]] + [[command, "--help"] for command in options.commands.split(",") if command]
    print(f"CPU: {cpu_model()} ({os.cpu_count()} logical CPUs); RAM: {ram_gib()}")
    print(f"OS: {platform.platform()}; Python {platform.python_version()}")
    print(f"Load average (1, 5, 15 min) at start: {', '.join(f'{x:.2f}' for x in os.getloadavg())}\n")

    scratch = Path(tempfile.mkdtemp(prefix="genre-cli-startup-"))
    try:
        trees = {"now": ROOT}
        if options.before:
            trees[options.before] = extract(options.before, scratch)
        times: dict[tuple[str, int], list[float]] = {(name, i): [] for name in trees for i in range(len(rows))}
        heavy: dict[tuple[str, int], str] = {}
        for _ in range(options.runs):
            for i, args in enumerate(rows):
                for name, tree in trees.items():
                    seconds, heavy[name, i] = timed_help(tree, args)
                    times[name, i].append(seconds)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    header = ["command", "best s", "median s", "heavy imports"]
    if options.before:
        header = ["command", "best s", "median s", f"{options.before} best s", "ratio", "heavy imports", "before"]
    table = []
    for i, args in enumerate(rows):
        now = times["now", i]
        row = [f"genre {' '.join(args)}", f"{min(now):.2f}", f"{statistics.median(now):.2f}"]
        if options.before:
            before = times[options.before, i]
            row += [f"{min(before):.2f}", f"{min(before) / min(now):.1f}x"]
        row.append(heavy["now", i])
        if options.before:
            row.append(heavy[options.before, i])
        table.append(row)
    print(f"`python -m genre.cli ... --help`, {options.runs} fresh processes per row, round-robin\n")
    print(markdown_table(header, table))
    print("\nSlowest imports of `genre train --help` now (cumulative us, from python -X importtime):")
    for cumulative, name in slowest_imports(["train", "--help"], 8):
        print(f"  {cumulative:>9}  {name}")
    print(f"\nLoad average (1, 5, 15 min) at end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
