"""Every error the API returns, each with its status code, and the one place that maps them to
JSON responses ``{"error": {"code": str, "message": str}}``.

Messages say what was received and what is allowed; they never carry a traceback.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse

logger = logging.getLogger("ray.serve")


class ZhserveError(Exception):
    """Base of the API's errors: a status code, a stable machine-readable code and a message."""

    status_code = 500
    code = "internal_error"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}

    def to_body(self) -> dict[str, dict[str, str]]:
        return {"error": {"code": self.code, "message": self.message}}


class InvalidJSONError(ZhserveError):
    status_code, code = 400, "invalid_json"


class InvalidEncodingError(ZhserveError):
    status_code, code = 400, "invalid_encoding"


class UnauthorizedError(ZhserveError):
    status_code, code = 401, "unauthorized"


class NotFoundError(ZhserveError):
    status_code, code = 404, "not_found"


class MethodNotAllowedError(ZhserveError):
    status_code, code = 405, "method_not_allowed"


class PayloadTooLargeError(ZhserveError):
    status_code, code = 413, "payload_too_large"


class UnsupportedMediaTypeError(ZhserveError):
    status_code, code = 415, "unsupported_media_type"


class SchemaValidationError(ZhserveError):
    status_code, code = 422, "invalid_request"


class EmptyTextError(ZhserveError):
    status_code, code = 422, "empty_text"


class ModelFailureError(ZhserveError):
    """A model failed on input that passed validation: our bug, reported without internals."""

    status_code, code = 500, "model_error"


class OverloadedError(ZhserveError):
    status_code, code = 503, "overloaded"

    def __init__(self, message: str, *, retry_after_s: int = 1) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})


class ModelsNotReadyError(ZhserveError):
    status_code, code = 503, "models_not_ready"

    def __init__(self, message: str, *, retry_after_s: int = 5) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})


class RequestTimeoutError(ZhserveError):
    status_code, code = 504, "timeout"


def error_response(error: ZhserveError) -> JSONResponse:
    return JSONResponse(error.to_body(), status_code=error.status_code, headers=error.headers)


def describe_validation_errors(errors: list[dict[str, Any]]) -> str:
    """One readable sentence from pydantic's error list: where, and what was wrong."""
    parts = []
    for error in errors[:5]:
        location = ".".join(str(part) for part in error.get("loc", ()) if part != "body") or "body"
        parts.append(f"{location}: {error.get('msg', 'invalid')}")
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return "; ".join(parts) + more


def install_error_handlers(app: FastAPI) -> None:
    """Map every exception class to its JSON response; nothing reaches the client as a traceback."""

    @app.exception_handler(ZhserveError)
    async def _domain(_: Request, exc: ZhserveError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        if any(error.get("type") == "json_invalid" for error in errors):
            detail = errors[0].get("ctx", {}).get("error", "malformed JSON")
            return error_response(InvalidJSONError(f"request body is not valid JSON: {detail}"))
        return error_response(SchemaValidationError(describe_validation_errors(errors)))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:
            # FastAPI raises this when the body cannot even be decoded (e.g. not UTF-8).
            return error_response(InvalidEncodingError("request body is not valid UTF-8 JSON"))
        if exc.status_code == 404:
            return error_response(NotFoundError("no such endpoint; see /docs"))
        if exc.status_code == 405:
            return error_response(MethodNotAllowedError(f"method not allowed: {exc.detail}"))
        error = ZhserveError(str(exc.detail))
        error.status_code, error.code = exc.status_code, "http_error"
        return error_response(error)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error")
        return error_response(ZhserveError(f"internal error ({type(exc).__name__}); it has been logged"))
