"""The client of one model: packs the rows of every request in flight into calls, repeats calls
a replica lost or refused, measures the rate, and admits or refuses new work.

Plain Python (asyncio, no Ray imports): a call is a coroutine function injected by the ingress
(``handle.remote``), so the client is unit-tested with fakes.

**Order.** Requests are served oldest first, so under sustained load they complete one after
another at the rate the models compute (round-robin across requests, as before, finished equal
long documents all together, after their deadline). A request small enough to finish in the
next call (``SHORT_ROWS`` rows or fewer) goes first in that call, so a short request is answered
promptly even behind long documents.

**Counters.** The tokens queued and in calls are counters updated when a row is queued, sent,
answered or abandoned (each row's state changes once), never a scan of the queue; a request that
is cancelled while its rows wait releases them at once.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import numpy as np

from deployments.runtime.answers import ItemError, ModelAnswer, RowAnswer, decode
from deployments.runtime.rows import TokenRows
from serve_app import admission
from serve_app.errors import REPLICA_LOST, ModelsNotReadyError, item_error

logger = logging.getLogger("ray.serve")

Call = Callable[[TokenRows], Awaitable[ModelAnswer]]
"""One attempt of a model call: packed rows in, the replica's answer for them out
(``deployments.runtime.answers``: packed tags or probabilities, or ``FailedRows`` with an
``ItemError`` in place of each row that failed)."""

CALL_TARGET_S = 0.05
"""A call carries at most the rows the model computes in about this long (at the measured rate,
and never more than ``group_size``): at embedded size that is a full group, at BERT-base size a few
rows, so a short request never waits long for the call in front of it (measured at base size with
16-row calls: a short sentence took ~0.7 s behind long documents)."""

SHORT_ROWS = 4
"""A request with at most this many rows waiting goes first in the next call."""

REFUSAL_BACKOFF_S = (0.25, 0.5, 1.0, 2.0, 4.0, 4.0)
"""Waits before each repeat of a call a replica refused (over its memory budget). Serve routes
each repeat afresh, and a replica that answers at once looks idle to its router, so repeats may
land on it again until it leaves the routing table: after 3 failed health checks 2 s apart
(Serve's threshold), well within these ~12 s; then the call lands on a sibling or the replacement."""

QUEUED, SENT, DONE = 0, 1, 2


class _Row:
    """One row of one request: its tokens, its future and where it is (queued, sent, done)."""

    __slots__ = ("future", "ids", "state")

    def __init__(self, ids: np.ndarray, future: asyncio.Future[RowAnswer]) -> None:
        self.ids = ids
        self.future = future
        self.state = QUEUED


@dataclass
class _Call:
    rows: list[_Row]
    task: asyncio.Task[None] | None = None
    wanted: int = 0


@dataclass
class ClientStats:
    calls: int = 0
    rows: int = 0
    largest_call: int = 0
    refused_tokens: int = 0


class ModelClient:
    """Coalesces rows from every request into calls of at most ``group_size`` rows, with at most
    ``calls_in_flight`` calls outstanding. Each row's result arrives on its own future."""

    def __init__(
        self,
        call: Call,
        *,
        group_size: int,
        calls_in_flight: int,
        name: str = "model",
        on_refused: Callable[[int], None] | None = None,
        on_retry: Callable[[str], None] | None = None,
        meter: admission.RateMeter | None = None,
        refusal_backoff_s: Sequence[float] = REFUSAL_BACKOFF_S,
    ) -> None:
        self._call = call
        self.name = name
        self.group_size = group_size
        self.calls_in_flight = calls_in_flight
        self._on_refused = on_refused
        self._on_retry = on_retry
        self.meter = meter or admission.RateMeter()
        self.refusal_backoff_s = tuple(refusal_backoff_s)
        self._pending: deque[deque[_Row]] = deque()  # one queue of rows per submission, oldest first
        self._in_flight: dict[asyncio.Task[None], _Call] = {}
        self.unavailable: str | None = None  # why the model cannot answer now (no replica), if so
        self.queued_tokens = 0
        self.in_flight_tokens = 0
        self._queued_rows = 0
        self.stats = ClientStats()

    # ---------------------------------------------------------------- configuration and state

    def configure(self, *, group_size: int, calls_in_flight: int) -> None:
        self.group_size = group_size
        self.calls_in_flight = calls_in_flight
        self._dispatch()

    def mark_unavailable(self, reason: str) -> None:
        """The model has had no running replica for too long: fail what waits for it, now and
        until ``mark_available``, with 503 models_not_ready instead of letting callers hang."""
        self.unavailable = reason
        while self._pending:
            for row in self._pending.popleft():
                if not row.future.done():
                    row.future.set_exception(self._not_ready())
        for task, call in list(self._in_flight.items()):
            for row in call.rows:
                if not row.future.done():
                    row.future.set_exception(self._not_ready())
            task.cancel()

    def mark_available(self) -> None:
        self.unavailable = None

    def _not_ready(self) -> ModelsNotReadyError:
        return ModelsNotReadyError(f"{self.unavailable}; retry shortly", retry_after_s=5)

    @property
    def queued(self) -> int:
        """Rows waiting for a call (rows whose requests gave up are not counted)."""
        return self._queued_rows

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    @property
    def backlog(self) -> int:
        """Tokens accepted and not yet answered: queued here plus travelling in calls."""
        return self.queued_tokens + self.in_flight_tokens

    def tokens_per_second(self) -> float:
        """What the replicas behind this client finish per second when busy."""
        return self.calls_in_flight / self.meter.seconds_per_token

    # ---------------------------------------------------------------- admission

    def admit(self, tokens: int, horizon_s: float, limit_s: float, *, rows: int | None = None) -> None:
        """Accept ``tokens`` more work (in ``rows`` rows, if known) or raise
        (``serve_app.admission.decide``): 413 when the request alone cannot finish within
        ``horizon_s``, 503 + Retry-After when the backlog with it could not (a request of at most
        ``SHORT_ROWS`` rows goes first, so more backlog is allowed ahead of it). A model without
        a running replica refuses at once with 503."""
        if self.unavailable is not None:
            raise self._not_ready()
        try:
            admission.decide(
                model=self.name,
                own_tokens=tokens,
                backlog_tokens=self.backlog,
                slots=self.calls_in_flight,
                meter=self.meter,
                horizon_s=horizon_s,
                limit_s=limit_s,
                short=rows is not None and rows <= SHORT_ROWS,
            )
        except Exception:
            self.stats.refused_tokens += tokens
            if self._on_refused is not None:
                self._on_refused(tokens)
            raise

    async def calibrate(self, rows: Sequence[np.ndarray], *, repeats: int, warm: bool) -> float:
        """Time ``repeats`` calls of ``rows`` on the served model (after a first, warming call if
        ``warm``) and give the fastest to the meter (``serve_app.calibration`` says when and how
        often); returns the seconds per token it measured."""
        packed = TokenRows.pack(list(rows))
        if warm:
            await self._attempts(packed)
        fastest = math.inf
        for _ in range(max(1, repeats)):
            _, seconds = await self._attempts(packed)  # its last attempt's time
            fastest = min(fastest, seconds)
        tokens = sum(len(row) for row in rows)
        self.meter.calibrate(tokens, fastest)
        return fastest / tokens

    # ---------------------------------------------------------------- rows in, calls out

    def submit(self, rows: Sequence[np.ndarray]) -> list[asyncio.Future[RowAnswer]]:
        """Queue ``rows`` (one request's); returns one future per row, resolved with its result."""
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in rows]
        if self.unavailable is not None:
            for future in futures:
                future.set_exception(self._not_ready())
            return futures
        if futures:
            queue = deque(_Row(ids, future) for ids, future in zip(rows, futures, strict=True))
            for row in queue:
                self.queued_tokens += len(row.ids)
                row.future.add_done_callback(functools.partial(self._row_done, row))
            self._queued_rows += len(queue)
            self._pending.append(queue)
        self._dispatch()
        return futures

    def _row_done(self, row: _Row, future: asyncio.Future[RowAnswer]) -> None:
        """A row's future finished (answered, failed or abandoned): release what it held."""
        if row.state == QUEUED:  # abandoned while waiting: never sent
            self.queued_tokens -= len(row.ids)
            self._queued_rows -= 1
        row.state = DONE

    def _take(self) -> list[_Row]:
        """The rows of the next call: every short request first (it finishes in this call), then
        the oldest requests' rows in order."""
        taken: list[_Row] = []
        # Tokens of one call, once the rate is measured (the prior is for admission, not sizing).
        budget = max(1, int(CALL_TARGET_S / self.meter.seconds_per_token)) if self.meter.calibrated else 1 << 30
        tokens = 0
        if len(self._pending) > 1:
            for queue in self._pending:
                if len(queue) <= SHORT_ROWS and len(taken) + len(queue) <= self.group_size:
                    taken.extend(queue)
                    tokens += sum(len(row.ids) for row in queue)
                    queue.clear()
        while self._pending and len(taken) < self.group_size and (not taken or tokens < budget):
            queue = self._pending[0]
            while queue and len(taken) < self.group_size and (not taken or tokens < budget):
                row = queue.popleft()
                taken.append(row)
                tokens += len(row.ids)
            if not queue:
                self._pending.popleft()
        if any(not queue for queue in self._pending):
            self._pending = deque(queue for queue in self._pending if queue)
        return [row for row in taken if row.state == QUEUED]  # rows abandoned while queued are dropped

    def _dispatch(self) -> None:
        while self._pending and len(self._in_flight) < self.calls_in_flight:
            rows = self._take()
            if not rows:
                continue
            tokens = 0
            for row in rows:
                row.state = SENT
                tokens += len(row.ids)
            self.queued_tokens -= tokens
            self._queued_rows -= len(rows)
            self.in_flight_tokens += tokens
            call = _Call(rows, wanted=len(rows))
            task = asyncio.ensure_future(self._run(TokenRows.pack([row.ids for row in rows]), call, tokens))
            call.task = task
            self._in_flight[task] = call
            task.add_done_callback(self._finished)
            for row in rows:
                row.future.add_done_callback(functools.partial(self._abandoned, call=call))
            self.stats.calls += 1
            self.stats.rows += len(rows)
            self.stats.largest_call = max(self.stats.largest_call, len(rows))

    async def _attempts(self, rows: TokenRows) -> tuple[ModelAnswer, float]:
        """The call, repeated when the replica serving it is lost (once) or refuses it (over its
        memory budget: up to ``len(refusal_backoff_s)`` times, with a growing wait). Returns the
        answer and how long its successful attempt took (retries and waits excluded).

        Model calls are pure, so repeating one is safe; Serve routes the repeat to a live replica
        (or holds it until the controller has replaced the lost one)."""
        lost = refusals = 0
        while True:
            began = time.perf_counter()
            try:
                answer = await self._call(rows)
            except REPLICA_LOST as exc:
                lost += 1
                if lost > 1:
                    raise
                logger.warning("model replica lost under a call (%s); retrying on another", type(exc).__name__)
                if self._on_retry is not None:
                    self._on_retry("replica_lost")
                continue
            if refusals < len(self.refusal_backoff_s) and answer.refused:
                if self._on_retry is not None:
                    self._on_retry("refused")
                await asyncio.sleep(self.refusal_backoff_s[refusals])
                refusals += 1
                continue
            return answer, time.perf_counter() - began

    async def _run(self, rows: TokenRows, call: _Call, tokens: int) -> None:
        try:
            try:
                answer, seconds = await self._attempts(rows)
            finally:
                self.in_flight_tokens -= tokens
            results = decode(answer, len(call.rows))
            if not answer.refused:
                self.meter.observe(tokens, seconds)
        except asyncio.CancelledError:
            for row in call.rows:
                row.future.cancel()
            raise
        except BaseException as exc:  # every row of the call fails with the call
            for row in call.rows:
                if not row.future.done():
                    row.future.set_exception(exc)
            return
        for row, result in zip(call.rows, results, strict=True):
            if row.future.done():
                continue
            if isinstance(result, ItemError):
                row.future.set_exception(item_error(result))
            else:
                row.future.set_result(result)

    def _abandoned(self, future: asyncio.Future[RowAnswer], call: _Call) -> None:
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
