"""Realistic traffic for zhserve, for Locust: short news for NER, reviews for sentiment, long
documents for /v1/analyze, batches and streams, in the proportions a news-and-reviews product
sees (weights below). Texts are built from the sentences below, or from ../shared/data when it
is present (``ZHSERVE_LOADTEST_DATA`` names another directory).

    make loadtest                       # a bounded headless run against a local deployment, with a report
    .venv/bin/locust -f load_tests/locustfile.py --host http://127.0.0.1:8000   # Locust's own web UI

A 503 with Retry-After is admission control refusing load beyond capacity: it is reported as a
failure of its route (so the error rate shows it) and the simulated user waits as told.
"""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path

from locust import HttpUser, between, task

NEWS = [
    "2024年3月，马云在杭州阿里巴巴总部会见了来自北京大学的李明教授。",
    "国务院新闻办公室今天上午在北京举行新闻发布会，介绍上海自贸区建设情况。",
    "中国科学院院士王志新在深圳出席了华为公司举办的技术论坛。",
    "联合国秘书长古特雷斯抵达日内瓦，出席世界卫生组织会议。",
]
REVIEWS = [
    "房间干净整洁，服务很贴心，下次还会再来。",
    "快递太慢了，包装也破了，非常失望。",
    "性价比很高，屏幕清晰，电池也耐用。",
    "前台态度恶劣，早餐难吃，不推荐。",
]


def _corpus(name: str, limit: int = 2000) -> list[str]:
    root = Path(os.environ.get("ZHSERVE_LOADTEST_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    path = root / name
    if not path.exists():
        return []
    texts = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            text = row.get("text") or "".join(row.get("tokens", []) or row.get("chars", []))
            if text:
                texts.append(text)
            if len(texts) >= limit:
                break
    return texts


NEWS += _corpus("ner/msra_train.jsonl")
REVIEWS += _corpus("sentiment/chnsenticorp_train.jsonl")


def long_document(chars: int) -> str:
    parts: list[str] = []
    while sum(map(len, parts)) < chars:
        parts.append(random.choice(NEWS) + random.choice(REVIEWS))
    return "".join(parts)


class ZhserveUser(HttpUser):
    wait_time = between(0.05, 0.5)

    def on_start(self) -> None:
        key = os.environ.get("ZHSERVE_API_KEY")
        if key:
            self.client.headers["authorization"] = f"Bearer {key}"

    def _post(self, path: str, body: dict, *, stream: bool = False) -> None:  # type: ignore[type-arg]
        with self.client.post(path, json=body, name=path, catch_response=True, stream=stream) as response:
            if response.status_code == 200:
                if stream:
                    lines = [json.loads(line) for line in response.iter_lines() if line]
                    if not lines or lines[-1].get("event") != "summary":
                        response.failure(f"stream ended without a summary: {lines[-1:] if lines else 'empty'}")
                        return
                response.success()
                return
            retry_after = response.headers.get("retry-after")
            response.failure(f"{response.status_code} {response.text[:120]}")
            if retry_after:  # honour admission control (gevent makes this sleep cooperative)
                time.sleep(min(float(retry_after), 10.0))

    @task(40)
    def short_news(self) -> None:
        self._post("/v1/ner", {"text": random.choice(NEWS)})

    @task(30)
    def review(self) -> None:
        self._post("/v1/sentiment", {"text": random.choice(REVIEWS)})

    @task(10)
    def long_document(self) -> None:
        self._post("/v1/analyze", {"text": long_document(random.choice((2_000, 5_000, 20_000)))})

    @task(15)
    def batch(self) -> None:
        self._post("/v1/batch", {"texts": random.sample(REVIEWS + NEWS, 32), "tasks": ["sentiment", "ner"]})

    @task(5)
    def stream(self) -> None:
        self._post("/v1/analyze/stream", {"text": long_document(5_000)}, stream=True)
