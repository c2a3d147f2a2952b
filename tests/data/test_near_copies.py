"""Near-copies (a cover and its re-encoded, slightly cropped twin) are found at prepare and never straddle a split."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
from PIL import Image

from genre.data.config import PrepareConfig
from genre.data.near_copies import average_hash, group_ids, near_copy_groups
from genre.data.prepare import prepare
from genre.data.split import SplitFractions, stratified_split
from tests.conftest import refused, write_cover_folder

TWINS = [(0, 1), (0, 4), (0, 7), (1, 2), (1, 5), (1, 9), (2, 3), (2, 8), (2, 11), (2, 13), (0, 16), (1, 17)]


def twin_of(jpeg: Path, quality: int = 70, crop: float = 0.02) -> bytes:
    """The same artwork again: cropped by `crop` of each side, resized back and re-encoded at another quality."""
    with Image.open(jpeg) as image:
        width, height = image.size
        cut = int(width * crop)
        twin = image.convert("RGB").crop((cut, cut, width - cut, height - cut)).resize((width, height))
    buffer = io.BytesIO()
    twin.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def covers_with_twins(root: Path) -> Path:
    """Three genres of 20 covers, twelve of which have a near-copy beside them (one filed under another genre)."""
    write_cover_folder(root, genres=3, per_genre=20, size=96)
    for genre, number in TWINS:
        target = root / f"genre{(genre + 1) % 3 if number == 17 else genre}" / f"twin-{genre}-{number:03d}.jpg"
        target.write_bytes(twin_of(root / f"genre{genre}" / f"{number:03d}.jpg"))
    return root


def read_split(root: Path) -> dict[str, tuple[str, str]]:
    with (root / "split.csv").open() as handle:
        return {row["file"]: (row["split"], row["dev_split"]) for row in csv.DictReader(handle)}


def test_a_reencoded_cropped_twin_hashes_within_the_threshold_and_another_cover_does_not(tmp_path: Path) -> None:
    root = covers_with_twins(tmp_path / "twin-covers")
    pixels = {path.name: np.asarray(Image.open(path).convert("RGB")) for path in (root / "genre0").glob("*.jpg")}
    bits = np.unpackbits(np.frombuffer(average_hash(pixels["001.jpg"]), dtype=np.uint8))
    twin = np.unpackbits(np.frombuffer(average_hash(pixels["twin-0-001.jpg"]), dtype=np.uint8))
    other = np.unpackbits(np.frombuffer(average_hash(pixels["002.jpg"]), dtype=np.uint8))
    assert int((bits != twin).sum()) <= 8 < int((bits != other).sum())


def test_groups_join_transitively_and_a_negative_threshold_finds_none() -> None:
    def hashed(ones: int) -> bytes:
        return np.packbits(np.arange(256) < ones).tobytes()

    hashes = [hashed(0), hashed(6), hashed(12), hashed(100), hashed(200), hashed(205)]
    assert near_copy_groups(hashes, 8) == [[0, 1, 2], [4, 5]]
    assert near_copy_groups(hashes, 5) == [[4, 5]]
    assert near_copy_groups(hashes, -1) == []
    assert group_ids(6, [[0, 1, 2], [4, 5]]).tolist() == [0, 0, 0, 3, 4, 4]


def test_prepare_finds_every_twin_and_keeps_each_pair_on_one_side_of_both_splits(tmp_path: Path) -> None:
    root = covers_with_twins(tmp_path / "twin-covers")
    out = tmp_path / "packed"
    prepared = prepare(PrepareConfig(folder=str(root), out=str(out), image_size=64, dev_size=40), progress=False)

    expected = {
        frozenset({f"genre{g}/{n:03d}.jpg", f"genre{(g + 1) % 3 if n == 17 else g}/twin-{g}-{n:03d}.jpg"})
        for g, n in TWINS
    }
    assert {frozenset(group) for group in prepared.info.near_copies} == expected
    assert prepared.info.near_copy_bits == 8
    splits = read_split(out)
    for pair in expected:
        first, second = sorted(pair)
        assert splits[first][0] == splits[second][0], f"{first} and {second} straddle the split"
        drawn = {splits[first][1], splits[second][1]} - {""}  # a twin the development subset did not draw is not in it
        assert len(drawn) <= 1, f"{first} and {second} straddle the development split"
    with (out / "near_copies.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 * len(TWINS) and {row["split"] for row in rows} <= {"train", "val", "test"}
    # every genre keeps its split sizes: 80/10/10 of 20 + its twins
    counts = prepared.info.counts["full"]
    assert sum(counts.values()) == 60 + len(TWINS)


def test_without_grouping_the_same_covers_straddle_a_split(tmp_path: Path) -> None:
    """The check above can fail: the plain split of these covers separates some pair."""
    root = covers_with_twins(tmp_path / "twin-covers")
    out = tmp_path / "plain"
    config = PrepareConfig(folder=str(root), out=str(out), image_size=64, dev_size=40, near_copy_bits=-1)
    prepared = prepare(config, progress=False)
    assert prepared.info.near_copies == []
    splits = read_split(out)
    straddling = [(g, n) for g, n in TWINS if splits[f"genre{g}/{n:03d}.jpg"][0] != splits[
        f"genre{(g + 1) % 3 if n == 17 else g}/twin-{g}-{n:03d}.jpg"][0]]  # fmt: skip
    assert straddling


def test_grouping_keeps_each_genres_split_sizes() -> None:
    names = [f"g{i % 2}/{i:03d}" for i in range(200)]
    genres = [name[:2] for name in names]
    groups = [[0, 2, 4, 6, 8, 10], [1, 3], [20, 21, 22]]
    plain = stratified_split(names, genres, SplitFractions(), seed=7)
    grouped = stratified_split(names, genres, SplitFractions(), seed=7, groups=groups)
    for group in groups:
        assert len({grouped[i] for i in group}) == 1
    for genre in ("g0", "g1"):
        sizes = [
            sum(s == split for s, g in zip(grouped, genres, strict=True) if g == genre)
            for split in ("train", "val", "test")
        ]
        assert sizes == [
            sum(s == split for s, g in zip(plain, genres, strict=True) if g == genre)
            for split in ("train", "val", "test")
        ]


def test_an_absurd_threshold_is_refused_naming_the_setting() -> None:
    assert "-1" in refused(PrepareConfig, {"near_copy_bits": 300}, "near_copy_bits")
