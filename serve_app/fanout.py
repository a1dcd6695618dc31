"""Plan → fan out → assemble: the one request pipeline behind /v1/ner, /v1/sentiment, /v1/analyze,
/v1/analyze/stream and /v1/batch.

Plain Python (no FastAPI, no handles): the model calls are coroutine functions injected by the
ingress, so the whole pipeline is unit-tested with fakes.

- **Plan**: each text is tokenised once per distinct tokenizer; windows are planned on those
  tokens (``serve_app.chunking``), and a window's rows of token ids are what a model is sent.
- **Fan out**: one :class:`ModelClient` per model coalesces the windows of every request in
  flight — of one document, of a batch, of concurrent requests — into calls of at most
  ``window_group_size`` rows, with at most ``calls_in_flight`` calls outstanding. Under load the
  queue fills while calls are out, so each call carries many windows and the per-call cost of a
  handle call is paid once per group, not once per request; at low load a window goes out at once.
- **Assemble**: window answers become entities with exact document offsets (merged across
  overlapping windows) or a length-weighted sentiment.

Every path awaits its windows through :meth:`Pipeline._collect` or :meth:`Pipeline.stream`: one
time limit, one cancellation path (a request that fails, times out or is abandoned cancels its
windows, and a call none of whose windows is still wanted is cancelled in flight), one mapping
of failures to API errors (``serve_app.errors.api_error``).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import math
import time
import unicodedata
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from deployments.runtime.model_dir import Manifest, ModelDir
from deployments.runtime.rows import TagRows, TokenRows
from deployments.runtime.spans import Entity, build_entities
from deployments.runtime.tokenizer import Tokenized, Tokenizer
from deployments.server import ItemError
from serve_app import chunking
from serve_app.errors import EmptyTextError, ModelsNotReadyError, OverloadedError, api_error, item_error

Task = Literal["ner", "sentiment"]

# Texts up to this many characters are planned on the event loop; longer ones in a thread
# (tokenising 200,000 characters takes tens of milliseconds).
INLINE_PLAN_CHARS = 4_000


# --------------------------------------------------------------------------------------------
# Models as the ingress sees them


@dataclass(frozen=True)
class ServedModel:
    """What the ingress needs of a model: its manifest (names, labels, limits) and tokenizer."""

    manifest: Manifest
    tokenizer: Tokenizer
    # Equal keys mean identical tokenisation, so one encoding of a text serves both models.
    tokenizer_key: str

    @classmethod
    def from_dir(cls, path: str) -> ServedModel:
        model_dir = ModelDir.load(path, verify_checksums=False)
        spec = model_dir.manifest.tokenizer
        digest = hashlib.sha256(model_dir.file(spec.artifact).read_bytes()).hexdigest()
        key = f"{spec.model_dump_json()}:{digest}"
        return cls(model_dir.manifest, Tokenizer.from_model_dir(model_dir), key)

    @property
    def model_id(self) -> str:
        return self.manifest.model_id

    @property
    def max_tokens(self) -> int:
        return self.manifest.max_seq_length

    def overlap(self, configured: int) -> int:
        """The configured overlap, capped at half a window so a window always moves forward."""
        return min(configured, (self.max_tokens - chunking.NUM_SPECIAL_TOKENS) // 2)


# --------------------------------------------------------------------------------------------
# Plans


@dataclass(frozen=True)
class TaskPlan:
    """One task's windows over one text, and the text's tokens for that task's model."""

    task: Task
    model: ServedModel
    tokens: Tokenized
    windows: list[chunking.Window]

    def rows(self) -> list[np.ndarray]:
        ids = self.tokens.ids
        return [ids[window.token_start : window.token_end] for window in self.windows]


@dataclass(frozen=True)
class DocumentPlan:
    text: str
    tasks: dict[Task, TaskPlan]

    def window_counts(self) -> dict[str, int]:
        return {task: len(plan.windows) for task, plan in self.tasks.items()}


@dataclass(frozen=True)
class PlanSettings:
    ner_context: Literal["sentence", "window"] = "sentence"
    overlap_tokens: int = 32


