"""Every error the API returns, each with its status code, and the one place that maps them to
JSON responses ``{"error": {"code": str, "message": str, "request_id": str}}``.

Messages say what was received and what is allowed; they never carry a traceback, an exception
text, a path or a class name. Failures of the machinery below the API (Ray's exceptions, a
replica's refusal, a time limit) are mapped to API errors in :func:`api_error`, the only place
that knows them; the OpenAPI responses (``error_responses``) and the README's table are generated
from the classes here.

FastAPI is imported only where the handlers are installed, so the request pipeline
(``serve_app.pipeline``) can use these errors without it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, ClassVar

from ray.exceptions import RayActorError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError, ReplicaUnavailableError

from deployments.runtime.answers import ItemError

if TYPE_CHECKING:
    from fastapi import FastAPI
    from starlette.responses import JSONResponse

logger = logging.getLogger("ray.serve")

# A replica that died under a call (crash, OOM kill, node loss): not the caller's fault, and a
# model call is pure, so it is retried once on another replica (serve_app.ingress).
REPLICA_LOST: tuple[type[BaseException], ...] = (RayActorError, ReplicaUnavailableError)


class ZhserveError(Exception):
    """Base of the API's errors: a status code, a stable machine-readable code and a message."""

    status_code: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    description: ClassVar[str] = "An unexpected failure; it has been logged."

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}

    def to_body(self, request_id: str | None = None) -> dict[str, dict[str, str]]:
        error = {"code": self.code, "message": self.message}
        if request_id:
            error["request_id"] = request_id
        return {"error": error}


class InvalidJSONError(ZhserveError):
    status_code, code = 400, "invalid_json"
    description = "The body is not valid JSON."


class InvalidEncodingError(ZhserveError):
    status_code, code = 400, "invalid_encoding"
    description = "The body is not UTF-8, or a text has unpaired surrogates."


class UnauthorizedError(ZhserveError):
    status_code, code = 401, "unauthorized"
    description = "An API key is configured and the request's is missing or wrong."


class NotFoundError(ZhserveError):
    status_code, code = 404, "not_found"
    description = "No such route or UI file."


class MethodNotAllowedError(ZhserveError):
    status_code, code = 405, "method_not_allowed"
    description = "The route exists but not for this method."


class BodyTimeoutError(ZhserveError):
    status_code, code = 408, "body_timeout"
    description = "The request body did not arrive within body_timeout_s (a client sending too slowly)."


class PayloadTooLargeError(ZhserveError):
    status_code, code = 413, "payload_too_large"
    description = "Text, batch or body over the configured limit (the message names it)."


class EstimatedTooLargeError(PayloadTooLargeError):
    """A 413 by admission's estimate of the request's own model time (``serve_app.admission``),
    not by a configured limit: the ingress confirms it by timing the models again before it is
    answered (``serve_app.calibration``). Same status and code as its parent."""


class UnsupportedMediaTypeError(ZhserveError):
    status_code, code = 415, "unsupported_media_type"
    description = "A content type other than application/json."


class SchemaValidationError(ZhserveError):
    status_code, code = 422, "invalid_request"
    description = "JSON that does not match the schema (the message names the field)."


class EmptyTextError(ZhserveError):
    status_code, code = 422, "empty_text"
    description = "A text with nothing to analyse (empty, whitespace, control or zero-width characters only)."


class ModelFailureError(ZhserveError):
    """A model failed on input that passed validation: our bug, reported without internals."""

    status_code, code = 500, "model_error"
    description = "A model failed on valid input (a bug; logged, never a traceback)."


class OverloadedError(ZhserveError):
    status_code, code = 503, "overloaded"
    description = "The service is at capacity; retry after the Retry-After header's seconds."

    def __init__(self, message: str, *, retry_after_s: int = 1) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})


class ModelsNotReadyError(ZhserveError):
    status_code, code = 503, "models_not_ready"
    description = "A model has no healthy replica yet; retry after the Retry-After header's seconds."

    def __init__(self, message: str, *, retry_after_s: int = 5) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})


class RequestTimeoutError(ZhserveError):
    status_code, code = 504, "timeout"
    description = "The request exceeded its time limit (request_timeout_s)."


def error_classes() -> list[type[ZhserveError]]:
    """Every API error class, in status order (the internal catch-all last among the 500s)."""
    classes: list[type[ZhserveError]] = [
        InvalidJSONError,
        InvalidEncodingError,
        UnauthorizedError,
        NotFoundError,
        MethodNotAllowedError,
    ]
    classes += [BodyTimeoutError, PayloadTooLargeError, UnsupportedMediaTypeError]
    classes += [SchemaValidationError, EmptyTextError]
    classes += [ModelFailureError, ZhserveError, OverloadedError, ModelsNotReadyError, RequestTimeoutError]
    return classes


