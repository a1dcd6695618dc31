"""Hostile clients against the real service: security headers, CORS, bodies over the limit while
they are still arriving, Unicode edges over HTTP, and error bodies that name the request in the
server's log but carry no internals."""

from __future__ import annotations

import contextlib
import json
import re
import select
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.conftest import deploy_applications, zhserve_application

pytestmark = pytest.mark.serve

JSON = {"content-type": "application/json"}
HEAD = b"POST /v1/ner HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"


def check_base_headers(response: httpx.Response) -> str:
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["x-frame-options"] == "DENY"
    policy = response.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in policy
    assert "'unsafe-inline'" not in policy and "'unsafe-eval'" not in policy
    return policy


def test_every_kind_of_response_carries_the_security_headers(zhserve_url: str) -> None:
    answers = {
        "json 200": httpx.post(f"{zhserve_url}/v1/ner", json={"text": "马云在杭州"}, timeout=30),
        "json 422": httpx.post(f"{zhserve_url}/v1/ner", json={}, timeout=30),
        "json 404": httpx.get(f"{zhserve_url}/v1/nothing", timeout=30),
        "json 405": httpx.get(f"{zhserve_url}/v1/ner", timeout=30),
        "health": httpx.get(f"{zhserve_url}/healthz", timeout=30),
        "openapi": httpx.get(f"{zhserve_url}/openapi.json", timeout=30),
        "stream": httpx.post(f"{zhserve_url}/v1/analyze/stream", json={"text": "马云在杭州。"}, timeout=30),
    }
    for name, response in answers.items():
        assert response.status_code < 500, name
        assert check_base_headers(response).startswith("default-src 'none'"), name

    page = httpx.get(f"{zhserve_url}/", timeout=30)
    policy = check_base_headers(page)
    assert "script-src 'self';" in policy and "connect-src 'self'" in policy
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", page.text), "the UI has no inline script"
    assert "style=" not in page.text, "nor inline styles"
    asset = httpx.get(f"{zhserve_url}/ui/app.js", timeout=30)
    assert check_base_headers(asset) == policy

    docs = httpx.get(f"{zhserve_url}/docs", timeout=30)
    docs_policy = check_base_headers(docs)
    inline = re.findall(r"<script>(.*?)</script>", docs.text, flags=re.DOTALL)
    assert inline, "the Swagger page bootstraps with one inline script ..."
    assert docs_policy.count("'sha256-") == len(inline), "... allowed by its hash alone"


def test_cors_is_off_by_default_and_follows_the_allow_list() -> None:
    """The default app answers no cross-origin request; an app built with cors_allow_origins
    answers its listed origins, and only them."""
    from tests.conftest import serve_http_url

    url = serve_http_url()
    preflight = {"origin": "https://evil.example", "access-control-request-method": "POST"}
    default = httpx.options(f"{url}/v1/ner", headers=preflight, timeout=30)
    assert "access-control-allow-origin" not in default.headers
    simple = httpx.post(f"{url}/v1/ner", json={"text": "马云"}, headers={"origin": "https://evil.example"}, timeout=30)
    assert simple.status_code == 200 and "access-control-allow-origin" not in simple.headers

    allowed = "https://app.example"
    cors = zhserve_application(name="cors", route_prefix="/cors", args={"cors_allow_origins": [allowed]})
    try:
        deploy_applications(zhserve_application(), cors)
        asking = {**preflight, "origin": allowed, "access-control-request-headers": "authorization"}
        good = httpx.options(f"{url}/cors/v1/ner", headers=asking, timeout=30)
        assert good.status_code == 200 and good.headers["access-control-allow-origin"] == allowed
        assert "authorization" in good.headers["access-control-allow-headers"].lower()
        bad = httpx.options(f"{url}/cors/v1/ner", headers=preflight, timeout=30)
        assert bad.status_code == 400 and "access-control-allow-origin" not in bad.headers
        answer = httpx.post(f"{url}/cors/v1/ner", json={"text": "马云"}, headers={"origin": allowed}, timeout=30)
        assert answer.status_code == 200 and answer.headers["access-control-allow-origin"] == allowed
        check_base_headers(answer)  # under a route prefix too
    finally:
        deploy_applications(zhserve_application())


