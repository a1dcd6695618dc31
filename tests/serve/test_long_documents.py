"""Long documents on a real local cluster: 100,000 characters through /v1/analyze and the stream,
and a client that disconnects cancels the outstanding work."""

from __future__ import annotations

import json
import time

import httpx
import pytest

pytestmark = pytest.mark.serve

TIME_LIMIT_S = 300.0
"""These tests are about the long-document path (windows, merging, the stream, cancellation), not
admission: the default NER model (the e5 + CNN ensemble, ~10 ms a sentence on one core) needs a
sizeable share of the production limit (120 s) for 100,000-200,000 characters on this 2-core
machine while other tests' work settles (a CI run once estimated 133 s; re-timing before a 413,
serve_app.calibration, now corrects a rate measured in a busy moment, but not a busy machine).
So the module runs with a limit they stay well inside; admission at the limit has its own tests
(test_overload.py, tests/unit/test_admission.py, tests/unit/test_calibration.py)."""


@pytest.fixture(autouse=True, scope="module")
def long_time_limit(zhserve_url: str):  # type: ignore[no-untyped-def]
    from tests.conftest import deploy_applications, zhserve_application

    deploy_applications(zhserve_application(user_config={"Ingress": {"request_timeout_s": TIME_LIMIT_S}}))
    try:
        yield
    finally:
        deploy_applications(zhserve_application())


SENTENCES = [
    "2024年3月，马云在杭州阿里巴巴总部会见了来自北京大学的李明教授。",
    "这家酒店的服务太差了，房间又小又吵！",
    "新华社北京电，国务院总理在人民大会堂会见了来访的法国总统。",
    "服务很贴心，下次还来。",
    "张伟和王芳上周去上海参观了复旦大学和上海博物馆。",
]


def spans(result: dict) -> list[tuple]:  # type: ignore[type-arg]
    return [(e["text"], e["label"], e["start"], e["end"]) for e in result["ner"]["entities"]]


def document(chars: int) -> str:
    parts, total, index = [], 0, 0
    while total < chars:
        sentence = SENTENCES[index % len(SENTENCES)]
        parts.append(sentence)
        total += len(sentence)
        index += 1
    return "".join(parts)[:chars]


def stream_lines(url: str, text: str) -> list[dict]:  # type: ignore[type-arg]
    with httpx.stream("POST", f"{url}/v1/analyze/stream", json={"text": text}, timeout=300) as response:
        assert response.status_code == 200
        return [json.loads(line) for line in response.iter_lines() if line]


def test_100k_document_through_analyze_and_stream(zhserve_url: str) -> None:
    text = document(100_000)
    response = httpx.post(f"{zhserve_url}/v1/analyze", json={"text": text}, timeout=300)
    assert response.status_code == 200, response.text
    body = response.json()
    entities = body["ner"]["entities"]
    for entity in entities:
        assert text[entity["start"] : entity["end"]] == entity["text"]
    # every occurrence of a name in the repeated sentences is found
    expected_mayun = text.count("马云")
    assert sum(1 for e in entities if e["text"] == "马云" and e["label"] == "PER") >= 0.95 * expected_mayun
    sentences = body["sentiment"]["sentences"]
    assert len(sentences) >= 100_000 // 40
    negative = [s for s in sentences if "太差了" in text[s["start"] : s["end"]]]
    assert negative and all(s["label"] == "negative" for s in negative)

    lines = stream_lines(zhserve_url, text)
    assert lines[0]["event"] == "start" and lines[-1]["event"] == "summary", lines[-1]
    windows = [line for line in lines if line["event"] == "window"]
    assert [w["done"] for w in windows] == list(range(1, len(windows) + 1))
    assert len(windows) == lines[0]["windows"]["ner"] + lines[0]["windows"]["sentiment"]
    assert spans(lines[-1]) == spans(body)
    assert lines[-1]["sentiment"]["label"] == body["sentiment"]["label"]


def ner_items_computed() -> int:
    """Windows computed so far, summed over every NER replica the handle reaches."""
    from ray import serve

    handle = serve.get_deployment_handle("NER", app_name="zhserve")
    seen: dict[str, int] = {}
    for _ in range(24):
        stats = handle.stats.remote().result(timeout_s=30)
        seen[stats.replica] = max(seen.get(stats.replica, 0), stats.items)
    return sum(seen.values())


def test_disconnecting_client_cancels_outstanding_windows(zhserve_url: str) -> None:
    text = document(200_000)
    before = ner_items_computed()
    with httpx.stream(
        "POST", f"{zhserve_url}/v1/analyze/stream", json={"text": text, "tasks": ["ner"]}, timeout=300
    ) as response:
        lines = response.iter_lines()
        start = json.loads(next(lines))
        total = start["windows"]["ner"]
        json.loads(next(lines))  # the first window is done: work is under way
    # The client has gone. Whatever was already in a batch finishes; nothing else should run.
    time.sleep(3)
    settled = ner_items_computed()
    time.sleep(3)
    later = ner_items_computed()
    assert later == settled, "windows kept being computed after the client disconnected"
    assert settled - before < total, f"all {total} windows were computed despite the disconnect"
    assert httpx.get(f"{zhserve_url}/readyz", timeout=30).status_code == 200
