"""The app `genre serve` runs: MLflow's scoring app for the model, behind limits on what one request may hold.

MLflow's scoring server reads any body whole (a 200 MB body grew the server from 961 to 1,506 MB, and it kept the
memory) and answers JSON nested past Python's recursion limit with HTTP 500. `RequestLimits`, a plain ASGI wrapper,
answers 413 to a body above `GENRE_SERVE_MAX_REQUEST_BYTES` before reading past the limit, and 400 to JSON nested too
deep to parse, so MLflow's app only ever sees what it can answer. Uvicorn imports this module as
`genre.tracking.model_server_app:app`, with the model's local folder in MLflow's own variable, as `mlflow models serve`
does.
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable
from typing import Any

MAX_REQUEST_VARIABLE = "GENRE_SERVE_MAX_REQUEST_BYTES"

Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class RequestLimits:
    """An ASGI app that passes HTTP requests to `app` unless the body exceeds `max_bytes` (413) or is JSON nested
    deeper than Python's parser goes (400). The body is read here, at most `max_bytes` of it, then replayed."""

    def __init__(self, app: Callable, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Message, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length", b"").decode("latin-1")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send, 413, self._too_large(int(declared)))
            return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                await self._refuse(send, 413, self._too_large(None))
                return
        if b"json" in headers.get(b"content-type", b"") and too_deep(bytes(body)):
            await self._refuse(send, 400, "the JSON body is nested deeper than a request of covers needs")
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # after the body: the client's disconnect, when it comes
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)

    def _too_large(self, size: int | None) -> str:
        said = f" ({size:,} bytes)" if size is not None else ""
        return (
            f"the request body{said} is larger than this server takes, {self.max_bytes:,} bytes; send fewer covers "
            "per request (or start genre serve with a larger --max-request-mb)"
        )

    @staticmethod
    async def _refuse(send: Send, status: int, message: str) -> None:
        code = "REQUEST_TOO_LARGE" if status == 413 else "BAD_REQUEST"
        content = json.dumps({"error_code": code, "message": message}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(content)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": content})


def too_deep(body: bytes) -> bool:
    """Whether `body` is JSON nested past what Python's parser can read (what made MLflow's app answer 500); any
    other JSON, and what is no JSON at all, are MLflow's to answer."""
    try:
        json.loads(body)
    except RecursionError:
        return True
    except ValueError:
        return False
    return False


def scoring_app() -> Callable:
    """MLflow's scoring app for the model in MLflow's serving variable, behind `RequestLimits`."""
    from mlflow.pyfunc.scoring_server import app as scoring  # loads the model, as `mlflow models serve` does

    return RequestLimits(scoring.app, int(os.environ[MAX_REQUEST_VARIABLE]))


def __getattr__(name: str) -> Any:
    """`app`, built when uvicorn asks for it (importing this module alone loads no model)."""
    if name == "app":
        return scoring_app()
    raise AttributeError(name)
