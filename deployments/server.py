"""The shared shape of a model deployment: live batch config, per-item failure isolation, health
and metadata. Subclasses load their model in ``__init__`` and define the ``@serve.batch`` method.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np

from deployments.batching import BatchConfig, split_by_token_budget
from deployments.memory import MemoryBudget, MemoryStats, Refusal, resident_bytes
from deployments.runtime.answers import ItemError, ModelAnswer, ProbabilityRows, RowAnswer, TagRows, encode
from deployments.runtime.model_dir import Manifest
from deployments.runtime.rows import TokenRows
from deployments.runtime.tokenizer import NUM_SPECIAL_PER_SEQUENCE

logger = logging.getLogger("ray.serve")
R = TypeVar("R", bound=RowAnswer)
A = TypeVar("A")
R2 = TypeVar("R2")


@dataclass
class ServerStats:
    """Counters of what this replica has computed (for tests, benchmarks and debugging)."""

    replica: str = ""
    items: int = 0
    batches: int = 0
    largest_batch: int = 0
    rss_bytes: int = 0
    compute_s: float = 0.0  # time spent computing batches (tokens in, answers out)


@dataclass
class BusyClock:
    """The share of wall time a replica spends computing, read as deltas between two reads.

    This is what the model deployments autoscale on (serve_app.autoscaling_policy): a replica's
    ongoing requests say only that a call is there (the ingress keeps one on each replica while any
    document is in flight), not whether the replica's core is short.
    """

    clock: Callable[[], float] = time.monotonic
    busy_s: float = 0.0
    started: float | None = None
    _last_read: tuple[float, float] | None = None

    def start(self) -> None:
        self.started = self.clock()

    def stop(self) -> None:
        if self.started is not None:
            self.busy_s += self.clock() - self.started
            self.started = None

    def share_since_last_read(self) -> float:
        """Busy time over wall time since the previous read (a batch in progress counts so far)."""
        now = self.clock()
        busy = self.busy_s + (now - self.started if self.started is not None else 0.0)
        previous = self._last_read
        self._last_read = (now, busy)
        if previous is None or now <= previous[0]:
            return 0.0
        return min(max((busy - previous[1]) / (now - previous[0]), 0.0), 1.0)


def _memory_gauges() -> tuple[Any, Any]:
    from ray.serve.metrics import Gauge

    resident = Gauge(
        "zhserve_replica_resident_bytes",
        description="Resident memory of a model replica, compared with its memory_limit_mb budget.",
    )
    budget = Gauge(
        "zhserve_replica_memory_budget_bytes",
        description="The replica's enforced memory budget (memory_limit_mb); 0 when no budget is set.",
    )
    return resident, budget


def _refusal_counter() -> Any:
    from ray.serve.metrics import Counter

    return Counter(
        "zhserve_replica_memory_refusals",
        description="Rows a model replica refused for memory: over_budget (its resident memory was over the budget), "
        "no_headroom (the row would not fit the budget now), never_fits (nor on an idle replica).",
        tag_keys=("reason",),
    )


BUSY_SHARE_METRIC = "busy_share"
"""The custom autoscaling metric a model replica reports (serve_app.autoscaling_policy reads it)."""

TEST_HOOKS_ENV = "ZHSERVE_TEST_HOOKS"
"""Set to 1 (tests only) to enable ``ModelServerBase.grow``; production replicas refuse it."""


def _replica_id() -> str:
    from ray import serve

    try:
        return serve.get_replica_context().replica_id.unique_id
    except RuntimeError:  # constructed outside a replica (unit tests)
        return "local"


class ReplicaOverMemoryError(RuntimeError):
    """The replica's resident memory exceeds its budget; Serve will replace it."""


CALIBRATION_POSITIONS = 2048
"""Padded positions of the call that measures, at replica start, what a position costs: full-length
rows, so the figure includes attention's share at the longest length (the dearest per position),
and enough of them that the arena's growth steps are small beside it."""


