"""The cover files a user points a model at (`genre predict DIR_OR_FILES...`, a CSV of paths): folders walked for
images, each file decoded to pixels or named with why it cannot be, and decoding spread over worker processes.

Worker processes need only this module, numpy and Pillow (not MXNet or MLflow), and everything but
`decoded_covers` is a pure function over paths that the tests run on files they make.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import re
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genre.data.decode_pool import watch_parent
from genre.data.images import InvalidImage, decode_image

# What a folder's files must be named to be taken for covers (any case); a file named on the command line is tried
# whatever its name, so `genre predict notes.txt` says why it is not an image.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".jfif", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff")
CHUNK = 16  # covers per worker task: ~40 ms of decoding at 350 px, so the pool's overhead stays small
CHUNKS_AHEAD = 4  # chunks per worker decoded ahead of the network: memory stays bounded on any number of files
PIL_FILE_NAME = re.compile(r" (?:'[^']*'|<[^>]*>)$")  # Pillow ends "cannot identify image file" with the file


@dataclass(frozen=True)
class CoverFiles:
    """What a list of files and folders holds: the files to predict, in order, and how many were left out."""

    paths: list[Path]
    skipped: int  # files in the folders not named as images (`IMAGE_SUFFIXES`): music, text, hidden files


@dataclass(frozen=True)
class DecodedChunk:
    """What a worker sends back for a chunk of files: the pixels of the readable ones and each file's problem."""

    pixels: np.ndarray  # (readable files, size, size, 3) uint8, in the chunk's order
    problems: list[str | None]  # one per file: None when it was decoded (its pixels are the next ones), else why not


def find_cover_files(inputs: Sequence[Path]) -> CoverFiles:
    """Each input in the order given: a folder becomes its image files (recursively, sorted by path; hidden files and
    folders left out); anything else stays as given, even when it does not exist, so it is listed as unreadable
    rather than silently dropped."""
    paths: list[Path] = []
    skipped = 0
    for given in inputs:
        if not given.is_dir():
            paths.append(given)
            continue
        found: list[Path] = []
        for folder, folders, files in os.walk(given):
            folders[:] = [name for name in folders if not name.startswith(".")]
            for name in files:
                if not name.startswith(".") and name.lower().endswith(IMAGE_SUFFIXES):
                    found.append(Path(folder) / name)
                else:
                    skipped += 1
        paths.extend(sorted(found))
    return CoverFiles(paths, skipped)


def cover_problem(path: Path | str, error: InvalidImage) -> str:
    """What a user is told about a file `decode_image` refused: "FILE cannot be read (...)" when the file system
    refused it, else "FILE is not an image (PIL: ...)" with Pillow's own reason (or ours, for an empty file)."""
    cause = error.__cause__
    if isinstance(cause, OSError) and cause.errno is not None:
        return f"{path} cannot be read ({cause.strerror or cause})"
    if cause is not None:
        detail = PIL_FILE_NAME.sub("", str(cause)) or type(cause).__name__
        return f"{path} is not an image (PIL: {detail})"
    return f"{path} is not an image ({error})"


def read_cover(path: Path, size: int) -> np.ndarray:
    """The cover file at `path` as `(size, size, 3)` uint8, decoded as `prepare` decodes; `InvalidImage` says
    `cover_problem`."""
    try:
        return decode_image(path, size)
    except InvalidImage as error:
        raise InvalidImage(cover_problem(path, error)) from error.__cause__


def decode_cover_files(paths: Sequence[Path], size: int) -> DecodedChunk:
    """Worker task: decode a chunk of files; never raises for a bad file."""
    readable: list[np.ndarray] = []
    problems: list[str | None] = []
    for path in paths:
        try:
            readable.append(read_cover(path, size))
            problems.append(None)
        except InvalidImage as error:
            problems.append(str(error))
    pixels = np.stack(readable) if readable else np.zeros((0, size, size, 3), np.uint8)
    return DecodedChunk(pixels, problems)


def decoded_covers(
    paths: Sequence[Path], size: int, workers: int, chunk: int = CHUNK
) -> Iterator[tuple[Path, np.ndarray | None, str | None]]:
    """Each file's `(path, pixels, None)` or `(path, None, problem)`, in order, decoded `chunk` files per task by
    `workers` processes while the caller works on what came before (at most `CHUNKS_AHEAD` chunks per worker ahead).

    Fewer files than two chunks, or `workers` 0, decode in this process: starting workers would cost more. Closing
    the iterator early (an error, Ctrl-C) cancels the queued chunks and stops the workers; a killed caller's workers
    exit by themselves.
    """
    chunks = [list(paths[start : start + chunk]) for start in range(0, len(paths), chunk)]
    if workers < 1 or len(chunks) < 2:
        for part in chunks:
            yield from _outcomes(part, decode_cover_files(part, size))
        return
    # forkserver: the workers must not inherit the caller's MXNet, MLflow or tqdm threads through fork. The fork
    # server imports this module (numpy, Pillow) once when it starts, so each worker starts without importing them.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    alive, alive_writer = context.Pipe(duplex=False)
    executor = ProcessPoolExecutor(
        max_workers=min(workers, len(chunks)), mp_context=context, initializer=watch_parent, initargs=(alive,)
    )
    queued: deque[tuple[list[Path], Future[DecodedChunk]]] = deque()
    waiting = iter(chunks)
    finished = False
    try:
        for part in waiting:
            queued.append((part, executor.submit(decode_cover_files, part, size)))
            if len(queued) >= workers * CHUNKS_AHEAD:
                break
        while queued:
            part, task = queued.popleft()
            decoded = task.result()
            following = next(waiting, None)
            if following is not None:
                queued.append((following, executor.submit(decode_cover_files, following, size)))
            yield from _outcomes(part, decoded)
        finished = True
    finally:
        executor.shutdown(wait=finished, cancel_futures=not finished)
        with contextlib.suppress(OSError):
            alive_writer.close()  # after an interruption, this is what stops the workers
            alive.close()


def _outcomes(part: list[Path], decoded: DecodedChunk) -> Iterator[tuple[Path, np.ndarray | None, str | None]]:
    readable = iter(decoded.pixels)
    for path, problem in zip(part, decoded.problems, strict=True):
        yield (path, next(readable), None) if problem is None else (path, None, problem)
