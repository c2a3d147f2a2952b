"""The `prepare` pipeline: source images -> decoded, validated pixels -> static split -> packs on disk.

Nothing here talks to MLflow: `prepare()` returns a `PreparedDataset` that the tracking layer logs.
A killed run loses nothing finished: downloads are atomic and resumable, and packs are built in a
`.partial/` folder and moved into place only when complete (`dataset.json` last). Nor does it leave
processes behind: the decode workers exit when the preparing process does (`watch_parent`).
"""

from __future__ import annotations

import contextlib
import csv
import logging
import multiprocessing
import os
import shutil
import signal
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np
from tqdm import tqdm

from genre.config import SEEDS, check_range, setting
from genre.data import pack
from genre.data.download import DownloadConfig, DownloadResult, download_covers
from genre.data.images import decode_outcome
from genre.data.manifest import read_manifest
from genre.data.problems import Problem, write_report
from genre.data.sources import SourceImage, render_digits, scan_folder
from genre.data.split import SPLITS, SplitFractions, development_subset, stratified_split
from genre.disk import check_writable, disk_faults, reserve
from genre.errors import ConfigError, DataError, DiskError
from genre.runtime import usable_cores

log = logging.getLogger(__name__)

COVER_SIZE = 350  # the original work's cover size
DIGIT_SIZE = 32  # 4x the 8x8 digits: enough for conv nets, small enough for CPU work
MIN_SIZE, MAX_SIZE = 8, 1024  # packed image sides
MANIFEST_DATASET_NAME = "covers"
DEFAULT_DATASET = f"data/prepared/digits-{DIGIT_SIZE}"  # where `genre prepare` with no flags puts the bundled digits
PARTIAL_FOLDER = ".partial"  # packs being written; moved into place only when complete


@dataclass(frozen=True)
class PrepareConfig:
    """What `genre prepare` is asked to do. Leave `manifest` and `folder` unset for the bundled digits."""

    manifest: str | None = setting(None, "manifest of 'URL<TAB>genre/file.jpg' lines to download and pack")
    folder: str | None = setting(None, "folder of images laid out ROOT/<genre>/<file> to pack")
    out: str | None = setting(None, "output folder (default: data/prepared/<name>-<image size>)")
    name: str | None = setting(None, "dataset name (default: digits, covers, or the folder's name)")
    image_size: int | None = setting(
        None,
        f"side of the packed square images, {MIN_SIZE}..{MAX_SIZE} pixels (default: {COVER_SIZE}; digits {DIGIT_SIZE})",
    )
    seed: int = setting(2015, "seed of the static split")
    dev_size: int = setting(
        1000, "images drawn from the training part for the development subset (0 = none: its packs are empty)"
    )
    train_fraction: float = setting(0.8, "share of each genre for training")
    val_fraction: float = setting(0.1, "share of each genre for validation")
    test_fraction: float = setting(0.1, "share of each genre for test")
    workers: int = setting(0, "decoding processes; 0 = every usable core")
    download_dir: str | None = setting(None, "where downloaded covers are kept (default: covers/ beside the manifest)")
    connections: int = setting(16, "concurrent downloads")
    retries: int = setting(3, "retries of a download after a 5xx, timeout or broken connection")
    timeout_seconds: float = setting(20.0, "connect/read timeout of one download")
    max_download_mb: float = setting(10.0, "largest cover accepted, in MiB")

    def __post_init__(self) -> None:
        unset = f" pixels (unset = {COVER_SIZE}, digits {DIGIT_SIZE})"
        check_range(self, "image_size", MIN_SIZE, MAX_SIZE, optional=True, note=unset)
        check_range(self, "seed", *SEEDS)
        check_range(self, "dev_size", 0, note=" (0 = no development subset)")
        for name in ("train_fraction", "val_fraction", "test_fraction"):
            check_range(self, name, 0.0, 1.0)
        shares = (self.train_fraction, self.val_fraction, self.test_fraction)
        if abs(sum(shares) - 1.0) > 1e-6:
            raise ConfigError(
                "'train_fraction', 'val_fraction' and 'test_fraction' must sum to 1, got "
                f"{' + '.join(f'{share:g}' for share in shares)} = {sum(shares):g}"
            )
        check_range(self, "workers", 0, note=" (0 = every usable core)")
        check_range(self, "connections", 1)
        check_range(self, "retries", 0)
        check_range(self, "timeout_seconds", 0.0, low_open=True)
        check_range(self, "max_download_mb", 0.0, low_open=True)

    @property
    def source_kind(self) -> str:
        if self.manifest and self.folder:
            raise ConfigError("give either --manifest or --folder, not both")
        return "manifest" if self.manifest else "folder" if self.folder else "digits"

    @property
    def dataset_name(self) -> str:
        if self.name:
            return self.name
        kind = self.source_kind
        if kind == "folder":
            return Path(self.folder or ".").resolve().name
        return MANIFEST_DATASET_NAME if kind == "manifest" else "digits"

    @property
    def size(self) -> int:
        if self.image_size is not None:
            return self.image_size
        return DIGIT_SIZE if self.source_kind == "digits" else COVER_SIZE

    @property
    def out_dir(self) -> Path:
        return Path(self.out) if self.out else Path("data") / "prepared" / f"{self.dataset_name}-{self.size}"

    @property
    def fractions(self) -> SplitFractions:
        return SplitFractions(self.train_fraction, self.val_fraction, self.test_fraction)

    @property
    def download_folder(self) -> Path:
        """Where a manifest's covers are kept."""
        if self.download_dir:
            return Path(self.download_dir)
        return Path(self.manifest or "").resolve().parent / "covers"

    def download_config(self) -> DownloadConfig:
        return DownloadConfig(
            connections=self.connections,
            retries=self.retries,
            timeout_seconds=self.timeout_seconds,
            max_bytes=int(self.max_download_mb * 2**20),
        )


