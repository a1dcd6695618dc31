"""The HTTP ingress: validation, windowing, fan-out to the model deployments, merge, streaming, UI.

Routes live on a module-level FastAPI app bound to :class:`Ingress` with ``@serve.ingress``;
``serve.deployment`` is applied in ``serve_app.app.build_app``.
"""

# No `from __future__ import annotations` here: FastAPI must see real types on the routes,
# which Serve re-wraps outside this module's namespace.

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from fastapi import Depends, FastAPI, Request
from fastapi.responses import FileResponse, StreamingResponse
from ray import serve
from ray.exceptions import RayActorError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError, ReplicaUnavailableError
from ray.serve.handle import DeploymentHandle

from deployments.runtime.model_dir import Manifest, ModelDir
from deployments.runtime.sentiment import SentimentResult
from deployments.runtime.spans import Entity
from deployments.runtime.tokenizer import BertChineseTokenizer
from deployments.server import ItemError
from serve_app import chunking
from serve_app.config import AppArgs, IngressConfig
from serve_app.errors import (
    EmptyTextError,
    InvalidEncodingError,
    ModelFailureError,
    ModelsNotReadyError,
    NotFoundError,
    OverloadedError,
    PayloadTooLargeError,
    RequestTimeoutError,
    UnauthorizedError,
    UnsupportedMediaTypeError,
    ZhserveError,
    install_error_handlers,
)
from serve_app.metrics import IngressMetrics, window_counts
from serve_app.schemas import (
    ERROR_RESPONSES,
    AnalyzeRequest,
    AnalyzeResponse,
    BatchRequest,
    BatchResponse,
    EntityOut,
    HealthResponse,
    ModelDescription,
    ModelsResponse,
    NerResult,
    ReadyResponse,
    SentenceSentiment,
    SentimentResultOut,
    SentimentScores,
    Task,
    TextRequest,
)

logger = logging.getLogger("ray.serve")
T = TypeVar("T")

API_DESCRIPTION = """
Chinese named-entity recognition (PER, LOC, ORG) and sentiment analysis.

* Offsets are **code-point** indices into the exact text you sent, end-exclusive:
  `text[start:end] == entity.text` always holds.
* Any length up to the configured limit (200,000 characters by default): long documents are split
  at sentence ends into windows that fit the model; entities in overlapping windows are merged.
* Sentiment of a text that fits one model window is computed on the whole text; a longer document
  is scored sentence by sentence and its label is the length-weighted mean of the sentence
  probabilities (`sentences` lists them).
* Errors are JSON `{"error": {"code", "message"}}` with status 400, 401, 413, 415, 422, 503 or 504.
"""

app = FastAPI(
    title="zhserve",
    version="1.0",
    summary="Chinese NER and sentiment on Ray Serve",
    description=API_DESCRIPTION,
    docs_url="/docs",
    openapi_url="/openapi.json",
    redoc_url=None,
)
install_error_handlers(app)


async def require_json(request: Request) -> None:
    """Dependency of the POST routes: API key, content type and declared body size."""
    config: IngressConfig = request.app.state.config
    if config.api_key is not None:
        supplied = request.headers.get("authorization", "")
        if supplied != f"Bearer {config.api_key}":
            raise UnauthorizedError("missing or wrong API key; send 'Authorization: Bearer <key>'")
    content_type = request.headers.get("content-type", "")
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise UnsupportedMediaTypeError(
            f"content type {content_type or '(none)'!r} is not supported; send application/json"
        )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > config.max_body_bytes:
        raise PayloadTooLargeError(f"request body has {int(declared):,} bytes; the limit is {config.max_body_bytes:,}")


def _api_error(exc: BaseException, timeout_s: float) -> Any:
    """The API error a failed model call stands for; anything else (cancellation) unchanged."""
    if isinstance(exc, ZhserveError):
        return exc
    if isinstance(exc, TimeoutError):
        return RequestTimeoutError(f"the request took longer than its limit of {timeout_s:g} s")
    if isinstance(exc, BackPressureError):
        return OverloadedError("the models are at capacity; retry shortly", retry_after_s=1)
    if isinstance(exc, DeploymentUnavailableError | ReplicaUnavailableError | RayActorError):
        return ModelsNotReadyError("a model replica is unavailable; retry shortly")
    return exc


def _flatten(groups: Sequence[list[T]]) -> list[T]:
    return [item for group in groups for item in group]