class ModelServerBase(Generic[R]):
    """Base of the NER and sentiment deployment classes (plain Python; Serve wraps them)."""

    model: Any
    predict: Any  # the subclass's @serve.batch method

    def __init__(self, manifest: Manifest, memory: MemoryBudget, *, health_probe: str) -> None:
        self.manifest = manifest
        self.memory = memory
        self.health_probe = health_probe
        self.config = BatchConfig()
        self._stats = ServerStats(replica=_replica_id())
        self._rss_gauge, self._budget_gauge = _memory_gauges()
        self._refusals = _refusal_counter()
        self._ballast: list[bytearray] = []
        self._busy = BusyClock()
        self.memory.calibrate(self._calibration_call)
        logger.info(
            "memory: %.0f bytes per padded position in flight, %d MiB idle",
            self.memory.bytes_per_token,
            self.memory.idle_bytes >> 20,
        )

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Apply ``user_config`` live: batch size, batch wait, token budget, memory budget."""
        self.config = BatchConfig.model_validate(user_config or {})
        limit = self.config.memory_limit_mb
        self.memory.apply(None if limit is None else limit << 20)
        self._budget_gauge.set(self.memory.limit_bytes or 0)
        self.predict.set_max_batch_size(self.config.max_batch_size)
        self.predict.set_batch_wait_timeout_s(self.config.batch_wait_timeout_s)

    async def _run(self, compute: Callable[[A], R2], argument: A) -> R2:
        """Run a batch's computation on the event loop (the default) or in a worker thread.

        On the loop, the calls that arrive while a batch computes wait in Serve's queue and form
        the next batch whole; in a thread, the loop keeps forming small batches that then wait
        for the model in turn (``compute_in_thread``, measured in load_tests/bench.py).
        """
        if self.config.compute_in_thread:
            return await asyncio.to_thread(compute, argument)
        return compute(argument)

    def record_autoscaling_stats(self) -> dict[str, float]:
        """Serve calls this every metrics interval (custom autoscaling metrics): the share of the
        time since the last call this replica spent computing; the model deployments' policy
        (serve_app.autoscaling_policy.BusyShare) adds the shares up."""
        return {BUSY_SHARE_METRIC: self._busy.share_since_last_read()}

    def info(self) -> dict[str, Any]:
        """The served model's manifest summary (what ``GET /v1/models`` lists)."""
        return self.manifest.summary()

    def stats(self) -> ServerStats:
        """Items and batches computed so far by this replica, and its resident memory now."""
        self._stats.rss_bytes = resident_bytes()
        return ServerStats(**vars(self._stats))

    def memory_stats(self) -> MemoryStats:
        """The memory budget's figures: the measured cost of a position, what the arena holds, and
        how many sub-batches were narrowed or rows refused to stay within the budget."""
        return self.memory.stats()

    def check_health(self) -> None:
        """Serve calls this periodically; raising marks the replica unhealthy and replaces it."""
        over, rss = self.memory.over_budget()
        self._rss_gauge.set(rss)
        # Re-reported with every check (not only in reconfigure): the dashboard divides one series by
        # the other per replica, and a budget recorded only once can be missing from a later scrape.
        self._budget_gauge.set(self.memory.limit_bytes or 0)
        if over:
            raise ReplicaOverMemoryError(
                f"resident memory {rss >> 20} MiB exceeds the budget of {self.config.memory_limit_mb} MiB"
            )
        self._probe(self.health_probe)

    def grow(self, megabytes: int) -> dict[str, Any]:
        """Test hook (only with ``ZHSERVE_TEST_HOOKS=1``): allocate and touch ``megabytes`` of
        memory that stays allocated, as a leak would."""
        if os.environ.get(TEST_HOOKS_ENV) != "1":
            raise PermissionError(f"grow() is a test hook; set {TEST_HOOKS_ENV}=1 to enable it")
        ballast = bytearray(megabytes << 20)
        ballast[:: 1 << 12] = b"\x01" * len(range(0, len(ballast), 1 << 12))  # touch every page
        self._ballast.append(ballast)
        return {
            "replica": self._stats.replica,
            "rss_bytes": resident_bytes(),
            "limit_bytes": self.memory.limit_bytes,
        }

    def _calibration_call(self) -> int:
        """Compute one call of full-length rows (the health probe's tokens repeated); return the
        padded positions it computed at once."""
        ids = np.asarray(self.model.tokenizer.tokenize([self.health_probe])[0][0], dtype=np.int32)
        length = self.manifest.max_seq_length
        rows = [np.resize(ids, length - NUM_SPECIAL_PER_SEQUENCE)] * max(1, CALIBRATION_POSITIONS // length)
        self._infer(rows)
        return int(self.model.tokens_in_flight([len(row) for row in rows]))

    def _probe(self, text: str) -> None:
        raise NotImplementedError

    def _infer(self, rows: list[np.ndarray]) -> list[R]:
        """The model's answer for each row of token ids."""
        raise NotImplementedError

    def _pack(self, results: list[R]) -> TagRows | ProbabilityRows:
        """One group's answers in the compact form the ingress unpacks."""
        raise NotImplementedError

    def _answer_groups(self, groups: list[TokenRows]) -> list[ModelAnswer]:
        """One answer per group (each group is one caller's call), computed as one batch.

        A group whose rows all succeeded gets its packed answer; a group with a failed row gets
        ``FailedRows`` with an ``ItemError`` in that row's place, so the rows of other requests
        that share the group are still answered (``deployments.runtime.answers.encode``).
        """
        started = time.perf_counter()
        self._busy.start()
        try:
            rows = [row for group in groups for row in group.rows()]
            results = self._infer_guarded(rows)
        finally:
            self._busy.stop()
        answers: list[ModelAnswer] = []
        position = 0
        for group in groups:
            part = results[position : position + len(group)]
            position += len(group)
            answers.append(encode(part, self._pack))
        self._stats.compute_s += time.perf_counter() - started
        return answers

    def _infer_guarded(self, rows: list[np.ndarray]) -> list[R | ItemError]:
        """Infer a batch in sub-batches that fit the token budget and the memory budget; a row
        that does not fit the memory budget alone is refused by itself, and a sub-batch that fails
        is retried row by row so one bad row fails alone. Failures are logged here and reported to
        the caller without internals."""
        over, rss = self.memory.over_budget()
        if over:
            self._refusals.inc(len(rows), tags={"reason": "over_budget"})
            message = f"replica memory {rss >> 20} MiB is over its budget; retry shortly"
            return [ItemError(message, retryable=True) for _ in rows]
        self._stats.items += len(rows)
        self._stats.batches += 1
        self._stats.largest_batch = max(self._stats.largest_batch, len(rows))
        lengths = [len(row) for row in rows]

        def positions(part: Sequence[int]) -> int:
            return int(self.model.tokens_in_flight([lengths[index] for index in part]))

        results: list[R | ItemError | None] = [None] * len(rows)
        for group in split_by_token_budget(lengths, self.config.max_batch_tokens):
            pieces, refused = self.memory.split_to_fit(group, positions, resident_bytes())
            for index, refusal in refused.items():
                results[index] = self._refuse(refusal, lengths[index])
            for piece in pieces:
                for index, result in zip(piece, self._infer_piece([rows[i] for i in piece]), strict=True):
                    results[index] = result
        answered = [result for result in results if result is not None]
        if len(answered) != len(rows):  # every row is in one piece or refused; never misalign
            raise RuntimeError(f"{len(rows) - len(answered)} of {len(rows)} rows were neither computed nor refused")
        return answered

    def _infer_piece(self, rows: list[np.ndarray]) -> list[R | ItemError]:
        """Infer rows as one call (row by row if it fails); the memory it grew stays in the arena."""
        self.memory.record(int(self.model.tokens_in_flight([len(row) for row in rows])))
        try:
            answered: list[R | ItemError] = list(self._infer(rows))
            if len(answered) != len(rows):
                raise ValueError(f"the model answered {len(answered)} of {len(rows)} rows")
        except Exception:
            logger.exception("a batch of %d rows failed; retrying row by row", len(rows))
            answered = [self._infer_row(row) for row in rows]
        return answered

    def _infer_row(self, row: np.ndarray) -> R | ItemError:
        try:
            (result,) = self._infer([row])
            return result
        except Exception:
            logger.exception("a row of %d tokens failed", len(row))
            return ItemError("the model failed on this window")

    def _refuse(self, refusal: Refusal, tokens: int) -> ItemError:
        reason = "no_headroom" if refusal.retryable else "never_fits"
        logger.warning("refused a row of %d tokens (%s): %s", tokens, reason, refusal.message)
        self._refusals.inc(1, tags={"reason": reason})
        return ItemError(refusal.message, retryable=refusal.retryable, too_large=not refusal.retryable)
