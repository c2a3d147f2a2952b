"""Memory of one shuffled epoch through `ChunkedIterator`, at 1x, 4x and 16x the dataset size.

Usage, from the project root with the package importable::

    python benchmarks/iterator_memory.py [--images 4096] [--scales 1,4,16] [--chunk-size 1024]
                                         [--image-size {64,128}] [--batch-size 64] [--no-naive]
                                         [--no-malloc-check] [--cold] [--tmp-dir DIR]

The script writes synthetic packs of `images * scale` random uint8 images `(N, S, S, 3)` into a temporary
prepared-dataset folder (`full/train-images.npy` written through `np.lib.format.open_memmap`, labels,
and a `dataset.json`, so `genre.data.pack.open_pack` opens it as `genre train` would). One pack exists on
disk at a time and the folder is removed at the end. For each pack, a fresh Python process (so earlier
runs cannot raise its peak) imports MXNet, starts the engine, takes its baseline, then runs one full
shuffled epoch of `ChunkedIterator(pack, batch_size, chunk_size, [mx.cpu()], shuffle=True)`, reducing
every batch on the device (`astype("float32").mean()`, then `nd.waitall()`). With the naive loader
(on unless `--no-naive`), another fresh process does the same epoch after `np.array(pack.images)`.
`ChunkedIterator` itself sets glibc's mmap threshold to 1 MiB (`genre.runtime.release_large_blocks`), so
every chunk-sized block is mapped when allocated and unmapped when freed, and RssAnon follows the memory the
iterator actually holds. Unless `--no-malloc-check`, the chunked epoch is run once more with the same setting
given through the environment (`MALLOC_MMAP_THRESHOLD_`), as a cross-check that the two rows agree.

What is measured, as growth over the baseline (one chunk is `chunk_size * S * S * 3` bytes):

- peak RSS: `getrusage(RUSAGE_SELF).ru_maxrss` after the epoch (the kernel's exact high-water mark, reset
  at the baseline through /proc/self/clear_refs when allowed) minus VmRSS at the baseline;
- peak RssAnon and peak RssFile, from a thread reading /proc/self/status every `--sample-ms`.

RssAnon is memory the process allocated: numpy's copies of a chunk and, since the device here is the
CPU, MXNet's device arrays too. RssFile counts the pages of the memory-mapped pack that are mapped into
this process; they are clean page cache the kernel reclaims under memory pressure, but the mapping keeps
every page touched so far, so RssFile (and with it total RSS) grows to the pack's size over an epoch whatever
the loader. The iterator's promise, memory bounded by a few chunks whatever the pack's size, is about RssAnon.

By default the packs are read warm (they are in the page cache, just written); `--cold` evicts each pack
from the page cache (fsync + posix_fadvise DONTNEED) before each run, so the epoch reads the disk.
Nothing here talks to MLflow.
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
import threading
import time
from pathlib import Path

import numpy as np
from machine import cpu_model, filesystem, markdown_table  # benchmarks/machine.py

GENRES = 10
WRITE_ROWS = 1024
STATUS_FIELDS = ("VmRSS", "RssAnon", "RssFile")
# glibc raises its mmap threshold to the size of a freed mapped block (up to 32 MiB), so later chunk-sized blocks
# come from its heaps and stay there when freed; a fixed threshold maps each large block and unmaps it when freed.
LIVE_ENV = {"MALLOC_MMAP_THRESHOLD_": str(2**20)}
LIVE_LABEL = "chunked, MALLOC_MMAP_THRESHOLD_=1MiB"


def status() -> dict[str, int]:
    """VmRSS, RssAnon and RssFile of this process in KiB (Linux /proc/self/status)."""
    values = {}
    with open("/proc/self/status") as file:
        for line in file:
            key, _, rest = line.partition(":")
            if key in STATUS_FIELDS:
                values[key] = int(rest.split()[0])
    return values


class Sampler(threading.Thread):
    """Polls /proc/self/status and keeps each field's peak; a spike shorter than the interval can be missed."""

    def __init__(self, interval: float) -> None:
        super().__init__(daemon=True, name="rss-sampler")
        self.interval = interval
        self.peak = dict.fromkeys(STATUS_FIELDS, 0)
        self.samples = 0
        self.stopped = threading.Event()

    def reset(self) -> None:
        self.peak = status()

    def run(self) -> None:
        while not self.stopped.is_set():
            for key, value in status().items():
                self.peak[key] = max(self.peak[key], value)
            self.samples += 1
            time.sleep(self.interval)


