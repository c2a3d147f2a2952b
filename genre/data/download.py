"""Download the covers named by a manifest into `dest/genre/file.jpg`: concurrent, resumable, atomic.

A file at its final path is always complete: each download is written to `<file>.<random>.part` in
the same folder, fsynced, then renamed over the final name. So a rerun after a crash or Ctrl-C skips
every file that exists and fetches only the rest. Leftover `.part` files (at most one per connection
per interrupted run) are never read as covers; delete them freely when no download is running.

One bad cover never stops the run: its failure comes back as a `Problem`.

Every redirect hop must pass the manifest's own URL rules (http or https, with a host), and a cover follows at
most `MAX_REDIRECTS` of them; a redirect that breaks either fails that cover for good (no retry). A cover saved from
another host than its manifest URL names is kept and listed in `DownloadResult.cross_host`, for the report.
"""

from __future__ import annotations

import logging
import os
import random
import secrets
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from http.client import HTTPException, HTTPResponse, IncompleteRead
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlsplit

from tqdm import tqdm

from genre import __version__
from genre.data.manifest import PART_SUFFIX, ManifestEntry, url_problem
from genre.data.problems import Problem, summarise
from genre.errors import ConfigError

log = logging.getLogger(__name__)

_CHUNK_BYTES = 64 * 2**10
MAX_REDIRECTS = 5  # a CDN needs one or two; more is a loop or a chain no cover needs


@dataclass(frozen=True)
class DownloadConfig:
    """How hard to try for each cover. The defaults suit a public CDN and ~100 KB album covers."""

    connections: int = 16
    """Parallel requests. Covers are small, so latency, not bandwidth, bounds the run; a CDN takes 16."""
    retries: int = 3
    """Extra attempts after a transient failure (5xx, 429, timeout, dropped or truncated body)."""
    backoff_seconds: float = 0.5
    """Wait before the first retry; doubled for each further one (plus up to 25% jitter)."""
    timeout_seconds: float = 20.0
    """Limit for connecting and for each read. Each attempt as a whole also ends after 3x this."""
    max_bytes: int = 10 * 2**20
    """Largest cover accepted. A cover is ~100 KB; anything past this is not an album cover."""

    def __post_init__(self) -> None:
        if self.connections < 1:
            raise ConfigError(f"connections must be at least 1, got {self.connections}")
        if self.retries < 0:
            raise ConfigError(f"retries must be 0 or more, got {self.retries}")
        if self.backoff_seconds < 0:
            raise ConfigError(f"backoff_seconds must be 0 or more, got {self.backoff_seconds}")
        if self.timeout_seconds <= 0:
            raise ConfigError(f"timeout_seconds must be more than 0, got {self.timeout_seconds}")
        if self.max_bytes < 1:
            raise ConfigError(f"max_bytes must be at least 1, got {self.max_bytes}")

    @property
    def attempt_deadline_seconds(self) -> float:
        """Total time one attempt may take, so a server trickling bytes cannot hold a connection forever."""
        return 3 * self.timeout_seconds


@dataclass(frozen=True)
class CrossHostRedirect:
    """A cover saved from another host than its manifest URL names: redirects took it to `final_url`."""

    item: str
    url: str
    final_url: str


@dataclass
class DownloadResult:
    """What a download run did. Each list is in manifest order.

    `already_present` were on disk before the run and were not requested; `fetched` were downloaded now,
    `cross_host` those of them that came from another host after redirects.
    """

    fetched: list[ManifestEntry]
    already_present: list[ManifestEntry]
    failures: list[Problem]
    cross_host: list[CrossHostRedirect] = field(default_factory=list)

    @property
    def available(self) -> list[ManifestEntry]:
        """Every entry whose cover is on disk now, in manifest order."""
        return sorted(self.fetched + self.already_present, key=lambda e: e.line)

    def summary(self) -> str:
        return (
            f"{len(self.fetched)} fetched, {len(self.already_present)} already present (skipped), "
            f"{len(self.failures)} failed"
            + (f", {len(self.cross_host)} saved from another host after redirects" if self.cross_host else "")
        )


