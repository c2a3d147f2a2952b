"""The packed dataset on disk: what `prepare` writes and what training reads a chunk at a time.

Layout of a prepared dataset folder::

    dataset.json                 written last: its presence means the packs are complete
    split.csv                    file,genre,split,dev_split for every packed image
    near_copies.csv              group,file,genre,split of every near-copy group (kept on one side of each split)
    report.json                  every item left out, with its reason
    full/{train,val,test}-images.npy   uint8 (N, H, W, 3), opened with mmap_mode="r"
    full/{train,val,test}-labels.npy   int32 (N,), indices into `genres`
    dev/...                      the development subset, same layout

Plain `.npy` files are used because numpy memory-maps them with no extra code or dependency, a chunk
is one contiguous slice, and any tool can read them (docs/data.md has the comparison with RecordIO).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from genre.data.split import SPLITS
from genre.disk import reserve
from genre.errors import DataError

FORMAT_VERSION = 1
VARIANTS = ("full", "dev")
DATASET_FILE = "dataset.json"
SPLIT_FILE = "split.csv"
REPORT_FILE = "report.json"
COPY_ROWS = 256


def pack_paths(root: Path, variant: str, split: str) -> tuple[Path, Path]:
    """The images and labels files of one pack."""
    return root / variant / f"{split}-images.npy", root / variant / f"{split}-labels.npy"


@dataclass(frozen=True)
class DatasetInfo:
    """The metadata beside the packs: genre names (sorted; a label is an index), counts and digests."""

    name: str
    source: str
    genres: list[str]
    image_size: int
    seed: int
    counts: dict[str, dict[str, int]]
    pack_digests: dict[str, str]
    digest: str
    files: dict[str, list[str]] = field(default_factory=dict)
    near_copy_bits: int | None = None  # the threshold prepare grouped near-copies with; None: prepared before it did
    near_copies: list[list[str]] = field(default_factory=list)  # groups of files kept on one side of every split
    format_version: int = FORMAT_VERSION

    def write(self, root: Path) -> Path:
        path = root / DATASET_FILE
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1) + "\n")
        tmp.replace(path)
        return path

    @classmethod
    def read(cls, root: Path) -> DatasetInfo:
        path = root / DATASET_FILE
        if not path.exists():
            raise DataError(f"{root} is not a prepared dataset (no {DATASET_FILE}); run `genre prepare --out {root}`")
        try:
            raw = json.loads(path.read_text())
            info = cls(**raw)
        except (ValueError, TypeError) as error:
            raise DataError(f"{path} is unreadable ({error}); run `genre prepare` again to rewrite it") from error
        if info.format_version != FORMAT_VERSION:
            raise DataError(f"{path} has pack format {info.format_version}, expected {FORMAT_VERSION}; prepare again")
        return info


def dataset_digest(genres: list[str], image_size: int, pack_digests: dict[str, str]) -> str:
    """A short content digest of the whole dataset (what MLflow shows as the dataset's digest)."""
    payload = json.dumps({"genres": genres, "image_size": image_size, "packs": pack_digests}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def create_pack(images_path: Path, count: int, size: int) -> int:
    """Make the images file of a pack, `count` rows `(size, size, 3)` uint8 allocated on disk (`reserve`), for its
    rows to be written in place; return the byte offset of row 0 (row k starts `k * size * size * 3` after it).

    The header is numpy's own for that shape, so the file is byte for byte what `np.save` writes once the rows are in.
    """
    images_path.parent.mkdir(parents=True, exist_ok=True)
    shape = (count, size, size, 3)
    if count == 0:
        np.save(images_path, np.zeros(shape, dtype=np.uint8))
        return images_path.stat().st_size
    target = np.lib.format.open_memmap(images_path, mode="w+", dtype=np.uint8, shape=shape)
    offset = int(target.offset)
    del target
    reserve(images_path)
    return offset


def write_at(handle: int, data: np.ndarray, offset: int) -> None:
    """Write all of a C-contiguous array at `offset` of an open file (`os.pwrite` may write less than asked)."""
    view = memoryview(data).cast("B")
    while view:
        written = os.pwrite(handle, view, offset)
        view, offset = view[written:], offset + written


def read_at(handle: int, buffer: bytearray, offset: int) -> None:
    """Fill `buffer` from `offset` of an open file; a file that ends first is an `OSError`."""
    view = memoryview(buffer)
    while view:
        read = os.preadv(handle, [view], offset)
        if read == 0:
            raise OSError(f"pack file ends before byte {offset + len(view)}")
        view, offset = view[read:], offset + read


def start_writeback(handle: int, offset: int, length: int) -> None:
    """Start writing a finished byte range to disk now, without waiting, so the final `fsync` finds little left.

    Linux starts writeback of dirty pages on `POSIX_FADV_DONTNEED` (and drops only pages already clean); elsewhere
    this does nothing and `fsync` writes everything at the end.
    """
    if hasattr(os, "posix_fadvise") and length > 0:
        os.posix_fadvise(handle, offset, length, os.POSIX_FADV_DONTNEED)


def drop_written(handle: int, offset: int, length: int) -> None:
    """Drop a byte range whose writeback has finished from the page cache, freeing its memory for the next writes.

    The same `POSIX_FADV_DONTNEED` as `start_writeback`: pages still dirty or being written stay cached, so calling
    it too early loses nothing.
    """
    start_writeback(handle, offset, length)


def finish_pack(images_path: Path, labels_path: Path, labels: np.ndarray, digest: hashlib._Hash) -> str:
    """Write a pack's labels and make both files durable; return the pack's sha256 (`digest` holds its image rows).

    The digest `dataset.json` lists for a pack is sha256 of its image rows in order (the raw pixels, no header),
    then of its int32 labels.
    """
    labels = np.asarray(labels, dtype=np.int32)
    np.save(labels_path, labels)
    digest.update(labels.tobytes())
    for path in (images_path, labels_path):  # on disk before dataset.json says the packs are complete
        handle = os.open(path, os.O_RDONLY)
        try:
            os.fsync(handle)
        finally:
            os.close(handle)
    return digest.hexdigest()


VERIFIED_FILE = ".verified.json"  # packs whose digest was checked, with the file stamps it was checked at


def content_digest(images: np.ndarray, labels: np.ndarray) -> str:
    """A pack's sha256 as `finish_pack` records it: its image rows in order (raw pixels), then its int32 labels."""
    digest = hashlib.sha256()
    for start in range(0, len(images), COPY_ROWS):
        digest.update(np.ascontiguousarray(images[start : start + COPY_ROWS]))
    digest.update(np.asarray(labels, dtype=np.int32).tobytes())
    return digest.hexdigest()


def file_stamps(paths: tuple[Path, ...]) -> list[list[int]]:
    """What changes when a file is rewritten or edited: its inode, size and modification time."""
    return [[(s := path.stat()).st_ino, s.st_size, s.st_mtime_ns] for path in paths]


def verify_digest(root: Path, key: str, paths: tuple[Path, Path], images: np.ndarray, labels: np.ndarray,
                  expected: str, redo: str) -> None:  # fmt: skip
    """A `DataError` unless the pack's content has the digest `dataset.json` records. Hashing a pack costs a read
    of it (about a second per GB), so the verdict is remembered in `VERIFIED_FILE` until its files change; a
    folder that cannot be written is verified at every opening instead."""
    memo_path = root / VERIFIED_FILE
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    stamps = file_stamps(paths)
    if memo.get(key) == {"digest": expected, "files": stamps}:
        return
    actual = content_digest(images, labels)
    if actual != expected:
        raise DataError(
            f"pack {key} of {root} is not what prepare wrote (its content digest {actual[:12]} differs from the "
            f"{expected[:12]} in {DATASET_FILE}: the files changed after prepare, or two writers raced); {redo}"
        )
    memo[key] = {"digest": expected, "files": stamps}
    partial = memo_path.with_name(f"{memo_path.name}.{os.getpid()}.tmp")
    try:
        partial.write_text(json.dumps(memo, sort_keys=True) + "\n")
        partial.replace(memo_path)
    except OSError:  # a read-only dataset: verified again next time
        partial.unlink(missing_ok=True)


@dataclass(frozen=True)
class Pack:
    """One split of one variant: `images` is a read-only memory map `(N, H, W, 3)` uint8."""

    images: np.ndarray
    labels: np.ndarray
    genres: list[str]
    files: list[str]

    def __len__(self) -> int:
        return len(self.labels)


def open_pack(root: Path, variant: str = "full", split: str = "train") -> Pack:
    """Open a pack for reading without loading it; any inconsistency (shapes, labels, and content against the digest
    `dataset.json` records) is a `DataError` that says what to do."""
    if variant not in VARIANTS or split not in SPLITS:
        raise DataError(f"no pack {variant}/{split}: variant is one of {VARIANTS}, split one of {SPLITS}")
    info = DatasetInfo.read(root)
    images_path, labels_path = pack_paths(root, variant, split)
    redo = f"prepare it again (`genre prepare --out {root}` with the source it came from, {info.source})"
    for path in (images_path, labels_path):
        if not path.exists():
            raise DataError(f"pack file {path} is missing; {redo}")
    try:
        images = np.load(images_path, mmap_mode="r")
        labels = np.load(labels_path)
    except (ValueError, OSError) as error:
        raise DataError(f"pack {images_path.parent.name}/{split} is unreadable ({error}); {redo}") from error
    size = info.image_size
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (size, size, 3):
        raise DataError(
            f"pack {images_path} has shape {images.shape} {images.dtype}, expected (N, {size}, {size}, 3) uint8; {redo}"
        )
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataError(f"pack {labels_path} has {labels.shape} labels for {len(images)} images; {redo}")
    if len(labels) and (labels.min() < 0 or labels.max() >= len(info.genres)):
        raise DataError(
            f"pack {labels_path} has labels outside 0..{len(info.genres) - 1} "
            f"(the dataset has {len(info.genres)} genres); {redo}"
        )
    expected = info.pack_digests.get(f"{variant}/{split}")
    if expected:
        verify_digest(root, f"{variant}/{split}", (images_path, labels_path), images, labels, expected, redo)
    return Pack(images, labels.astype(np.int32), info.genres, info.files.get(f"{variant}/{split}", []))