def reset_peak_rss() -> bool:
    """Reset the kernel's peak RSS (VmHWM, which ru_maxrss reads) to the current RSS; False if not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def evict(path: Path) -> None:
    """Drop a file's pages from the page cache (they are clean after the fsync), so the next read hits the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def write_dataset(root: Path, count: int, size: int, seed: int) -> int:
    """A prepared-dataset folder with one `full/train` pack of `count` random images; returns the pack's bytes.

    The images are written a block at a time through a memory map, so the writer never holds the pack.
    """
    from genre.data.pack import DatasetInfo, dataset_digest, pack_paths

    images_path, labels_path = pack_paths(root, "full", "train")
    images_path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    block = rng.integers(0, 256, (WRITE_ROWS, size, size, 3), dtype=np.uint8)
    images = np.lib.format.open_memmap(images_path, mode="w+", dtype=np.uint8, shape=(count, size, size, 3))
    for number, start in enumerate(range(0, count, WRITE_ROWS)):
        rows = min(WRITE_ROWS, count - start)
        images[start : start + rows] = block[:rows] + np.uint8(number % 256)  # each block differs, cheaply
    images.flush()
    del images
    np.save(labels_path, rng.integers(0, GENRES, count).astype(np.int32))
    genres = [f"genre-{k}" for k in range(GENRES)]
    DatasetInfo(
        name="iterator-memory-benchmark",
        source="synthetic",
        genres=genres,
        image_size=size,
        seed=seed,
        counts={"full": {"train": count, "val": 0, "test": 0}},
        pack_digests={},
        digest=dataset_digest(genres, size, {}),
        files={},
    ).write(root)
    return images_path.stat().st_size


def run_epoch(loader: str, root: Path, batch_size: int, chunk_size: int, seed: int, sample_ms: float) -> dict:
    """One shuffled epoch in this process; growth of memory over the baseline taken right before it."""
    import gc

    import mxnet as mx
    from mxnet import nd

    from genre.data.iterator import ChunkedIterator
    from genre.data.pack import open_pack

    context = mx.cpu()
    pack = open_pack(root, "full", "train")
    nd.ones((8,), ctx=context).astype("float32").mean().wait_to_read()  # engine threads belong to the baseline
    sampler = Sampler(sample_ms / 1000)
    sampler.start()
    time.sleep(0.05)
    gc.collect()
    exact = reset_peak_rss()
    sampler.reset()
    before = status()
    maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    started = time.perf_counter()
    seen = 0
    if loader == "chunked":
        iterator = ChunkedIterator(pack, batch_size, chunk_size, [context], shuffle=True, seed=seed)
        for batch in iterator.epoch(0):
            means = [images.astype("float32").mean() for images, _ in batch.shards]
            nd.waitall()
            seen += batch.size
        del batch, means
    else:
        images = np.array(pack.images)  # the whole pack in memory, as a first script would do
        labels = pack.labels.astype(np.float32)
        order = np.random.default_rng(seed).permutation(len(labels))
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            batch_images = nd.array(images[rows], ctx=context, dtype="uint8")
            batch_labels = nd.array(labels[rows], ctx=context)
            means = [batch_images.astype("float32").mean(), batch_labels.sum()]
            nd.waitall()
            seen += len(rows)
    seconds = time.perf_counter() - started

    maxrss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    after = status()
    sampler.stopped.set()
    sampler.join()
    if seen != len(pack):
        raise SystemExit(f"{loader} loader saw {seen} of {len(pack)} images in one epoch")
    return {
        "images": len(pack),
        "seconds": seconds,
        "exact_peak": exact,
        "baseline_kib": before,
        "maxrss_before_kib": maxrss_before,
        "maxrss_kib": maxrss_after,
        "peak_kib": sampler.peak,
        "end_kib": after,
        "samples": sampler.samples,
    }


