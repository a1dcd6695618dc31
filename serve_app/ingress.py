"""The HTTP ingress: routes and wiring. :class:`Ingress` holds the state (model handles, model
clients, limits, the API key, metrics); :func:`build_fastapi_app` builds the FastAPI app from an
ingress's own state, and :func:`make_fastapi_ingress` makes the Serve ingress class whose replicas
build their app that way (``serve.deployment`` is applied in ``serve_app.app.build_app``). Nothing
is shared through a module-level app: each replica's app sees its own ingress, and a key loaded by
``reconfigure`` is the key its middleware checks. Bodies are read and parsed by ``serve_app.body``;
the request pipeline itself (plan, fan out, assemble) is ``serve_app.pipeline``.

The hot routes read their body themselves (bounded while reading), validate it with the schema
models and answer with pre-serialised JSON: measured, FastAPI's body and response models cost
more per request than the model work of a short text. The schema models still describe every
route in the OpenAPI document.
"""

# No `from __future__ import annotations` here: FastAPI must see real types on the routes,
# which Serve re-wraps outside this module's namespace.

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, Response, StreamingResponse
from pydantic import BaseModel
from ray import serve
from ray.serve.handle import DeploymentHandle

from deployments.runtime.answers import FailedRows, ModelAnswer
from deployments.runtime.rows import TokenRows
from serve_app.body import JSON_MEDIA_TYPE, LingeringCloseMiddleware, check_text, parse, read_body
from serve_app.calibration import Calibrator
from serve_app.config import AppArgs, IngressConfig
from serve_app.errors import (
    ModelsNotReadyError,
    NotFoundError,
    PayloadTooLargeError,
    ZhserveError,
    api_error,
    error_responses,
    install_error_handlers,
)
from serve_app.events import ErrorEvent, SummaryEvent
from serve_app.metrics import IngressMetrics, RequestMetricsMiddleware
from serve_app.model_client import ModelClient
from serve_app.pipeline import Futures, Outcome, Pipeline
from serve_app.plan import INLINE_PLAN_CHARS, DocumentPlan, Planner, PlanSettings, ServedModel
from serve_app.replicas import ReplicaWatcher
from serve_app.results import AnalyzeResult, BatchResult
from serve_app.schemas import (
    AnalyzeRequest,
    AnalyzeResponse,
    BatchRequest,
    BatchResponse,
    ErrorResponse,
    HealthResponse,
    ModelDescription,
    ModelsResponse,
    NerResult,
    ReadyResponse,
    SentimentResultOut,
    Task,
    TextRequest,
)
from serve_app.security import (
    BASE_HEADERS,
    UI_CSP,
    ApiKeyMiddleware,
    SecurityHeadersMiddleware,
    docs_csp,
    load_api_key,
)

logger = logging.getLogger("ray.serve")

API_DESCRIPTION = """
Chinese named-entity recognition (PER, LOC, ORG) and sentiment analysis.

* Offsets are **code-point** indices into the exact text you sent, end-exclusive:
  `text[start:end] == entity.text` always holds.
* Any length up to the configured limit (200,000 characters by default): long documents are split
  at sentence ends into windows that fit the model; entities in overlapping windows are merged.
* Sentiment of a text that fits one model window is computed on the whole text; a longer document
  is scored sentence by sentence and its label is the length-weighted mean of the sentence
  probabilities (`sentences` lists them).
* Errors are JSON `{"error": {"code", "message", "request_id"}}`; the responses of each route
  list the codes.
"""

ERRORS = error_responses(ErrorResponse)


def _request_id(request: Request) -> str | None:
    """The id Serve gives the request (in its logs and the x-request-id response header)."""
    try:
        return serve.context._get_serve_request_context().request_id or None
    except Exception:  # outside a replica (unit tests)
        return request.headers.get("x-request-id")


def _scope_request_id(scope: Any) -> str | None:
    return _request_id(Request(scope))


DOCS_HTML = bytes(get_swagger_ui_html(openapi_url="/openapi.json", title="zhserve - API docs").body).decode("utf-8")
DOCS_CSP = docs_csp(DOCS_HTML)
API_ROUTES = frozenset({"/v1/ner", "/v1/sentiment", "/v1/analyze", "/v1/analyze/stream", "/v1/batch", "/v1/models",
                        "/healthz", "/readyz", "/docs", "/openapi.json"})  # fmt: skip


