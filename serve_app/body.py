"""Request bodies: read within a bound, parsed into the schema models, and answered readably when
they are refused.

- :func:`read_body`: 415 for a content type other than JSON, 413 as soon as the body exceeds
  ``max_body_bytes`` — declared or not (a chunked body is counted while it is read, never buffered
  past the limit), 408 when it has not arrived within ``body_timeout_s``.
- :func:`parse`: 400 for bytes that are not UTF-8 JSON (or nest deeper than the parser goes),
  422 for JSON that does not match the schema.
- :func:`check_text`: 413 for a text over ``max_text_chars``, 400 for unpaired surrogates.
- :class:`LingeringCloseMiddleware`: an answer given before the request body has arrived (413 while
  reading, 401 and 415 before reading) is sent at once, then the rest of the body is read and
  discarded, up to a bound, before the connection closes — as nginx's lingering close does. Closing
  with unread bytes makes the kernel reset the connection, and a client that sends its whole body
  before reading (Python's ``urllib``, ``requests``) then sees "connection reset" instead of the
  answer.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import TypeVar

from pydantic import BaseModel, ValidationError
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serve_app.config import IngressConfig
from serve_app.errors import (
    BodyTimeoutError,
    InvalidEncodingError,
    InvalidJSONError,
    PayloadTooLargeError,
    SchemaValidationError,
    UnsupportedMediaTypeError,
    describe_validation_errors,
)

Body = TypeVar("Body", bound=BaseModel)

JSON_MEDIA_TYPE = "application/json"

LINGER_BYTES = 64 << 20
"""Most bytes of an unwanted body read and discarded after an early answer (a 15 MB body to the
default 8 MiB limit is read to its end; a client streaming more is cut off)."""
LINGER_S = 30.0
"""Most seconds spent discarding an unwanted body (nginx's ``lingering_time``)."""
LINGER_IDLE_S = 5.0
"""Most seconds to wait for the next piece of an unwanted body (nginx's ``lingering_timeout``)."""


async def read_body(request: Request, config: IngressConfig) -> bytes:
    """The request body, refused with 415 unless it is JSON and with 413 as soon as it exceeds
    ``max_body_bytes``. The API key was checked before routing (serve_app.security): an
    unauthorised body is never read."""
    content_type = request.headers.get("content-type", "")
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type != JSON_MEDIA_TYPE and not media_type.endswith("+json"):
        raise UnsupportedMediaTypeError(
            f"content type {content_type or '(none)'!r} is not supported; send application/json"
        )
    limit = config.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(f"request body has {int(declared):,} bytes; the limit is {limit:,}")
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(config.body_timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLargeError(f"request body has more than {limit:,} bytes; the limit is {limit:,}")
                chunks.append(chunk)
    except TimeoutError:
        raise BodyTimeoutError(
            f"request body not received within {config.body_timeout_s:g} s ({size:,} bytes arrived)"
        ) from None
    return b"".join(chunks)


def parse(model: type[Body], body: bytes) -> Body:
    """Validate ``body`` against a schema model: 400 for bytes that are not UTF-8 JSON, 422 for
    JSON that does not match."""
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidEncodingError("request body is not valid UTF-8") from None
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        invalid = [error for error in errors if error["type"] == "json_invalid"]
        if invalid:
            if any("recursion limit" in str(error.get("msg", "")) for error in invalid):
                # pydantic's parser stops at 200 levels; no request of this API nests more than 2
                raise InvalidJSONError("request body nests arrays or objects too deeply") from None
            if _is_json(body):  # valid JSON that pydantic's parser refuses: unpaired surrogate escapes
                raise InvalidEncodingError("request body has unpaired surrogates; send valid Unicode") from None
            raise InvalidJSONError("request body is not valid JSON") from None
        raise SchemaValidationError(describe_validation_errors(list(errors))) from None  # type: ignore[arg-type]


def _is_json(body: bytes) -> bool:
    """Whether Python's parser accepts ``body`` (it takes unpaired surrogate escapes, which
    pydantic's refuses). Only on the error path, so its cost never falls on a good request."""
    try:
        json.loads(body)
    except (ValueError, RecursionError):
        return False
    return True


def check_text(text: str, config: IngressConfig, *, field: str = "text") -> None:
    """413 for a text over ``max_text_chars``, 400 for one with unpaired surrogates."""
    if len(text) > config.max_text_chars:
        raise PayloadTooLargeError(f"{field} has {len(text):,} characters; the limit is {config.max_text_chars:,}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidEncodingError(
            f"{field} contains an unpaired surrogate at character {exc.start}; send valid Unicode"
        ) from None


def _has_no_body(headers: Headers) -> bool:
    if "transfer-encoding" in headers:
        return False
    length = headers.get("content-length")
    return length is None or length.strip() == "0"


class LingeringCloseMiddleware:
    """Pure ASGI middleware: an answer sent before the request body has been read to its end goes
    out whole at once, with ``Connection: close``; then the rest of the body is read and discarded
    (at most ``linger_bytes``, ``linger_s`` in all and ``idle_s`` between pieces) before the
    response is completed and the server closes the connection.

    The answer's last body message is held open (``more_body``) while discarding: an ASGI server
    stops delivering the request body once the response is complete, and the client already has
    every byte of the answer (its length is in ``Content-Length``).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        linger_bytes: int = LINGER_BYTES,
        linger_s: float = LINGER_S,
        idle_s: float = LINGER_IDLE_S,
    ) -> None:
        self.app = app
        self.linger_bytes = linger_bytes
        self.linger_s = linger_s
        self.idle_s = idle_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _has_no_body(Headers(scope=scope)):
            await self.app(scope, receive, send)
            return
        body_done = False
        lingering = False

        async def receive_and_note() -> Message:
            nonlocal body_done
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        async def send_and_linger(message: Message) -> None:
            nonlocal lingering
            if message["type"] == "http.response.start" and not body_done:
                lingering = True
                message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            elif lingering and message["type"] == "http.response.body" and not message.get("more_body", False):
                await send({**message, "more_body": True})
                await self._discard(receive)
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        await self.app(scope, receive_and_note, send_and_linger)

    async def _discard(self, receive: Receive) -> None:
        """Read and drop the rest of the request body, within the bounds."""
        deadline = time.monotonic() + self.linger_s
        discarded = 0
        while discarded <= self.linger_bytes:
            wait = min(self.idle_s, deadline - time.monotonic())
            if wait <= 0:
                return
            try:
                message = await asyncio.wait_for(receive(), wait)
            except TimeoutError:
                return
            if message["type"] != "http.request":
                return  # the client went away
            discarded += len(message.get("body", b""))
            if not message.get("more_body", False):
                return
