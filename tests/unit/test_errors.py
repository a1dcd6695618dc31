"""Model-side failures map to the right API errors."""

from __future__ import annotations

from deployments.server import ItemError
from serve_app.errors import ModelFailureError, OverloadedError
from serve_app.ingress import _item_error


def test_retryable_refusal_is_503_with_retry_after() -> None:
    error = _item_error(ItemError("replica memory 900 MiB is over its budget; retry shortly", retryable=True))
    assert isinstance(error, OverloadedError)
    assert error.status_code == 503 and int(error.headers["Retry-After"]) > 0
    assert "over its budget" in error.message


def test_model_failure_is_500_without_internals() -> None:
    error = _item_error(ItemError("TextTooLongError: text has 600 tokens"))
    assert isinstance(error, ModelFailureError) and error.status_code == 500
    assert error.to_body() == {"error": {"code": "model_error", "message": error.message}}
