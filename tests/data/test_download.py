"""The cover downloader against a real HTTP server on 127.0.0.1 that misbehaves on request.

The server counts requests per path, so a test can see what was (not) asked for: skipped files, retries.
"""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from genre import __version__
from genre.data.download import DownloadConfig, DownloadResult, download_covers
from genre.errors import ConfigError
from tests.coverserver import (
    COVER,
    CoverServer,
    Responder,
    jpeg,
    ok,
    status,
    trickle,
    truncated,
    without_length,
)


@pytest.fixture
def server(cover_server: CoverServer) -> CoverServer:
    return cover_server


FAST = DownloadConfig(connections=4, retries=2, backoff_seconds=0.01, timeout_seconds=2.0)


def leftovers(dest: Path) -> list[Path]:
    return sorted(dest.rglob("*.part"))


def test_downloads_the_served_bytes_to_genre_folders(server: CoverServer, tmp_path: Path) -> None:
    blue = jpeg((10, 10, 200))
    entries = [server.add(1, "rock/a.jpg", ok(COVER)), server.add(2, "jazz/b.jpg", ok(blue))]

    result = download_covers(entries, tmp_path, FAST, progress=True)

    assert result == DownloadResult(fetched=entries, already_present=[], failures=[])
    assert result.available == entries
    assert (tmp_path / "rock" / "a.jpg").read_bytes() == COVER
    assert (tmp_path / "jazz" / "b.jpg").read_bytes() == blue
    with Image.open(tmp_path / "jazz" / "b.jpg") as image:
        assert image.size == (40, 40)
    assert leftovers(tmp_path) == []
    assert server.user_agents == {f"genre/{__version__}"}


def test_a_second_run_requests_only_the_missing_files(server: CoverServer, tmp_path: Path) -> None:
    entries = [server.add(n, f"folk/{n}.jpg") for n in range(1, 4)]
    download_covers(entries, tmp_path, FAST, progress=False)
    (tmp_path / "folk" / "2.jpg").unlink()
    before = server.hits.copy()

    result = download_covers(entries, tmp_path, FAST, progress=False)

    assert server.hits - before == Counter({"/img/folk/2.jpg": 1})
    assert result.already_present == [entries[0], entries[2]]
    assert result.fetched == [entries[1]]
    assert result.available == entries
    assert "1 fetched, 2 already present" in result.summary()
    assert (tmp_path / "folk" / "2.jpg").read_bytes() == COVER


def test_a_stale_part_file_is_not_taken_as_the_cover(server: CoverServer, tmp_path: Path) -> None:
    entry = server.add(1, "punk/a.jpg")
    (tmp_path / "punk").mkdir()
    (tmp_path / "punk" / "a.jpg.0badc0de.part").write_bytes(COVER[:100])
    (tmp_path / "punk" / "a.jpg.part").write_bytes(COVER[:100])

    result = download_covers([entry], tmp_path, FAST, progress=False)

    assert result.fetched == [entry] and result.already_present == []
    assert server.requests(entry) == 1
    assert (tmp_path / "punk" / "a.jpg").read_bytes() == COVER


def test_a_slow_server_times_out_and_is_retried(server: CoverServer, tmp_path: Path) -> None:
    entry = server.add(1, "soul/slow.jpg", ok(delay=2.0))
    config = DownloadConfig(retries=1, backoff_seconds=0.01, timeout_seconds=0.3)

    started = time.monotonic()
    result = download_covers([entry], tmp_path, config, progress=False)

    assert time.monotonic() - started < 1.8  # two attempts of 0.3 s, not two of 2 s
    [failure] = result.failures
    assert (failure.stage, failure.item) == ("download", "soul/slow.jpg")
    assert "timed out" in failure.reason and "0.3 s" in failure.reason
    assert "after 2 attempts" in failure.reason
    assert server.requests(entry) == 2
    assert not (tmp_path / "soul" / "slow.jpg").exists()


def test_a_trickling_server_hits_the_per_attempt_deadline(server: CoverServer, tmp_path: Path) -> None:
    entry = server.add(1, "metal/trickle.jpg", trickle(COVER * 4, every=0.02))
    config = DownloadConfig(retries=0, timeout_seconds=0.2)  # deadline 0.6 s; the body would take seconds

    started = time.monotonic()
    result = download_covers([entry], tmp_path, config, progress=False)

    assert time.monotonic() - started < 2.0
    [failure] = result.failures
    assert "too slow" in failure.reason and "0.6 s" in failure.reason
    assert not (tmp_path / "metal" / "trickle.jpg").exists()
    assert leftovers(tmp_path) == []


def test_a_404_fails_at_once_without_retry(server: CoverServer, tmp_path: Path) -> None:
    entry = server.add(1, "pop/gone.jpg", status(404))

    result = download_covers([entry], tmp_path, FAST, progress=False)

    assert [(p.item, p.reason) for p in result.failures] == [("pop/gone.jpg", "HTTP 404 Not Found")]
    assert server.requests(entry) == 1
    assert result.available == []


