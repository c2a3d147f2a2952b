"""The cover downloader against a real HTTP server on 127.0.0.1 that misbehaves on request.

The server counts requests per path, so a test can see what was (not) asked for: skipped files, retries.
"""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from genre import __version__
from genre.data.download import MAX_REDIRECTS, CrossHostRedirect, DownloadConfig, DownloadResult, download_covers
from genre.errors import ConfigError
from tests.coverserver import (
    COVER,
    CoverServer,
    Responder,
    jpeg,
    ok,
    redirect,
    status,
    trickle,
    truncated,
    without_length,
)


@pytest.fixture
def server(cover_server: CoverServer) -> CoverServer:
    return cover_server


# No test with FAST waits for a timeout: a long one keeps a loaded machine's slow replies from failing a cover.
FAST = DownloadConfig(connections=4, retries=2, backoff_seconds=0.01, timeout_seconds=60.0)


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
    entry = server.add(1, "soul/slow.jpg", ok(delay=60.0))
    config = DownloadConfig(retries=1, backoff_seconds=0.01, timeout_seconds=0.3)

    started = time.monotonic()
    result = download_covers([entry], tmp_path, config, progress=False)

    # Two attempts of 0.3 s (the reason below names the product's own wait), not two of 60 s: the bound leaves a
    # loaded machine room without blurring the difference.
    assert time.monotonic() - started < 30
    [failure] = result.failures
    assert (failure.stage, failure.item) == ("download", "soul/slow.jpg")
    assert "timed out" in failure.reason and "0.3 s" in failure.reason
    assert "after 2 attempts" in failure.reason
    assert server.requests(entry) == 2
    assert not (tmp_path / "soul" / "slow.jpg").exists()


def test_a_trickling_server_hits_the_per_attempt_deadline(server: CoverServer, tmp_path: Path) -> None:
    entry = server.add(1, "metal/trickle.jpg", trickle(COVER * 100, every=0.02))
    config = DownloadConfig(retries=0, timeout_seconds=0.2)  # deadline 0.6 s; the body would take 2 minutes

    started = time.monotonic()
    result = download_covers([entry], tmp_path, config, progress=False)

    assert time.monotonic() - started < 30  # the 0.6 s deadline (named in the reason), with room for a loaded machine
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
    config = DownloadConfig(retries=3, backoff_seconds=0.01, timeout_seconds=60.0, max_bytes=1000)

    result = download_covers([entry], tmp_path, config, progress=False)

    [failure] = result.failures
    assert reason in failure.reason
    assert server.requests(entry) == 1
    assert not (tmp_path / "rock" / "huge.jpg").exists()
    assert leftovers(tmp_path) == []


def test_a_cover_exactly_at_the_cap_is_accepted(server: CoverServer, tmp_path: Path) -> None:
    entry = server.add(1, "rock/edge.jpg", without_length(COVER))
    config = DownloadConfig(retries=0, timeout_seconds=60.0, max_bytes=len(COVER))

    assert download_covers([entry], tmp_path, config, progress=False).fetched == [entry]


def test_many_covers_download_concurrently_and_failures_do_not_stop_the_rest(
    server: CoverServer, tmp_path: Path
) -> None:
    covers = {n: jpeg((n * 6, 255 - n * 6, 100)) for n in range(1, 41)}
    entries = [server.add(n, f"hiphop_rap/{n}.jpg", ok(body, delay=0.25)) for n, body in covers.items()]
    entries.insert(20, server.add(99, "hiphop_rap/missing.jpg", status(404)))
    config = DownloadConfig(connections=8, retries=0, timeout_seconds=60.0)

    started = time.monotonic()
    result = download_covers(entries, tmp_path, config, progress=False)

    assert time.monotonic() - started < 40 * 0.25  # faster than one at a time (8 at a time: 1.25 s)
    assert [p.item for p in result.failures] == ["hiphop_rap/missing.jpg"]
    assert [e.line for e in result.fetched] == list(range(1, 41))
    for n, body in covers.items():
        assert (tmp_path / "hiphop_rap" / f"{n}.jpg").read_bytes() == body
    assert 2 <= server.max_in_flight <= 8


