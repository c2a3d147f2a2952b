"""The `prepare` pipeline: source images -> decoded, validated pixels -> static split -> packs on disk.

Nothing here talks to MLflow: `prepare()` returns a `PreparedDataset` that the tracking layer logs.
A killed run loses nothing finished: downloads are atomic and resumable, and packs are built in a
`.partial/` folder and moved into place only when complete (`dataset.json` last). Nor does it leave
processes behind: the decode workers exit when the preparing process does (`watch_parent`).
"""

from __future__ import annotations

import collections
import contextlib
import csv
import hashlib
import logging
import multiprocessing
import os
import re
import shutil
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import NamedTuple

import numpy as np
from tqdm import tqdm

from genre.config import EXPERIMENTS_DIR, SEEDS, check_range, read_config_file, setting
from genre.data import pack
from genre.data.download import DownloadConfig, DownloadResult, download_covers
from genre.data.images import decode_outcome
from genre.data.manifest import read_manifest
from genre.data.near_copies import DEFAULT_MAX_BITS, HASH_SIDE, average_hash, near_copy_groups
from genre.data.problems import Problem, write_report
from genre.data.sources import DIGITS_SOURCE, SourceImage, check_image_folder, render_digits, scan_folder
from genre.data.split import SPLITS, SplitFractions, development_subset, stratified_split
from genre.data.writer_lock import writer_lock
from genre.disk import check_writable, disk_faults
from genre.errors import ConfigError, DataError, DiskError
from genre.runtime import usable_cores

log = logging.getLogger(__name__)

COVER_SIZE = 350  # the original work's cover size
DIGIT_SIZE = 32  # 4x the 8x8 digits: enough for conv nets, small enough for CPU work
MIN_SIZE, MAX_SIZE = 8, 1024  # packed image sides
MANIFEST_DATASET_NAME = "covers"
DEFAULT_DATASET = f"data/prepared/digits-{DIGIT_SIZE}"  # where `genre prepare` with no flags puts the bundled digits
DATASET_NAME = re.compile(r"[^/\\\x00.][^/\\\x00]*")  # a name, never a path: no separator, no leading dot
PARTIAL_FOLDER = ".partial"  # packs being written; moved into place only when complete
NEAR_COPIES_FILE = "near_copies.csv"


