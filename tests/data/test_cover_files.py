"""Finding the covers in the files and folders a user names, and decoding them in worker processes, on real files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from genre.data.cover_files import decoded_covers, find_cover_files, read_cover
from genre.data.images import InvalidImage, decode_image
from tests.conftest import jpeg_bytes


def write(path: Path, content: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        path.write_text(content)
    else:
        path.write_bytes(content)
    return path


@pytest.fixture
def library(tmp_path: Path) -> Path:
    """A music folder as users keep them: covers beside tracks and notes, nested by artist and album."""
    root = tmp_path / "music"
    write(root / "b-artist" / "album" / "cover.JPG", jpeg_bytes(seed=1))
    write(root / "b-artist" / "album" / "01 track.mp3", b"ID3 not a cover")
    write(root / "a-artist" / "first" / "folder.png", jpeg_bytes(seed=2))  # a JPEG named .png: decoded for what it is
    write(root / "a-artist" / "first" / "back.jpeg", jpeg_bytes(seed=3))
    write(root / "a-artist" / "notes.txt", "liner notes")
    write(root / "a-artist" / ".thumb.jpg", jpeg_bytes(seed=4))  # hidden
    write(root / ".cache" / "big.jpg", jpeg_bytes(seed=5))  # a hidden folder
    write(root / "top.jpg", b"text pretending to be a JPEG")
    return root


def test_a_folder_is_walked_recursively_for_images_in_path_order(library: Path) -> None:
    found = find_cover_files([library])
    names = [path.relative_to(library).as_posix() for path in found.paths]
    assert names == ["a-artist/first/back.jpeg", "a-artist/first/folder.png", "b-artist/album/cover.JPG", "top.jpg"]
    assert found.skipped == 3  # the track, the notes and the hidden thumbnail; the hidden folder is not entered


def test_files_named_by_the_user_are_kept_in_order_whatever_their_name_or_existence(library: Path) -> None:
    notes, missing = library / "a-artist" / "notes.txt", library / "gone.jpg"
    found = find_cover_files([notes, library / "b-artist", missing])
    assert found.paths == [notes, library / "b-artist" / "album" / "cover.JPG", missing]
    assert found.skipped == 1


def test_what_is_wrong_with_a_file_names_it_in_the_users_words(library: Path) -> None:
    notes = library / "a-artist" / "notes.txt"
    with pytest.raises(InvalidImage) as caught:
        read_cover(notes, 16)
    assert str(caught.value) == f"{notes} is not an image (PIL: cannot identify image file)"

    with pytest.raises(InvalidImage, match=r"^.*gone\.jpg cannot be read \(No such file or directory\)$"):
        read_cover(library / "gone.jpg", 16)
    empty = write(library / "empty.jpg", b"")
    with pytest.raises(InvalidImage, match=r"empty\.jpg is not an image \(empty file \(0 bytes\)\)$"):
        read_cover(empty, 16)
    cut = write(library / "cut.jpg", jpeg_bytes((64, 64), seed=9)[:400])
    with pytest.raises(InvalidImage, match=r"cut\.jpg is not an image \(PIL: .*[Tt]runcated"):
        read_cover(cut, 16)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file whatever its mode")
def test_a_file_the_user_may_not_read_says_so(tmp_path: Path) -> None:
    locked = write(tmp_path / "locked.jpg", jpeg_bytes())
    locked.chmod(0)
    with pytest.raises(InvalidImage, match=r"locked\.jpg cannot be read \(Permission denied\)"):
        read_cover(locked, 16)


def test_worker_processes_give_every_file_in_order_with_the_bad_ones_in_place(tmp_path: Path) -> None:
    paths = [write(tmp_path / f"{n:02d}.jpg", jpeg_bytes((48, 40), seed=n)) for n in range(40)]
    paths[5] = write(tmp_path / "05.jpg", "not a cover")
    paths[33] = tmp_path / "missing.jpg"
    in_process = list(decoded_covers(paths, 16, workers=0))
    in_workers = list(decoded_covers(paths, 16, workers=2, chunk=3))  # 14 chunks, at most 8 ahead

    assert [path for path, _, _ in in_workers] == paths
    for (path, pixels, problem), (_, same_pixels, same_problem) in zip(in_workers, in_process, strict=True):
        if path in (paths[5], paths[33]):
            assert pixels is None and problem == same_problem and problem.startswith(str(path))
        else:
            assert problem is None
            np.testing.assert_array_equal(pixels, decode_image(path, 16))
            np.testing.assert_array_equal(pixels, same_pixels)


def test_stopping_early_stops_the_workers(tmp_path: Path) -> None:
    import multiprocessing
    import time

    paths = [write(tmp_path / f"{n:02d}.jpg", jpeg_bytes(seed=n)) for n in range(64)]
    covers = decoded_covers(paths, 16, workers=2, chunk=4)
    first = next(covers)
    assert first[0] == paths[0] and first[1] is not None
    covers.close()  # what an error or Ctrl-C in the caller does
    deadline = time.monotonic() + 10
    while [child for child in multiprocessing.active_children() if child.name.startswith("ForkServerProcess")]:
        assert time.monotonic() < deadline, "the decoding workers outlived the iterator"
        time.sleep(0.05)
