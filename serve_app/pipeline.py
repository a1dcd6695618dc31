"""The request pipeline behind /v1/ner, /v1/sentiment, /v1/analyze, /v1/analyze/stream and
/v1/batch: admit → fan out → collect → assemble.

Plain Python (no FastAPI, no handles): the model calls are coroutine functions injected by the
ingress, so the whole pipeline is unit-tested with fakes.

- **Plan** (``serve_app.plan``): each text is tokenised once per distinct tokenizer and its
  windows are planned on those tokens; a window's rows of token ids are what a model is sent.
- **Fan out** (``serve_app.model_client``): one client per model coalesces the windows of every
  request in flight — of one document, of a batch, of concurrent requests — into calls of at most
  ``window_group_size`` rows, with at most ``calls_in_flight`` calls outstanding.
- **Assemble** (``serve_app.results``, ``serve_app.events``): window answers become entities with
  exact document offsets (merged across overlapping windows) or a length-weighted sentiment, and
  a stream's events.

Every path awaits its windows through :meth:`Pipeline._collect` or :meth:`Pipeline.stream`: one
time limit, one cancellation path (a request that fails, times out or is abandoned cancels its
windows, and a call none of whose windows is still wanted is cancelled in flight), one mapping
of failures to API errors (``serve_app.errors.api_error``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass

from deployments.runtime.answers import RowAnswer
from serve_app.errors import api_error
from serve_app.events import StartEvent, StreamEvent, SummaryEvent, WindowEvent
from serve_app.model_client import ModelClient
from serve_app.plan import DocumentPlan, Planner, TaskPlan
from serve_app.results import Analysis, assemble
from serve_app.schemas import Task

Futures = dict[Task, list["asyncio.Future[RowAnswer]"]]
"""One text's row futures by task, in the order of its windows."""


@dataclass(frozen=True)
class Outcome:
    """A finished analysis: one text's results and the plan they came from."""

    plan: DocumentPlan
    analysis: Analysis


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

    def _submit(self, plans: Sequence[DocumentPlan]) -> list[Futures]:
        """Queue every window of ``plans``, one submission per model so that the windows of all
        the texts are packed together; returns each plan's futures by task."""
        futures: list[Futures] = [{} for _ in plans]
        for task, client in self.clients.items():
            owners = [(index, plan.tasks[task]) for index, plan in enumerate(plans) if task in plan.tasks]
            if not owners:
                continue
            rows = [row for _, task_plan in owners for row in task_plan.rows()]
            submitted = iter(client.submit(rows))
            for index, task_plan in owners:
                futures[index][task] = [next(submitted) for _ in task_plan.windows]
        return futures

    async def _collect(self, futures: list[asyncio.Future[RowAnswer]], timeout_s: float) -> list[RowAnswer]:
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
            outcomes.append(Outcome(plan, assemble(plan, answers)))
        return outcomes

    def reserve(self, plan: DocumentPlan, timeout_s: float) -> Futures:
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
        submitted: Futures | None = None,
    ) -> AsyncGenerator[StreamEvent, None]:
        """NDJSON events of one planned text: ``start``, a ``window`` event per window as it
        finishes, then ``summary``. A failure raises (the caller turns it into an ``error``
        line); closing the generator early cancels the windows still running. ``submitted``:
        the windows ``reserve`` queued (else they are queued when the stream starts)."""
        started = time.perf_counter()
        total = sum(len(task_plan.windows) for task_plan in plan.tasks.values())
        yield StartEvent.of(plan)
        where: dict[asyncio.Future[RowAnswer], tuple[TaskPlan, int]] = {}
        try:
            # Submitted inside the try: whatever ends this generator (completion, failure, a
            # client that went away) reaches the finally that cancels what is still running.
            by_task = submitted if submitted is not None else self._submit([plan])[0]
            for task, futures in by_task.items():
                where.update((future, (plan.tasks[task], index)) for index, future in enumerate(futures))
            pending: set[asyncio.Future[RowAnswer]] = set(where)
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
                    done += 1
                    yield WindowEvent.of(plan.text, task_plan, index, answer, done, total)
            answers = {task: [future.result() for future in futures] for task, futures in by_task.items()}
            analysis = assemble(plan, answers)
            yield SummaryEvent(analysis, round((time.perf_counter() - started) * 1000, 2))
        finally:
            for future in where:
                future.cancel()


def _cancel_all(futures: Sequence[asyncio.Future[RowAnswer]]) -> None:
    for future in futures:
        future.cancel()
