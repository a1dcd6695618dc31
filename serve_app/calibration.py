"""Timing the served models: the start-up calibration, and a 413 by the estimate confirmed by
timing them again before it is answered.

Admission (``serve_app.admission``) judges a request's own work by the fastest rate measured. A
calibration timed while something else held the cores (replicas starting beside a new ingress,
another application, a busy node) overstates it, and a request refused with 413 is never
computed, so no call of its own would correct the estimate: on a quiet service every long
document after such a start would be refused for good. So a 413 that rests on the estimate
(``EstimatedTooLargeError``, never a configured limit) is answered only after the models have
been timed again: at most once per ``RETIME_INTERVAL_S``, one timing shared by every request
refused meanwhile, after which the request is judged again. A timing can only lower the rate a
request's own work is judged by (``RateMeter.calibrate``), so the re-check never refuses more.

Pure asyncio over the model clients: no Ray.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

from serve_app.chunking import NUM_SPECIAL_TOKENS
from serve_app.errors import EstimatedTooLargeError
from serve_app.model_client import ModelClient
from serve_app.plan import ServedModel
from serve_app.schemas import Task

logger = logging.getLogger("ray.serve")

T = TypeVar("T")

CALIBRATION_TEXT = "新华社北京三月五日电，国务院总理在人民大会堂作政府工作报告，代表们认真审议。"
"""A typical sentence: the calibration's rows are copies of it (cut to what the model takes)."""

CALIBRATION_ROWS = 16
"""Rows of a calibration call (at most a group): enough to time a call's per-token cost, few
enough that the first readiness check does not wait long at BERT-base size."""

CALIBRATION_REPEATS = 3
"""Timed calls of the start-up calibration, after a warming call; the fastest sets the rate
(anything else on the cores, such as replicas starting beside the new ingress, only slows a call)."""

RETIME_INTERVAL_S = 30.0
"""A 413 by the estimate re-times the models at most this often; between timings it is answered
at once (a client sending too much gets its answer without a timing each time)."""

RETIME_REPEATS = 2
"""Timed calls of a re-timing (the replicas are warm by then: no warming call)."""


class Calibrator:
    """Times each model through its client, the models at once (as /v1/analyze runs them, when
    they share the cores)."""

    def __init__(
        self,
        models: Mapping[Task, ServedModel],
        clients: Mapping[Task, ModelClient],
        group_size: Callable[[], int],
    ) -> None:
        self.models = models
        self.clients = clients
        self._group_size = group_size
        self._started: asyncio.Future[None] | None = None
        self._retimed_at = -RETIME_INTERVAL_S
        self._retiming: asyncio.Future[None] | None = None
        self.retimings = 0

    def start(self) -> None:
        """The start-up calibration, begun by the first request (once; later calls do nothing)."""
        if self._started is None:
            self._started = asyncio.ensure_future(self.calibrate(warm=True, repeats=CALIBRATION_REPEATS))

    async def calibrate(self, *, warm: bool, repeats: int) -> None:
        """Time every model; a model whose timing fails keeps its rate (its first calls measure it)."""

        async def one(task: Task) -> None:
            client = self.clients[task]
            try:
                model = self.models[task]
                ids = model.tokenizer.encode([CALIBRATION_TEXT])[0].ids[: model.max_tokens - NUM_SPECIAL_TOKENS]
                rows = [ids] * min(CALIBRATION_ROWS, self._group_size())
                seconds = await client.calibrate(rows, repeats=repeats, warm=warm)
                logger.info("%s timed: %.3f ms per token per call slot", task, seconds * 1000)
            except Exception:
                logger.warning("timing %s failed; its calls measure the rate", task, exc_info=True)

        await asyncio.gather(*(one(task) for task in self.clients))

    async def retime(self) -> bool:
        """Time the models again, unless that was done less than RETIME_INTERVAL_S ago; a timing
        in progress is joined. Returns whether the rates may have changed since the caller's check."""
        if self._retiming is None or self._retiming.done():
            now = time.monotonic()
            if now - self._retimed_at < RETIME_INTERVAL_S:
                return False
            self._retimed_at = now
            self.retimings += 1
            self._retiming = asyncio.ensure_future(self.calibrate(warm=False, repeats=RETIME_REPEATS))
        await asyncio.shield(self._retiming)  # a caller that goes away leaves the timing to the others
        return True

    async def confirmed(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """``attempt()`` (admission, then the work); a 413 by the estimate is answered only if the
        attempt still raises it after the models were timed again. An attempt that raises it has
        queued nothing (admission comes before any row is submitted), so it can be repeated."""
        try:
            return await attempt()
        except EstimatedTooLargeError:
            if not await self.retime():
                raise
        return await attempt()