def is_text_character(char: str) -> bool:
    """Whether ``char`` is something to analyse: anything but a control (Cc), format (Cf) or
    separator (Z*) character and the 66 noncharacters. Private use (Co) counts, and so does a code
    point this Python's Unicode tables call unassigned (Cn): Python 3.11 knows Unicode 14, so the
    CJK of Extensions H and I (Unicode 15, 15.1: U+31350 ...) is Cn here though it is Lo today."""
    category = unicodedata.category(char)
    if category[0] not in "CZ":
        return True
    if category == "Co":
        return True
    if category != "Cn":
        return False
    code = ord(char)
    return not (0xFDD0 <= code <= 0xFDEF or code & 0xFFFE == 0xFFFE)  # noncharacters are never text


def has_visible_character(text: str) -> bool:
    """Whether ``text`` has a character to analyse (:func:`is_text_character`). Stops at the
    first one, so an ordinary text costs one character."""
    return any(is_text_character(char) for char in text)


class Planner:
    """Turns a text and its tasks into windows, tokenising the text once per distinct tokenizer."""

    def __init__(self, models: dict[Task, ServedModel]) -> None:
        self.models = models

    def plan(self, text: str, tasks: Sequence[Task], settings: PlanSettings, *, field: str = "text") -> DocumentPlan:
        if not has_visible_character(text):  # whatever a model's tokenizer makes of it (e5 gives "▁"/<unk>)
            raise EmptyTextError(
                f"{field} has nothing to analyse: no letters, digits, CJK characters or symbols "
                "(only whitespace, control or zero-width characters)"
            )
        encodings: dict[str, Tokenized] = {}
        plans: dict[Task, TaskPlan] = {}
        for task in tasks:
            model = self.models[task]
            tokens = encodings.get(model.tokenizer_key)
            if tokens is None:
                tokens = encodings[model.tokenizer_key] = model.tokenizer.encode([text])[0]
            if len(tokens) == 0:
                raise EmptyTextError(
                    f"{field} has nothing to analyse: no letters, digits, CJK characters or symbols "
                    "(only whitespace, control or zero-width characters)"
                )
            overlap = model.overlap(settings.overlap_tokens)
            if task == "sentiment":
                windows = chunking.sentiment_units(text, tokens, max_tokens=model.max_tokens, overlap_tokens=overlap)
            elif settings.ner_context == "sentence":
                windows = chunking.sentence_units(text, tokens, max_tokens=model.max_tokens, overlap_tokens=overlap)
            else:
                windows = chunking.plan_windows(text, tokens, max_tokens=model.max_tokens, overlap_tokens=overlap)
            plans[task] = TaskPlan(task, model, tokens, windows)
        return DocumentPlan(text, plans)

    async def plan_async(
        self, text: str, tasks: Sequence[Task], settings: PlanSettings, *, field: str = "text"
    ) -> DocumentPlan:
        if len(text) <= INLINE_PLAN_CHARS:
            return self.plan(text, tasks, settings, field=field)
        return await asyncio.to_thread(self.plan, text, tasks, settings, field=field)


# --------------------------------------------------------------------------------------------
# Assembly: window answers → API results (plain dicts shaped as serve_app.schemas describes)


def ner_result(text: str, plan: TaskPlan, entities_per_window: Sequence[list[Entity]]) -> dict[str, Any]:
    merged = chunking.merge_entities(text, plan.windows, entities_per_window)
    return {"entities": [entity.to_dict() for entity in merged], "model": plan.model.model_id}


def sentiment_result(plan: TaskPlan, probabilities: Sequence[np.ndarray]) -> dict[str, Any]:
    labels = plan.model.manifest.labels
    per_unit = [dict(zip(labels, row.tolist(), strict=True)) for row in probabilities]
    label, score, mean = chunking.aggregate_sentiment(plan.windows, per_unit)
    return {
        "label": label,
        "score": score,
        "scores": {"positive": mean["positive"], "negative": mean["negative"]},
        "sentences": [unit.to_dict() for unit in chunking.sentence_sentiments(plan.windows, per_unit)],
        "model": plan.model.model_id,
    }