def measure_in_child(args: argparse.Namespace, loader: str, root: Path, env: dict[str, str] | None = None) -> dict:
    """`run_epoch` in a fresh interpreter (with `env` added to its environment); its result ends its stdout."""
    command = [
        sys.executable,
        __file__,
        "--child",
        loader,
        "--root",
        str(root),
        "--batch-size",
        str(args.batch_size),
        "--chunk-size",
        str(args.chunk_size),
        "--seed",
        str(args.seed),
        "--sample-ms",
        str(args.sample_ms),
    ]
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=False, env={**os.environ, **(env or {})})
    if done.returncode != 0:
        raise SystemExit(f"the {loader} run on {root} failed (exit {done.returncode}); its stderr is above")
    return json.loads(done.stdout.strip().splitlines()[-1])


def mib(kib: float) -> str:
    return f"{kib / 1024:.1f}"


def meminfo_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def machine_description(scratch: Path) -> list[str]:
    import mxnet as mx

    total = meminfo_kib("MemTotal")
    thp = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    threads = {key: os.environ[key] for key in ("OMP_NUM_THREADS", "MXNET_CPU_WORKER_NTHREADS") if key in os.environ}
    return [
        f"CPU: {cpu_model()} ({os.cpu_count()} logical CPUs, {len(os.sched_getaffinity(0))} usable by this process)",
        f"RAM: {total / 2**20:.1f} GiB" if total else "RAM: unknown",
        f"OS: {platform.platform()}; libc {' '.join(platform.libc_ver())}; "
        f"transparent hugepages {thp.read_text().strip() if thp.exists() else 'unknown'}",
        f"Python: {platform.python_version()}; numpy {np.__version__}; MXNet {mx.__version__} (device: mx.cpu())",
        f"Scratch: {scratch} on {filesystem(scratch)}",
        f"Thread settings: {threads or 'defaults'}",
        "Load average (1, 5, 15 min) at start: " + ", ".join(f"{load:.2f}" for load in os.getloadavg()),
    ]