def send_until_answered(url: str, head: bytes, chunk: bytes, frame, most_bytes: int) -> tuple[bytes, int]:  # type: ignore[no-untyped-def]
    """Send ``head`` then body chunks until the server answers (or ``most_bytes`` are sent);
    returns the first bytes of the answer and how many body bytes had been sent."""
    parts = urlsplit(url)
    sent = 0
    with socket.create_connection((parts.hostname, parts.port or 80), timeout=30) as raw:
        raw.sendall(head)
        raw.setblocking(False)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            readable, writable, _ = select.select([raw], [raw] if sent < most_bytes else [], [], 1)
            if readable:
                raw.setblocking(True)
                raw.settimeout(2)
                answer = raw.recv(65536)
                with contextlib.suppress(OSError):  # the body may follow the head in another packet
                    while b"payload_too_large" not in answer and (more := raw.recv(65536)):
                        answer += more
                return answer, sent
            if writable:
                try:
                    raw.sendall(frame(chunk))
                except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                    continue
                sent += len(chunk)
    raise AssertionError(f"no answer after sending {sent:,} bytes")


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "declared-over-the-limit"])
def test_a_body_over_the_limit_is_refused_while_it_arrives(zhserve_url: str, chunked: bool) -> None:
    """8 MiB limit: a chunked body, or one whose Content-Length claims less than it sends, is cut
    off with 413 long before the client has sent 64 MiB — it is never buffered whole."""
    limit = 8 << 20
    chunk = b'{"text": "' + b"a" * (64 * 1024)
    if chunked:
        head = HEAD + b"Transfer-Encoding: chunked\r\n\r\n"

        def frame(data: bytes) -> bytes:
            return f"{len(data):x}\r\n".encode() + data + b"\r\n"
    else:
        head = HEAD + b"Content-Length: 67108864\r\n\r\n"

        def frame(data: bytes) -> bytes:
            return data

    answer, sent = send_until_answered(zhserve_url, head, chunk, frame, most_bytes=64 << 20)
    if not chunked:
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]  # refused on the header alone
        return
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"payload_too_large" in answer
    assert sent < limit + (16 << 20), f"the client could send {sent:,} bytes first"
    # The service is unharmed.
    assert httpx.post(f"{zhserve_url}/v1/ner", json={"text": "马云在杭州"}, timeout=30).status_code == 200


def test_every_client_reads_the_413_of_a_body_over_the_limit(zhserve_url: str) -> None:
    """A 15 MB body to the 8 MiB limit: urllib, requests and httpx each send the whole body before
    reading, so the answer must wait for them — the service answers at once, then reads and
    discards the rest before closing (a close with unread bytes resets the connection, and the
    client would see "connection reset" instead of the 413)."""
    import urllib.error
    import urllib.request

    import requests

    body = b'{"text": "' + b"a" * (15 << 20) + b'"}'
    answers: dict[str, tuple[int, dict]] = {}
    try:
        urllib.request.urlopen(urllib.request.Request(f"{zhserve_url}/v1/ner", data=body, headers=JSON), timeout=60)
    except urllib.error.HTTPError as refused:
        answers["urllib"] = (refused.code, json.loads(refused.read()))
    answer = requests.post(f"{zhserve_url}/v1/ner", data=body, headers=JSON, timeout=60)
    answers["requests"] = (answer.status_code, answer.json())
    answer = httpx.post(f"{zhserve_url}/v1/ner", content=body, headers=JSON, timeout=60)
    answers["httpx"] = (answer.status_code, answer.json())
    assert set(answers) == {"urllib", "requests", "httpx"}
    for client, (status, error) in answers.items():
        assert status == 413 and error["error"]["code"] == "payload_too_large", client
    # The service is unharmed.
    assert httpx.post(f"{zhserve_url}/v1/ner", json={"text": "马云在杭州"}, timeout=30).status_code == 200