def sentiment_window_event(window: chunking.Window, probabilities: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    per_label = dict(zip(labels, probabilities.tolist(), strict=True))
    label = max(per_label, key=lambda name: per_label[name])
    return {"start": window.start, "end": window.end, "label": label, "score": per_label[label]}


# --------------------------------------------------------------------------------------------
# Fan-out: coalescing model calls

Predict = Callable[[TokenRows], Awaitable[Any]]
"""One model call: packed rows in, the replica's answer for them out (``TagRows`` for NER, an
array of probabilities [rows, labels] for sentiment, or a list with an ``ItemError`` in place of
each row that failed)."""


def refused(answer: Any) -> bool:
    """Whether a replica refused a call for reasons that say nothing about its rows (over its
    memory budget): the same call may succeed on another replica a moment later."""
    return isinstance(answer, list) and any(isinstance(item, ItemError) and item.retryable for item in answer)


def split_answer(answer: Any, count: int) -> list[Any]:
    """Per-row results of one call's answer."""
    if isinstance(answer, TagRows):
        rows: list[Any] = answer.rows()
    elif isinstance(answer, np.ndarray):
        rows = list(answer)
    else:
        rows = list(answer)
    if len(rows) != count:
        raise RuntimeError(f"a model answered {len(rows)} rows for a call of {count}")
    return rows


@dataclass
class _Call:
    futures: list[asyncio.Future[Any]]
    task: asyncio.Task[None] | None = None
    wanted: int = 0


@dataclass
class ClientStats:
    calls: int = 0
    rows: int = 0
    largest_call: int = 0
    refused_rows: int = 0


SECONDS_PER_ROW_PRIOR = 0.004
"""What a row costs a replica before any call has been timed (measured: ~1-3 ms for the embedded
models, ~20 ms for BERT-base INT8 twins; the estimate follows the measured calls within a few)."""


class ModelClient:
    """Coalesces rows from every request into calls of at most ``group_size`` rows, with at most
    ``calls_in_flight`` calls outstanding. Each row's result arrives on its own future."""

    def __init__(
        self,
        predict: Predict,
        *,
        group_size: int,
        calls_in_flight: int,
        on_refused: Callable[[int], None] | None = None,
    ) -> None:
        self._predict = predict
        self.group_size = group_size
        self.calls_in_flight = calls_in_flight
        self._on_refused = on_refused
        # One queue of rows per submission, served round-robin: a call takes a row from each
        # waiting request in turn, so a short request is not stuck behind a long document's
        # hundreds of windows (it finishes in the next call) and long documents share fairly.
        self._pending: deque[deque[tuple[np.ndarray, asyncio.Future[Any]]]] = deque()
        self._in_flight: dict[asyncio.Task[None], _Call] = {}  # each call's task → its rows' futures
        self.unavailable: str | None = None  # why the model cannot answer now (no replica), if so
        self._rows_in_flight = 0
        self._seconds_per_row = SECONDS_PER_ROW_PRIOR  # per row per call slot, moving average
        self.stats = ClientStats()

    def configure(self, *, group_size: int, calls_in_flight: int) -> None:
        self.group_size = group_size
        self.calls_in_flight = calls_in_flight
        self._dispatch()

    def mark_unavailable(self, reason: str) -> None:
        """The model has had no running replica for too long: fail what waits for it, now and
        until ``mark_available``, with 503 models_not_ready instead of letting callers hang."""
        self.unavailable = reason
        while self._pending:
            for _, future in self._pending.popleft():
                if not future.done():
                    future.set_exception(self._not_ready())
        for task, call in list(self._in_flight.items()):
            for future in call.futures:
                if not future.done():
                    future.set_exception(self._not_ready())
            task.cancel()

    def mark_available(self) -> None:
        self.unavailable = None

    def _not_ready(self) -> ModelsNotReadyError:
        return ModelsNotReadyError(f"{self.unavailable}; retry shortly", retry_after_s=5)

    def submit(self, rows: Sequence[np.ndarray]) -> list[asyncio.Future[Any]]:
        """Queue ``rows``; returns one future per row, resolved with that row's result."""
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in rows]
        if self.unavailable is not None:
            for future in futures:
                future.set_exception(self._not_ready())
            return futures
        if futures:
            self._pending.append(deque(zip(rows, futures, strict=True)))
        self._dispatch()
        return futures

    @property
    def queued(self) -> int:
        """Rows waiting for a call (rows whose requests gave up are not counted)."""
        return sum(1 for queue in self._pending for _, future in queue if not future.done())

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    @property
    def backlog(self) -> int:
        """Rows accepted and not yet answered: queued here plus travelling in calls."""
        return self.queued + self._rows_in_flight

    def rows_per_second(self) -> float:
        """What the replicas behind this client finish per second when busy (Little's law over
        the measured calls: ``calls_in_flight`` slots, each taking its rows' measured time)."""
        return self.calls_in_flight / self._seconds_per_row

    def admit(self, rows: int, horizon_s: float) -> None:
        """Refuse (503 + Retry-After, at once) ``rows`` more if the backlog with them could not
        be finished within ``horizon_s`` at the measured rate. A request with nothing ahead of it
        is always admitted, however large, so one long document is never refused outright.
        A model without a running replica (``mark_unavailable``) refuses at once with 503."""
        if self.unavailable is not None:
            raise self._not_ready()
        backlog = self.backlog
        capacity = self.rows_per_second() * horizon_s
        if backlog and backlog + rows > capacity:
            self.stats.refused_rows += rows
            if self._on_refused is not None:
                self._on_refused(rows)
            wait_s = max(1, math.ceil((backlog + rows - capacity) / self.rows_per_second()))
            raise OverloadedError(
                "the service is at capacity: the work already accepted fills what the models can "
                f"finish within the time limit; retry in {wait_s} s",
                retry_after_s=min(wait_s, 60),
            )

    def _dispatch(self) -> None:
        while self._pending and len(self._in_flight) < self.calls_in_flight:
            rows: list[np.ndarray] = []
            futures: list[asyncio.Future[Any]] = []
            while self._pending and len(rows) < self.group_size:
                queue = self._pending.popleft()  # the next request in turn gives one row
                row, future = queue.popleft()
                if queue:
                    self._pending.append(queue)
                if not future.done():  # cancelled while queued: never sent
                    rows.append(row)
                    futures.append(future)
            if not rows:
                continue
            call = _Call(futures, wanted=len(futures))
            self._rows_in_flight += len(rows)
            task = asyncio.ensure_future(self._run(TokenRows.pack(rows), call))
            call.task = task
            self._in_flight[task] = call
            task.add_done_callback(self._finished)
            for future in futures:
                future.add_done_callback(functools.partial(self._abandoned, call=call))
            self.stats.calls += 1
            self.stats.rows += len(rows)
            self.stats.largest_call = max(self.stats.largest_call, len(rows))

    async def _run(self, rows: TokenRows, call: _Call) -> None:
        started = time.perf_counter()
        try:
            try:
                answer = await self._predict(rows)
            finally:
                self._rows_in_flight -= len(call.futures)
            results = split_answer(answer, len(call.futures))
            per_row = (time.perf_counter() - started) / len(call.futures)
            self._seconds_per_row += 0.2 * (per_row - self._seconds_per_row)
        except asyncio.CancelledError:
            for future in call.futures:
                future.cancel()
            raise
        except BaseException as exc:  # every row of the call fails with the call
            for future in call.futures:
                if not future.done():
                    future.set_exception(exc)
            return
        for future, result in zip(call.futures, results, strict=True):
            if future.done():
                continue
            if isinstance(result, ItemError):
                future.set_exception(item_error(result))
            else:
                future.set_result(result)

    def _abandoned(self, future: asyncio.Future[Any], call: _Call) -> None:
        """A row's future finished; if it was cancelled and no row of its call is still wanted,
        cancel the call (which cancels the replica request)."""
        if not future.cancelled():
            return
        call.wanted -= 1
        if call.wanted == 0 and call.task is not None and not call.task.done():
            call.task.cancel()

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._in_flight.pop(task, None)
        self._dispatch()


