"""Throughput of one process against a two-worker parameter-server job on this machine, and the bytes per step.

Usage, from the project root with the package importable::

    python benchmarks/distributed.py [--epochs 4] [--model convnet] [--keep]

Both arms are real commands, the code path a user runs, on the bundled digits (32 px; prepared in a temporary
working folder, or a symlink to the project's copy) with the same settings and the same global batch (64):

- one process with two OpenMP threads: `OMP_NUM_THREADS=2 genre train -q`;
- `genre launch --workers 2 --servers 1 -- genre train -q --kvstore dist_sync`: a scheduler, a server and two
  workers on 127.0.0.1; the launcher gives each worker one thread (the scheduler and the server one each, too).

Images/s is each run's `images_per_second` metric (the whole job's, worker 0 logs the sum of both workers'
images over its epoch time), as the median of the epochs after the first (the first includes start-up effects).
Bytes per step: every worker pushes each trainable parameter's gradient (float32) and pulls the sum, so a step
moves `4 * trainable parameters` bytes each way per worker; the table computes that from the network and checks
it against the loopback interface's byte counter (/proc/net/dev `lo`) over the whole job divided by its steps (the
per-epoch metric sums, checks and the start-up add a little; other programs using 127.0.0.1 at the same time would
add more). It also prints the parameter count of resnet18_v1b for docs/distributed.md's estimate.

Progress goes to stderr, results to stdout. About 2 minutes with the defaults on 2 idle cores.
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

import genre  # noqa: F401  (first: sets OMP_NUM_THREADS before any OpenMP runtime loads)

# isort: split
from machine import cpu_model, markdown_table, ram_gib  # benchmarks/machine.py
from mlflow.tracking import MlflowClient

from genre.data.config import DEFAULT_DATASET
from genre.runtime import usable_cores

PROJECT = Path(__file__).resolve().parents[1]
BATCH = 64


def loopback_bytes() -> int:
    """Bytes through `lo` since boot (its received count: every loopback byte is also counted as sent)."""
    for line in Path("/proc/net/dev").read_text().splitlines():
        name, _, counters = line.partition(":")
        if name.strip() == "lo":
            return int(counters.split()[0])
    return 0


def trainable_parameters(model: str, image_size: int) -> int:
    import mxnet as mx

    from genre.models.networks import NetworkSpec, build_network

    net = build_network(NetworkSpec(model=model), 10, [mx.cpu()], image_size)
    return sum(int(p.data().size) for p in net.collect_params().values() if p.grad_req != "null")


def run(command: list[str], cwd: Path, env: dict[str, str]) -> float:
    started = time.monotonic()
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode:
        sys.exit(f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return time.monotonic() - started


def epoch_rates(tracking: str) -> dict[bool, tuple[float, int]]:
    """Per arm (distributed or not): median images/s over the epochs after the first, and the epochs."""
    client = MlflowClient(tracking)
    experiment = client.get_experiment_by_name("genre-digits")
    rates = {}
    for found in client.search_runs([experiment.experiment_id], "tags.`genre.stage` = 'train'"):
        history = sorted(client.get_metric_history(found.info.run_id, "images_per_second"), key=lambda m: m.step)
        rate = statistics.median(m.value for m in history[1:] or history)
        rates["distributed.workers" in found.data.params] = (rate, len(history))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--model", default="convnet")
    parser.add_argument("--keep", action="store_true", help="keep the temporary working folder")
    args = parser.parse_args()

    import mxnet as mx

    print(f"CPU: {cpu_model()} ({os.cpu_count()} logical CPUs, {usable_cores()} usable by this process)")
    print(f"RAM: {ram_gib()}; OS: {platform.platform()}; Python {platform.python_version()}; MXNet {mx.__version__}")
    print("Load average (1, 5, 15 min) at start: " + ", ".join(f"{load:.2f}" for load in os.getloadavg()))

    folder = Path(tempfile.mkdtemp(prefix="genre-bench-distributed-"))
    tracking = f"sqlite:///{folder / 'mlflow.db'}"
    env = {**os.environ, "PYTHONPATH": str(PROJECT), "MLFLOW_TRACKING_URI": tracking}
    for name in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "OMP_NUM_THREADS"):
        env.pop(name, None)
    prepared = PROJECT / DEFAULT_DATASET
    if prepared.exists():
        (folder / DEFAULT_DATASET).parent.mkdir(parents=True)
        (folder / DEFAULT_DATASET).symlink_to(prepared)
    else:
        run([sys.executable, "-m", "genre.cli", "prepare", "-q"], folder, env)
    genre_cli = [sys.executable, "-m", "genre.cli"]
    train = ["train", "-q", "--model", args.model, "--epochs", str(args.epochs), "--batch-size", str(BATCH)]

    print("one process, 2 threads ...", file=sys.stderr)
    single_seconds = run([*genre_cli, *train], folder, env | {"OMP_NUM_THREADS": "2"})
    print("2 workers x 1 thread (+ scheduler and server) ...", file=sys.stderr)
    before = loopback_bytes()
    launch = [*genre_cli, "launch", "--workers", "2", "--servers", "1", "--", "genre", *train, "--kvstore", "dist_sync"]
    job_seconds = run(launch, folder, env)
    moved = loopback_bytes() - before

    rates = epoch_rates(tracking)
    (single_rate, epochs), (job_rate, _) = rates[False], rates[True]
    parameters = trainable_parameters(args.model, 32)
    steps = epochs * -(-1439 // BATCH)  # the digits' training split: 1439 images
    per_worker = 4 * parameters
    header = ["arm", "processes x threads", "images/s", "vs one process", "wall s (whole command)"]
    rows = [
        ["genre train", "1 x 2", f"{single_rate:.0f}", "1.00x", f"{single_seconds:.0f}"],
        [
            "genre launch (dist_sync)",
            "2 x 1",
            f"{job_rate:.0f}",
            f"{job_rate / single_rate:.2f}x",
            f"{job_seconds:.0f}",
        ],
    ]
    print(f"\n{args.model} on the digits at 32 px, global batch {BATCH}, {epochs} epochs (median of epochs 2..)\n")
    print(markdown_table(header, rows))
    print(f"\nTrainable parameters: {parameters:,} ({per_worker / 2**20:.2f} MiB of float32 gradients)")
    print(
        markdown_table(
            ["bytes per step", "per worker", "both workers"],
            [
                ["pushed (gradients)", f"{per_worker:,}", f"{2 * per_worker:,}"],
                ["pulled (summed gradients)", f"{per_worker:,}", f"{2 * per_worker:,}"],
                [
                    "loopback measured (push + pull)",
                    "",
                    f"{moved / steps:,.0f} ({moved / steps / (4 * per_worker):.2f}x)",
                ],
            ],
        )
    )
    print(f"\nresnet18_v1b trainable parameters: {trainable_parameters('resnet18_v1b', 224):,}")
    print("Load average (1, 5, 15 min) at end: " + ", ".join(f"{load:.2f}" for load in os.getloadavg()))
    if args.keep:
        print(f"kept {folder}", file=sys.stderr)
    else:
        shutil.rmtree(folder)


if __name__ == "__main__":
    main()
