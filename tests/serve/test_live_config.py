"""user_config changes apply live, as `serve deploy` / `serve run serve_config.yaml` apply them:
the same replicas take new limits (401, 413, 504) and a memory budget is enforced."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.conftest import deploy_applications, zhserve_application

pytestmark = pytest.mark.serve


def replica_of(deployment: str) -> str:
    from ray import serve

    handle = serve.get_deployment_handle(deployment, app_name="zhserve")
    return str(handle.stats.remote().result(timeout_s=30).replica)


def wait_for(url: str, predicate, timeout_s: float = 60) -> httpx.Response:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while True:
        response = httpx.post(
            f"{url}/v1/ner", json={"text": "马云在杭州"}, headers={"authorization": "Bearer sesame"}, timeout=30
        )
        if predicate(response) or time.monotonic() > deadline:
            return response
        time.sleep(0.5)


def test_limits_api_key_and_timeout_reconfigure_live(zhserve_url: str, tmp_path: Path) -> None:
    ner_replica = replica_of("NER")
    key_file = tmp_path / "api-key"  # as a mounted Kubernetes Secret: the key never enters the config
    key_file.write_text("sesame\n", encoding="utf-8")
    try:
        # A limit a short text's own work fits (admission lets it in) but that the NER call cannot
        # meet: its batches now wait 2 s to fill.
        strict = {"api_key_file": str(key_file), "max_text_chars": 20, "request_timeout_s": 0.3}
        slow_ner = {"max_batch_size": 4, "batch_wait_timeout_s": 2.0}
        deploy_applications(zhserve_application(user_config={"Ingress": strict, "NER": slow_ner}))
        response = wait_for(zhserve_url, lambda r: r.status_code == 504)
        assert response.status_code == 504 and response.json()["error"]["code"] == "timeout"

        unauthorised = httpx.post(f"{zhserve_url}/v1/ner", json={"text": "马云"}, timeout=30)
        assert unauthorised.status_code == 401 and unauthorised.json()["error"]["code"] == "unauthorized"
        assert unauthorised.headers["www-authenticate"].startswith("Bearer")
        wrong = httpx.get(f"{zhserve_url}/v1/models", headers={"authorization": "Bearer sesamE"}, timeout=30)
        assert wrong.status_code == 401  # every /v1/* route, GET as well
        right = httpx.get(f"{zhserve_url}/v1/models", headers={"authorization": "Bearer sesame"}, timeout=30)
        assert right.status_code == 200
        for open_route in ("/healthz", "/readyz", "/openapi.json", "/docs", "/"):
            assert httpx.get(f"{zhserve_url}{open_route}", timeout=30).status_code == 200, open_route

        # Refused before the body is read: a client that promises a huge body and sends none
        # gets its 401 at once instead of the server waiting for the bytes.
        with socket.create_connection(("127.0.0.1", urlsplit(zhserve_url).port or 80), timeout=10) as raw:
            raw.sendall(b"POST /v1/ner HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                        b"Content-Length: 5000000\r\n\r\n")  # fmt: skip
            assert raw.recv(4096).startswith(b"HTTP/1.1 401")

        too_long = httpx.post(
            f"{zhserve_url}/v1/ner", json={"text": "马" * 21}, headers={"authorization": "Bearer sesame"}, timeout=30
        )
        assert too_long.status_code == 413 and "the limit is 20" in too_long.json()["error"]["message"]
    finally:
        deploy_applications(zhserve_application())
    response = wait_for(zhserve_url, lambda r: r.status_code == 200)
    assert response.status_code == 200
    assert httpx.post(f"{zhserve_url}/v1/ner", json={"text": "马云"}, timeout=30).status_code == 200
    # Live: the NER replica that served before the change is the one serving after it.
    assert replica_of("NER") == ner_replica
