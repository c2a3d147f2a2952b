"""`genre serve`'s request limits (issue 25, case 9): a 200 MB body used to be read whole (the server grew from 961
to 1,506 MB and stayed there) and deeply nested JSON got HTTP 500."""

from __future__ import annotations

import asyncio
import json

from genre.tracking.model_server_app import RequestLimits, too_deep


def call(app: RequestLimits, chunks: list[bytes], headers: dict[bytes, bytes]) -> tuple[list[dict], list[bytes]]:
    """Run one HTTP request through `app`: what it sent back, and each time it asked for more of the body."""
    sent: list[dict] = []
    pieces = [
        {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1} for i, chunk in enumerate(chunks)
    ]
    read: list[int] = []

    async def receive() -> dict:
        read.append(1)
        return pieces.pop(0) if pieces else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "headers": list(headers.items())}
    asyncio.run(app(scope, receive, send))
    return sent, read


def inner_app(bodies: list[bytes]):
    async def app(scope, receive, send) -> None:
        message = await receive()
        bodies.append(message["body"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    return app


def status(sent: list[dict]) -> int:
    return sent[0]["status"]


def test_a_body_within_the_limit_reaches_the_model_whole() -> None:
    bodies: list[bytes] = []
    app = RequestLimits(inner_app(bodies), max_bytes=10)
    sent, _ = call(app, [b'{"a"', b": 1}"], {b"content-type": b"application/json"})
    assert status(sent) == 200 and bodies == [b'{"a": 1}']


def test_a_declared_length_above_the_limit_is_413_before_any_body_is_read() -> None:
    bodies: list[bytes] = []
    app = RequestLimits(inner_app(bodies), max_bytes=1000)
    sent, read = call(app, [b"x" * 10], {b"content-length": b"200000000"})
    assert status(sent) == 413 and read == [] and bodies == []
    message = json.loads(sent[1]["body"])
    assert message["error_code"] == "REQUEST_TOO_LARGE" and "200,000,000 bytes" in message["message"]


def test_a_streamed_body_is_cut_off_once_it_passes_the_limit() -> None:
    bodies: list[bytes] = []
    app = RequestLimits(inner_app(bodies), max_bytes=1000)
    sent, read = call(app, [b"x" * 600] * 10, {})  # chunked: no declared length
    assert status(sent) == 413 and len(read) == 2 and bodies == []  # stopped after the chunk that passed it


def test_json_nested_too_deep_to_parse_is_400_and_other_bodies_are_the_model_s_to_judge() -> None:
    bodies: list[bytes] = []
    app = RequestLimits(inner_app(bodies), max_bytes=10**7)
    deep = b"[" * 100_000 + b"]" * 100_000
    sent, _ = call(app, [deep], {b"content-type": b"application/json"})
    assert status(sent) == 400 and bodies == []
    assert "nested deeper" in json.loads(sent[1]["body"])["message"]
    assert not too_deep(b"not json at all") and not too_deep(b'{"dataframe_split": {"data": [[1]]}}')
