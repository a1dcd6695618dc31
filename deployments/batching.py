"""What the NER and sentiment deployments share: live batch knobs, token-budget sub-batching and
the replica's memory guard. Plain Python; the Serve decorators are applied in the deployment files.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")
Item = TypeVar("Item")


class BatchConfig(BaseModel):
    """Per-deployment ``user_config``: applied live by ``reconfigure()``, no restart."""

    model_config = ConfigDict(extra="forbid")

    max_batch_size: int = Field(default=16, ge=1, le=1024)
    batch_wait_timeout_s: float = Field(default=0.005, ge=0.0, le=5.0)
    # Padded tokens one ONNX Runtime call may process (rows × longest row): bounds the activation
    # memory of a call and keeps long windows from dragging short ones into padding.
    max_batch_tokens: int = Field(default=8192, ge=64)
    # The replica's resident-memory budget; over it, health checks fail and Serve replaces the
    # replica. Ray's `memory` actor option only schedules — this is what enforces.
    memory_limit_mb: int | None = Field(default=None, ge=64)
    # Compute batches in a worker thread instead of on the replica's event loop (see
    # ModelServerBase._run): off by default, measured slower for short texts under load.
    compute_in_thread: bool = False


def split_by_token_budget(lengths: Sequence[int], max_batch_tokens: int) -> list[list[int]]:
    """Group item indices into sub-batches whose padded size (rows × longest) fits the budget.

    Items are sorted by length first so each sub-batch holds similar lengths and padding stays
    small. An item longer than the budget on its own still gets a sub-batch of one.
    """
    order = sorted(range(len(lengths)), key=lambda index: lengths[index])
    groups: list[list[int]] = []
    current: list[int] = []
    for index in order:
        longest = max(lengths[index], max((lengths[i] for i in current), default=0))
        if current and longest * (len(current) + 1) > max_batch_tokens:
            groups.append(current)
            current = []
        current.append(index)
    if current:
        groups.append(current)
    return groups


def run_in_token_budget(
    items: Sequence[Item],
    lengths: Sequence[int],
    max_batch_tokens: int,
    predict: Callable[[list[Item]], list[T]],
) -> list[T]:
    """Call ``predict`` on length-grouped sub-batches; results come back in the input order."""
    results: dict[int, T] = {}
    for group in split_by_token_budget(lengths, max_batch_tokens):
        # strict: a predict that drops or adds results fails loudly instead of misaligning
        for index, result in zip(group, predict([items[i] for i in group]), strict=True):
            results[index] = result
    return [results[index] for index in range(len(items))]


CAP_MARGIN_SHARE = 0.25
"""The allocation cap lies this share of the budget above the budget (at least CAP_MARGIN_MIN):
between the two, the replica still computes while it is being replaced; past the cap an
allocation fails."""
CAP_MARGIN_MIN = 128 << 20


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def is_allocation_failure(exc: BaseException) -> bool:
    """A failure that means "out of memory": Python's MemoryError, or ONNX Runtime's allocator
    refusing (its errors arrive as RuntimeException with the allocator's message)."""
    if isinstance(exc, MemoryError):
        return True
    text = str(exc)
    return "bad_alloc" in text or "Failed to allocate" in text


@dataclass
class MemoryGuard:
    """The replica's memory budget, in two levels.

    - Resident memory over ``limit_bytes``: the replica refuses new work (retryable, the ingress
      retries it elsewhere) and fails its health check, so Serve replaces it.
    - An allocation cap (``RLIMIT_DATA``, the kernel's limit on a process's private writable
      memory) a margin above that: an allocation past it fails inside the call that asked for
      it (``MemoryError``), which fails alone with a clear error instead of growing the process
      until Ray's OOM killer or the kernel kills it and its bystanders.

    The cap is set relative to what the process has mapped when the budget is applied (a Ray
    worker maps a few hundred MiB of reserved, untouched data: thread stacks, allocator arenas),
    so it grants exactly the budget's headroom over today's resident memory plus the margin.
    """

    limit_bytes: int | None = None
    cap_bytes: int | None = None

    def apply(self, limit_bytes: int | None) -> None:
        """Set the budget and the allocation cap that goes with it (none: both lifted)."""
        self.limit_bytes = limit_bytes
        _, hard = resource.getrlimit(resource.RLIMIT_DATA)
        if limit_bytes is None:
            self.cap_bytes = None
            resource.setrlimit(resource.RLIMIT_DATA, (hard, hard))
            return
        margin = max(int(limit_bytes * CAP_MARGIN_SHARE), CAP_MARGIN_MIN)
        headroom = max(limit_bytes - self.rss_bytes(), 0)
        cap = _status_bytes("VmData") + headroom + margin
        if hard != resource.RLIM_INFINITY:
            cap = min(cap, hard)
        self.cap_bytes = cap
        resource.setrlimit(resource.RLIMIT_DATA, (cap, hard))

    @staticmethod
    def rss_bytes() -> int:
        with open("/proc/self/statm") as handle:
            resident_pages = int(handle.read().split()[1])
        return resident_pages * os.sysconf("SC_PAGE_SIZE")

    @staticmethod
    def peak_rss_bytes() -> int:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def over_budget(self) -> tuple[bool, int]:
        rss = self.rss_bytes()
        return (self.limit_bytes is not None and rss > self.limit_bytes), rss