@pytest.mark.parametrize("code", [500, 503, 429])
def test_a_transient_error_then_success_is_retried(server: CoverServer, tmp_path: Path, code: int) -> None:
    entry = server.add(1, "dubstep/flaky.jpg", status(code), ok())

    result = download_covers([entry], tmp_path, FAST, progress=False)

    assert result.fetched == [entry] and result.failures == []
    assert server.requests(entry) == 2
    assert (tmp_path / "dubstep" / "flaky.jpg").read_bytes() == COVER


def test_a_truncated_body_fails_after_retries_and_leaves_no_file(server: CoverServer, tmp_path: Path) -> None:
    entry = server.add(1, "ambient/cut.jpg", truncated(COVER[:300], declared=len(COVER)))

    result = download_covers([entry], tmp_path, FAST, progress=False)

    [failure] = result.failures
    assert failure.reason == (f"truncated: got 300 of {len(COVER)} bytes (Content-Length) (gave up after 3 attempts)")
    assert server.requests(entry) == 3  # 1 + FAST.retries
    assert not (tmp_path / "ambient" / "cut.jpg").exists()
    assert leftovers(tmp_path) == []


def test_an_empty_body_is_a_failure(server: CoverServer, tmp_path: Path) -> None:
    entry = server.add(1, "jazz/empty.jpg", ok(b""))

    result = download_covers([entry], tmp_path, FAST, progress=False)

    assert "empty response body" in result.failures[0].reason
    assert not (tmp_path / "jazz" / "empty.jpg").exists()


@pytest.mark.parametrize(
    ("responder", "reason"),
    [
        (ok(bytes(5000)), "Content-Length 5000 bytes exceeds the cap of 1000 bytes"),
        (without_length(bytes(5000)), "body exceeds the cap of 1000 bytes"),
    ],
    ids=["with-content-length", "without-content-length"],
)
def test_an_oversized_cover_is_refused_without_retry(
    server: CoverServer, tmp_path: Path, responder: Responder, reason: str
) -> None:
    entry = server.add(1, "rock/huge.jpg", responder)
    config = DownloadConfig(retries=3, backoff_seconds=0.01, timeout_seconds=2.0, max_bytes=1000)

    result = download_covers([entry], tmp_path, config, progress=False)

    [failure] = result.failures
    assert reason in failure.reason
    assert server.requests(entry) == 1
    assert not (tmp_path / "rock" / "huge.jpg").exists()
    assert leftovers(tmp_path) == []


def test_a_cover_exactly_at_the_cap_is_accepted(server: CoverServer, tmp_path: Path) -> None:
    entry = server.add(1, "rock/edge.jpg", without_length(COVER))
    config = DownloadConfig(retries=0, timeout_seconds=2.0, max_bytes=len(COVER))

    assert download_covers([entry], tmp_path, config, progress=False).fetched == [entry]


def test_many_covers_download_concurrently_and_failures_do_not_stop_the_rest(
    server: CoverServer, tmp_path: Path
) -> None:
    covers = {n: jpeg((n * 6, 255 - n * 6, 100)) for n in range(1, 41)}
    entries = [server.add(n, f"hiphop_rap/{n}.jpg", ok(body, delay=0.05)) for n, body in covers.items()]
    entries.insert(20, server.add(99, "hiphop_rap/missing.jpg", status(404)))
    config = DownloadConfig(connections=8, retries=0, timeout_seconds=2.0)

    started = time.monotonic()
    result = download_covers(entries, tmp_path, config, progress=False)

    assert time.monotonic() - started < 40 * 0.05  # faster than one at a time
    assert [p.item for p in result.failures] == ["hiphop_rap/missing.jpg"]
    assert [e.line for e in result.fetched] == list(range(1, 41))
    for n, body in covers.items():
        assert (tmp_path / "hiphop_rap" / f"{n}.jpg").read_bytes() == body
    assert 2 <= server.max_in_flight <= 8


def test_ctrl_c_stops_the_run_promptly(server: CoverServer, tmp_path: Path) -> None:
    entries = [server.add(n, f"folk/{n}.jpg", ok(delay=0.3)) for n in range(1, 31)]
    config = DownloadConfig(connections=2, retries=0, timeout_seconds=2.0)
    main = threading.main_thread().ident
    assert main is not None and threading.get_ident() == main
    threading.Timer(0.1, signal.pthread_kill, args=(main, signal.SIGINT)).start()

    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        download_covers(entries, tmp_path, config, progress=False)

    assert time.monotonic() - started < 1.0, "did not wait for the covers in flight"
    time.sleep(0.5)  # let the two covers in flight notice the stop
    assert sum(server.hits.values()) == 2, "queued covers were never requested"
    assert list(tmp_path.rglob("*.jpg")) == []
    assert leftovers(tmp_path) == []


def test_a_config_that_cannot_work_is_refused() -> None:
    with pytest.raises(ConfigError, match="connections must be at least 1, got 0"):
        DownloadConfig(connections=0)
