"""zhserve's own Prometheus metrics, exported through Ray's metrics agent (as ``ray_zhserve_*``)
beside Serve's request, latency, queue and batch metrics. Created inside the replica, never at
import time."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from ray.serve.metrics import Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from serve_app.pipeline import Outcome

LATENCY_BOUNDARIES_MS = [1.0, 2.5, 5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 120_000]
WINDOW_BOUNDARIES = [1.0, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096]
CHAR_BOUNDARIES = [50.0, 200, 1_000, 5_000, 20_000, 50_000, 100_000, 200_000]


class IngressMetrics:
    """What the ingress saw: characters analysed, windows fanned out, entities and verdicts."""

    def __init__(self) -> None:
        self.characters = Counter("zhserve_characters", description="Characters analysed, by task.", tag_keys=("task",))
        self.document_chars = Histogram(
            "zhserve_document_characters",
            description="Length of each analysed text in characters.",
            boundaries=CHAR_BOUNDARIES,
        )
        self.windows = Histogram(
            "zhserve_windows_per_document",
            description="Model windows (NER) or units (sentiment) one text was split into.",
            boundaries=WINDOW_BOUNDARIES,
            tag_keys=("task",),
        )
        # Per route and status: with HAProxy in front, Serve's own HTTP metrics carry only the
        # application's route prefix, not the API route.
        self.requests = Counter(
            "zhserve_http_requests",
            description="HTTP requests answered, by API route and status code.",
            tag_keys=("route", "status_code"),  # type: ignore[arg-type]  # Ray annotates Tuple[str]
        )
        self.errors = Counter(
            "zhserve_http_errors",
            description="Error responses, by API route and error code (the body's error.code).",
            tag_keys=("route", "code"),  # type: ignore[arg-type]  # Ray annotates Tuple[str]
        )
        self.latency = Histogram(
            "zhserve_http_request_latency_ms",
            description="Time from request to the end of the response (a stream's last line), by route.",
            boundaries=LATENCY_BOUNDARIES_MS,
            tag_keys=("route",),
        )
        self.entities = Counter("zhserve_entities", description="Entities returned, by label.", tag_keys=("label",))
        self.verdicts = Counter(
            "zhserve_sentiment_verdicts", description="Document sentiment labels returned.", tag_keys=("label",)
        )

        self.retries = Counter(
            "zhserve_model_call_retries",
            description="Model calls repeated: the replica was lost under the call, or refused it (over its budget).",
            tag_keys=("task", "reason"),  # type: ignore[arg-type]  # Ray annotates Tuple[str]
        )
        self.admissions_refused = Counter(
            "zhserve_admission_refused_windows",
            description="Windows refused at admission (503 overloaded): more than the models finish in time.",
            tag_keys=("task",),
        )
        self.replicas = Gauge(
            "zhserve_model_running_replicas",
            description="Running replicas of each model, as this ingress replica last saw them (every second).",
            tag_keys=("task",),
        )
        self.rates = Gauge(
            "zhserve_model_seconds_per_token",
            description=(
                "What admission counts a token of a model's work as costing one call slot: under the "
                "current load (basis=load, a moving average of the calls) and with the models to "
                "themselves (basis=alone, the fastest measured); set every second."
            ),
            tag_keys=("task", "basis"),  # type: ignore[arg-type]  # Ray annotates Tuple[str]
        )

    def retried(self, task: str, reason: str) -> None:
        self.retries.inc(tags={"task": task, "reason": reason})

    def refused(self, task: str, windows: int) -> None:
        self.admissions_refused.inc(windows, tags={"task": task})

    def observe_request(self, route: str, status: int, code: str | None, elapsed_ms: float) -> None:
        self.requests.inc(tags={"route": route, "status_code": str(status)})
        self.latency.observe(elapsed_ms, tags={"route": route})
        if code is not None:
            self.errors.inc(tags={"route": route, "code": code})

    def observe(self, outcome: Outcome) -> None:
        text = outcome.plan.text
        self.document_chars.observe(len(text))
        for task, count in outcome.plan.window_counts().items():
            self.characters.inc(len(text), tags={"task": task})
            self.windows.observe(count, tags={"task": task})
        ner = outcome.analysis.ner
        if ner is not None:
            counts: dict[str, int] = {}
            for entity in ner.entities:
                counts[entity.label] = counts.get(entity.label, 0) + 1
            for label, count in counts.items():
                self.entities.inc(count, tags={"label": label})
        sentiment = outcome.analysis.sentiment
        if sentiment is not None:
            self.verdicts.inc(tags={"label": sentiment.label})


ERROR_CODE_KEY = "zhserve.error_code"
"""Where the error handlers leave the code of the error they answered (in the ASGI scope)."""


class RequestMetricsMiddleware:
    """Pure ASGI middleware: counts each answered request by route and status, and its latency.

    ``metrics`` is the ingress's own (created in the replica, never at import time); route labels
    are the API's routes, anything else is ``ui`` or ``other``.
    """

    def __init__(self, app: ASGIApp, metrics: IngressMetrics, routes: frozenset[str]) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        metrics = self.metrics
        path = scope["path"]
        route = path if path in self.routes else ("ui" if path == "/" or path.startswith("/ui/") else "other")
        started = time.perf_counter()
        status = 500

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            code = scope.get(ERROR_CODE_KEY)
            metrics.observe_request(route, status, code, (time.perf_counter() - started) * 1000)