def _window_event(task: str, window: chunking.Window, result: Any, text: str, done: int, total: int) -> dict[str, Any]:
    """One NDJSON ``window`` line: the window's range and its entities (document offsets) or
    its sentiment."""
    event: dict[str, Any] = {
        "event": "window",
        "task": task,
        "index": window.index,
        "start": window.start,
        "end": window.end,
        "done": done,
        "total": total,
    }
    if task == "ner":
        event["entities"] = [entity.shifted(window.start, text).to_dict() for entity in result]
    else:
        event["sentences"] = [{"start": window.start, "end": window.end, "label": result.label, "score": result.score}]
    return event


def _item_error(error: ItemError) -> ZhserveError:
    if error.retryable:
        return OverloadedError(f"a model replica refused work: {error.message}", retry_after_s=5)
    return ModelFailureError(f"the model failed on part of the text: {error.message}")


async def _tagged(index: int, call: Awaitable[T]) -> tuple[int, T]:
    return index, await call


# A replica that dies under a call (crash, OOM kill, node loss) is not the caller's fault.
_REPLICA_LOST = (RayActorError, ReplicaUnavailableError)
MODEL_CALL_ATTEMPTS = 2


async def _predict(handle: DeploymentHandle, texts: list[str]) -> Any:
    """``handle.predict(texts)``, retried once on another replica if the one serving it is lost.

    Model calls are pure, so repeating one is safe; Serve routes the retry to a live replica (or
    holds it until the controller has replaced the lost one). Cancelling the awaiting task cancels
    the request in flight, so nothing keeps computing for a caller who has gone.
    """
    for attempt in range(1, MODEL_CALL_ATTEMPTS + 1):
        response = handle.predict.remote(texts)
        try:
            return await response
        except asyncio.CancelledError:
            response.cancel()
            raise
        except _REPLICA_LOST as exc:
            if attempt == MODEL_CALL_ATTEMPTS:
                raise
            logger.warning("model replica lost under a call (%s); retrying on another", type(exc).__name__)
    raise AssertionError("unreachable")


def _line(payload: dict[str, Any]) -> str:
    return json.dumps(payload, ensure_ascii=False) + "\n"


@dataclass(frozen=True)
class LoadedModel:
    """What the ingress needs of a model: its manifest (names, limits) and tokenizer (windows)."""

    manifest: Manifest
    tokenizer: BertChineseTokenizer

    @classmethod
    def from_dir(cls, path: Path) -> "LoadedModel":
        model_dir = ModelDir.load(path, verify_checksums=False)
        manifest = model_dir.manifest
        tokenizer = BertChineseTokenizer.from_vocab_file(
            model_dir.file(manifest.tokenizer.vocab), lowercase=manifest.tokenizer.lowercase
        )
        return cls(manifest, tokenizer)

    def describe(self) -> ModelDescription:
        return ModelDescription(**self.manifest.summary())


@dataclass
class NerPlan:
    windows: list[chunking.Window]


@dataclass
class SentimentPlan:
    units: list[chunking.Window]


