"""Throughput of `genre prepare` on real JPEG covers, beside the single-core Pillow rate of the same run.

Usage, from the project root with the package installed::

    python benchmarks/prepare.py [--images 2000] [--image-size 350] [--size 500] [--repeats 3] [--wait-idle 60]
                                 [--scratch /dev/shm]

The script makes its own covers: deterministic cover-like photo JPEGs (smooth colour fields, texture and
grain; quality 90, about 45-70 KiB at 500x500) in a temporary folder laid out ROOT/<genre>/<file>.jpg over
10 genres. It then times, in one process and in turn:

- naive Pillow: `Image.open(path).convert("RGB").resize((s, s), BICUBIC)` per image, one core;
- `genre.data.images.decode_image(path, s)` per image, one core (JPEG draft mode, crop, resize);
- the whole `genre.data.prepare.prepare()` (scan, decode, split, pack, digest) with 1 worker and with
  every usable core.

Each measurement is repeated `--repeats` times, round-robin; the table shows the best and the median
time (and the slowest), and rates and speedups are computed from the best. "CPU s" is the CPU time of the
best run: this process's, plus for prepare the decode workers' (read from the fork server, which waits for
them); the kernel's writeback of the packs is not in it. "others" is the CPU other processes took during that
run, in cores (the machine's busy time from /proc/stat less ours): numbers are only worth comparing when it is
near 0 (`--wait-idle` waits for a quiet machine before each run). The last column is the issue-16 measure: prepare's
rate over (usable cores x the in-process `decode_image` rate). The first prepare in the process also starts
the fork server (about what `genre prepare` pays once); it shows in the slowest column. Nothing here talks to
MLflow.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from multiprocessing import forkserver
from pathlib import Path

import numpy as np
import PIL
from machine import (  # benchmarks/machine.py
    cpu_model,
    filesystem,
    machine_busy_seconds,
    markdown_table,
    ram_gib,
    wait_until_idle,
)
from PIL import Image, features

from genre.data.config import PrepareConfig
from genre.data.images import decode_image
from genre.data.prepare import prepare
from genre.errors import ConfigError
from genre.runtime import usable_cores

GENRES = 10
QUALITY = 90


def make_cover(rng: np.random.Generator, side: int) -> bytes:
    """One `side` x `side` JPEG that compresses like a photo: a smooth colour field, texture and grain."""
    cells = int(rng.integers(3, 9))
    base = rng.integers(0, 256, (cells, cells, 3), dtype=np.uint8)
    field = np.asarray(Image.fromarray(base).resize((side, side), Image.Resampling.BICUBIC), dtype=np.float32)
    coarse = np.clip(rng.normal(128, 40, (max(1, side // 8), max(1, side // 8), 3)), 0, 255).astype(np.uint8)
    texture = np.asarray(Image.fromarray(coarse).resize((side, side), Image.Resampling.BILINEAR), dtype=np.float32)
    grain = rng.normal(0, rng.uniform(2, 6), (side, side, 3)).astype(np.float32)
    pixels = np.clip(field + 0.5 * (texture - 128) + grain, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=QUALITY)
    return buffer.getvalue()


def make_covers(root: Path, count: int, side: int, seed: int) -> list[Path]:
    """Write `count` covers as `root/genre-<k>/<index>.jpg`, spread evenly over the genres; sorted paths."""
    rng = np.random.default_rng(seed)
    paths = []
    for index in range(count):
        path = root / f"genre-{index % GENRES}" / f"{index:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(make_cover(rng, side))
        paths.append(path)
    return sorted(paths)


def machine_description() -> list[str]:
    # Pillow-SIMD publishes versions such as 9.5.0.post1; upstream Pillow never uses .postN.
    simd = "Pillow-SIMD" if ".post" in PIL.__version__ else "upstream Pillow, not SIMD"
    turbo = features.version_feature("libjpeg_turbo") if features.check_feature("libjpeg_turbo") else None
    jpeg = f"libjpeg-turbo {turbo}" if turbo else f"libjpeg {features.version('jpg')}"
    return [
        f"CPU: {cpu_model()} ({os.cpu_count()} logical CPUs, {usable_cores()} usable by this process)",
        f"RAM: {ram_gib()}",
        f"OS: {platform.platform()}",
        f"Python: {platform.python_version()} ({sys.implementation.name})",
        f"Pillow: {PIL.__version__} ({simd}; JPEG codec {jpeg})",
        f"numpy: {np.__version__}",
        "Load average (1, 5, 15 min) at start: " + ", ".join(f"{load:.2f}" for load in os.getloadavg()),
    ]


def others_and(measure: Callable[[], tuple[float, float]]) -> tuple[float, float, float]:
    """`measure()`'s seconds and CPU seconds, and the cores other processes kept busy meanwhile."""
    busy = machine_busy_seconds()
    seconds, cpu = measure()
    return seconds, cpu, max(0.0, (machine_busy_seconds() - busy - cpu) / seconds)


def fork_server_cpu() -> float:
    """CPU seconds of multiprocessing's fork server and of its children that have exited (prepare's decode
    workers: the fork server waits for them, so /proc adds them to its children's times); 0 before it starts."""
    pid = forkserver._forkserver._forkserver_pid  # noqa: SLF001 - no public way to find the fork server
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, TypeError):
        return 0.0
    return sum(int(field) for field in fields[11:15]) / os.sysconf("SC_CLK_TCK")  # utime stime cutime cstime