def table_row(loader: str, result: dict, pack_bytes: int, chunk_kib: float) -> list[str]:
    base, peak = result["baseline_kib"], result["peak_kib"]
    total = result["maxrss_kib"] - base["VmRSS"]
    anon = peak["RssAnon"] - base["RssAnon"]
    mapped = peak["RssFile"] - base["RssFile"]
    return [
        loader,
        str(result["images"]),
        f"{pack_bytes / 2**20:.0f}",
        f"{result['seconds']:.2f}",
        f"{result['images'] / result['seconds']:.0f}",
        mib(total),
        f"{total / chunk_kib:.1f}",
        mib(anon),
        f"{anon / chunk_kib:.1f}",
        mib(mapped),
        f"{mapped / (pack_bytes / 1024):.0%}",
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n", 1)[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--images", type=int, default=4096, help="N: images in the smallest pack")
    parser.add_argument("--scales", default="1,4,16", help="pack sizes as multiples of N, comma-separated")
    parser.add_argument("--chunk-size", type=int, default=1024, help="images per chunk")
    parser.add_argument("--image-size", type=int, default=64, choices=(64, 128), help="side of the images")
    parser.add_argument("--batch-size", type=int, default=64, help="images per batch")
    parser.add_argument("--no-naive", action="store_true", help="skip the whole-pack-in-memory comparison")
    parser.add_argument(
        "--no-malloc-check", action="store_true", help=f"skip the chunked run with {LIVE_LABEL.split(', ')[1]}"
    )
    parser.add_argument("--cold", action="store_true", help="evict each pack from the page cache before each run")
    parser.add_argument("--sample-ms", type=float, default=1.0, help="interval of the /proc/self/status sampler")
    parser.add_argument("--seed", type=int, default=2015, help="seed of the images and of the shuffle")
    parser.add_argument("--tmp-dir", type=Path, default=None, help="where the packs are written (default: TMPDIR)")
    parser.add_argument("--child", choices=("chunked", "naive"), help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        result = run_epoch(args.child, args.root, args.batch_size, args.chunk_size, args.seed, args.sample_ms)
        print(json.dumps(result))
        return

    try:
        scales = sorted({int(scale) for scale in args.scales.split(",")})
    except ValueError:
        parser.error(f"--scales must be comma-separated integers, got {args.scales!r}")
    if args.images < 1 or scales[0] < 1 or args.chunk_size < args.batch_size or args.batch_size < 1:
        parser.error("--images and --scales must be positive, and --chunk-size at least --batch-size")
    size = args.image_size
    chunk_size = args.chunk_size // args.batch_size * args.batch_size  # what ChunkedIterator will use
    chunk_bytes = chunk_size * size * size * 3
    largest = args.images * scales[-1] * size * size * 3
    scratch_parent = args.tmp_dir or Path(tempfile.gettempdir())
    free = shutil.disk_usage(scratch_parent).free
    if free < largest + 2**30:
        parser.error(
            f"the largest pack needs {largest / 2**30:.1f} GiB and {scratch_parent} has {free / 2**30:.1f} GiB free "
            "(1 GiB is kept spare); use smaller --scales/--images or another --tmp-dir"
        )
    available = (meminfo_kib("MemAvailable") or 0) * 1024
    naive = not args.no_naive and 2 * largest + 2**30 <= available

    print("\n".join(machine_description(scratch_parent)))
    if not args.no_naive and not naive:
        print(f"Skipping the naive loader: it maps and copies {2 * largest / 2**30:.1f} GiB, more than is available.")
    print(
        f"Run: images {size}x{size}x3 uint8 ({size * size * 3 / 1024:.0f} KiB each); chunk {chunk_size} images "
        f"= {chunk_bytes / 2**20:.1f} MiB; batch {args.batch_size}; one shuffled epoch per fresh process; "
        f"page cache {'evicted before each run (cold)' if args.cold else 'warm (packs just written)'}; "
        f"sampler every {args.sample_ms:g} ms"
    )

    rows, notes = [], []
    with tempfile.TemporaryDirectory(prefix="genre-bench-iterator-", dir=scratch_parent) as tmp:
        for scale in scales:
            root = Path(tmp) / f"pack-{scale}x"
            count = args.images * scale
            started = time.perf_counter()
            pack_bytes = write_dataset(root, count, size, args.seed)
            written = time.perf_counter() - started
            print(f"{scale}x: wrote {count} images ({pack_bytes / 2**20:.0f} MiB) in {written:.1f} s")
            runs = [("chunked", "chunked", None)]
            if not args.no_malloc_check:
                runs.append(("chunked", LIVE_LABEL, LIVE_ENV))
            if naive:
                runs.append(("naive", "naive np.array", None))
            for loader, label, env in runs:
                if args.cold:
                    evict(root / "full" / "train-images.npy")
                result = measure_in_child(args, loader, root, env)
                rows.append(table_row(label, result, pack_bytes, chunk_bytes / 1024))
                if not result["exact_peak"] and result["maxrss_before_kib"] > result["baseline_kib"]["VmRSS"]:
                    notes.append(f"{label} {scale}x: peak RSS could not be reset; it may include start-up")
                print(
                    f"  {label}: {result['seconds']:.2f} s, {result['samples']} samples, baseline VmRSS "
                    f"{mib(result['baseline_kib']['VmRSS'])} MiB (anon {mib(result['baseline_kib']['RssAnon'])}, "
                    f"file {mib(result['baseline_kib']['RssFile'])}), at the end anon "
                    f"+{mib(result['end_kib']['RssAnon'] - result['baseline_kib']['RssAnon'])} MiB"
                )
            shutil.rmtree(root)

    header = [
        "loader",
        "images",
        "pack MiB",
        "epoch s",
        "images/s",
        "peak RSS +MiB",
        "= chunks",
        "peak RssAnon +MiB",
        "= chunks",
        "peak RssFile +MiB",
        "of pack",
    ]
    print()
    print(markdown_table(header, rows))
    print(
        "\n+MiB: growth over the baseline taken after imports and engine start, right before the epoch. "
        "Peak RSS is the kernel's high-water mark (ru_maxrss); RssAnon and RssFile peaks are sampled. "
        f"A chunk is {chunk_bytes / 2**20:.1f} MiB. The naive loader's time includes reading the whole pack."
        + ("" if args.no_malloc_check else f" '{LIVE_LABEL}': glibc unmaps each freed large block at once.")
    )
    for note in notes:
        print(note)


if __name__ == "__main__":
    main()