class _AttemptFailed(Exception):
    """One attempt at one URL failed; `retry` says whether another attempt could succeed."""

    def __init__(self, reason: str, retry: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry = retry


class _CoverFailed(Exception):
    """One cover could not be saved; `reason` is what the report says."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Stopped(Exception):
    """The run is being interrupted (Ctrl-C); give up on this cover without reporting it."""


class _RedirectRules(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to a URL the manifest would accept, and at most `MAX_REDIRECTS` in a row.

    urllib alone follows up to 10 hops and to ftp:// too; here a broken rule fails the cover without a retry.
    """

    max_repeats = max_redirections = MAX_REDIRECTS + 1  # urllib's own loop check never fires first

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        hops = getattr(req, "genre_hops", 0) + 1
        problem = url_problem(newurl)
        if problem is None and hops > MAX_REDIRECTS:
            problem = f"more than {MAX_REDIRECTS} redirects in a row (the next to {newurl})"
        if problem is not None:
            fp.close()
            raise _AttemptFailed(f"HTTP {code} redirect not followed: {problem}", retry=False)
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None:
            new.genre_hops = hops
        return new


def download_covers(
    entries: Iterable[ManifestEntry], dest: Path, config: DownloadConfig, progress: bool = True
) -> DownloadResult:
    """Download every entry's URL to `dest / entry.relpath`, skipping files that already exist.

    Never raises for a single cover; failures are returned as `Problem(stage="download", ...)`.
    Ctrl-C cancels the queued covers and raises `KeyboardInterrupt` at once; covers in flight stop at
    their next read and remove their `.part` file.
    """
    entries = list(entries)
    already_present: list[ManifestEntry] = []
    todo: list[ManifestEntry] = []
    for entry in entries:
        (already_present if (dest / entry.relpath).is_file() else todo).append(entry)
    log.info(
        "%d covers: %d already present in %s, %d to fetch",
        len(entries),
        len(already_present),
        dest,
        len(todo),
    )

    fetched: list[ManifestEntry] = []
    failures: list[Problem] = []
    cross_host: list[CrossHostRedirect] = []
    opener = urllib.request.build_opener(_RedirectRules)
    opener.addheaders = [("User-Agent", f"genre/{__version__}")]
    stop = threading.Event()
    bar = tqdm(total=len(entries), initial=len(already_present), unit="cover", desc="download", disable=not progress)
    pool = ThreadPoolExecutor(max_workers=config.connections, thread_name_prefix="download")
    try:
        pending: dict[Future[str], ManifestEntry] = {
            pool.submit(_download_one, opener, e, dest / e.relpath, config, stop): e for e in todo
        }
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                entry = pending.pop(future)
                try:
                    final_url = future.result()
                except _CoverFailed as failed:
                    failures.append(Problem(stage="download", item=entry.relpath, reason=failed.reason))
                    log.debug("download failed: %s: %s", entry.relpath, failed.reason)
                    bar.set_postfix(failed=len(failures))
                else:
                    fetched.append(entry)
                    if urlsplit(final_url).hostname != urlsplit(entry.url).hostname:
                        cross_host.append(CrossHostRedirect(entry.relpath, entry.url, final_url))
                bar.update(1)
    except BaseException:
        # Ctrl-C (or a bug): do not wait for the queue; workers in flight see `stop` and quit.
        stop.set()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    finally:
        bar.close()
    pool.shutdown(wait=True)

    fetched.sort(key=lambda e: e.line)
    order = {e.relpath: e.line for e in todo}
    failures.sort(key=lambda p: order[p.item])
    cross_host.sort(key=lambda r: order[r.item])
    result = DownloadResult(fetched, already_present, failures, cross_host)
    log.info("download: %s", result.summary())
    if cross_host:
        first = cross_host[0]
        warning = "%d cover(s) saved from another host after redirects (first: %s from %s); the report lists them"
        log.warning(warning, len(cross_host), first.item, first.final_url)
    if failures:
        log.warning("%s", summarise(failures))
    return result


def _download_one(
    opener: urllib.request.OpenerDirector,
    entry: ManifestEntry,
    final: Path,
    config: DownloadConfig,
    stop: threading.Event,
) -> str:
    """Fetch one cover with retries; returns the URL it came from (after redirects), else raises `_CoverFailed`
    with the last failure's reason."""
    attempts = 0
    while not stop.is_set():
        attempts += 1
        try:
            return _attempt(opener, entry.url, final, config, stop)
        except _Stopped:
            break
        except _AttemptFailed as failed:
            if not failed.retry or attempts > config.retries:
                tried = f" (gave up after {attempts} attempts)" if attempts > 1 else ""
                raise _CoverFailed(failed.reason + tried) from None
            delay = config.backoff_seconds * 2 ** (attempts - 1)
            delay += random.uniform(0, delay / 4)
            log.debug("retrying %s in %.2f s: %s", entry.url, delay, failed.reason)
            stop.wait(delay)
        except Exception as exc:  # a bug must not cost the other covers; log it loudly instead
            log.exception("unexpected error downloading %s", entry.url)
            raise _CoverFailed(f"unexpected error: {exc!r}") from None
    raise _CoverFailed("interrupted")


def _attempt(
    opener: urllib.request.OpenerDirector,
    url: str,
    final: Path,
    config: DownloadConfig,
    stop: threading.Event,
) -> str:
    """One GET of `url` into `final`, atomically; returns the URL the body came from (after redirects), or raises
    `_AttemptFailed` with a reason a user can read."""
    deadline = time.monotonic() + config.attempt_deadline_seconds
    try:
        with opener.open(url, timeout=config.timeout_seconds) as response:
            declared = _content_length(response)
            if declared is not None and declared > config.max_bytes:
                raise _AttemptFailed(
                    f"Content-Length {declared} bytes exceeds the cap of {config.max_bytes} bytes (max_bytes)",
                    retry=False,
                )
            _save_atomically(final, lambda out: _copy_body(response, out, declared, config, deadline, stop))
            return str(response.geturl())
    except urllib.error.HTTPError as exc:
        exc.close()
        transient = exc.code >= 500 or exc.code == 429
        raise _AttemptFailed(f"HTTP {exc.code} {exc.reason}", retry=transient) from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, TimeoutError):
            raise _AttemptFailed(_timed_out(config), retry=True) from None
        raise _AttemptFailed(f"cannot connect: {exc.reason}", retry=True) from None
    except TimeoutError:
        raise _AttemptFailed(_timed_out(config), retry=True) from None
    except IncompleteRead as exc:
        raise _AttemptFailed(f"truncated: connection closed mid-body ({exc!r})", retry=True) from None
    except (OSError, HTTPException) as exc:  # reset, refused, TLS errors: all worth another try
        raise _AttemptFailed(f"connection failed: {exc!r}", retry=True) from None
    except ValueError as exc:  # a URL urllib cannot use at all
        raise _AttemptFailed(f"cannot request {url!r}: {exc}", retry=False) from None