# --------------------------------------------------------------------------------------------
# The pipeline


@dataclass
class Outcome:
    """A finished analysis: the results by task (plain dicts) and the plan they came from."""

    plan: DocumentPlan
    results: dict[str, dict[str, Any]] = field(default_factory=dict)


CHARS_PER_WINDOW_PRIOR = 40.0
"""Characters per window before any text has been planned (news sentences: ~30-50; the estimate
follows the planned texts)."""

ADMISSION_SHARE = 0.8
"""Accepted work must be finishable within this share of ``request_timeout_s`` (the rest is the
margin for the ingress's own work and for the rate estimate being off)."""


class Pipeline:
    """Plans texts, fans their windows out through the model clients and assembles the answers."""

    def __init__(self, planner: Planner, clients: dict[Task, ModelClient]) -> None:
        self.planner = planner
        self.clients = clients
        # Characters per window of the texts planned so far, per task (moving average): what a
        # text will cost before it is planned (planning a long text takes CPU time of its own).
        self.chars_per_window: dict[Task, float] = dict.fromkeys(clients, CHARS_PER_WINDOW_PRIOR)

    def admit_estimate(self, chars: int, tasks: Sequence[Task], timeout_s: float) -> None:
        """Admission before planning, from the text's length and the windows per character seen
        so far: under a burst of long documents the refusals come at once, not after each text
        has been tokenised. The exact check follows the plan (``admit``)."""
        for task in tasks:
            rows = max(1, int(chars / self.chars_per_window[task]))
            self.clients[task].admit(rows, timeout_s * ADMISSION_SHARE)

    def admit(self, plans: Sequence[DocumentPlan], timeout_s: float) -> None:
        """Admission control: 503 at once unless every model can finish its backlog plus these
        plans' windows within ADMISSION_SHARE of the time limit (serve_app.fanout.ModelClient.admit)."""
        for task, client in self.clients.items():
            rows = sum(len(plan.tasks[task].windows) for plan in plans if task in plan.tasks)
            if rows:
                chars = sum(len(plan.text) for plan in plans if task in plan.tasks)
                self.chars_per_window[task] += 0.2 * (chars / rows - self.chars_per_window[task])
                client.admit(rows, timeout_s * ADMISSION_SHARE)

    def _submit(self, plans: Sequence[DocumentPlan]) -> list[dict[Task, list[asyncio.Future[Any]]]]:
        """Queue every window of ``plans``, one submission per model so that the windows of all
        the texts are packed together; returns each plan's futures by task."""
        futures: list[dict[Task, list[asyncio.Future[Any]]]] = [{} for _ in plans]
        for task, client in self.clients.items():
            owners = [(index, plan.tasks[task]) for index, plan in enumerate(plans) if task in plan.tasks]
            if not owners:
                continue
            rows = [row for _, task_plan in owners for row in task_plan.rows()]
            submitted = iter(client.submit(rows))
            for index, task_plan in owners:
                futures[index][task] = [next(submitted) for _ in task_plan.windows]
        return futures

    @staticmethod
    def _assemble(plan: DocumentPlan, answers: dict[Task, list[Any]]) -> Outcome:
        outcome = Outcome(plan)
        for task, task_plan in plan.tasks.items():
            if task == "ner":
                per_window = [
                    _entities(plan.text, task_plan, window, answer)
                    for window, answer in zip(task_plan.windows, answers[task], strict=True)
                ]
                outcome.results["ner"] = ner_result(plan.text, task_plan, per_window)
            else:
                outcome.results["sentiment"] = sentiment_result(task_plan, answers[task])
        return outcome

    async def _collect(self, futures: list[asyncio.Future[Any]], timeout_s: float) -> list[Any]:
        """Every future's result within ``timeout_s``; on any failure (a row, the time limit, the
        caller going away) the rest are cancelled and the failure is raised as an API error."""
        try:
            async with asyncio.timeout(timeout_s):
                return list(await asyncio.gather(*futures))
        except BaseException as exc:
            for future in futures:
                future.cancel()
            raise api_error(exc, timeout_s=timeout_s) from None

    async def analyze_plans(self, plans: Sequence[DocumentPlan], timeout_s: float) -> list[Outcome]:
        """Analyse planned texts together: all their windows share the model calls."""
        self.admit(plans, timeout_s)
        submitted = self._submit(plans)
        flat = [future for per_plan in submitted for futures in per_plan.values() for future in futures]
        results = iter(await self._collect(flat, timeout_s))
        outcomes = []
        for plan, per_plan in zip(plans, submitted, strict=True):
            answers = {task: [next(results) for _ in futures] for task, futures in per_plan.items()}
            outcomes.append(self._assemble(plan, answers))
        return outcomes

    async def stream(self, plan: DocumentPlan, timeout_s: float) -> AsyncGenerator[dict[str, Any], None]:
        """NDJSON events of one planned text: ``start``, a ``window`` event per window as it
        finishes, then ``summary``. A failure raises (the caller turns it into an ``error``
        line); closing the generator early cancels the windows still running."""
        started = time.perf_counter()
        total = sum(len(task_plan.windows) for task_plan in plan.tasks.values())
        yield {"event": "start", "length": len(plan.text), "tasks": list(plan.tasks), "windows": _counts(plan)}
        where: dict[asyncio.Future[Any], tuple[TaskPlan, int]] = {}
        try:
            # Submitted inside the try: whatever ends this generator (completion, failure, a
            # client that went away) reaches the finally that cancels what is still running.
            for task, futures in self._submit([plan])[0].items():
                where.update((future, (plan.tasks[task], index)) for index, future in enumerate(futures))
            answers: dict[Task, list[Any]] = {task: [None] * len(p.windows) for task, p in plan.tasks.items()}
            pending: set[asyncio.Future[Any]] = set(where)
            done = 0
            # The time limit is a deadline checked at each wait, not an asyncio.timeout around the
            # loop: that would span the yields, and fire while the caller is busy elsewhere (a client
            # reading slowly), cancelling the caller instead of ending the stream with an error line.
            deadline = asyncio.get_running_loop().time() + timeout_s
            while pending:
                try:
                    remaining = deadline - asyncio.get_running_loop().time()
                    if remaining <= 0:
                        raise TimeoutError
                    finished, pending = await asyncio.wait(
                        pending, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
                    )
                    if not finished:
                        raise TimeoutError
                    results = [
                        (where[future], future.result())
                        for future in sorted(finished, key=lambda f: (where[f][0].task, where[f][1]))
                    ]
                except BaseException as exc:
                    raise api_error(exc, timeout_s=timeout_s) from None
                for (task_plan, index), answer in results:
                    answers[task_plan.task][index] = answer
                    done += 1
                    yield _window_event(plan, task_plan, index, answer, done, total)
            outcome = self._assemble(plan, answers)
            elapsed_ms = round((time.perf_counter() - started) * 1000, 2)
            yield {"event": "summary", **outcome.results, "elapsed_ms": elapsed_ms}
        finally:
            for future in where:
                future.cancel()


