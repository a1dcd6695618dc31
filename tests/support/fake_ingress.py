"""The ingress without a cluster: :class:`serve_app.ingress.Ingress` over fake model handles that
run tiny real models in process, and its FastAPI app driven through ``httpx.ASGITransport``."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx

from deployments.runtime.answers import ModelAnswer, ProbabilityRows, TagRows
from deployments.runtime.ner import NerModel
from deployments.runtime.rows import TokenRows
from deployments.runtime.sentiment import SentimentModel
from serve_app.config import UI_DIR, AppArgs
from serve_app.ingress import Ingress, build_fastapi_app
from serve_app.model_client import Call
from serve_app.plan import ServedModel
from serve_app.schemas import Task
from tests.support.tiny_models import build_tiny_ner, build_tiny_sentiment

LEXICON = {"马云": "PER", "杭州": "LOC", "腾讯公司": "ORG"}


class FakeHandle:
    """What the ingress uses of a ``DeploymentHandle``: ``options`` and ``remote``, whose answer
    is awaitable and cancellable (a task running ``predict``)."""

    def __init__(self, predict: Call, deployment_name: str) -> None:
        self.predict = predict
        self.deployment_name = deployment_name
        self.app_name = "zhserve"

    def options(self, **_: Any) -> FakeHandle:
        return self

    def remote(self, rows: TokenRows) -> asyncio.Future[ModelAnswer]:
        return asyncio.ensure_future(self.predict(rows))


class FakeModels:
    """Tiny real models behind the fake handles; ``delay_s`` slows every call."""

    def __init__(self, root: Path) -> None:
        self.ner_dir = build_tiny_ner(root / "ner", LEXICON, extra_chars="在的了和。好差")
        self.sentiment_dir = build_tiny_sentiment(root / "sentiment", "好棒", "差烂")
        self.ner = NerModel.from_model_dir(self.ner_dir)
        self.sentiment = SentimentModel.from_model_dir(self.sentiment_dir)
        self.delay_s = 0.0

    def served(self) -> dict[Task, ServedModel]:
        """The two model directories as the ingress's planner sees them."""
        return {
            "ner": ServedModel.from_dir(str(self.ner_dir)),
            "sentiment": ServedModel.from_dir(str(self.sentiment_dir)),
        }

    async def predict_ner(self, rows: TokenRows) -> ModelAnswer:
        await asyncio.sleep(self.delay_s)
        return TagRows.pack(self.ner.tag(rows.rows()))

    async def predict_sentiment(self, rows: TokenRows) -> ModelAnswer:
        await asyncio.sleep(self.delay_s)
        return ProbabilityRows(self.sentiment.probabilities_of_rows(rows.rows()))


class OfflineIngress(Ingress):
    """The ingress with no replica watcher and no start-up calibration: there are no Serve
    routers or controller to read, and the fake models answer at once."""

    def _ensure_following(self) -> None:
        pass


def make_ingress(models: FakeModels, **args: Any) -> OfflineIngress:
    settings = AppArgs(ner_model=models.ner_dir, sentiment_model=models.sentiment_dir, ui_dir=UI_DIR, **args)
    ner = FakeHandle(models.predict_ner, "NER")
    sentiment = FakeHandle(models.predict_sentiment, "Sentiment")
    return OfflineIngress(ner, sentiment, settings)  # type: ignore[arg-type]


def client(ingress: Ingress) -> httpx.AsyncClient:
    """An HTTP client of the ingress's app, in process."""
    transport = httpx.ASGITransport(app=build_fastapi_app(ingress))
    return httpx.AsyncClient(transport=transport, base_url="http://zhserve")
