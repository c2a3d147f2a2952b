"""Throughput of `genre prepare` on real JPEG covers, beside the single-core Pillow rate of the same run.

Usage, from the project root with the package installed::

    python benchmarks/prepare.py [--images 400] [--image-size 350] [--size 500] [--repeats 3]

The script makes its own covers: deterministic cover-like photo JPEGs (smooth colour fields, texture and
grain; quality 90, about 45-70 KiB at 500x500) in a temporary folder laid out ROOT/<genre>/<file>.jpg over
10 genres. It then times, in one process and in turn:

- naive Pillow: `Image.open(path).convert("RGB").resize((s, s), BICUBIC)` per image, one core;
- `genre.data.images.decode_image(path, s)` per image, one core (JPEG draft mode, crop, resize);
- the whole `genre.data.prepare.prepare()` (scan, decode, split, pack, digest) with 1 worker and with
  every usable core.

Each measurement is repeated `--repeats` times, round-robin; the table shows the best and the median
time (and the slowest), and rates and speedups are computed from the best. Nothing here talks to MLflow.
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
from pathlib import Path

import numpy as np
import PIL
from machine import cpu_model, markdown_table, ram_gib  # benchmarks/machine.py
from PIL import Image, features

from genre.data.images import decode_image
from genre.data.prepare import PrepareConfig, prepare
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


def naive_pillow(paths: list[Path], size: int) -> float:
    """Seconds to decode and resize every image the way a first script would."""
    started = time.perf_counter()
    for path in paths:
        with Image.open(path) as image:
            image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
    return time.perf_counter() - started


def decode_each(paths: list[Path], size: int) -> float:
    """Seconds for `decode_image` over every image in this process."""
    started = time.perf_counter()
    for path in paths:
        decode_image(path, size)
    return time.perf_counter() - started


def run_prepare(folder: Path, scratch: Path, size: int, workers: int, count: int) -> float:
    """Seconds of one whole `prepare()` into a fresh folder (removed afterwards, outside the timing)."""
    out = scratch / f"out-{workers}"
    config = PrepareConfig(folder=str(folder), out=str(out), image_size=size, workers=workers)
    started = time.perf_counter()
    result = prepare(config, progress=False)
    seconds = time.perf_counter() - started
    packed = sum(result.info.counts["full"].values())
    if packed != count or result.problems:
        raise SystemExit(f"prepare packed {packed} of {count} images; problems: {result.problems[:3]}")
    shutil.rmtree(out)
    return seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n", 1)[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--images", type=int, default=400, help="number of covers to make and prepare")
    parser.add_argument("--size", type=int, default=500, help="side of the source JPEGs in pixels")
    parser.add_argument("--image-size", type=int, default=350, help="side of the packed images in pixels")
    parser.add_argument("--repeats", type=int, default=3, help="times each measurement is run")
    parser.add_argument("--seed", type=int, default=2015, help="seed of the generated covers")
    args = parser.parse_args(argv)
    if args.images < GENRES or args.repeats < 1:
        parser.error(f"--images must be at least {GENRES} and --repeats at least 1")
    try:
        size = PrepareConfig(folder=".", image_size=args.image_size).size  # checked against the package's limits
    except ConfigError as error:
        parser.error(str(error))

    cores = usable_cores()
    print("\n".join(machine_description()))
    with tempfile.TemporaryDirectory(prefix="genre-bench-prepare-") as tmp:
        scratch = Path(tmp)
        folder = scratch / "covers"
        started = time.perf_counter()
        paths = make_covers(folder, args.images, args.size, args.seed)
        kib = [path.stat().st_size / 1024 for path in paths]
        print(
            f"Data: {len(paths)} JPEGs {args.size}x{args.size} q{QUALITY} over {GENRES} genres, "
            f"{min(kib):.0f}-{max(kib):.0f} KiB (mean {statistics.mean(kib):.0f} KiB), "
            f"made in {time.perf_counter() - started:.1f} s in {scratch}"
        )
        print(
            f"Packed size: {size}x{size}; {args.repeats} repeats round-robin; images/s and speedups use the best time\n"
        )

        whole = "genre prepare (whole pipeline)"
        steps: list[tuple[str, str, Callable[[], float]]] = [
            ("naive Pillow open+convert+resize", "in-process", lambda: naive_pillow(paths, size)),
            ("genre decode_image (draft+crop+resize)", "in-process", lambda: decode_each(paths, size)),
            (whole, "1", lambda: run_prepare(folder, scratch, size, 1, len(paths))),
        ]
        if cores > 1:
            steps.append((whole, str(cores), lambda: run_prepare(folder, scratch, size, cores, len(paths))))
        times: list[list[float]] = [[] for _ in steps]
        for _ in range(args.repeats):
            for index, (_, _, measure) in enumerate(steps):
                times[index].append(measure())

    best = [min(seconds) for seconds in times]
    naive_rate, decode_rate = len(paths) / best[0], len(paths) / best[1]
    rows = []
    for (name, workers, _), seconds, fastest in zip(steps, times, best, strict=True):
        rate = len(paths) / fastest
        rows.append(
            [
                name,
                workers,
                f"{fastest:.2f}",
                f"{statistics.median(seconds):.2f}",
                f"{max(seconds):.2f}",
                f"{rate:.0f}",
                f"{rate / naive_rate:.2f}x",
                f"{rate / decode_rate:.2f}x",
            ]
        )
    header = ["step", "workers", "best s", "median s", "slowest s", "images/s", "vs naive Pillow", "vs decode_image"]
    print(markdown_table(header, rows))


if __name__ == "__main__":
    main()