def _timed_out(config: DownloadConfig) -> str:
    return f"timed out: no response for {config.timeout_seconds:g} s (timeout_seconds)"


def _content_length(response: HTTPResponse) -> int | None:
    if response.headers.get("Transfer-Encoding"):
        return None  # a chunked body's own framing wins over any Content-Length (RFC 9112)
    try:
        length = int(response.headers.get("Content-Length", ""))
    except ValueError:
        return None
    return length if length >= 0 else None


def _copy_body(
    response: HTTPResponse,
    out: BinaryIO,
    declared: int | None,
    config: DownloadConfig,
    deadline: float,
    stop: threading.Event,
) -> None:
    """Stream the body into `out`, enforcing the size cap, the attempt deadline and Content-Length."""
    received = 0
    # read1, not read: read(n) blocks until n bytes arrive, so a trickling server would never let the
    # deadline be checked.
    while chunk := response.read1(_CHUNK_BYTES):
        received += len(chunk)
        if received > config.max_bytes:
            raise _AttemptFailed(
                f"body exceeds the cap of {config.max_bytes} bytes (max_bytes); stopped reading", retry=False
            )
        _write(out, chunk)
        if stop.is_set():
            raise _Stopped
        if time.monotonic() > deadline:
            raise _AttemptFailed(
                f"too slow: not finished after {config.attempt_deadline_seconds:g} s "
                f"(3 x timeout_seconds; {received} bytes so far)",
                retry=True,
            )
    # http.client returns b"" rather than raising when a connection closes before Content-Length.
    if declared is not None and received < declared:
        raise _AttemptFailed(f"truncated: got {received} of {declared} bytes (Content-Length)", retry=True)
    if received == 0:
        raise _AttemptFailed("empty response body (0 bytes)", retry=True)


def _save_atomically(final: Path, write_body: Callable[[BinaryIO], None]) -> None:
    """Write through a `.part` file in the same folder and rename it over `final` only when complete.

    The rename is atomic on one file system, so `final` either does not exist or holds every byte.
    The random suffix keeps concurrent runs from writing into each other's file; the `.part` ending
    keeps readers (which only open image extensions) away from it.
    """
    tmp = final.with_name(f"{final.name}.{secrets.token_hex(4)}{PART_SUFFIX}")
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        out = open(tmp, "xb")  # noqa: SIM115 -- closed below, before the rename
    except OSError as exc:
        raise _AttemptFailed(f"cannot write {tmp}: {exc.strerror or exc}", retry=False) from None
    try:
        with out:
            write_body(out)
            _sync(out)
        try:
            os.replace(tmp, final)
        except OSError as exc:
            raise _AttemptFailed(f"cannot rename into {final}: {exc.strerror or exc}", retry=False) from None
    finally:
        tmp.unlink(missing_ok=True)


def _write(out: BinaryIO, chunk: bytes) -> None:
    try:
        out.write(chunk)
    except OSError as exc:  # disk full, permissions: a local problem no retry will fix
        raise _AttemptFailed(f"cannot write {out.name}: {exc.strerror or exc}", retry=False) from None


def _sync(out: BinaryIO) -> None:
    try:
        out.flush()
        os.fsync(out.fileno())
    except OSError as exc:
        raise _AttemptFailed(f"cannot write {out.name}: {exc.strerror or exc}", retry=False) from None
