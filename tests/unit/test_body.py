"""serve_app.body: parsing refuses what is not JSON of the schema with 400/422 (never a 500, however
deep), and an early answer is followed by reading the unwanted body, within bounds."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from starlette.responses import JSONResponse

from serve_app.body import LingeringCloseMiddleware, parse
from serve_app.errors import InvalidEncodingError, InvalidJSONError, SchemaValidationError
from serve_app.schemas import BatchRequest, TextRequest


@pytest.mark.parametrize("depth", [199, 201, 990, 5_000, 100_000])
def test_deep_json_is_invalid_json_at_any_depth(depth: int) -> None:
    body = b'{"text": ' + b"[" * depth + b"]" * depth + b"}"
    with pytest.raises((InvalidJSONError, SchemaValidationError)):
        parse(TextRequest, body)
    with pytest.raises((InvalidJSONError, SchemaValidationError)):
        parse(BatchRequest, b'{"texts": ' + b"[" * depth + b"]" * depth + b"}")


def test_unpaired_surrogates_are_invalid_encoding_not_invalid_json() -> None:
    with pytest.raises(InvalidEncodingError):
        parse(TextRequest, b'{"text": "a\\udc00b"}')
    with pytest.raises(InvalidJSONError):
        parse(TextRequest, b'{"text": "a\\u12"}')


class Client:
    """An ASGI client sending ``chunks`` pieces of body; it records what happened, in order."""

    def __init__(self, chunks: int, size: int = 1000, *, stall: bool = False) -> None:
        self.chunks, self.size, self.stall = chunks, size, stall
        self.sent = 0
        self.events: list[str] = []
        self.messages: list[dict[str, Any]] = []

    async def receive(self) -> dict[str, Any]:
        if self.stall and self.sent == 1:
            await asyncio.sleep(3600)
        self.sent += 1
        self.events.append(f"body {self.sent}")
        return {"type": "http.request", "body": b"x" * self.size, "more_body": self.sent < self.chunks}

    async def send(self, message: dict[str, Any]) -> None:
        self.messages.append(message)
        self.events.append(message["type"])


async def refuse_at_once(scope: Any, receive: Any, send: Any) -> None:
    await JSONResponse({"error": {"code": "payload_too_large", "message": "too large"}}, status_code=413)(
        scope, receive, send
    )


def run(middleware: LingeringCloseMiddleware, client: Client) -> float:
    scope = {"type": "http", "method": "POST", "path": "/v1/ner", "headers": [(b"content-length", b"100000")]}
    started = time.perf_counter()
    asyncio.run(middleware(scope, client.receive, client.send))  # type: ignore[arg-type]
    return time.perf_counter() - started


def test_an_early_answer_goes_out_whole_then_the_body_is_read_to_its_end() -> None:
    client = Client(chunks=100)
    run(LingeringCloseMiddleware(refuse_at_once), client)
    start, answer, end = client.messages
    assert start["status"] == 413 and (b"connection", b"close") in start["headers"]
    assert b"payload_too_large" in answer["body"] and answer["more_body"] is True
    assert client.events.index("http.response.body") < client.events.index("body 1")  # answered first
    assert client.sent == 100  # every byte read before the connection closes
    assert end == {"type": "http.response.body", "body": b"", "more_body": False}


def test_discarding_stops_at_its_bounds() -> None:
    client = Client(chunks=1_000)
    run(LingeringCloseMiddleware(refuse_at_once, linger_bytes=10_000), client)
    assert client.sent == 11 and client.messages[-1]["more_body"] is False
    stalled = Client(chunks=100, stall=True)
    elapsed = run(LingeringCloseMiddleware(refuse_at_once, idle_s=0.2), stalled)
    assert elapsed < 2 and stalled.messages[-1]["more_body"] is False


def test_an_answer_after_the_whole_body_passes_through() -> None:
    async def read_then_answer(scope: Any, receive: Any, send: Any) -> None:
        while (await receive()).get("more_body"):
            pass
        await JSONResponse({"ok": True})(scope, receive, send)

    client = Client(chunks=3)
    run(LingeringCloseMiddleware(read_then_answer), client)
    start, answer = client.messages
    assert (b"connection", b"close") not in start["headers"] and answer.get("more_body", False) is False
