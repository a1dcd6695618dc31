"""The ingress's HTTP behaviour without a cluster: its FastAPI app (built from the ingress's own
state) over ``httpx.ASGITransport``, with fake model handles running tiny real models in process.

Hostile and odd input answers JSON errors, never 5xx; the API key follows ``reconfigure`` and
fails closed; the stream's time limit ends the stream with an ``error`` line even while the client
is slow to read; slow clients do not hold up the others."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import serve_app.ingress
from serve_app.ingress import Ingress, build_fastapi_app, make_fastapi_ingress
from tests.support.fake_ingress import FakeModels, OfflineIngress, client, make_ingress

JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> FakeModels:
    return FakeModels(tmp_path_factory.mktemp("models"))


@pytest.fixture
def ingress(models: FakeModels) -> OfflineIngress:
    models.delay_s = 0.0
    return make_ingress(models)


def request(ingress: Ingress, method: str, path: str, **kwargs: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        async with client(ingress) as http:
            return await http.request(method, path, **kwargs)

    return asyncio.run(go())


def assert_error(response: httpx.Response, status: int | tuple[int, ...], code: str | None = None) -> None:
    statuses = status if isinstance(status, tuple) else (status,)
    assert response.status_code in statuses, response.text
    body = response.json()
    assert set(body) == {"error"} and {"code", "message"} <= set(body["error"]), body
    if code is not None:
        assert body["error"]["code"] == code, body


def test_there_is_no_module_level_app() -> None:
    assert not hasattr(serve_app.ingress, "app")
    served = make_fastapi_ingress(OfflineIngress)
    assert issubclass(served, OfflineIngress) and hasattr(served, "__serve_build_asgi_app__")


def test_a_text_is_analysed(ingress: OfflineIngress) -> None:
    answer = request(ingress, "POST", "/v1/ner", json={"text": "马云在杭州。"})
    assert answer.status_code == 200
    assert [(e["text"], e["label"]) for e in answer.json()["entities"]] == [("马云", "PER"), ("杭州", "LOC")]


# ------------------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("body", "headers", "status", "code"),
    [
        (b'{"text": "x"}', {"content-type": "text/plain"}, 415, "unsupported_media_type"),
        (b'{"text": "x"}', {}, 415, "unsupported_media_type"),
        (b"{", JSON, 400, "invalid_json"),
        (b"\xff\xfe{}", JSON, 400, "invalid_encoding"),
        (b'{"text": "\\ud800"}', JSON, 400, None),
        (b"{}", JSON, 422, "invalid_request"),
        (b"[]", JSON, 422, "invalid_request"),
        (b"null", JSON, 422, "invalid_request"),
        (b'"text"', JSON, 422, "invalid_request"),
        (b'{"text": 1e999999}', JSON, 422, "invalid_request"),
        (b'{"text": NaN}', JSON, 422, "invalid_request"),
        (b'{"text": "x", "extra": 1}', JSON, 422, "invalid_request"),
        (b'\xef\xbb\xbf{"text": "x"}', JSON, (400, 422), None),
        (b'{"text": "' + b"\\u0000" * 3 + b'"}', JSON, 422, "empty_text"),
        (b'{"text": ' + b"[" * 5_000 + b"]" * 5_000 + b"}", JSON, 400, "invalid_json"),
        (b'{"text": ' + b"[" * 500 + b"]" * 500 + b"}", JSON, 400, "invalid_json"),
        (b'{"text": ' + b'{"a": ' * 5_000 + b"1" + b"}" * 5_000 + b"}", JSON, 400, "invalid_json"),
        (b'{"text": ' + b"[" * 5_000, JSON, 400, "invalid_json"),
    ],
)
def test_odd_bodies_are_400_415_or_422(
    ingress: OfflineIngress, body: bytes, headers: dict[str, str], status: int, code: str | None
) -> None:
    for route in ("/v1/ner", "/v1/analyze", "/v1/analyze/stream"):
        assert_error(request(ingress, "POST", route, content=body, headers=headers), status, code)


def test_deep_json_in_a_batch_is_400(ingress: OfflineIngress) -> None:
    body = b'{"texts": [' + b"[" * 5_000 + b"]" * 5_000 + b"]}"
    assert_error(request(ingress, "POST", "/v1/batch", content=body, headers=JSON), 400, "invalid_json")


@pytest.mark.parametrize(
    "path",
    ["/ui/" + "a" * 300, "/ui/" + "a/" * 2_000, "/ui/%00", "/ui/a%00b.js", "/ui/../../etc/passwd", "/ui/%2e%2e/x",
     "/ui/", "/ui/\u9a6c", "/ui/" + "%ff" * 50, "/nothing", "/v1/" + "x" * 5_000],
)  # fmt: skip
def test_any_odd_path_is_404_json(ingress: OfflineIngress, path: str) -> None:
    assert_error(request(ingress, "GET", path), 404, "not_found")


def test_a_wrong_method_is_405_json(ingress: OfflineIngress) -> None:
    assert_error(request(ingress, "POST", "/ui/app.js", json={}), 405, "method_not_allowed")
    assert_error(request(ingress, "GET", "/v1/ner"), 405, "method_not_allowed")


def test_limits_are_413_and_name_the_limit(ingress: OfflineIngress) -> None:
    ingress.reconfigure({"max_body_bytes": 4096, "max_text_chars": 10, "max_batch_texts": 2})
    declared = request(ingress, "POST", "/v1/ner", content=b"x" * 5000, headers=JSON)
    assert_error(declared, 413, "payload_too_large")
    assert "4,096" in declared.json()["error"]["message"]
    assert declared.headers["connection"] == "close"  # answered before the body was read

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: counted while it is read
        for _ in range(10):
            yield b"x" * 1000

    assert_error(request(ingress, "POST", "/v1/ner", content=chunked(), headers=JSON), 413, "payload_too_large")
    text = request(ingress, "POST", "/v1/ner", json={"text": "马" * 11})
    assert_error(text, 413, "payload_too_large")
    assert "the limit is 10" in text.json()["error"]["message"]
    assert_error(request(ingress, "POST", "/v1/batch", json={"texts": ["a", "b", "c"]}), 413, "payload_too_large")


def test_a_model_without_replicas_is_503_with_retry_after(ingress: OfflineIngress) -> None:
    ingress.clients["ner"].mark_unavailable("the NER model has no running replica")
    answer = request(ingress, "POST", "/v1/ner", json={"text": "马云"})
    assert_error(answer, 503, "models_not_ready")
    assert int(answer.headers["retry-after"]) > 0


def test_a_request_over_its_time_limit_is_504(ingress: OfflineIngress, models: FakeModels) -> None:
    ingress.reconfigure({"request_timeout_s": 0.2})
    models.delay_s = 1.0
    assert_error(request(ingress, "POST", "/v1/ner", json={"text": "马云"}), 504, "timeout")


def test_every_client_reads_the_413_from_the_server_a_replica_runs(ingress: OfflineIngress) -> None:
    """uvicorn, as in a Serve replica, and a 15 MB body to the 8 MiB limit: urllib sends the whole
    body before it reads, so without the lingering close the server's close with unread bytes
    resets the connection and urllib reports "Connection reset by peer" (measured) instead of 413."""
    import socket
    import threading
    import urllib.error
    import urllib.request

    import requests
    import uvicorn

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/v1/ner"
    server = uvicorn.Server(uvicorn.Config(build_fastapi_app(ingress), log_level="critical", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        body = b'{"text": "' + b"a" * (15 << 20) + b'"}'
        answers: dict[str, tuple[int, dict[str, Any]]] = {}
        try:
            urllib.request.urlopen(urllib.request.Request(url, data=body, headers=JSON), timeout=30)
        except urllib.error.HTTPError as refused:
            answers["urllib"] = (refused.code, json.loads(refused.read()))
        answer = requests.post(url, data=body, headers=JSON, timeout=30)
        answers["requests"] = (answer.status_code, answer.json())
        reply = httpx.post(url, content=body, headers=JSON, timeout=30)
        answers["httpx"] = (reply.status_code, reply.json())
        assert set(answers) == {"urllib", "requests", "httpx"}
        for name, (status, error) in answers.items():
            assert status == 413 and error["error"]["code"] == "payload_too_large", name
        assert httpx.post(url, json={"text": "马云在杭州。"}, timeout=30).status_code == 200
    finally:
        server.should_exit = True
        thread.join(10)


# ------------------------------------------------------------------------------ the stream


def stream_lines(ingress: Ingress, text: str, *, read_delay_s: float) -> list[dict[str, Any]]:
    """POST /v1/analyze/stream through the raw ASGI interface, with a client that takes
    ``read_delay_s`` to take each piece of the answer."""
    app = build_fastapi_app(ingress)
    body = json.dumps({"text": text}).encode()
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/v1/analyze/stream", "raw_path": b"/v1/analyze/stream", "root_path": "",
        "query_string": b"", "server": ("zhserve", 80), "client": ("127.0.0.1", 1),
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
    }  # fmt: skip
    chunks: list[bytes] = []

    async def go() -> None:
        delivered = False
        never = asyncio.Event()

        async def receive() -> dict[str, Any]:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            await never.wait()  # the client stays connected
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                assert message["status"] == 200
            elif message.get("body"):
                chunks.append(message["body"])
                await asyncio.sleep(read_delay_s)

        await asyncio.wait_for(app(scope, receive, send), 30)

    asyncio.run(go())
    return [json.loads(line) for line in b"".join(chunks).splitlines()]


def test_the_stream_time_limit_is_an_error_line_even_while_the_client_reads_slowly(
    ingress: OfflineIngress, models: FakeModels
) -> None:
    ingress.reconfigure({"request_timeout_s": 0.5, "window_group_size": 1, "model_calls_per_replica": 1})
    models.delay_s = 0.05
    text = "马云在杭州。" * 12  # 12 NER windows and more, answered one call at a time
    lines = stream_lines(ingress, text, read_delay_s=0.3)
    assert lines[0]["event"] == "start"
    assert lines[-1]["event"] == "error", lines[-1]
    assert lines[-1]["error"]["code"] == "timeout"
    assert all(line["event"] == "window" for line in lines[1:-1])


def test_a_stream_within_its_limit_ends_in_a_summary(ingress: OfflineIngress) -> None:
    lines = stream_lines(ingress, "马云在杭州。好", read_delay_s=0.0)
    assert lines[0]["event"] == "start" and lines[-1]["event"] == "summary"


# ------------------------------------------------------------------------------ security


def test_a_key_configured_after_start_is_enforced(ingress: OfflineIngress, tmp_path: Path) -> None:
    assert request(ingress, "POST", "/v1/ner", json={"text": "马云"}).status_code == 200  # no key yet
    key_file = tmp_path / "key"
    key_file.write_text("s3cret\n")
    ingress.reconfigure({"api_key_file": str(key_file)})
    assert_error(request(ingress, "POST", "/v1/ner", json={"text": "马云"}), 401, "unauthorized")
    wrong = {"authorization": "Bearer nope"}
    assert_error(request(ingress, "POST", "/v1/ner", json={"text": "马云"}, headers=wrong), 401, "unauthorized")
    right = {"authorization": "Bearer s3cret"}
    assert request(ingress, "POST", "/v1/ner", json={"text": "马云"}, headers=right).status_code == 200
    assert request(ingress, "GET", "/healthz").status_code == 200  # probes stay open
    key_file.write_text("rotated")
    ingress.reconfigure({"api_key_file": str(key_file)})
    assert_error(request(ingress, "POST", "/v1/ner", json={"text": "马云"}, headers=right), 401, "unauthorized")


def test_two_ingresses_do_not_share_a_key(models: FakeModels, tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("one")
    locked, open_ = make_ingress(models), make_ingress(models)
    locked.reconfigure({"api_key_file": str(key_file)})
    assert request(open_, "POST", "/v1/ner", json={"text": "马云"}).status_code == 200
    assert_error(request(locked, "POST", "/v1/ner", json={"text": "马云"}), 401, "unauthorized")


def test_the_key_check_fails_closed_when_its_state_is_missing(ingress: OfflineIngress) -> None:
    del ingress.api_key
    answer = request(ingress, "POST", "/v1/ner", json={"text": "马云"}, headers={"authorization": "Bearer x"})
    assert_error(answer, 500, "internal_error")
    assert "traceback" not in answer.text.lower()
    assert request(ingress, "GET", "/healthz").status_code == 200


# ------------------------------------------------------------------------------ slow clients


def test_slow_clients_sending_a_byte_at_a_time_do_not_hold_up_others(ingress: OfflineIngress) -> None:
    body = json.dumps({"text": "马云在杭州。"}).encode()

    async def trickle() -> AsyncIterator[bytes]:
        for byte in body:
            await asyncio.sleep(0.01)
            yield bytes([byte])

    async def go() -> tuple[float, list[int]]:
        async with client(ingress) as http:
            slow = [asyncio.ensure_future(http.post("/v1/ner", content=trickle(), headers=JSON)) for _ in range(50)]
            await asyncio.sleep(0.05)  # every slow client is mid-body
            started = time.perf_counter()
            fast = await http.post("/v1/ner", json={"text": "马云在杭州。"})
            fast_s = time.perf_counter() - started
            assert fast.status_code == 200
            assert not any(task.done() for task in slow)
            answers = await asyncio.wait_for(asyncio.gather(*slow), 30)  # nothing hangs
            return fast_s, [answer.status_code for answer in answers]

    fast_s, statuses = asyncio.run(go())
    assert fast_s < 1.0
    assert statuses == [200] * 50


def test_a_body_that_does_not_arrive_in_time_is_answered_408_and_others_are_served(ingress: OfflineIngress) -> None:
    ingress.reconfigure({"body_timeout_s": 0.3})
    body = json.dumps({"text": "马云在杭州。"}).encode()

    async def stalls() -> AsyncIterator[bytes]:
        yield body[:5]
        await asyncio.sleep(5)  # the client stops sending mid-body
        yield body[5:]

    async def go() -> tuple[httpx.Response, float, httpx.Response]:
        async with client(ingress) as http:
            started = time.perf_counter()
            slow = asyncio.ensure_future(http.post("/v1/ner", content=stalls(), headers=JSON))
            fast = await http.post("/v1/ner", json={"text": "马云在杭州。"})
            answer = await asyncio.wait_for(slow, 30)
            return answer, time.perf_counter() - started, fast

    answer, seconds, fast = asyncio.run(go())
    assert fast.status_code == 200
    assert answer.status_code == 408, answer.text
    assert answer.json()["error"]["code"] == "body_timeout"
    assert "0.3 s" in answer.json()["error"]["message"] and "5 bytes arrived" in answer.json()["error"]["message"]
    assert seconds < 10  # answered at the deadline (then the lingering close reads what follows, bounded)


# ------------------------------------------------------------------------------ fuzzing

HEADER_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)
BODIES = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=200).map(lambda text: text.encode("utf-8", "surrogatepass")),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
        lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
        max_leaves=20,
    ).map(lambda value: json.dumps({"text": value, "tasks": value}).encode()),
    st.dictionaries(st.sampled_from(["text", "texts", "tasks", "x"]), st.text(max_size=20), max_size=3).map(
        lambda value: json.dumps(value).encode()
    ),
)
ROUTES = ["/v1/ner", "/v1/sentiment", "/v1/analyze", "/v1/analyze/stream", "/v1/batch", "/v1/models",
          "/healthz", "/readyz", "/", "/docs", "/openapi.json"]  # fmt: skip
PATH_TEXT = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="?#"), max_size=80)
PATHS = st.one_of(
    st.sampled_from(ROUTES),
    PATH_TEXT.map(lambda tail: "/ui/" + tail),
    PATH_TEXT.map(lambda tail: "/" + tail),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "OPTIONS"]),
    path=PATHS,
    body=BODIES,
    content_type=st.one_of(st.just("application/json"), HEADER_TEXT, st.just("application/json; charset=utf-8")),
    extra=st.dictionaries(st.sampled_from(["authorization", "x-request-id", "accept", "origin"]), HEADER_TEXT),
)
def test_the_http_layer_never_answers_5xx_and_every_error_is_json(
    ingress: OfflineIngress, method: str, path: str, body: bytes, content_type: str, extra: dict[str, str]
) -> None:
    headers = {"content-type": content_type, **extra}
    try:
        answer = request(ingress, method, path, content=body, headers=headers)
    except httpx.InvalidURL:
        return  # not a request a client can send
    assert answer.status_code < 500, (method, path, body, answer.text)
    if answer.status_code >= 400:
        assert_error(answer, answer.status_code)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/ner", {"text": "马云在杭州。"}),
        ("/v1/sentiment", {"text": "很好。"}),
        ("/v1/analyze", {"text": "马云在杭州。"}),
        ("/v1/analyze/stream", {"text": "马云在杭州。"}),
        ("/v1/batch", {"texts": ["马云在杭州。"]}),
    ],
)
def test_every_model_route_starts_following_the_replicas_and_the_calibration(
    models: FakeModels, path: str, body: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whichever route a client calls first, the replica watcher (fail fast when a model has no
    replica) and the start-up calibration begin with it: not only after a /readyz probe."""
    started: list[str] = []
    models.delay_s = 0.0
    fresh = make_ingress(models)
    monkeypatch.setattr(fresh, "_ensure_following", lambda: started.append(path))
    response = request(fresh, "POST", path, json=body)
    assert response.status_code == 200, response.text
    assert started, f"{path} did not start following"
