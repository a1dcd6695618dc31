"""A model replica's memory budget: what a call will cost before it is computed, and whether the
replica is still within its budget. Plain Python (no Ray); ``deployments/server.py`` applies it.

Two checks, one per way a replica outgrows its budget:

- **Before a call.** A call's activation memory grows with the padded positions it computes at
  once (rows x longest row for a padded batch; see the model's ``tokens_in_flight``). The bytes a
  padded position costs are measured at replica start, on the served model, by computing one
  probe call and reading how far resident memory grew. ONNX Runtime's memory arena keeps what a
  call allocated and hands it to the next call, so a call no larger than one already computed
  grows nothing; a larger one may need a new arena region for all of its activations, so it is
  counted in full. A sub-batch whose growth would take the replica past its budget is computed in
  smaller pieces; a row that does not fit alone is refused by itself, before anything is allocated.
- **Resident memory over the budget** (a leak, or growth outside the model's calls): the replica
  refuses new rows (retryable: the ingress repeats them on a sibling) and fails its health check,
  so Serve replaces it.

Nothing here sets a kernel limit: a process-wide limit (``RLIMIT_DATA``) would fail whichever
allocation crosses it, often one in Ray's or gRPC's own threads, which abort the process. The
hard stop is the machine's memory, or on Kubernetes the pod's memory limit; the budget keeps a
replica below it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

MIB = 1 << 20


def resident_bytes() -> int:
    """This process's resident memory (RSS) now."""
    with open("/proc/self/statm") as handle:
        resident_pages = int(handle.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


ESTIMATE_MARGIN = 1.25
"""The calibrated cost of a position is multiplied by this: the arena grows in regions, so a call's
growth is not exactly proportional to its size (measured on the CNN NER, from a fresh arena and
after smaller calls: 0.8-1.13x a first call's figure per position)."""


class BudgetTooSmallError(ValueError):
    """The budget is below what the replica holds idle: every replica would be over it at start."""


@dataclass(frozen=True)
class MemoryStats:
    """What the budget knows, for tests, benchmarks and debugging."""

    limit_bytes: int | None
    resident_bytes: int
    idle_bytes: int
    bytes_per_token: float
    largest_positions: int
    narrowed_batches: int
    refused_rows: int


@dataclass(frozen=True)
class Refusal:
    """A row the budget refused before computing it. ``retryable`` is false when the row would not
    fit even on an idle replica: no other replica of the same model and budget can answer it."""

    estimate_bytes: int
    message: str
    retryable: bool


@dataclass
class MemoryBudget:
    """The replica's budget and the measured cost of its model's calls.

    ``calibrate`` once, after the model is loaded and before it computes anything else; ``apply``
    the budget from ``user_config``; ask ``split_to_fit`` before computing rows and ``record`` each
    call computed.
    """

    limit_bytes: int | None = None
    bytes_per_token: float = 0.0  # resident bytes one padded position in flight costs (measured)
    largest_positions: int = 0  # the largest call computed so far: the arena holds what it needed
    idle_bytes: int = 0  # resident memory after calibration: the least this replica ever holds
    idle_positions: int = 0  # the calibration call's size: what an idle replica's arena holds
    narrowed_batches: int = 0  # sub-batches computed in smaller pieces to stay within the budget
    refused_rows: int = 0  # rows refused because they did not fit alone

    def calibrate(self, probe: Callable[[], int]) -> None:
        """Run ``probe`` (one call of the model; it returns the padded positions it computed at
        once) twice and take the resident memory it added as the cost of those positions.

        Twice, because ONNX Runtime records a shape's memory pattern on its first call and
        allocates the recorded block on the second: measured on the CNN NER, a new shape grows
        resident memory on both (8 x 254 positions: +13.0 then +11.4 MiB), then never again.
        """
        before = resident_bytes()
        probe()
        positions = probe()
        after = resident_bytes()
        if positions < 1:
            raise ValueError(f"the calibration probe computed {positions} positions; it must compute some")
        self.bytes_per_token = max(after - before, 0) / positions
        self.largest_positions = self.idle_positions = positions
        self.idle_bytes = after

    def apply(self, limit_bytes: int | None) -> None:
        """Set the budget (``None``: no budget). A budget below the replica's idle memory is a
        configuration error: every replica would be replaced as soon as it started."""
        if limit_bytes is not None and limit_bytes < self.idle_bytes:
            raise BudgetTooSmallError(
                f"memory_limit_mb={limit_bytes // MIB} is below the {math.ceil(self.idle_bytes / MIB)} MiB a replica "
                "of this model holds idle (the model loaded and one call computed); raise memory_limit_mb above it"
            )
        self.limit_bytes = limit_bytes

    def estimate(self, positions: int) -> int:
        """Activation memory of a call computing ``positions`` padded positions at once."""
        return math.ceil(positions * self.bytes_per_token * ESTIMATE_MARGIN)

    def growth(self, positions: int, largest_positions: int | None = None) -> int:
        """How far such a call would grow the process: nothing if a call at least as large was
        computed (its memory is in the arena), else its whole estimate."""
        largest = self.largest_positions if largest_positions is None else largest_positions
        return 0 if positions <= largest else self.estimate(positions)

    def fits_when_idle(self, positions: int) -> bool:
        """Whether such a call would fit on a replica of this model that holds only its idle memory."""
        return self.limit_bytes is None or self.idle_bytes + self.growth(positions, self.idle_positions) <= (
            self.limit_bytes
        )

    def over_budget(self) -> tuple[bool, int]:
        """Whether resident memory is over the budget now, and the resident memory."""
        resident = resident_bytes()
        return (self.limit_bytes is not None and resident > self.limit_bytes), resident

    def record(self, positions: int) -> None:
        """A call of ``positions`` was computed: the arena now holds what it needed."""
        self.largest_positions = max(self.largest_positions, positions)

    def split_to_fit(
        self, indices: Sequence[int], positions: Callable[[Sequence[int]], int], resident: int
    ) -> tuple[list[list[int]], dict[int, Refusal]]:
        """Pieces of ``indices`` (rows of one sub-batch) that each fit the budget, computed one after
        another, and the rows that do not fit even alone, each with its refusal.

        ``positions`` gives the padded positions a set of rows computes at once. A sub-batch that
        does not fit is halved until its pieces do (the rows come sorted by length, so each half
        keeps similar lengths). Each piece is checked against the memory the pieces before it will
        have left: their estimated growth added to ``resident``, their size to the arena's.
        """
        pieces: list[list[int]] = []
        refused: dict[int, Refusal] = {}
        largest = self.largest_positions

        def place(part: Sequence[int]) -> None:
            nonlocal resident, largest
            needed = positions(part)
            grown = self.growth(needed, largest)
            if self.limit_bytes is None or resident + grown <= self.limit_bytes:
                pieces.append(list(part))
                resident += grown
                largest = max(largest, needed)
            elif len(part) == 1:
                refused[part[0]] = self._refusal(needed, resident)
            else:
                middle = len(part) // 2
                place(part[:middle])
                place(part[middle:])

        place(indices)
        if len(pieces) > 1:
            self.narrowed_batches += 1
        self.refused_rows += len(refused)
        return pieces, refused

    def _refusal(self, positions: int, resident: int) -> Refusal:
        estimate = self.estimate(positions)
        limit_mib = (self.limit_bytes or 0) // MIB
        if not self.fits_when_idle(positions):
            message = (
                f"a window of {positions} padded tokens needs an estimated {_mib(estimate)} MiB of activation "
                f"memory; the model replica's budget (memory_limit_mb) is {limit_mib} MiB and it holds "
                f"{_mib(self.idle_bytes)} MiB idle, so it can never compute it"
            )
            return Refusal(estimate, message, retryable=False)
        message = (
            f"a window of {positions} padded tokens needs an estimated {_mib(estimate)} MiB of activation memory; "
            f"the replica holds {_mib(resident)} MiB of its {limit_mib} MiB budget; retry shortly"
        )
        return Refusal(estimate, message, retryable=True)

    def stats(self) -> MemoryStats:
        return MemoryStats(
            limit_bytes=self.limit_bytes,
            resident_bytes=resident_bytes(),
            idle_bytes=self.idle_bytes,
            bytes_per_token=self.bytes_per_token,
            largest_positions=self.largest_positions,
            narrowed_batches=self.narrowed_batches,
            refused_rows=self.refused_rows,
        )


def _mib(size: int) -> str:
    return f"{size / MIB:,.1f}"
