"""The decoding pool: worker processes decode the images straight into their rows of the pack files, a run of images
per task, and exit when the preparing process does, however it went (`watch_parent`)."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing.connection import Connection
from pathlib import Path

from tqdm import tqdm

from genre.data import pack
from genre.data.images import decode_outcome
from genre.data.near_copies import average_hash
from genre.data.pack_layout import Places
from genre.data.sources import SourceImage
from genre.runtime import usable_cores


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