@dataclass
class PreparedDataset:
    """What one `prepare` run produced, for the caller to report and log."""

    root: Path
    info: pack.DatasetInfo
    source_uri: str
    problems: list[Problem]
    download: DownloadResult | None
    sample_images: dict[str, list[np.ndarray]] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def split_file(self) -> Path:
        return self.root / pack.SPLIT_FILE

    @property
    def report_file(self) -> Path:
        return self.root / pack.REPORT_FILE

    @property
    def download_failed(self) -> bool:
        return bool(self.download and self.download.failures)


def gather_sources(
    config: PrepareConfig, progress: bool
) -> tuple[list[SourceImage], list[Problem], str, DownloadResult | None]:
    """Resolve the configured source into image files; downloads the manifest's covers first."""
    kind = config.source_kind
    if kind == "digits":
        root = render_digits(config.out_dir / "images")
        images, problems = scan_folder(root)
        return images, problems, "sklearn.datasets.load_digits", None
    if kind == "folder":
        root = Path(config.folder or "")
        images, problems = scan_folder(root)
        return images, problems, root.resolve().as_uri(), None
    manifest = Path(config.manifest or "")
    entries, problems = read_manifest(manifest)
    if not entries:
        raise DataError(f"manifest {manifest} has no usable lines; expected 'URL<TAB>genre/file.jpg' per line")
    dest = config.download_folder
    result = download_covers(entries, dest, config.download_config(), progress=progress)
    images = [SourceImage(entry.relpath, dest / entry.relpath) for entry in result.available]
    images.sort(key=lambda image: image.relpath)
    return images, problems + result.failures, manifest.resolve().as_uri(), result


def decode_rows(staging_path: Path, start: int, paths: list[Path], size: int) -> list[str | None]:
    """Worker: decode `paths` straight into rows `start...` of the staging pack; return each failure's reason.

    Writing through the shared memory map keeps the pixels out of the pool's pipe: only reasons travel back.
    """
    staging = np.load(staging_path, mmap_mode="r+")
    reasons: list[str | None] = []
    for offset, path in enumerate(paths):
        outcome = decode_outcome(path, size)
        if outcome.pixels is not None:
            staging[start + offset] = outcome.pixels
        reasons.append(outcome.reason)
    del staging
    return reasons


