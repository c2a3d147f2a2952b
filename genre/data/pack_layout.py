"""Where each image goes in the packs: the split planned over the images (`plan_packs`), each image's rows in the pack
files, the packs' digests hashed while the workers decode (`PackHashes`), and the packs rebuilt when some images failed
to decode (`repack`). Pure but for the pack files it reads and writes."""

from __future__ import annotations

import collections
import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genre.data import pack
from genre.data.split import SPLITS, SplitFractions, development_subset, stratified_split


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