@pytest.fixture
def ctrl_c_interrupts() -> Iterator[None]:
    """Ctrl-C raises KeyboardInterrupt, as in a terminal: a process started in the background (`cmd &` in a script)
    inherits SIGINT ignored, and Python then leaves it ignored."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.usefixtures("ctrl_c_interrupts")
def test_ctrl_c_stops_the_run_promptly(server: CoverServer, tmp_path: Path) -> None:
    # Every cover trickles for minutes: waiting for the two in flight, let alone the queue, cannot pass unnoticed.
    entries = [server.add(n, f"folk/{n}.jpg", trickle(COVER * 100, every=0.05)) for n in range(1, 31)]
    config = DownloadConfig(connections=2, retries=0, timeout_seconds=60.0)
    main = threading.main_thread().ident
    assert main is not None and threading.get_ident() == main
    interrupted: list[float] = []

    def interrupt_once_two_are_in_flight() -> None:
        deadline = time.monotonic() + 120
        while server.in_flight < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        interrupted.append(time.monotonic())
        signal.pthread_kill(main, signal.SIGINT)

    threading.Thread(target=interrupt_once_two_are_in_flight, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        download_covers(entries, tmp_path, config, progress=False)

    assert time.monotonic() - interrupted[0] < 30, "did not wait for the covers in flight"
    deadline = time.monotonic() + 120  # the two in flight notice the stop at their next read
    while any(thread.name.startswith("download_") for thread in threading.enumerate()):
        assert time.monotonic() < deadline, "the covers in flight never stopped"
        time.sleep(0.05)
    assert sum(server.hits.values()) == 2, "queued covers were never requested"
    assert list(tmp_path.rglob("*.jpg")) == []
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(
    ("target", "refused"),
    [
        ("ftp://127.0.0.1:1/cover.jpg", "URL 'ftp://127.0.0.1:1/cover.jpg' must start with http:// or https://"),
        ("file:///etc/hostname", "Redirection to url 'file:///etc/hostname' is not allowed"),  # urllib's own rule
    ],
    ids=["ftp", "file"],
)
@pytest.mark.parametrize("hop", [1, 2], ids=["first-hop", "second-hop"])
def test_a_redirect_the_manifest_would_refuse_fails_the_cover_without_retry(
    server: CoverServer, tmp_path: Path, target: str, refused: str, hop: int
) -> None:
    entry = server.add(1, "rock/moved.jpg", redirect("/img/rock/hop.jpg") if hop == 2 else redirect(target))
    server.add(2, "rock/hop.jpg", redirect(target))

    result = download_covers([entry], tmp_path, FAST, progress=False)

    [failure] = result.failures
    assert failure.item == "rock/moved.jpg" and refused in failure.reason, failure.reason
    assert "gave up" not in failure.reason and server.requests(entry) == 1  # a permanent failure: FAST retries twice
    assert result.fetched == [] and list(tmp_path.rglob("*.jpg")) == [] and leftovers(tmp_path) == []


@pytest.mark.parametrize("hops", [MAX_REDIRECTS, MAX_REDIRECTS + 1])
def test_a_cover_follows_at_most_max_redirects_in_a_row(server: CoverServer, tmp_path: Path, hops: int) -> None:
    chain = [server.add(n + 1, f"rock/hop{n}.jpg", redirect(f"/img/rock/hop{n + 1}.jpg")) for n in range(hops)]
    cover = server.add(hops + 1, f"rock/hop{hops}.jpg", ok())

    result = download_covers(chain[:1], tmp_path, FAST, progress=False)

    if hops <= MAX_REDIRECTS:
        assert result.fetched == chain[:1] and (tmp_path / "rock" / "hop0.jpg").read_bytes() == COVER
        assert server.requests(cover) == 1
    else:
        [failure] = result.failures
        assert f"more than {MAX_REDIRECTS} redirects in a row" in failure.reason, failure.reason
        assert server.requests(cover) == 0 and all(server.requests(hop) == 1 for hop in chain)  # no retry
        assert not (tmp_path / "rock" / "hop0.jpg").exists()


def test_a_redirect_loop_ends_in_one_line_without_retry(server: CoverServer, tmp_path: Path) -> None:
    entry = server.add(1, "rock/loop.jpg", redirect("/img/rock/loop.jpg"))

    [failure] = download_covers([entry], tmp_path, FAST, progress=False).failures

    assert failure.reason == (
        f"HTTP 302 redirect not followed: more than {MAX_REDIRECTS} redirects in a row (the next to {entry.url})"
    )
    assert server.requests(entry) == MAX_REDIRECTS + 1


def test_a_cover_redirected_to_another_host_is_saved_and_listed(server: CoverServer, tmp_path: Path) -> None:
    blue = jpeg((10, 10, 200))
    server.add(9, "cdn/real.jpg", ok(blue))
    elsewhere = server.url("cdn/real.jpg", host="localhost")  # the same server under another host name
    moved = server.add(1, "rock/moved.jpg", redirect(elsewhere, code=301))
    renamed = server.add(2, "rock/renamed.jpg", redirect("/img/cdn/real.jpg"))  # same host: nothing to note

    result = download_covers([moved, renamed], tmp_path, FAST, progress=False)

    assert result.fetched == [moved, renamed] and result.failures == []
    assert (tmp_path / "rock" / "moved.jpg").read_bytes() == (tmp_path / "rock" / "renamed.jpg").read_bytes() == blue
    assert result.cross_host == [CrossHostRedirect("rock/moved.jpg", moved.url, elsewhere)]
    assert "1 saved from another host after redirects" in result.summary()


def test_a_config_that_cannot_work_is_refused() -> None:
    with pytest.raises(ConfigError, match="connections must be at least 1, got 0"):
        DownloadConfig(connections=0)
