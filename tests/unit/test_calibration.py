"""A 413 by the estimate is confirmed by timing the models again (serve_app.calibration): through
the real ingress over ASGI, with fake handles running tiny real models in process.

A rate measured while the cores were busy must not refuse, for good, documents the models finish
in time; a document the models really cannot finish in time is still refused; and the timing is
done at most once per interval, shared by every request refused meanwhile."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from serve_app import calibration
from tests.support.fake_ingress import FakeModels, OfflineIngress, client, make_ingress

TEXT = "马云在杭州会见了李明。" * 60  # 660 characters: ~700 tokens per model


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> FakeModels:
    return FakeModels(tmp_path_factory.mktemp("models"))


def busy_calibration(ingress: OfflineIngress) -> None:
    """The rates a start-up calibration would give with the cores held by something else:
    10 ms per token, so ~700 tokens estimate ~7 s against a 1 s limit."""
    for model_client in ingress.clients.values():
        model_client.meter.calibrate(tokens=100, seconds=1.0)


async def post(http: httpx.AsyncClient, text: str, route: str = "/v1/analyze") -> httpx.Response:
    body: dict[str, object] = {"texts": [text[:330], text[330:]]} if route == "/v1/batch" else {"text": text}
    return await http.post(route, json=body)


@pytest.mark.parametrize("route", ["/v1/analyze", "/v1/batch", "/v1/analyze/stream"])
def test_a_413_from_a_busy_calibration_is_retimed_and_the_document_is_answered(models: FakeModels, route: str) -> None:
    models.delay_s = 0.0
    ingress = make_ingress(models)
    ingress.reconfigure({"request_timeout_s": 1.0})
    busy_calibration(ingress)

    async def go() -> list[httpx.Response]:
        async with client(ingress) as http:
            # Eight at once: one timing between them, then every one judged again and answered.
            return list(await asyncio.gather(*(post(http, TEXT, route) for _ in range(8))))

    responses = asyncio.run(go())
    assert [r.status_code for r in responses] == [200] * 8, responses[0].text
    assert ingress.calibrator.retimings == 1
    for model_client in ingress.clients.values():
        # The timing lowered the alone rate (the fake models answer in well under 1 ms per token).
        assert model_client.meter.alone_seconds_per_token < 0.001
    if route == "/v1/analyze/stream":
        last = json.loads(responses[0].text.splitlines()[-1])
        assert last["event"] == "summary", last
        entities = last["ner"]["entities"]
    elif route == "/v1/batch":
        entities = responses[0].json()["results"][0]["ner"]["entities"]
    else:
        entities = responses[0].json()["ner"]["entities"]
    assert {"马云", "杭州"} <= {e["text"] for e in entities}  # the tiny NER model's lexicon


def test_work_the_models_cannot_finish_is_still_413_and_retimed_at_most_once_per_interval(
    models: FakeModels, monkeypatch: pytest.MonkeyPatch
) -> None:
    models.delay_s = 0.5  # every call takes 0.5 s: a 16-row timing of ~600 tokens says ~0.8 ms per token
    ingress = make_ingress(models)
    ingress.reconfigure({"request_timeout_s": 1.0})
    busy_calibration(ingress)
    long_text = TEXT * 4  # ~2,600 tokens: ~1.4 s over two call slots even at the re-timed rate

    async def go() -> tuple[httpx.Response, httpx.Response]:
        async with client(ingress) as http:
            first = await post(http, long_text)
            second = await post(http, long_text)  # within the interval: answered without a timing
            return first, second

    first, second = asyncio.run(go())
    for response in (first, second):
        assert response.status_code == 413, response.text
        assert response.json()["error"]["code"] == "payload_too_large"
        assert "time limit (request_timeout_s) is 1 s" in response.json()["error"]["message"]
    assert ingress.calibrator.retimings == 1

    monkeypatch.setattr(calibration, "RETIME_INTERVAL_S", 0.0)  # the interval passed: timed again
    models.delay_s = 0.0  # and the models are fast now
    assert asyncio.run(_post_once(ingress, long_text)).status_code == 200
    assert ingress.calibrator.retimings == 2


async def _post_once(ingress: OfflineIngress, text: str) -> httpx.Response:
    async with client(ingress) as http:
        return await post(http, text)


def test_configured_limits_are_413_at_once_without_a_timing(models: FakeModels) -> None:
    models.delay_s = 0.0
    ingress = make_ingress(models)
    ingress.reconfigure({"max_text_chars": 100})
    response = asyncio.run(_post_once(ingress, TEXT))
    assert response.status_code == 413 and "the limit is 100" in response.json()["error"]["message"]
    assert ingress.calibrator.retimings == 0