def watch_parent(alive: Connection) -> None:
    """Worker initializer: exit as soon as the preparing process is gone, however it went (SIGKILL included).

    A forkserver worker is the fork server's child, not the preparing process's, and it waits for tasks on a
    queue whose writing end it holds itself, so it never sees its parent die; the fork server and resource
    tracker live on as long as it does. `alive` is the reading end of a pipe whose only writer is the preparing
    process: the kernel closes that end when the process exits, and the read here returns.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group; the parent handles it

    def watch() -> None:
        with contextlib.suppress(EOFError, OSError):
            alive.recv_bytes()
        os._exit(1)

    threading.Thread(target=watch, name="watch-parent", daemon=True).start()


def decode_all(
    images: list[SourceImage], size: int, staging_path: Path, workers: int, progress: bool
) -> list[str | None]:
    """Decode every image into row i of the staging pack in parallel; return the reason for each one that failed.

    Interrupted (Ctrl-C, or SIGTERM under `genre prepare`), it cancels the queued work and stops the
    workers at once instead of finishing the queue; killed, its workers exit by themselves (`watch_parent`).
    """
    paths = [image.path for image in images]
    workers = workers or usable_cores()
    rows_per_task = max(1, min(64, len(paths) // (workers * 8) or 1))
    starts = range(0, len(paths), rows_per_task)
    reasons: list[str | None] = []
    bar = tqdm(total=len(images), desc="decode", unit="img", disable=not progress)
    # forkserver: worker processes must not inherit MLflow's or tqdm's threads through fork.
    context = multiprocessing.get_context("forkserver")
    alive, alive_writer = context.Pipe(duplex=False)
    executor = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=watch_parent, initargs=(alive,))
    try:
        tasks = [executor.submit(decode_rows, staging_path, i, paths[i : i + rows_per_task], size) for i in starts]
        for task in tasks:
            part = task.result()
            reasons.extend(part)
            bar.update(len(part))
    except BaseException:
        executor.shutdown(wait=False, cancel_futures=True)
        raise
    else:
        executor.shutdown(wait=True)
    finally:
        alive_writer.close()  # after an interruption, this is what stops the workers
        alive.close()
        bar.close()
    return reasons


def write_split_file(path: Path, rows: list[tuple[str, str, str, str]]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["file", "genre", "split", "dev_split"])
        writer.writerows(rows)
    tmp.replace(path)


def check_output_folders(config: PrepareConfig) -> None:
    """A folder `prepare` could not write is named before any download or decoding starts."""
    check_writable(config.out_dir, "output folder", "--out")
    if config.source_kind == "manifest":
        check_writable(config.download_folder, "download folder", "--download-dir")


def prepare(config: PrepareConfig, progress: bool = True) -> PreparedDataset:
    """Run the whole preparation and return what was made. Raises `GenreError` only when nothing can be.

    A full or read-only disk is a one-line `DiskError` naming the file; the downloads and the packs of an earlier
    run are kept, and this run's half-written packs are removed to give the space back.
    """
    check_output_folders(config)
    root = config.out_dir
    kept = f"the downloaded covers and any packs an earlier run finished in {root} are kept"
    try:
        with disk_faults(root, f"{kept}: free some space and rerun the same command"):
            return _prepare(config, progress)
    except DiskError:
        shutil.rmtree(root / PARTIAL_FOLDER, ignore_errors=True)
        raise


def _prepare(config: PrepareConfig, progress: bool) -> PreparedDataset:
    started = time.perf_counter()
    size, root = config.size, config.out_dir
    fractions = config.fractions
    root.mkdir(parents=True, exist_ok=True)
    images, problems, source_uri, download = gather_sources(config, progress)
    if not images:
        raise DataError(f"no images to pack from {source_uri}; see {root / pack.REPORT_FILE}")

    partial = root / PARTIAL_FOLDER
    shutil.rmtree(partial, ignore_errors=True)  # what a killed run left half-written
    partial.mkdir()
    staging_path = partial / "staging.npy"
    staging = np.lib.format.open_memmap(staging_path, mode="w+", dtype=np.uint8, shape=(len(images), size, size, 3))
    reserve(staging_path)
    pack_bytes = (len(images) + min(config.dev_size, len(images))) * size * size * 3  # the full and dev packs
    check_writable(partial, "packs", "--out", min_free=pack_bytes)  # now, not after decoding
    reasons = decode_all(images, size, staging_path, config.workers, progress)
    problems += [
        Problem("decode", image.relpath, reason) for image, reason in zip(images, reasons, strict=True) if reason
    ]
    valid = [i for i, reason in enumerate(reasons) if reason is None]
    if not valid:
        write_report(root / pack.REPORT_FILE, problems, dataset=config.dataset_name, packed=0)
        raise DataError(f"none of the {len(images)} images could be decoded; see {root / pack.REPORT_FILE}")

    names = [images[i].relpath for i in valid]
    genres_of = [images[i].genre for i in valid]
    genres = sorted(set(genres_of))
    label_of = {genre: index for index, genre in enumerate(genres)}
    assignment = stratified_split(names, genres_of, fractions, config.seed)
    dev = development_subset(names, genres_of, assignment, config.dev_size, fractions, config.seed)

    counts: dict[str, dict[str, int]] = {}
    digests: dict[str, str] = {}
    files: dict[str, list[str]] = {}
    for variant, splits_of in (("full", assignment), ("dev", dev)):
        counts[variant] = {}
        for split in SPLITS:
            members = [k for k, s in enumerate(splits_of) if s == split]  # sorted by relpath
            rows = np.array([valid[k] for k in members], dtype=np.int64)
            labels = np.array([label_of[genres_of[k]] for k in members], dtype=np.int32)
            images_path, labels_path = pack.pack_paths(partial, variant, split)
            digests[f"{variant}/{split}"] = pack.write_pack(images_path, labels_path, staging, rows, labels)
            counts[variant][split] = len(members)
            files[f"{variant}/{split}"] = [names[k] for k in members]

    samples = {genre: [] for genre in genres}
    for k in range(len(names)):
        if assignment[k] == "train" and len(samples[genres_of[k]]) < 8:
            samples[genres_of[k]].append(np.array(staging[valid[k]]))
    del staging

    # Swap the finished packs in: dataset.json goes first and comes back last, so a reader never
    # sees a half-replaced set as complete.
    (root / pack.DATASET_FILE).unlink(missing_ok=True)
    for variant in pack.VARIANTS:
        shutil.rmtree(root / variant, ignore_errors=True)
        (partial / variant).replace(root / variant)
    shutil.rmtree(partial)
    write_split_file(
        root / pack.SPLIT_FILE,
        [(name, genres_of[k], assignment[k], dev[k]) for k, name in enumerate(names)],
    )
    info = pack.DatasetInfo(
        name=config.dataset_name,
        source=source_uri,
        genres=genres,
        image_size=size,
        seed=config.seed,
        counts=counts,
        pack_digests=digests,
        digest=pack.dataset_digest(genres, size, digests),
        files=files,
    )
    write_report(
        root / pack.REPORT_FILE,
        problems,
        dataset=info.name,
        digest=info.digest,
        candidates=len(images),
        packed=len(valid),
        downloaded=len(download.fetched) if download else 0,
        already_present=len(download.already_present) if download else 0,
        cross_host_redirects=[asdict(r) for r in download.cross_host] if download else [],
    )
    info.write(root)
    return PreparedDataset(root, info, source_uri, problems, download, samples, time.perf_counter() - started)
