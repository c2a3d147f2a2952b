"""How fast `genre server` answers and stops, beside `mlflow server` with MLflow's defaults, in one run.

Usage, from the project root with the package installed::

    python benchmarks/server.py [--repeats 3] [--settle 20]

Each start is timed from launching the command to the first answer of `GET /health`; the server then runs
`--settle` seconds (MLflow's job runner starts its consumers about 10 s after the server answers), the processes
it runs are counted, and it is stopped the way a user stops it: Ctrl-C, i.e. SIGINT to the process group in the
terminal's foreground (`genre server`'s own group; `mlflow server` with its workers). The stop is timed until the
last of its processes has ended. Every start is made twice, on a fresh SQLite store (MLflow creates its tables) and
again on the same store, round-robin over the variants; the table shows the best and the median.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from importlib.metadata import version
from pathlib import Path

from machine import cpu_model, markdown_table, ram_gib  # benchmarks/machine.py

PROJECT_ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("mlflow server (MLflow's defaults)", "genre server")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def command(variant: str, port: int, folder: Path) -> tuple[list[str], dict[str, str]]:
    """The command a user types for `variant`, on a SQLite store in `folder`, and its environment."""
    store = f"sqlite:///{folder / 'mlflow.db'}"
    artifacts = str(folder / "mlartifacts")
    if variant == "genre server":
        args = [sys.executable, "-m", "genre.cli", "server", "--port", str(port), "--backend-store-uri", store]
        return [*args, "--artifacts-destination", artifacts], {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    mlflow = shutil.which("mlflow") or str(Path(sys.executable).with_name("mlflow"))
    args = [mlflow, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1", "--serve-artifacts"]
    return [*args, "--artifacts-destination", artifacts], {**os.environ, "MLFLOW_BACKEND_STORE_URI": store}


def process_tree(pid: int) -> set[int]:
    """`pid` and every process descended from it, now (Linux /proc)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError):
            continue
    tree, grew = {pid}, True
    while grew:
        children = {child for child, parent in parents.items() if parent in tree} - tree
        tree |= children
        grew = bool(children)
    return tree


def running(pids: set[int]) -> set[int]:
    """Those of `pids` that have not ended (a zombie has ended)."""
    alive = set()
    for pid in pids:
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                alive.add(pid)
        except OSError:
            pass
    return alive


def answers(url: str) -> bool:
    """Whether a server answers `url` now (any HTTP status), asked directly rather than through a proxy."""
    try:
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def measure(variant: str, folder: Path, settle: float) -> tuple[float, int, float, int]:
    """Seconds to answer, processes after `settle` s, seconds from Ctrl-C until all ended, and how many did not."""
    port = free_port()
    args, env = command(variant, port, folder)
    with (folder / f"{variant.split()[0]}.log").open("a") as log:
        start = time.monotonic()
        process = subprocess.Popen(
            args, env=env, cwd=folder, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        while not answers(f"http://127.0.0.1:{port}/health"):
            if process.poll() is not None:
                raise SystemExit(f"{variant} exited with status {process.returncode}; see {log.name}")
            time.sleep(0.05)
        answered = time.monotonic() - start
        time.sleep(settle)
        tree = process_tree(process.pid)
        stop = time.monotonic()
        os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C does to the foreground process group
        deadline = stop + 120
        while running(tree) and time.monotonic() < deadline:
            process.poll()
            time.sleep(0.02)
        stopped = time.monotonic() - stop
        left = running(tree)
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        process.wait()
    return answered, len(tree), stopped, len(left)


def load() -> str:
    return " ".join(f"{value:.1f}" for value in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--settle", type=float, default=20.0, help="seconds the server runs before Ctrl-C")
    args = parser.parse_args()

    print(f"machine: {cpu_model()}, {os.cpu_count()} cores, {ram_gib()} RAM; Python {platform.python_version()}, "
          f"MLflow {version('mlflow')}, uvicorn {version('uvicorn')}")  # fmt: skip
    print(f"load average (1, 5, 15 min) before: {load()}")
    results: dict[tuple[str, str], list[tuple[float, int, float, int]]] = {}
    with tempfile.TemporaryDirectory(prefix="genre-server-bench-") as temporary:
        for repeat in range(args.repeats):
            for variant in VARIANTS:
                folder = Path(temporary) / f"{repeat}-{variant.split()[0]}"
                folder.mkdir()
                for store in ("fresh store", "same store again"):
                    result = measure(variant, folder, args.settle)
                    results.setdefault((variant, store), []).append(result)
                    print(f"  {variant}, {store}: answered {result[0]:.1f} s, {result[1]} processes, stopped in "
                          f"{result[2]:.1f} s, {result[3]} left (load {load()})", flush=True)  # fmt: skip
    print(f"load average (1, 5, 15 min) after: {load()}\n")

    rows = []
    for (variant, store), runs in results.items():
        answered, processes, stopped, left = zip(*runs, strict=True)
        rows.append([
            variant, store,
            f"{min(answered):.1f}", f"{statistics.median(answered):.1f}",
            "/".join(str(count) for count in sorted(set(processes))),
            f"{min(stopped):.1f}", f"{statistics.median(stopped):.1f}", f"{max(stopped):.1f}",
            str(max(left)),
        ])  # fmt: skip
    header = ["command", "store", "answers: best (s)", "median (s)", "processes", "Ctrl-C to all ended: best (s)",
              "median (s)", "slowest (s)", "left"]  # fmt: skip
    print(markdown_table(header, rows))


if __name__ == "__main__":
    main()
