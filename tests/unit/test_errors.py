"""Model-side failures map to the right API errors, and the OpenAPI error table is complete."""

from __future__ import annotations

import asyncio

from ray.exceptions import RayActorError
from ray.serve.exceptions import BackPressureError

from deployments.runtime.answers import ItemError
from serve_app.errors import (
    ModelFailureError,
    ModelsNotReadyError,
    OverloadedError,
    PayloadTooLargeError,
    RequestTimeoutError,
    ZhserveError,
    api_error,
    error_classes,
    error_responses,
    item_error,
)
from serve_app.schemas import ErrorResponse


def test_retryable_refusal_is_503_with_retry_after() -> None:
    error = item_error(ItemError("replica memory 900 MiB is over its budget; retry shortly", retryable=True))
    assert isinstance(error, OverloadedError)
    assert error.status_code == 503 and int(error.headers["Retry-After"]) > 0
    assert "over its budget" in error.message


def test_a_row_no_replica_can_fit_is_413_naming_estimate_and_budget() -> None:
    message = "a window of 514 padded tokens needs an estimated 60.0 MiB of activation memory; the budget is 300 MiB"
    error = item_error(ItemError(message, too_large=True))
    assert isinstance(error, PayloadTooLargeError) and error.status_code == 413
    assert error.message == message


def test_model_failure_is_500_without_internals() -> None:
    error = item_error(ItemError("the model failed on this window"))
    assert isinstance(error, ModelFailureError) and error.status_code == 500
    assert error.to_body() == {"error": {"code": "model_error", "message": error.message}}
    assert error.to_body("abc")["error"]["request_id"] == "abc"


def test_ray_failures_map_to_api_errors_and_cancellation_passes_through() -> None:
    assert isinstance(api_error(TimeoutError(), timeout_s=2), RequestTimeoutError)
    overloaded = api_error(BackPressureError(num_queued_requests=3, max_queued_requests=2), timeout_s=2)
    assert isinstance(overloaded, OverloadedError) and overloaded.headers["Retry-After"] == "1"
    assert isinstance(api_error(RayActorError(), timeout_s=2), ModelsNotReadyError)
    cancelled = asyncio.CancelledError()
    assert api_error(cancelled, timeout_s=2) is cancelled
    unknown = KeyError("x")
    assert api_error(unknown, timeout_s=2) is unknown  # the catch-all logs it and answers 500


def test_error_responses_list_every_status_and_code() -> None:
    responses = error_responses(ErrorResponse)
    assert sorted(responses) == [400, 401, 404, 405, 408, 413, 415, 422, 500, 503, 504]
    for cls in error_classes():
        assert f"`{cls.code}`" in responses[cls.status_code]["description"]
    assert all(issubclass(cls, ZhserveError) for cls in error_classes())
    assert sorted(error_responses(ErrorResponse, {503})) == [503]


def test_the_readme_error_table_is_the_generated_one() -> None:
    from pathlib import Path

    from serve_app.errors import error_table_markdown

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    assert error_table_markdown() in readme


def test_the_api_key_comes_from_a_file_or_the_environment_never_silently_open(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import pytest

    from serve_app.security import load_api_key

    key_file = tmp_path / "key"
    key_file.write_text("s3cret\n", encoding="utf-8")
    assert load_api_key(None, {}) is None
    assert load_api_key(None, {"ZHSERVE_API_KEY": " abc "}) == "abc"
    assert load_api_key(None, {"ZHSERVE_API_KEY_FILE": str(key_file), "ZHSERVE_API_KEY": "other"}) == "s3cret"
    assert load_api_key(str(key_file), {"ZHSERVE_API_KEY": "other"}) == "s3cret"
    (tmp_path / "empty").write_text("\n", encoding="utf-8")
    with pytest.raises(ValueError, match="empty"):
        load_api_key(str(tmp_path / "empty"), {})
    with pytest.raises(FileNotFoundError):
        load_api_key(str(tmp_path / "missing"), {})