@dataclass(frozen=True)
class PrepareConfig:
    """What `genre prepare` is asked to do. Leave `manifest` and `folder` unset for the bundled digits."""

    manifest: str | None = setting(None, "manifest of 'URL<TAB>genre/file.jpg' lines to download and pack")
    folder: str | None = setting(None, "folder of images laid out ROOT/<genre>/<file> to pack")
    out: str | None = setting(None, "output folder (default: data/prepared/<name>-<image size>)")
    name: str | None = setting(
        None, "dataset name (default: digits, covers, or the folder's name when no named dataset takes it)"
    )
    image_size: int | None = setting(
        None,
        f"side of the packed square images, {MIN_SIZE}..{MAX_SIZE} pixels (default: {COVER_SIZE}; digits {DIGIT_SIZE})",
    )
    seed: int = setting(2015, "seed of the static split")
    dev_size: int = setting(
        1000, "images drawn from the training part for the development subset (0 = none: its packs are empty)"
    )
    near_copy_bits: int = setting(
        DEFAULT_MAX_BITS,
        f"covers whose {HASH_SIDE}x{HASH_SIDE} average hashes differ in at most this many of {HASH_SIDE**2} bits are "
        "near-copies, kept on one side of every split (-1: do not look for them)",
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
        check_range(self, "near_copy_bits", -1, HASH_SIDE**2 // 4, note=" (-1 = do not look for near-copies)")
        for name in ("train_fraction", "val_fraction", "test_fraction"):  # every split needs covers
            check_range(self, name, 0.0, 1.0, low_open=True, note=" (train, val and test each need covers)")
        shares = (self.train_fraction, self.val_fraction, self.test_fraction)
        if abs(sum(shares) - 1.0) > 1e-6:
            raise ConfigError(
                "'train_fraction', 'val_fraction' and 'test_fraction' must sum to 1, got "
                f"{' + '.join(f'{share:g}' for share in shares)} = {sum(shares):g}"
            )
        if self.name is not None and not DATASET_NAME.fullmatch(self.name):
            raise ConfigError(
                f"'name' is a dataset's name, not a path: no '/' or '\\', not starting with '.', got {self.name!r}; "
                "--out chooses where the packs go"
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


class TakenName(NamedTuple):
    """Who uses a dataset name: `user` in words, the dataset name and output folder it packs under, and for a named
    dataset its name (for `--dataset`) and the folder it packs (None for other sources)."""

    user: str
    dataset: str
    out: str
    named: str = ""
    folder: Path | None = None


def taken_names(datasets: Path = EXPERIMENTS_DIR / "datasets") -> dict[str, TakenName]:
    """The dataset names a folder may not take by default, casefolded: each named dataset's file stem, `digits` and
    `covers` (the manifest's), and each named dataset's dataset name and output folder name (`covers-dev-256`).

    A folder named like one of them would put its packs beside theirs and its runs in their MLflow experiment."""
    named: list[tuple[Path, TakenName]] = []
    for path in sorted(datasets.glob("*.yaml")):
        try:
            values = read_config_file(path)
        except ConfigError:
            continue  # a broken named dataset is reported when it is used, not by every other prepare
        folder = Path(str(values["folder"])) if values.get("folder") else None
        kind = "manifest" if values.get("manifest") else "folder" if folder else "digits"
        default = {"manifest": MANIFEST_DATASET_NAME, "folder": folder.name if folder else "", "digits": "digits"}
        name = str(values.get("name") or default[kind])
        size = values.get("image_size") or (DIGIT_SIZE if kind == "digits" else COVER_SIZE)
        out = Path(str(values["out"])).name if values.get("out") else f"{name}-{size}"
        named.append((path, TakenName(f"the named dataset {path.stem} ({path})", name, out, path.stem, folder)))
    taken = {path.stem.casefold(): user for path, user in named}  # a file's own name first
    taken.setdefault("digits", TakenName("the bundled digits", "digits", f"digits-{DIGIT_SIZE}"))
    manifest = TakenName("the covers of a manifest", MANIFEST_DATASET_NAME, f"{MANIFEST_DATASET_NAME}-{COVER_SIZE}")
    taken.setdefault(MANIFEST_DATASET_NAME, manifest)
    for _, user in named:
        taken.setdefault(user.dataset.casefold(), user)
        taken.setdefault(user.out.casefold(), user)
    return taken


def check_folder_name(folder: Path) -> None:
    """A one-line `ConfigError` pointing to `--name` when `folder`'s own name would take a named dataset's name."""
    name = folder.resolve().name
    user = taken_names().get(name.casefold())
    if user is None:
        return
    if user.folder is not None and user.folder.resolve() == folder.resolve():
        todo = f"`genre prepare --dataset {user.named}` packs this folder as that dataset, or give it --name NAME"
    else:
        todo = f"give it a name of its own with --name NAME (e.g. --name my-{name})"
    raise ConfigError(
        f"folder {folder} would name its dataset '{name}', which {user.user} uses (data/prepared/{user.out}, "
        f"MLflow experiment genre-{user.dataset}); {todo}"
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
    def near_copies_file(self) -> Path:
        return self.root / NEAR_COPIES_FILE

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
        return images, problems, DIGITS_SOURCE, None
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


@dataclass(frozen=True)
class PackLayout:
    """What each pack holds for a list of images: per pack (`"full/train"`, ..., `"dev/test"`), the indices of its
    images, ascending (so its rows follow the images' relpath order), and their labels (indices into `genres`)."""

    genres: list[str]
    assignment: list[str]  # "train", "val" or "test" for each image
    dev: list[str]  # each image's development split, "" when it was not drawn
    members: dict[str, np.ndarray]  # int64 image indices
    labels: dict[str, np.ndarray]  # int32


def plan_packs(
    names: list[str],
    genres_of: list[str],
    fractions: SplitFractions,
    seed: int,
    dev_size: int,
    groups: list[list[int]] | None = None,
) -> PackLayout:
    """Split the images (`names` sorted, each `genre/file`) and lay out the packs: a pure function of its arguments.

    Each near-copy group (indices into `names`) stays on one side of the split and of the development split."""
    genres = sorted(set(genres_of))
    label_of = {genre: index for index, genre in enumerate(genres)}
    labels_of = np.array([label_of[genre] for genre in genres_of], dtype=np.int32)
    assignment = stratified_split(names, genres_of, fractions, seed, groups=groups or ())
    dev = development_subset(names, genres_of, assignment, dev_size, fractions, seed, groups or ())
    members: dict[str, np.ndarray] = {}
    for variant, splits_of in (("full", assignment), ("dev", dev)):
        for split in SPLITS:
            members[f"{variant}/{split}"] = np.array([i for i, s in enumerate(splits_of) if s == split], dtype=np.int64)
    labels = {key: labels_of[indices] for key, indices in members.items()}
    return PackLayout(genres, assignment, dev, members, labels)


Places = tuple[tuple[int, int], ...]  # where one image's pixels go: (pack file number, byte offset) pairs


def pack_places(layout: PackLayout, offsets: list[int], row_bytes: int, count: int) -> list[Places]:
    """For each of `count` images, its places in the packs (numbered in `layout.members` order), given each pack
    file's offset of row 0: one place in a full pack, and a second in a development pack if it was drawn."""
    places: list[list[tuple[int, int]]] = [[] for _ in range(count)]
    for number, (indices, offset) in enumerate(zip(layout.members.values(), offsets, strict=True)):
        for row, index in enumerate(indices.tolist()):
            places[index].append((number, offset + row * row_bytes))
    return [tuple(place) for place in places]


def task_runs(count: int, workers: int) -> list[tuple[int, int]]:
    """Consecutive `(start, stop)` runs of images, one per task: up to 64 images, fewer towards the end, so the
    workers run out of work at about the same time."""
    runs, start = [], 0
    while start < count:
        stop = start + max(1, min(64, (count - start) // (workers * 4)))
        runs.append((start, stop))
        start = stop
    return runs


Decoded = tuple[str | None, bytes]  # one image's failure reason (None: decoded) and its average hash (b"" if failed)


def decode_rows(paths: list[Path], places: list[Places], files: list[Path], size: int) -> list[Decoded]:
    """Worker: decode `paths` and write each image's pixels at its places in the pack files; return each image's
    failure reason and the average hash of its pixels (`genre.data.near_copies`).

    The pixels go straight into the packs, once per pack that holds them, with no staging copy; only the reasons
    and the 32-byte hashes travel back through the pool's pipe.
    """
    handles: dict[int, int] = {}
    reasons: list[Decoded] = []
    try:
        for path, where in zip(paths, places, strict=True):
            outcome = decode_outcome(path, size)
            if outcome.pixels is not None:
                for number, offset in where:
                    if number not in handles:
                        handles[number] = os.open(files[number], os.O_WRONLY)
                    pack.write_at(handles[number], outcome.pixels, offset)
            reasons.append((outcome.reason, average_hash(outcome.pixels) if outcome.pixels is not None else b""))
    finally:
        for handle in handles.values():
            os.close(handle)
    return reasons


class PackHashes:
    """The packs' sha256 digests, computed while the workers decode.

    A pack's rows follow the image order, so once the first n images are decoded, their rows are final: each is
    read back once, while still in the page cache, and hashed into the digest of every pack that holds it, and
    the writing of those rows to disk starts. `pack.finish_pack` adds the labels to each digest. sha256 is
    sequential, so each pack is hashed in one process, row after row: here, in the parent, while the workers decode.

    A few follows later, when their writeback is likely done, those rows leave the page cache (`pack.drop_written`),
    so the next rows reuse the memory they held. On a VM that returns freed memory to its host (virtio-balloon free
    page reporting, as on the 2-vCPU VMs of docs/benchmarks.md), memory the guest has not touched lately costs about
    2 s of CPU per GB to touch again: a page cache that kept every pack cost prepare 20-30% on top of the decoding.
    """

    DROP_AFTER = 3  # follows between starting a range's writeback and dropping its pages

    def __init__(self, files: list[Path], places: list[Places], row_bytes: int) -> None:
        self.places = places
        self.row_bytes = row_bytes
        self.digests = [hashlib.sha256() for _ in files]
        self.hashed = 0  # images whose rows are hashed
        self.writing: collections.deque[dict[int, tuple[int, int]]] = collections.deque()  # spans, oldest first
        self.row = bytearray(row_bytes)  # one row at a time: hashed while it is in this core's cache
        self.handles = [os.open(path, os.O_RDONLY) for path in files]

    def follow(self, decoded: int) -> None:
        """Hash the rows of the first `decoded` images that are not hashed yet."""
        spans: dict[int, tuple[int, int]] = {}  # pack file number -> (first, end) byte of the rows hashed now
        for where in self.places[self.hashed : decoded]:
            pack.read_at(self.handles[where[0][0]], self.row, where[0][1])
            for number, offset in where:
                self.digests[number].update(self.row)
                spans[number] = (spans.get(number, (offset, 0))[0], offset + self.row_bytes)
        for number, (first, end) in spans.items():
            pack.start_writeback(self.handles[number], first, end - first)
        self.writing.append(spans)
        while len(self.writing) > self.DROP_AFTER:
            for number, (first, end) in self.writing.popleft().items():
                pack.drop_written(self.handles[number], first, end - first)
        self.hashed = max(self.hashed, decoded)

    def close(self) -> None:
        for handle in self.handles:
            os.close(handle)
        self.handles = []


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
    images: list[SourceImage],
    size: int,
    places: list[Places],
    files: list[Path],
    workers: int,
    progress: bool,
    on_decoded: Callable[[int, list[str | None]], None] | None = None,
) -> tuple[list[str | None], list[bytes]]:
    """Decode every image into its places in the pack files in parallel; return the reason for each one that failed
    (None for the others) and each image's average hash (b"" for a failure).

    `on_decoded(n, reasons)` is called in order as each task's run of images is done: the first n images are
    decoded, and `reasons` are those of the run that just finished.
    Interrupted (Ctrl-C, or SIGTERM under `genre prepare`), it cancels the queued work and stops the
    workers at once instead of finishing the queue; killed, its workers exit by themselves (`watch_parent`).
    """
    paths = [image.path for image in images]
    workers = workers or usable_cores()
    reasons: list[str | None] = []
    hashes: list[bytes] = []
    bar = tqdm(total=len(images), desc="decode", unit="img", disable=not progress)
    # forkserver: worker processes must not inherit MLflow's or tqdm's threads through fork. The fork server
    # imports this module (numpy, Pillow) once when it starts, so each worker starts without importing them again.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    alive, alive_writer = context.Pipe(duplex=False)
    executor = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=watch_parent, initargs=(alive,))
    try:
        tasks = [
            (stop, executor.submit(decode_rows, paths[start:stop], places[start:stop], files, size))
            for start, stop in task_runs(len(paths), workers)
        ]
        for stop, task in tasks:
            decoded = task.result()
            part = [reason for reason, _ in decoded]
            hashes.extend(image_hash for _, image_hash in decoded)
            reasons.extend(part)
            if on_decoded is not None:
                on_decoded(stop, part)
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
    return reasons, hashes


def repack(partial: Path, decoded: PackLayout, layout: PackLayout, valid: list[int], size: int) -> list[str]:
    """Rebuild the packs of `layout` (over the images `valid`) from the full packs the workers wrote for `decoded`
    (over every image); return their digests, in `layout.members` order.

    Needed only when some images failed to decode: the split of the others then differs from the one the workers
    wrote into. Every decoded image is in one of the full packs; the development packs are removed first, so the
    disk holds at most the written full packs and the new packs at once.
    """
    written = partial / "decoded"
    shutil.rmtree(written, ignore_errors=True)
    (partial / "full").replace(written)
    shutil.rmtree(partial / "dev")
    pack_of = np.zeros(len(decoded.assignment), dtype=np.int64)
    row_of = np.zeros(len(decoded.assignment), dtype=np.int64)
    sources = []
    for number, split in enumerate(SPLITS):
        indices = decoded.members[f"full/{split}"]
        pack_of[indices], row_of[indices] = number, np.arange(len(indices))
        sources.append(np.load(pack.pack_paths(partial, written.name, split)[0], mmap_mode="r"))
    row_bytes = size * size * 3
    image_of = np.asarray(valid, dtype=np.int64)
    digests = []
    for key, members in layout.members.items():
        images_path, labels_path = pack.pack_paths(partial, *key.split("/"))
        offset = pack.create_pack(images_path, len(members), size)
        digest = hashlib.sha256()
        handle = os.open(images_path, os.O_WRONLY)
        try:
            for start in range(0, len(members), pack.COPY_ROWS):
                chosen = image_of[members[start : start + pack.COPY_ROWS]]
                block = np.empty((len(chosen), size, size, 3), dtype=np.uint8)
                for number, source in enumerate(sources):
                    here = pack_of[chosen] == number
                    if here.any():
                        block[here] = source[row_of[chosen[here]]]
                pack.write_at(handle, block, offset + start * row_bytes)
                digest.update(block)
        finally:
            os.close(handle)
        digests.append(pack.finish_pack(images_path, labels_path, layout.labels[key], digest))
    del sources
    shutil.rmtree(written)
    return digests


def thin_genres(layout: PackLayout) -> list[str]:
    """A line for each genre too small for the split: one whose full validation or test pack gets none of its covers
    (it then cannot be scored there, and its balanced accuracy is undefined)."""
    per_split = {split: np.bincount(layout.labels[f"full/{split}"], minlength=len(layout.genres)) for split in SPLITS}
    lines = []
    for label, genre in enumerate(layout.genres):
        missing = [split for split in ("val", "test") if per_split[split][label] == 0]
        if missing:
            covers = sum(int(per_split[split][label]) for split in SPLITS)
            lines.append(
                f"genre {genre} has {covers} cover(s): its {' and '.join(missing)} "
                f"{'splits get' if len(missing) > 1 else 'split gets'} none, so it is never scored there; add covers "
                "to it, or leave its folder out"
            )
    return lines


def same_packs(one: PackLayout, other: PackLayout) -> bool:
    """Whether two layouts of the same images put the same images in every pack."""
    return one.members.keys() == other.members.keys() and all(
        np.array_equal(one.members[key], other.members[key]) for key in one.members
    )


def write_near_copies_file(
    path: Path, groups: list[list[int]], names: list[str], genres_of: list[str], assignment: list[str]
) -> None:
    """`near_copies.csv`: each near-copy group's covers (group numbered from 1), their genre and their split."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["group", "file", "genre", "split"])
        for number, group in enumerate(groups, 1):
            writer.writerows([number, names[i], genres_of[i], assignment[i]] for i in group)
    tmp.replace(path)


def write_split_file(path: Path, rows: list[tuple[str, str, str, str]]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["file", "genre", "split", "dev_split"])
        writer.writerows(rows)
    tmp.replace(path)


def check_output_folders(config: PrepareConfig) -> None:
    """A folder `prepare` could not write is named before any download or decoding starts (and before a run or a
    folder is made), and so is a source that is not there and a source folder whose own name a named dataset takes
    (unless `--name` names the dataset)."""
    if config.source_kind == "folder":
        folder = Path(config.folder or ".")
        check_image_folder(folder)
        if not config.name:
            check_folder_name(folder)
    if config.source_kind == "manifest" and not Path(config.manifest or "").is_file():
        raise DataError(f"manifest {config.manifest} is not a file; pass --manifest FILE (lines 'URL<TAB>genre/file')")
    check_writable(config.out_dir, "output folder", "--out")
    if config.source_kind == "manifest":
        check_writable(config.download_folder, "download folder", "--download-dir")


def prepare(config: PrepareConfig, progress: bool = True) -> PreparedDataset:
    """Run the whole preparation and return what was made. Raises `GenreError` only when nothing can be.

    One writer at a time per output folder (and download folder): a second waits for the first (`writer_lock`).
    A full or read-only disk is a one-line `DiskError` naming the file; the downloads and the packs of an earlier
    run are kept, and this run's half-written packs are removed to give the space back.
    """
    prepared = _locked_prepare(config, progress, only_if_missing=False)
    assert prepared is not None
    return prepared


def prepare_if_missing(config: PrepareConfig, progress: bool = True) -> PreparedDataset | None:
    """`prepare`, unless the dataset is complete once this process holds the writer lock (another process may have
    prepared it meanwhile: two trainings auto-preparing the bundled digits); None when it was."""
    return _locked_prepare(config, progress, only_if_missing=True)


def _locked_prepare(config: PrepareConfig, progress: bool, only_if_missing: bool) -> PreparedDataset | None:
    check_output_folders(config)
    root = config.out_dir
    kept = f"the downloaded covers and any packs an earlier run finished in {root} are kept"
    with contextlib.ExitStack() as locks:
        locks.enter_context(writer_lock(root, "dataset folder"))
        if only_if_missing and (root / pack.DATASET_FILE).exists():
            return None
        if config.source_kind == "manifest" and config.download_folder.resolve() != root.resolve():
            locks.enter_context(writer_lock(config.download_folder, "download folder"))
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
    # Laid out as if every image decodes, the packs are allocated whole now (a disk too small fails here, not after
    # decoding), and the workers write each image straight into its rows.
    names = [image.relpath for image in images]
    layout = plan_packs(names, [image.genre for image in images], fractions, config.seed, config.dev_size)
    keys = list(layout.members)
    pack_files = [pack.pack_paths(partial, *key.split("/")) for key in keys]
    image_files = [images_path for images_path, _ in pack_files]
    rows = [len(indices) for indices in layout.members.values()]
    row_bytes = size * size * 3
    check_writable(root, "packs", "--out", min_free=sum(rows) * row_bytes)
    offsets = [pack.create_pack(path, count, size) for path, count in zip(image_files, rows, strict=True)]
    places = pack_places(layout, offsets, row_bytes, len(images))
    hashes = PackHashes(image_files, places, row_bytes)
    failed = False

    def follow(decoded: int, part: list[str | None]) -> None:
        nonlocal failed
        failed = failed or any(reason is not None for reason in part)
        if not failed:  # after a failure the packs are rebuilt by `repack`, and hashed then
            hashes.follow(decoded)

    try:
        reasons, image_hashes = decode_all(images, size, places, image_files, config.workers, progress, follow)
    finally:
        hashes.close()
    problems += [
        Problem("decode", image.relpath, reason) for image, reason in zip(images, reasons, strict=True) if reason
    ]
    valid = [i for i, reason in enumerate(reasons) if reason is None]
    if not valid:
        write_report(root / pack.REPORT_FILE, problems, dataset=config.dataset_name, packed=0)
        raise DataError(f"none of the {len(images)} images could be decoded; see {root / pack.REPORT_FILE}")

    genres_of = [images[i].genre for i in valid]
    near_copies = near_copy_groups([image_hashes[i] for i in valid], config.near_copy_bits)
    grouped = plan_packs([names[i] for i in valid], genres_of, fractions, config.seed, config.dev_size, near_copies)
    for warning in thin_genres(grouped):
        log.warning("%s", warning)
    if failed or not same_packs(grouped, layout):
        # The workers wrote into the split planned before the hashes (and failures) were known: copy the rows over.
        decoded, layout, names = layout, grouped, [names[i] for i in valid]
        pack_digests = repack(partial, decoded, layout, valid, size)
    else:
        pack_digests = [
            pack.finish_pack(images_path, labels_path, layout.labels[key], digest)
            for key, (images_path, labels_path), digest in zip(keys, pack_files, hashes.digests, strict=True)
        ]
    genres, assignment, dev = layout.genres, layout.assignment, layout.dev
    digests = dict(zip(keys, pack_digests, strict=True))
    counts = {
        variant: {split: len(layout.members[f"{variant}/{split}"]) for split in SPLITS} for variant in pack.VARIANTS
    }
    files = {key: [names[i] for i in members.tolist()] for key, members in layout.members.items()}

    samples: dict[str, list[np.ndarray]] = {genre: [] for genre in genres}
    train_labels = layout.labels["full/train"]
    if len(train_labels):
        train = np.load(pack.pack_paths(partial, "full", "train")[0], mmap_mode="r")
        for label, genre in enumerate(genres):
            samples[genre] = [np.array(train[row]) for row in np.flatnonzero(train_labels == label)[:8]]
        del train

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
    near_copy_names = [[names[i] for i in group] for group in near_copies]
    write_near_copies_file(root / NEAR_COPIES_FILE, near_copies, names, genres_of, assignment)
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
        near_copy_bits=config.near_copy_bits,
        near_copies=near_copy_names,
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