def error_responses(model: Any, statuses: set[int] | None = None) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for the error statuses (all, or ``statuses``), generated from the
    error classes: each status lists its codes and when they happen."""
    by_status: dict[int, list[type[ZhserveError]]] = {}
    for cls in error_classes():
        by_status.setdefault(cls.status_code, []).append(cls)
    return {
        status: {
            "model": model,
            "description": " ".join(f"`{cls.code}`: {cls.description}" for cls in classes),
        }
        for status, classes in sorted(by_status.items())
        if statuses is None or status in statuses
    }


def item_error(error: ItemError) -> ZhserveError:
    """The API error for one row a replica could not answer."""
    if error.retryable:
        return OverloadedError(f"a model replica refused work: {error.message}", retry_after_s=5)
    if error.too_large:
        return PayloadTooLargeError(error.message)
    return ModelFailureError("the model failed on part of the text; the failure has been logged")


def api_error(exc: BaseException, *, timeout_s: float) -> BaseException:
    """The API error a failed model call or time limit stands for.

    Cancellation (the caller went away) and anything unknown come back unchanged: the first must
    propagate, the second reaches the catch-all handler, which logs it and answers 500.
    """
    if isinstance(exc, ZhserveError | asyncio.CancelledError):
        return exc
    if isinstance(exc, TimeoutError):
        return RequestTimeoutError(f"the request took longer than its limit of {timeout_s:g} s")
    if isinstance(exc, BackPressureError):
        return OverloadedError("the models are at capacity; retry shortly", retry_after_s=1)
    if isinstance(exc, DeploymentUnavailableError | ReplicaUnavailableError | RayActorError):
        return ModelsNotReadyError("a model replica is unavailable; retry shortly")
    return exc


def describe_validation_errors(errors: list[dict[str, Any]]) -> str:
    """One readable sentence from pydantic's error list: where, and what was wrong."""
    parts = []
    for error in errors[:5]:
        location = ".".join(str(part) for part in error.get("loc", ()) if part != "body") or "body"
        parts.append(f"{location}: {error.get('msg', 'invalid')}")
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return "; ".join(parts) + more


def error_response(error: ZhserveError, request_id: str | None = None) -> JSONResponse:
    from starlette.responses import JSONResponse

    return JSONResponse(error.to_body(request_id), status_code=error.status_code, headers=error.headers)


def install_error_handlers(app: FastAPI, request_id: Any = None, headers: dict[str, str] | None = None) -> None:
    """Map every exception class to its JSON response; nothing reaches the client as a traceback.

    ``request_id(request)`` names the request in the error body (the id Serve also logs).
    ``headers`` go on every error response (the catch-all's answer bypasses the app's middleware).
    """
    extra = dict(headers or {})
    from fastapi import Request
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException as StarletteHTTPException

    def identify(request: Request) -> str | None:
        return request_id(request) if request_id is not None else None

    def answer(request: Request, error: ZhserveError) -> JSONResponse:
        request.scope["zhserve.error_code"] = error.code  # for the request metrics (serve_app.metrics)
        rid = identify(request)
        # One line per error answer, with the id the client got (Serve's log format adds it too).
        logger.info("answered %d %s to %s %s (request %s)", error.status_code, error.code, request.method,
                    request.url.path, rid)  # fmt: skip
        response = error_response(error, rid)
        for name, value in extra.items():
            response.headers.setdefault(name, value)
        return response

    @app.exception_handler(ZhserveError)
    async def _domain(request: Request, exc: ZhserveError) -> JSONResponse:
        return answer(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        if any(error.get("type") == "json_invalid" for error in errors):
            return answer(request, InvalidJSONError("request body is not valid JSON"))
        return answer(request, SchemaValidationError(describe_validation_errors(errors)))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:
            # FastAPI raises this when the body cannot even be decoded (e.g. not UTF-8).
            return answer(request, InvalidEncodingError("request body is not valid UTF-8 JSON"))
        if exc.status_code == 404:
            return answer(request, NotFoundError("no such endpoint; see /docs"))
        if exc.status_code == 405:
            return answer(request, MethodNotAllowedError("method not allowed on this route"))
        logger.warning("HTTP error %d: %s", exc.status_code, exc.detail)
        return answer(request, ZhserveError("internal error; it has been logged"))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error (request %s)", identify(request))
        return answer(request, ZhserveError("internal error; it has been logged"))


def error_table_markdown() -> str:
    """The README's error table, generated from the classes (a unit test keeps the README equal)."""
    by_status: dict[int, list[type[ZhserveError]]] = {}
    for cls in error_classes():
        by_status.setdefault(cls.status_code, []).append(cls)
    lines = ["| status | code | when |", "|---|---|---|"]
    for status, classes in sorted(by_status.items()):
        for cls in classes:
            lines.append(f"| {status} | `{cls.code}` | {cls.description} |")
    return "\n".join(lines)