def test_hostile_paths_and_bodies_are_never_5xx(zhserve_url: str) -> None:
    deep = b'{"text": ' + b"[" * 5_000 + b"]" * 5_000 + b"}"
    answers = {
        "deep json": httpx.post(f"{zhserve_url}/v1/ner", content=deep, headers=JSON, timeout=30),
        "long ui path": httpx.get(f"{zhserve_url}/ui/" + "a" * 300, timeout=30),
        "NUL ui path": httpx.get(f"{zhserve_url}/ui/%00", timeout=30),
        "CJK Extension H": httpx.post(f"{zhserve_url}/v1/analyze", json={"text": "\U00031350"}, timeout=30),
        "private use": httpx.post(f"{zhserve_url}/v1/analyze", json={"text": "\ue000"}, timeout=30),
    }
    assert answers["deep json"].status_code == 400
    assert answers["long ui path"].status_code == answers["NUL ui path"].status_code == 404
    assert answers["CJK Extension H"].status_code == answers["private use"].status_code == 200
    for name, answer in answers.items():
        assert answer.headers["content-type"].startswith("application/json"), name


@pytest.mark.parametrize("text", ["\u200b\u200d\u2060", "\x00\x00", "\ufeff", "\u202e\u2066\u2069", "\x85\x9f\x01"])
def test_nothing_analysable_after_invisible_characters_is_422_empty_text(zhserve_url: str, text: str) -> None:
    for path in ("/v1/ner", "/v1/sentiment", "/v1/analyze"):
        response = httpx.post(f"{zhserve_url}{path}", json={"text": text}, timeout=30)
        assert response.status_code == 422 and response.json()["error"]["code"] == "empty_text", (path, response.text)


def test_edge_texts_over_http_keep_exact_offsets(zhserve_url: str) -> None:
    texts = [
        "\ufeff马云在杭州会见了李明。",
        "👨\u200d👩\u200d👧马云\u200b在\x00北京大学。",
        "𠮷𠮷李明在上海\u202e工作\u202c。",
        "Ame\u0301lie在巴黎见到了马云。",
    ]
    response = httpx.post(f"{zhserve_url}/v1/batch", json={"texts": texts}, timeout=60)
    assert response.status_code == 200, response.text
    found = 0
    for text, result in zip(texts, response.json()["results"], strict=True):
        for entity in result["ner"]["entities"]:
            assert text[entity["start"] : entity["end"]] == entity["text"]
            found += 1
        for sentence in result["sentiment"]["sentences"]:
            assert 0 <= sentence["start"] < sentence["end"] <= len(text)
    assert found >= 4


def ingress_logs() -> list[Path]:
    import ray

    logs = Path(ray._private.worker._global_node.get_logs_dir_path()) / "serve"
    return sorted(logs.glob("replica_zhserve_Ingress_*.log"))


def test_an_error_names_its_request_in_the_body_and_in_the_server_log(zhserve_url: str) -> None:
    response = httpx.post(f"{zhserve_url}/v1/ner", content=b'{"text": 7}', headers=JSON, timeout=30)
    assert response.status_code == 422
    error = response.json()["error"]
    request_id = error["request_id"]
    assert request_id and response.headers.get("x-request-id") == request_id
    for internal in ("Traceback", 'File "', ".py", "pydantic", "ValidationError", "/work/", "site-packages"):
        assert internal not in response.text
    # Serve's throughput mode buffers request-path log lines (1,000, or until an ERROR line):
    # more error answers push this one out to the file.
    with httpx.Client(timeout=30) as session:
        for _ in range(8):
            if any(request_id in path.read_text(encoding="utf-8", errors="replace") for path in ingress_logs()):
                return
            for _ in range(250):
                session.get(f"{zhserve_url}/v1/nothing")
            time.sleep(1)
    raise AssertionError(f"request id {request_id} is in no ingress log line ({ingress_logs()})")
