"""What the NER and sentiment deployments share: live batch knobs and token-budget sub-batching.
Plain Python; the Serve decorators are applied in the deployment files (the memory budget is
``deployments/memory.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field


class BatchConfig(BaseModel):
    """Per-deployment ``user_config``: applied live by ``reconfigure()``, no restart."""

    model_config = ConfigDict(extra="forbid")

    max_batch_size: int = Field(default=16, ge=1, le=1024)
    batch_wait_timeout_s: float = Field(default=0.005, ge=0.0, le=5.0)
    # Padded tokens one ONNX Runtime call may process (rows × longest row): bounds the activation
    # memory of a call and keeps long windows from dragging short ones into padding.
    max_batch_tokens: int = Field(default=8192, ge=64)
    # The replica's resident-memory budget (deployments/memory.py): a call that would grow the
    # replica past it is computed in smaller pieces (a row that cannot fit alone is refused), and a
    # replica over it refuses work and fails its health checks, so Serve replaces it. Ray's
    # `memory` actor option only schedules; this is what enforces.
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