def _counts(plan: DocumentPlan) -> dict[str, int]:
    counts = {"ner": 0, "sentiment": 0}
    counts.update(plan.window_counts())
    return counts


def _entities(
    text: str, plan: TaskPlan, window: chunking.Window, answer: tuple[np.ndarray, np.ndarray]
) -> list[Entity]:
    tags, confidences = answer
    labels = plan.model.manifest.labels
    return build_entities(
        text,
        [labels[tag] for tag in tags.tolist()],
        plan.tokens.offsets[window.token_start : window.token_end].tolist(),
        confidences.tolist(),
        plan.model.manifest.tag_scheme or "BIO",
    )


def _window_event(
    plan: DocumentPlan, task_plan: TaskPlan, index: int, answer: Any, done: int, total: int
) -> dict[str, Any]:
    window = task_plan.windows[index]
    event: dict[str, Any] = {
        "event": "window",
        "task": task_plan.task,
        "index": window.index,
        "start": window.start,
        "end": window.end,
        "done": done,
        "total": total,
    }
    if task_plan.task == "ner":
        event["entities"] = [entity.to_dict() for entity in _entities(plan.text, task_plan, window, answer)]
    else:
        event["sentences"] = [sentiment_window_event(window, answer, task_plan.model.manifest.labels)]
    return event