def naive_pillow(paths: list[Path], size: int) -> tuple[float, float]:
    """Seconds and CPU seconds to decode and resize every image the way a first script would."""
    started, cpu = time.perf_counter(), time.process_time()
    for path in paths:
        with Image.open(path) as image:
            image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
    return time.perf_counter() - started, time.process_time() - cpu


def decode_each(paths: list[Path], size: int) -> tuple[float, float]:
    """Seconds and CPU seconds for `decode_image` over every image in this process."""
    started, cpu = time.perf_counter(), time.process_time()
    for path in paths:
        decode_image(path, size)
    return time.perf_counter() - started, time.process_time() - cpu


def run_prepare(folder: Path, scratch: Path, size: int, workers: int, count: int) -> tuple[float, float]:
    """Seconds and CPU seconds (with the workers') of one whole `prepare()` into a fresh folder (removed
    afterwards, outside the timing)."""
    out = scratch / f"out-{workers}"
    config = PrepareConfig(folder=str(folder), out=str(out), image_size=size, workers=workers)
    started, cpu = time.perf_counter(), time.process_time() + fork_server_cpu()
    result = prepare(config, progress=False)
    seconds, cpu = time.perf_counter() - started, time.process_time() + fork_server_cpu() - cpu
    packed = sum(result.info.counts["full"].values())
    if packed != count or result.problems:
        raise SystemExit(f"prepare packed {packed} of {count} images; problems: {result.problems[:3]}")
    shutil.rmtree(out)
    return seconds, cpu


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n", 1)[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--images", type=int, default=2000, help="number of covers to make and prepare")
    parser.add_argument("--size", type=int, default=500, help="side of the source JPEGs in pixels")
    parser.add_argument("--image-size", type=int, default=350, help="side of the packed images in pixels")
    parser.add_argument("--repeats", type=int, default=3, help="times each measurement is run")
    parser.add_argument("--seed", type=int, default=2015, help="seed of the generated covers")
    parser.add_argument(
        "--wait-idle", type=float, default=0, help="before each run, wait up to this many seconds for a quiet machine"
    )
    parser.add_argument(
        "--scratch",
        help="folder for the covers and the packs (default: the system's temporary folder); on a tmpfs such as "
        "/dev/shm, prepare's fsync of the packs waits for no disk",
    )
    args = parser.parse_args(argv)
    if args.images < GENRES or args.repeats < 1:
        parser.error(f"--images must be at least {GENRES} and --repeats at least 1")
    try:
        size = PrepareConfig(folder=".", image_size=args.image_size).size  # checked against the package's limits
    except ConfigError as error:
        parser.error(str(error))

    cores = usable_cores()
    print("\n".join(machine_description()))
    with tempfile.TemporaryDirectory(prefix="genre-bench-prepare-", dir=args.scratch) as tmp:
        scratch = Path(tmp)
        folder = scratch / "bench-covers"  # not "covers": a named dataset takes that name
        started = time.perf_counter()
        paths = make_covers(folder, args.images, args.size, args.seed)
        kib = [path.stat().st_size / 1024 for path in paths]
        print(
            f"Data: {len(paths)} JPEGs {args.size}x{args.size} q{QUALITY} over {GENRES} genres, "
            f"{min(kib):.0f}-{max(kib):.0f} KiB (mean {statistics.mean(kib):.0f} KiB), "
            f"made in {time.perf_counter() - started:.1f} s"
        )
        print(f"Scratch (covers and packs): {scratch} on {filesystem(scratch)}")
        print(
            f"Packed size: {size}x{size}; {args.repeats} repeats round-robin; images/s and speedups use the best time\n"
        )

        whole = "genre prepare (whole pipeline)"
        steps: list[tuple[str, str, Callable[[], tuple[float, float]]]] = [
            ("naive Pillow open+convert+resize", "in-process", lambda: naive_pillow(paths, size)),
            ("genre decode_image (draft+crop+resize)", "in-process", lambda: decode_each(paths, size)),
            (whole, "1", lambda: run_prepare(folder, scratch, size, 1, len(paths))),
        ]
        if cores > 1:
            steps.append((whole, str(cores), lambda: run_prepare(folder, scratch, size, cores, len(paths))))
        runs: list[list[tuple[float, float, float]]] = [[] for _ in steps]
        for _ in range(args.repeats):
            for index, (_, _, measure) in enumerate(steps):
                if args.wait_idle > 0:
                    wait_until_idle(args.wait_idle)
                runs[index].append(others_and(measure))

    best = [min(measured) for measured in runs]  # (seconds, CPU seconds, others) of the fastest run
    naive_rate, decode_rate = len(paths) / best[0][0], len(paths) / best[1][0]
    rows = []
    for (name, workers, _), measured, (fastest, cpu, others) in zip(steps, runs, best, strict=True):
        seconds = [wall for wall, _, _ in measured]
        rate = len(paths) / fastest
        rows.append(
            [
                name,
                workers,
                f"{fastest:.2f}",
                f"{statistics.median(seconds):.2f}",
                f"{max(seconds):.2f}",
                f"{cpu:.2f}",
                f"{others:.2f}",
                f"{rate:.0f}",
                f"{rate / naive_rate:.2f}x",
                f"{rate / decode_rate:.2f}x",
                f"{rate / (cores * decode_rate):.2f}",
            ]
        )
    header = ["step", "workers", "best s", "median s", "slowest s", "CPU s", "others", "images/s", "vs naive Pillow"]
    print(markdown_table([*header, "vs decode_image", f"vs {cores} x decode_image"], rows))


if __name__ == "__main__":
    main()
