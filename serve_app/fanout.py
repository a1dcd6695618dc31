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
import hashlib
import time
import unicodedata
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from deployments.runtime.model_dir import Manifest, ModelDir
from deployments.runtime.spans import Entity, build_entities
from deployments.runtime.tokenizer import Tokenized, Tokenizer
from serve_app import chunking
from serve_app.errors import EmptyTextError, api_error
from serve_app.model_client import Call, ModelClient

__all__ = ["Call", "ModelClient"]

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

    def token_count(self) -> int:
        """Tokens the model is sent for this plan (overlaps counted in every window)."""
        return sum(window.token_end - window.token_start for window in self.windows)


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
# The pipeline


@dataclass
class Outcome:
    """A finished analysis: the results by task (plain dicts) and the plan they came from."""

    plan: DocumentPlan
    results: dict[str, dict[str, Any]] = field(default_factory=dict)


TOKENS_PER_CHAR_PRIOR = 1.0
"""Tokens per character before any text has been planned (BERT-Chinese: one per CJK character;
the estimate follows the planned texts)."""

SHORT_TEXT_CHARS = 200
"""A text this short is taken as a short request in the estimate before planning (the exact
check after planning counts its rows)."""

ADMISSION_SHARE = 0.8
"""Accepted work must be finishable within this share of ``request_timeout_s`` (the rest is the
margin for the ingress's own work and for the rate estimate being off)."""


class Pipeline:
    """Plans texts, fans their windows out through the model clients and assembles the answers."""

    def __init__(self, planner: Planner, clients: dict[Task, ModelClient]) -> None:
        self.planner = planner
        self.clients = clients
        # Tokens per character of the texts planned so far, per task (moving average): what a
        # text will cost before it is planned (planning a long text takes CPU time of its own).
        self.tokens_per_char: dict[Task, float] = dict.fromkeys(clients, TOKENS_PER_CHAR_PRIOR)

    def admit_estimate(self, chars: int, tasks: Sequence[Task], timeout_s: float) -> None:
        """Admission before planning, from the text's length and the tokens per character seen
        so far: under a burst of long documents the refusals come at once, not after each text
        has been tokenised. The exact check follows the plan (``admit``)."""
        for task in tasks:
            tokens = max(1, int(chars * self.tokens_per_char[task]))
            rows = 1 if chars <= SHORT_TEXT_CHARS else None  # a sentence or two; long texts are checked exactly
            self.clients[task].admit(tokens, timeout_s * ADMISSION_SHARE, timeout_s, rows=rows)

    def admit(self, plans: Sequence[DocumentPlan], timeout_s: float) -> None:
        """Admission control (``serve_app.admission``): 413 when these plans alone cannot finish
        within ADMISSION_SHARE of the time limit, 503 at once when the backlog with them could not."""
        for task, client in self.clients.items():
            tokens = sum(plan.tasks[task].token_count() for plan in plans if task in plan.tasks)
            if tokens:
                chars = sum(len(plan.text) for plan in plans if task in plan.tasks)
                if chars:
                    self.tokens_per_char[task] += 0.2 * (tokens / chars - self.tokens_per_char[task])
                rows = sum(len(plan.tasks[task].windows) for plan in plans if task in plan.tasks)
                client.admit(tokens, timeout_s * ADMISSION_SHARE, timeout_s, rows=rows)

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

    def reserve(self, plan: DocumentPlan, timeout_s: float) -> dict[Task, list[asyncio.Future[Any]]]:
        """Admit a stream's text and queue its windows now, before the response starts, so the
        work it will ask for counts in every later admission. Whatever happens to the response
        (a client gone before its first line, a stream never iterated), its windows are given up
        when the time limit has passed."""
        self.admit([plan], timeout_s)
        submitted = self._submit([plan])[0]
        futures = [future for per_task in submitted.values() for future in per_task]
        asyncio.get_running_loop().call_later(timeout_s + 1, _cancel_all, futures)
        return submitted

    async def stream(
        self,
        plan: DocumentPlan,
        timeout_s: float,
        submitted: dict[Task, list[asyncio.Future[Any]]] | None = None,
    ) -> AsyncGenerator[dict[str, Any], None]:
        """NDJSON events of one planned text: ``start``, a ``window`` event per window as it
        finishes, then ``summary``. A failure raises (the caller turns it into an ``error``
        line); closing the generator early cancels the windows still running. ``submitted``:
        the windows ``reserve`` queued (else they are queued when the stream starts)."""
        started = time.perf_counter()
        total = sum(len(task_plan.windows) for task_plan in plan.tasks.values())
        yield {"event": "start", "length": len(plan.text), "tasks": list(plan.tasks), "windows": _counts(plan)}
        where: dict[asyncio.Future[Any], tuple[TaskPlan, int]] = {}
        try:
            # Submitted inside the try: whatever ends this generator (completion, failure, a
            # client that went away) reaches the finally that cancels what is still running.
            for task, futures in (submitted if submitted is not None else self._submit([plan])[0]).items():
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


def _cancel_all(futures: Sequence[asyncio.Future[Any]]) -> None:
    for future in futures:
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
