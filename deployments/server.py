"""The shared shape of a model deployment: live batch config, per-item failure isolation, health
and metadata. Subclasses load their model in ``__init__`` and define the ``@serve.batch`` method.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from deployments.batching import BatchConfig, MemoryGuard
from deployments.runtime.model_dir import Manifest

logger = logging.getLogger("ray.serve")
R = TypeVar("R")


@dataclass(frozen=True)
class ItemError:
    """One item of a batch failed; the others were answered. Carries a client-safe message.

    ``retryable`` marks refusals that say nothing about the input (the replica is over its memory
    budget): the API answers those 503 with Retry-After rather than 500.
    """

    message: str
    retryable: bool = False


@dataclass
class ServerStats:
    """Counters of what this replica has computed (for tests, benchmarks and debugging)."""

    replica: str = ""
    items: int = 0
    batches: int = 0
    largest_batch: int = 0
    rss_bytes: int = 0


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


def _replica_id() -> str:
    from ray import serve

    try:
        return serve.get_replica_context().replica_id.unique_id
    except RuntimeError:  # constructed outside a replica (unit tests)
        return "local"


class ReplicaOverMemoryError(RuntimeError):
    """The replica's resident memory exceeds its budget; Serve will replace it."""


class ModelServerBase(Generic[R]):
    """Base of the NER and sentiment deployment classes (plain Python; Serve wraps them)."""

    model: Any
    predict: Any  # the subclass's @serve.batch method

    def __init__(self, manifest: Manifest, memory: MemoryGuard, *, health_probe: str) -> None:
        self.manifest = manifest
        self.memory = memory
        self.health_probe = health_probe
        self.config = BatchConfig()
        self._stats = ServerStats(replica=_replica_id())
        self._rss_gauge, self._budget_gauge = _memory_gauges()

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Apply ``user_config`` live: batch size, batch wait, token budget, memory budget."""
        self.config = BatchConfig.model_validate(user_config or {})
        limit = self.config.memory_limit_mb
        self.memory.limit_bytes = None if limit is None else limit << 20
        self._budget_gauge.set(self.memory.limit_bytes or 0)
        self.predict.set_max_batch_size(self.config.max_batch_size)
        self.predict.set_batch_wait_timeout_s(self.config.batch_wait_timeout_s)

    def info(self) -> dict[str, Any]:
        """The served model's manifest summary (what ``GET /v1/models`` lists)."""
        return self.manifest.summary()

    def stats(self) -> ServerStats:
        """Items and batches computed so far by this replica, and its resident memory now."""
        self._stats.rss_bytes = self.memory.rss_bytes()
        return ServerStats(**vars(self._stats))

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

    def _probe(self, text: str) -> None:
        raise NotImplementedError

    def _predict_sync(self, texts: list[str]) -> list[R]:
        raise NotImplementedError

    def _predict_groups(self, groups: list[list[str]]) -> list[list[R] | ItemError]:
        """One result list per group. A group with a failed item fails as a whole (its caller
        cannot use a partial answer); other groups in the batch are unaffected."""
        flat = [text for group in groups for text in group]
        results = self._predict_guarded(flat)
        answers: list[list[R] | ItemError] = []
        position = 0
        for group in groups:
            part = results[position : position + len(group)]
            position += len(group)
            failure = next((item for item in part if isinstance(item, ItemError)), None)
            answers.append(failure if failure is not None else part)  # type: ignore[arg-type]
        return answers

    def _predict_guarded(self, texts: list[str]) -> list[R | ItemError]:
        """Predict a batch; if it fails, retry item by item so one bad item fails alone."""
        over, rss = self.memory.over_budget()
        if over:
            message = f"replica memory {rss >> 20} MiB is over its budget; retry shortly"
            return [ItemError(message, retryable=True) for _ in texts]
        self._stats.items += len(texts)
        self._stats.batches += 1
        self._stats.largest_batch = max(self._stats.largest_batch, len(texts))
        try:
            return list(self._predict_sync(texts))
        except Exception:
            logger.exception("batch of %d failed; retrying item by item", len(texts))
        results: list[R | ItemError] = []
        for text in texts:
            try:
                results.extend(self._predict_sync([text]))
            except Exception as exc:
                logger.exception("item of %d characters failed", len(text))
                results.append(ItemError(f"{type(exc).__name__}: {exc}"))
        return results
