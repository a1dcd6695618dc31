"""Ingress limits travel as user_config and change live: 401, 413 and 504 on a redeploy."""

from __future__ import annotations

import contextlib
import time

import httpx
import pytest

from tests.conftest import EMBEDDED_NER, EMBEDDED_SENTIMENT

pytestmark = pytest.mark.serve


def redeploy(ingress_config: dict[str, object]) -> None:
    from ray import serve

    from serve_app.app import build_app

    args = {"ner_model": str(EMBEDDED_NER), "sentiment_model": str(EMBEDDED_SENTIMENT)}
    serve.run(build_app({**args, "ingress_config": ingress_config}), name="zhserve", route_prefix="/")


def wait_for(url: str, predicate, timeout_s: float = 60) -> httpx.Response:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while True:
        response = httpx.post(
            f"{url}/v1/ner", json={"text": "马云在杭州"}, headers={"authorization": "Bearer sesame"}, timeout=30
        )
        if predicate(response) or time.monotonic() > deadline:
            return response
        time.sleep(0.5)


def test_limits_api_key_and_timeout_reconfigure_live(zhserve_url: str) -> None:
    try:
        redeploy({"api_key": "sesame", "max_text_chars": 20, "request_timeout_s": 0.0001})
        response = wait_for(zhserve_url, lambda r: r.status_code == 504)
        assert response.status_code == 504 and response.json()["error"]["code"] == "timeout"

        unauthorised = httpx.post(f"{zhserve_url}/v1/ner", json={"text": "马云"}, timeout=30)
        assert unauthorised.status_code == 401 and unauthorised.json()["error"]["code"] == "unauthorized"

        too_long = httpx.post(
            f"{zhserve_url}/v1/ner", json={"text": "马" * 21}, headers={"authorization": "Bearer sesame"}, timeout=30
        )
        assert too_long.status_code == 413 and "the limit is 20" in too_long.json()["error"]["message"]
    finally:
        redeploy({})
    response = wait_for(zhserve_url, lambda r: r.status_code == 200)
    assert response.status_code == 200
    assert httpx.post(f"{zhserve_url}/v1/ner", json={"text": "马云"}, timeout=30).status_code == 200


def test_memory_budget_is_enforced_and_the_replica_replaced(zhserve_url: str) -> None:
    """A budget below the replica's resident memory: work is refused with 503 + Retry-After and
    the failing health check makes Serve replace the replica."""
    from ray import serve

    from serve_app.app import build_app

    args = {"ner_model": str(EMBEDDED_NER), "sentiment_model": str(EMBEDDED_SENTIMENT)}
    handle = serve.get_deployment_handle("NER", app_name="zhserve")
    original = handle.stats.remote().result(timeout_s=30).replica
    try:
        serve.run(build_app({**args, "ner_config": {"memory_limit_mb": 64}}), name="zhserve", route_prefix="/")
        response = wait_for(zhserve_url, lambda r: r.status_code == 503)
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "overloaded" and "budget" in response.json()["error"]["message"]
        assert int(response.headers["retry-after"]) > 0
        deadline = time.monotonic() + 90
        replicas = {original}
        while time.monotonic() < deadline and replicas == {original}:
            with contextlib.suppress(Exception):  # a replica being replaced may not answer
                replicas.add(handle.stats.remote().result(timeout_s=10).replica)
            time.sleep(1)
        assert replicas - {original}, "the over-budget replica was never replaced"
    finally:
        serve.run(build_app(args), name="zhserve", route_prefix="/")
    assert wait_for(zhserve_url, lambda r: r.status_code == 200).status_code == 200