def _page_csp(path: str) -> str | None:
    if path == "/" or path.startswith("/ui/"):
        return UI_CSP
    return DOCS_CSP if path == "/docs" else None


def _body_schema(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI requestBody for a route that parses its body itself."""
    return {"requestBody": {"required": True, "content": {JSON_MEDIA_TYPE: {"schema": model.model_json_schema()}}}}


def _json(payload: Any) -> Response:
    return Response(orjson.dumps(payload), media_type=JSON_MEDIA_TYPE)


def _elapsed_ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)


async def _call(handle: DeploymentHandle, rows: TokenRows) -> ModelAnswer:
    """One attempt of ``handle.predict(rows)`` (the model client repeats lost or refused calls).
    Cancelling the awaiting task cancels the request in flight, so nothing keeps computing for a
    caller who has gone."""
    response = handle.remote(rows)
    try:
        return await response
    except asyncio.CancelledError:
        response.cancel()
        raise


class Ingress:
    """Composes the NER and sentiment deployments behind HTTP API v1: the state and the route
    handlers, which :func:`build_fastapi_app` mounts."""

    def __init__(self, ner: DeploymentHandle, sentiment: DeploymentHandle, settings: AppArgs | None = None) -> None:
        settings = settings or AppArgs()
        wire = settings.handle_serialization  # pickle by default: measured in load_tests/bench.py
        given: dict[Task, DeploymentHandle] = {"ner": ner, "sentiment": sentiment}
        self.handles: dict[Task, DeploymentHandle] = {
            task: handle.options(method_name="predict", request_serialization=wire, response_serialization=wire)
            for task, handle in given.items()
        }
        self.models: dict[Task, ServedModel] = {
            "ner": ServedModel.from_dir(str(settings.ner_model)),
            "sentiment": ServedModel.from_dir(str(settings.sentiment_model)),
        }
        self.ui_dir = settings.ui_dir.resolve()
        self.config = IngressConfig()
        self.metrics = IngressMetrics()
        self.clients: dict[Task, ModelClient] = {
            task: ModelClient(
                functools.partial(_call, handle),
                name=handle.deployment_name,
                group_size=self.config.window_group_size,
                calls_in_flight=self.config.model_calls_per_replica,
                on_refused=functools.partial(self.metrics.refused, task),
                on_retry=functools.partial(self.metrics.retried, task),
            )
            for task, handle in self.handles.items()
        }
        self.calibrator = Calibrator(self.models, self.clients, lambda: self.config.window_group_size)
        self.pipeline = Pipeline(Planner(self.models), self.clients)
        # Models without a running replica fail fast after no_replica_wait_s (serve_app.replicas).
        self.watcher: ReplicaWatcher[Task] = ReplicaWatcher(
            self.handles,
            no_replica_wait_s=lambda: self.config.no_replica_wait_s,
            on_counts=self._size_clients,
            on_down=lambda task, reason: self.clients[task].mark_unavailable(reason),
            on_up=lambda task: self.clients[task].mark_available(),
        )
        self.api_key: str | None = load_api_key()  # None: no key configured, the API is open
        self.cors_allow_origins = list(settings.cors_allow_origins)
        self._ready: tuple[float, asyncio.Future[ReadyResponse]] | None = None

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        config = IngressConfig.model_validate(user_config or {})
        api_key = load_api_key(config.api_key_file)  # a rotated secret file is read again
        self.config = config
        self.api_key = api_key
        self._size_clients()

    def _size_clients(self, counts: dict[Task, int] | None = None) -> None:
        """Calls in flight per model: ``model_calls_per_replica`` for each running replica (the
        watcher's latest ``counts``; one per model until it has any)."""
        counts = self.watcher.counts if counts is None else counts
        for task, client in self.clients.items():
            replicas = max(1, counts.get(task, 1))
            self.metrics.replicas.set(counts.get(task, 0), tags={"task": task})
            meter = client.meter
            self.metrics.rates.set(meter.seconds_per_token, tags={"task": task, "basis": "load"})
            self.metrics.rates.set(meter.alone_seconds_per_token, tags={"task": task, "basis": "alone"})
            client.configure(
                group_size=self.config.window_group_size, calls_in_flight=self.config.model_calls_per_replica * replicas
            )

    def _ensure_following(self) -> None:
        self.watcher.ensure_running()
        self.calibrator.start()  # the rates measured on the served models at start-up

    # ---------------------------------------------------------------- the pipeline

    def _settings(self) -> PlanSettings:
        config = self.config
        return PlanSettings(ner_context=config.ner_context, overlap_tokens=config.window_overlap_tokens)

    async def _analyze(self, text: str, tasks: list[Task]) -> Outcome:
        self._ensure_following()
        check_text(text, self.config)

        async def attempt() -> Outcome:
            self.pipeline.admit_estimate(len(text), tasks, self.config.request_timeout_s)
            plan = await self.pipeline.planner.plan_async(text, tasks, self._settings())
            (outcome,) = await self.pipeline.analyze_plans([plan], self.config.request_timeout_s)
            return outcome

        outcome = await self.calibrator.confirmed(attempt)  # a 413 by the estimate, re-timed first
        self.metrics.observe(outcome)
        return outcome

    async def _one_result(self, text: str, task: Task) -> Response:
        """The response of a one-task route: that task's result itself."""
        (result,) = (await self._analyze(text, [task])).analysis.results
        return _json(result.to_dict())

    # ---------------------------------------------------------------- routes

    async def ner(self, request: Request) -> Response:
        """Named entities of `text` with exact code-point offsets."""
        body = parse(TextRequest, await read_body(request, self.config))
        return await self._one_result(body.text, "ner")

    async def sentiment(self, request: Request) -> Response:
        """Sentiment of `text`: label, confidence, both probabilities and the per-unit list."""
        body = parse(TextRequest, await read_body(request, self.config))
        return await self._one_result(body.text, "sentiment")

    async def analyze(self, request: Request) -> Response:
        """NER and sentiment of one text, the two models called concurrently."""
        started = time.perf_counter()
        body = parse(AnalyzeRequest, await read_body(request, self.config))
        outcome = await self._analyze(body.text, body.tasks)
        return _json(AnalyzeResult(outcome.analysis, _elapsed_ms(started)).to_dict())

    async def batch(self, request: Request) -> Response:
        """Analyse many texts at once; results come back in request order. The windows of all
        texts share the model calls, so a batch of short texts is a handful of calls."""
        started = time.perf_counter()
        self._ensure_following()
        config = self.config
        body = parse(BatchRequest, await read_body(request, config))
        if len(body.texts) > config.max_batch_texts:
            raise PayloadTooLargeError(f"batch has {len(body.texts):,} texts; the limit is {config.max_batch_texts:,}")
        total = sum(len(text) for text in body.texts)
        if total > config.max_batch_chars:
            raise PayloadTooLargeError(
                f"batch has {total:,} characters in all; the limit is {config.max_batch_chars:,}"
            )
        for index, text in enumerate(body.texts):
            check_text(text, config, field=f"texts[{index}]")
        settings = self._settings()
        planner = self.pipeline.planner

        def plan_all() -> list[DocumentPlan]:
            return [planner.plan(t, body.tasks, settings, field=f"texts[{i}]") for i, t in enumerate(body.texts)]

        async def attempt() -> list[Outcome]:
            self.pipeline.admit_estimate(total, body.tasks, config.request_timeout_s)
            plans = plan_all() if total <= INLINE_PLAN_CHARS else await asyncio.to_thread(plan_all)
            return await self.pipeline.analyze_plans(plans, config.request_timeout_s)

        outcomes = await self.calibrator.confirmed(attempt)
        for outcome in outcomes:
            self.metrics.observe(outcome)
        return _json(BatchResult(tuple(outcome.analysis for outcome in outcomes), _elapsed_ms(started)).to_dict())

    async def analyze_stream(self, request: Request) -> StreamingResponse:
        """NDJSON: a `start` line, a `window` line as each window finishes, then a `summary` line.

        Each `window` line has `task`, `start`/`end` (its character range), `done`/`total` and its
        `entities` (NER, document offsets, before cross-window merging) or `sentences`
        (sentiment). The `summary` line is the same object `/v1/analyze` returns. A failure after
        the stream began arrives as an `error` line. Disconnecting cancels the outstanding work.
        """
        self._ensure_following()
        body = parse(AnalyzeRequest, await read_body(request, self.config))
        check_text(body.text, self.config)

        async def attempt() -> tuple[DocumentPlan, Futures]:
            self.pipeline.admit_estimate(len(body.text), body.tasks, self.config.request_timeout_s)
            plan = await self.pipeline.planner.plan_async(body.text, body.tasks, self._settings())
            # Refused before the stream begins; admitted, its windows are queued (reserved) at once.
            return plan, self.pipeline.reserve(plan, self.config.request_timeout_s)

        plan, submitted = await self.calibrator.confirmed(attempt)
        return StreamingResponse(self._stream(plan, submitted, _request_id(request)), media_type="application/x-ndjson")

    async def _stream(
        self,
        plan: DocumentPlan,
        submitted: Futures,
        request_id: str | None,
    ) -> AsyncIterator[bytes]:
        events = self.pipeline.stream(plan, self.config.request_timeout_s, submitted)
        try:
            async for event in events:
                if isinstance(event, SummaryEvent):
                    self.metrics.observe(Outcome(plan, event.analysis))
                yield orjson.dumps(event.to_dict()) + b"\n"
        except ZhserveError as exc:
            # Headers are already sent: the failure travels as a line, never as a torn stream.
            yield orjson.dumps(ErrorEvent(exc, request_id).to_dict()) + b"\n"
        except Exception:
            logger.exception("stream failed (request %s)", request_id)
            error = ZhserveError("internal error; it has been logged")
            yield orjson.dumps(ErrorEvent(error, request_id).to_dict()) + b"\n"
        finally:
            await events.aclose()  # cancels the windows still running (a client that went away)

    async def healthz(self) -> HealthResponse:
        """Liveness: the ingress answers."""
        return HealthResponse(status="ok")

    async def readyz(self) -> ReadyResponse:
        """Readiness: each model answers a probe within 10 s; a 503 names the models that do not.

        Open to probes without a key, so the probe is shared: callers within a second of one
        another (or while one runs) get the same answer, and the models see one probe per second.
        """
        now = time.monotonic()
        if self._ready is None or (self._ready[1].done() and now - self._ready[0] > 1.0):
            self._ready = (now, asyncio.ensure_future(self._readiness()))
        return await asyncio.shield(self._ready[1])

    async def _readiness(self) -> ReadyResponse:
        self._ensure_following()
        missing = [f"{task} (no running replica)" for task in self.handles if self.watcher.counts.get(task) == 0]
        if missing:  # answered at once: a probe would wait for a replica that is not there
            raise ModelsNotReadyError(f"not ready: {', '.join(missing)}")
        probe_texts: dict[Task, str] = {"ner": "马云在杭州。", "sentiment": "很好。"}
        probes = {task: asyncio.ensure_future(self._probe(task, text)) for task, text in probe_texts.items()}
        await asyncio.wait(probes.values(), timeout=10)
        down = []
        for task, probe in probes.items():
            if not probe.done():
                probe.cancel()
                down.append(f"{task} (no answer within 10 s)")
            elif probe.exception() is not None or isinstance(probe.result(), FailedRows):
                down.append(f"{task} ({_reason(probe)})")
        if down:
            raise ModelsNotReadyError(f"not ready: {', '.join(down)}")
        return ReadyResponse(status="ready", models={task: model.model_id for task, model in self.models.items()})

    async def _probe(self, task: Task, text: str) -> ModelAnswer:
        tokens = self.models[task].tokenizer.encode([text])[0]
        return await _call(self.handles[task], TokenRows.pack([tokens.ids]))

    async def models_(self) -> ModelsResponse:
        """The served models: name, version, labels, quantisation, maximum sequence length."""
        return ModelsResponse(models=[ModelDescription(**model.manifest.summary()) for model in self.models.values()])

    async def docs(self) -> HTMLResponse:
        return HTMLResponse(DOCS_HTML)

    async def index(self) -> FileResponse:
        return self._ui_file("index.html")

    async def ui_asset(self, path: str) -> FileResponse:
        return self._ui_file(path)

    def _ui_file(self, relative: str) -> FileResponse:
        missing = NotFoundError(f"no UI file {relative[:100]!r}")
        try:
            candidate = (self.ui_dir / relative).resolve()
            found = candidate.is_relative_to(self.ui_dir) and candidate.is_file()
        except (OSError, ValueError):  # a name too long for the file system, a NUL byte
            raise missing from None
        if not found:
            raise missing
        return FileResponse(candidate, headers={"Cache-Control": "no-cache"})


def build_fastapi_app(ingress: Ingress) -> FastAPI:
    """The HTTP app of one ingress, built from its own state: routes bound to its handlers, and
    middleware that reads its API key and metrics through it (a key set by ``reconfigure`` is
    enforced from the next request on)."""
    app = FastAPI(
        title="zhserve",
        version="1.0",
        summary="Chinese NER and sentiment on Ray Serve",
        description=API_DESCRIPTION,
        docs_url=None,  # served below, under its own Content-Security-Policy
        openapi_url="/openapi.json",
        redoc_url=None,
    )
    app.docs_url = "/docs"  # where Serve and the dashboard look for the docs
    install_error_handlers(app, _request_id, BASE_HEADERS)

    def post(path: str, endpoint: Callable[..., Any], body: type[BaseModel], **options: Any) -> None:
        app.add_api_route(path, endpoint, methods=["POST"], openapi_extra=_body_schema(body), **options)

    post("/v1/ner", ingress.ner, TextRequest, response_model=NerResult, responses=ERRORS)
    post("/v1/sentiment", ingress.sentiment, TextRequest, response_model=SentimentResultOut, responses=ERRORS)
    post("/v1/analyze", ingress.analyze, AnalyzeRequest, response_model=AnalyzeResponse,
         response_model_exclude_none=True, responses=ERRORS)  # fmt: skip
    post("/v1/batch", ingress.batch, BatchRequest, response_model=BatchResponse,
         response_model_exclude_none=True, responses=ERRORS)  # fmt: skip
    post("/v1/analyze/stream", ingress.analyze_stream, AnalyzeRequest,
         responses={200: {"content": {"application/x-ndjson": {}}}, **ERRORS})  # fmt: skip
    app.add_api_route("/healthz", ingress.healthz, methods=["GET"], response_model=HealthResponse)
    app.add_api_route("/readyz", ingress.readyz, methods=["GET"], response_model=ReadyResponse,
                      responses=error_responses(ErrorResponse, {503}))  # fmt: skip
    app.add_api_route("/v1/models", ingress.models_, methods=["GET"], response_model=ModelsResponse)
    app.add_api_route("/docs", ingress.docs, methods=["GET"], include_in_schema=False)
    app.add_api_route("/", ingress.index, methods=["GET"], include_in_schema=False)
    app.add_api_route("/ui/{path:path}", ingress.ui_asset, methods=["GET"], include_in_schema=False)

    # Outermost last: metrics see every answer, including the 401s and the headers' responses; an
    # answer given before its body arrived is then followed by reading the rest (serve_app.body),
    # outside the metrics, so discarding an unwanted body does not count as the answer's latency.
    # The key is looked up on the ingress at each request: what reconfigure loaded is what counts.
    app.add_middleware(ApiKeyMiddleware, api_key=lambda: ingress.api_key, request_id=_scope_request_id)
    app.add_middleware(SecurityHeadersMiddleware, csp_for=_page_csp)
    app.add_middleware(RequestMetricsMiddleware, metrics=ingress.metrics, routes=API_ROUTES)
    if ingress.cors_allow_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=ingress.cors_allow_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["authorization", "content-type"],
            max_age=600,
        )
    app.add_middleware(LingeringCloseMiddleware)
    return app


def make_fastapi_ingress(cls: type[Ingress] = Ingress) -> type[Ingress]:
    """The Serve ingress class for ``cls``: each replica constructs ``cls`` and then builds its app
    with :func:`build_fastapi_app` from that instance (Serve's late-bound ``serve.ingress()``, which
    calls ``__serve_build_asgi_app__`` after the constructor), so the app never travels pickled."""

    def __serve_build_asgi_app__(self: Ingress) -> FastAPI:
        return build_fastapi_app(self)

    served = type(cls.__name__, (cls,), {"__serve_build_asgi_app__": __serve_build_asgi_app__})
    return serve.ingress()(served)


def _reason(probe: "asyncio.Future[ModelAnswer]") -> str:
    exc = probe.exception()
    if exc is None:  # answered with FailedRows
        return "the replica refused the probe" if probe.result().refused else "the model failed on the probe"
    error = api_error(exc, timeout_s=10)
    return error.code if isinstance(error, ZhserveError) else "the probe failed"