@serve.ingress(app)
class Ingress:
    """Composes the NER and sentiment deployments behind HTTP API v1."""

    def __init__(self, ner: DeploymentHandle, sentiment: DeploymentHandle, args: dict[str, Any] | None = None) -> None:
        settings = AppArgs.model_validate(args or {})
        self.ner_handle = ner
        self.sentiment_handle = sentiment
        self.ner_model = LoadedModel.from_dir(settings.ner_model)
        self.sentiment_model = LoadedModel.from_dir(settings.sentiment_model)
        self.ui_dir = settings.ui_dir
        self.config = IngressConfig()
        app.state.config = self.config
        self.metrics = IngressMetrics()

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        self.config = IngressConfig.model_validate(user_config or {})
        app.state.config = self.config

    # ---------------------------------------------------------------- validation

    def _check_text(self, text: str, *, field: str = "text") -> None:
        if len(text) > self.config.max_text_chars:
            raise PayloadTooLargeError(
                f"{field} has {len(text):,} characters; the limit is {self.config.max_text_chars:,}"
            )
        if not text.strip():
            raise EmptyTextError(f"{field} is empty; send some Chinese text to analyse")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidEncodingError(
                f"{field} contains an unpaired surrogate at character {exc.start}; send valid Unicode"
            ) from None

    # ---------------------------------------------------------------- planning and fan-out

    def _overlap(self, model: LoadedModel) -> int:
        """The configured overlap, capped at half a window so a window always moves forward."""
        return min(self.config.window_overlap_tokens, (model.manifest.max_seq_length - 2) // 2)

    def _plan_ner(self, text: str) -> NerPlan:
        plan = chunking.sentence_units if self.config.ner_context == "sentence" else chunking.plan_windows
        windows = plan(
            text,
            self.ner_model.tokenizer.count_tokens,
            max_tokens=self.ner_model.manifest.max_seq_length,
            overlap_tokens=self._overlap(self.ner_model),
        )
        return NerPlan(windows)

    def _plan_sentiment(self, text: str) -> SentimentPlan:
        units = chunking.sentiment_units(
            text,
            self.sentiment_model.tokenizer.count_tokens,
            max_tokens=self.sentiment_model.manifest.max_seq_length,
            overlap_tokens=self._overlap(self.sentiment_model),
        )
        return SentimentPlan(units)

    def _plan(self, text: str, tasks: Sequence[Task]) -> tuple[NerPlan | None, SentimentPlan | None]:
        """Windows for each requested task. Tokenising a 200,000-character document takes a
        noticeable fraction of a second, so callers run this off the event loop."""
        return (
            self._plan_ner(text) if "ner" in tasks else None,
            self._plan_sentiment(text) if "sentiment" in tasks else None,
        )

    def _ner_result(self, text: str, plan: NerPlan, outputs: Sequence[list[Entity]]) -> NerResult:
        merged = chunking.merge_entities(text, plan.windows, outputs)
        return NerResult(
            entities=[EntityOut(**entity.to_dict()) for entity in merged],  # type: ignore[arg-type]
            model=self.ner_model.manifest.model_id,
        )

    def _sentiment_result(self, plan: SentimentPlan, outputs: Sequence[SentimentResult]) -> SentimentResultOut:
        label, score, probabilities = chunking.aggregate_sentiment(plan.units, [output.scores for output in outputs])
        return SentimentResultOut(
            label=label,  # type: ignore[arg-type]
            score=score,
            scores=SentimentScores(**probabilities),
            sentences=[
                SentenceSentiment(start=unit.start, end=unit.end, label=output.label, score=output.score)  # type: ignore[arg-type]
                for unit, output in zip(plan.units, outputs, strict=True)
            ],
            model=self.sentiment_model.manifest.model_id,
        )

    @staticmethod
    def _unwrap(results: Sequence[T | ItemError]) -> list[T]:
        for result in results:
            if isinstance(result, ItemError):
                raise _item_error(result)
        return list(results)  # type: ignore[arg-type]

    def _groups(self, windows: list[chunking.Window]) -> list[list[chunking.Window]]:
        """Windows travel to the models in groups: one handle call per group keeps the per-call
        overhead off long documents, and groups still spread over every replica."""
        size = self.config.window_group_size
        return [windows[index : index + size] for index in range(0, len(windows), size)]

    async def _analyze(self, text: str, tasks: Sequence[Task]) -> AnalyzeResponse:
        started = time.perf_counter()
        ner_plan, sentiment_plan = await asyncio.to_thread(self._plan, text, tasks)
        ner_groups = self._groups(ner_plan.windows) if ner_plan else []
        sentiment_groups = self._groups(sentiment_plan.units) if sentiment_plan else []
        outputs = await self._gather(
            [_predict(self.ner_handle, [w.text for w in group]) for group in ner_groups]
            + [_predict(self.sentiment_handle, [u.text for u in group]) for group in sentiment_groups]
        )
        response = AnalyzeResponse()
        if ner_plan is not None:
            ner_outputs = _flatten(self._unwrap(outputs[: len(ner_groups)]))
            response.ner = self._ner_result(text, ner_plan, ner_outputs)
        if sentiment_plan is not None:
            sentiment_outputs = _flatten(self._unwrap(outputs[len(ner_groups) :]))
            response.sentiment = self._sentiment_result(sentiment_plan, sentiment_outputs)
        response.elapsed_ms = round((time.perf_counter() - started) * 1000, 2)
        self.metrics.observe(
            text,
            window_counts(ner_plan.windows if ner_plan else None, sentiment_plan.units if sentiment_plan else None),
            response,
        )
        return response

    async def _gather(self, calls: Sequence[Awaitable[Any]]) -> list[Any]:
        """Await every model call within the request time limit; on any failure cancel the rest."""
        tasks = [asyncio.ensure_future(call) for call in calls]
        try:
            async with asyncio.timeout(self.config.request_timeout_s):
                return list(await asyncio.gather(*tasks))
        except BaseException as exc:
            # Cancel what is still running (time-out, a failed sibling, a client that went away);
            # each cancelled call cancels its request in flight.
            for task in tasks:
                task.cancel()
            raise _api_error(exc, self.config.request_timeout_s) from None

    # ---------------------------------------------------------------- routes

    @app.post("/v1/ner", response_model=NerResult, responses=ERROR_RESPONSES, dependencies=[Depends(require_json)])
    async def ner(self, body: TextRequest) -> NerResult:
        """Named entities of `text` with exact code-point offsets."""
        self._check_text(body.text)
        result = await self._analyze(body.text, ["ner"])
        assert result.ner is not None
        return result.ner

    @app.post(
        "/v1/sentiment",
        response_model=SentimentResultOut,
        responses=ERROR_RESPONSES,
        dependencies=[Depends(require_json)],
    )
    async def sentiment(self, body: TextRequest) -> SentimentResultOut:
        """Sentiment of `text`: label, confidence, both probabilities and the per-unit list."""
        self._check_text(body.text)
        result = await self._analyze(body.text, ["sentiment"])
        assert result.sentiment is not None
        return result.sentiment

    @app.post(
        "/v1/analyze",
        response_model=AnalyzeResponse,
        response_model_exclude_none=True,
        responses=ERROR_RESPONSES,
        dependencies=[Depends(require_json)],
    )
    async def analyze(self, body: AnalyzeRequest) -> AnalyzeResponse:
        """NER and sentiment of one text, the two models called concurrently."""
        self._check_text(body.text)
        return await self._analyze(body.text, body.tasks)

    @app.post(
        "/v1/batch",
        response_model=BatchResponse,
        response_model_exclude_none=True,
        responses=ERROR_RESPONSES,
        dependencies=[Depends(require_json)],
    )
    async def batch(self, body: BatchRequest) -> BatchResponse:
        """Analyse many texts at once; results come back in request order."""
        if len(body.texts) > self.config.max_batch_texts:
            raise PayloadTooLargeError(
                f"batch has {len(body.texts):,} texts; the limit is {self.config.max_batch_texts:,}"
            )
        total = sum(len(text) for text in body.texts)
        if total > self.config.max_batch_chars:
            raise PayloadTooLargeError(
                f"batch has {total:,} characters in all; the limit is {self.config.max_batch_chars:,}"
            )
        for index, text in enumerate(body.texts):
            self._check_text(text, field=f"texts[{index}]")
        started = time.perf_counter()
        results = await asyncio.gather(*(self._analyze(text, body.tasks) for text in body.texts))
        for result in results:
            result.elapsed_ms = None
        return BatchResponse(results=list(results), elapsed_ms=round((time.perf_counter() - started) * 1000, 2))

    @app.post(
        "/v1/analyze/stream",
        responses={200: {"content": {"application/x-ndjson": {}}}, **ERROR_RESPONSES},
        dependencies=[Depends(require_json)],
    )
    async def analyze_stream(self, body: AnalyzeRequest) -> StreamingResponse:
        """NDJSON: a `start` line, a `window` line as each window finishes, then a `summary` line.

        Each `window` line has `task`, `start`/`end` (its character range), `done`/`total` and its
        `entities` (NER, document offsets, before cross-window merging) or `sentences`
        (sentiment). The `summary` line is the same object `/v1/analyze` returns. A failure after
        the stream began arrives as an `error` line. Disconnecting cancels the outstanding work.
        """
        self._check_text(body.text)
        return StreamingResponse(self._stream(body.text, body.tasks), media_type="application/x-ndjson")

    async def _stream(self, text: str, tasks: Sequence[Task]) -> AsyncIterator[str]:
        started = time.perf_counter()
        ner_plan, sentiment_plan = await asyncio.to_thread(self._plan, text, tasks)
        # One job per group of windows; each finished group yields one line per window.
        jobs: list[tuple[str, list[chunking.Window], Any]] = []
        if ner_plan:
            jobs += [
                ("ner", group, asyncio.ensure_future(_predict(self.ner_handle, [w.text for w in group])))
                for group in self._groups(ner_plan.windows)
            ]
        if sentiment_plan:
            jobs += [
                ("sentiment", group, asyncio.ensure_future(_predict(self.sentiment_handle, [u.text for u in group])))
                for group in self._groups(sentiment_plan.units)
            ]
        futures = [asyncio.ensure_future(_tagged(index, call)) for index, (_, _, call) in enumerate(jobs)]
        outputs: list[list[Any]] = [[] for _ in jobs]
        total = sum(len(group) for _, group, _ in jobs)
        done = 0
        yield _line(
            {
                "event": "start",
                "length": len(text),
                "tasks": list(tasks),
                "windows": {
                    "ner": len(ner_plan.windows) if ner_plan else 0,
                    "sentiment": len(sentiment_plan.units) if sentiment_plan else 0,
                },
            }
        )
        try:
            async with asyncio.timeout(self.config.request_timeout_s):
                for next_done in asyncio.as_completed(futures):
                    index, output = await next_done
                    if isinstance(output, ItemError):
                        raise _item_error(output)
                    outputs[index] = output
                    task, group, _ = jobs[index]
                    for window, result in zip(group, output, strict=True):
                        done += 1
                        yield _line(_window_event(task, window, result, text, done, total))
            summary = AnalyzeResponse()
            by_task: dict[str, list[Any]] = {"ner": [], "sentiment": []}
            for (task, _, _), output in zip(jobs, outputs, strict=True):
                by_task[task].extend(output)
            if ner_plan is not None:
                summary.ner = self._ner_result(text, ner_plan, by_task["ner"])
            if sentiment_plan is not None:
                summary.sentiment = self._sentiment_result(sentiment_plan, by_task["sentiment"])
            summary.elapsed_ms = round((time.perf_counter() - started) * 1000, 2)
            self.metrics.observe(
                text,
                window_counts(ner_plan.windows if ner_plan else None, sentiment_plan.units if sentiment_plan else None),
                summary,
            )
            yield _line({"event": "summary", **summary.model_dump(exclude_none=True)})
        except (
            TimeoutError,
            ZhserveError,
            BackPressureError,
            DeploymentUnavailableError,
            ReplicaUnavailableError,
            RayActorError,
        ) as exc:
            yield _line({"event": "error", **_api_error(exc, self.config.request_timeout_s).to_body()})
        except Exception:
            # Headers are already sent: the failure must travel as a line, never as a torn stream.
            logger.exception("stream failed")
            yield _line({"event": "error", **ZhserveError("internal error; it has been logged").to_body()})
        finally:
            # Runs on normal completion, on failure, and when the client disconnects (Serve
            # cancels this generator): nothing keeps computing for a reader who has gone.
            for future in [*futures, *(call for _, _, call in jobs)]:
                if not future.done():
                    future.cancel()  # a cancelled call cancels its request in flight (see _predict)

    @app.get("/healthz", response_model=HealthResponse)
    async def healthz(self) -> HealthResponse:
        """Liveness: the ingress answers."""
        return HealthResponse(status="ok")

    @app.get("/readyz", response_model=ReadyResponse, responses={503: ERROR_RESPONSES[503]})
    async def readyz(self) -> ReadyResponse:
        """Readiness: both models loaded and answering a probe."""
        probes = [
            self.ner_handle.predict.remote(["马云在杭州。"]),
            self.sentiment_handle.predict.remote(["很好。"]),
        ]
        try:
            async with asyncio.timeout(10):
                results = await asyncio.gather(*probes)
        except Exception as exc:  # any failure to answer means not ready
            for probe in probes:
                probe.cancel()
            raise ModelsNotReadyError(f"models are not answering yet ({type(exc).__name__})") from None
        if any(isinstance(result, ItemError) for result in results):
            raise ModelsNotReadyError("a model failed its readiness probe")
        return ReadyResponse(
            status="ready",
            models={
                "ner": self.ner_model.manifest.model_id,
                "sentiment": self.sentiment_model.manifest.model_id,
            },
        )

    @app.get("/v1/models", response_model=ModelsResponse)
    async def models(self) -> ModelsResponse:
        """The served models: name, version, labels, quantisation, maximum sequence length."""
        return ModelsResponse(models=[self.ner_model.describe(), self.sentiment_model.describe()])

    @app.get("/", include_in_schema=False)
    async def index(self) -> FileResponse:
        return self._ui_file("index.html")

    @app.get("/ui/{path:path}", include_in_schema=False)
    async def ui_asset(self, path: str) -> FileResponse:
        return self._ui_file(path)

    def _ui_file(self, relative: str) -> FileResponse:
        root = self.ui_dir.resolve()
        candidate = (root / relative).resolve()
        if not candidate.is_relative_to(root) or not candidate.is_file():
            raise NotFoundError(f"no UI file {relative!r}")
        return FileResponse(candidate, headers={"Cache-Control": "no-cache"})
