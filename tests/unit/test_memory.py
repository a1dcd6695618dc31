"""The memory budget without Ray: the cost of a position measured on a real call, sub-batches
narrowed to fit, rows that cannot fit refused alone with a message naming estimate and budget."""

from __future__ import annotations

from pathlib import Path

import pytest

from deployments.memory import MIB, BudgetTooSmallError, MemoryBudget
from deployments.runtime.session import tokens_in_flight

MODELS = Path(__file__).resolve().parents[2] / "models"


def budget(*, limit_mib: int, idle_mib: int = 200, per_token: int = 1024, largest: int = 1000) -> MemoryBudget:
    """A budget as calibration leaves it: idle memory, a cost per position, the probe's size."""
    memory = MemoryBudget(
        bytes_per_token=per_token, largest_positions=largest, idle_bytes=idle_mib * MIB, idle_positions=largest
    )
    memory.apply(limit_mib * MIB)
    return memory


def row_positions(lengths: list[int]):  # type: ignore[no-untyped-def]
    return lambda part: tokens_in_flight([lengths[i] for i in part], row_by_row=False)


def test_positions_in_flight_padded_and_row_by_row() -> None:
    assert tokens_in_flight([3, 10, 5], row_by_row=False) == 3 * 12
    assert tokens_in_flight([3, 10, 5], row_by_row=True, row_threads=2) == 2 * 12
    assert tokens_in_flight([], row_by_row=False) == 0


def test_a_call_that_fits_is_computed_whole() -> None:
    memory = budget(limit_mib=300)
    lengths = [100] * 16
    pieces, refused = memory.split_to_fit(range(16), row_positions(lengths), resident=200 * MIB)
    assert pieces == [list(range(16))] and not refused and memory.narrowed_batches == 0


def test_a_call_too_large_for_the_headroom_is_computed_in_pieces_that_fit() -> None:
    memory = budget(limit_mib=210)  # 10 MiB over idle: ~8,000 positions at 1 KiB x 1.25
    lengths = [254] * 64  # 16,384 positions: 20 MiB estimated
    pieces, refused = memory.split_to_fit(range(64), row_positions(lengths), resident=200 * MIB)
    assert not refused and len(pieces) > 1 and memory.narrowed_batches == 1
    assert [i for piece in pieces for i in piece] == list(range(64))  # every row, in order
    # the first piece grows the arena; the later ones, no larger, reuse it
    first = tokens_in_flight([lengths[i] for i in pieces[0]], row_by_row=False)
    assert 200 * MIB + memory.estimate(first) <= 210 * MIB
    assert all(len(piece) <= len(pieces[0]) for piece in pieces)


def test_a_later_larger_piece_counts_the_growth_of_the_pieces_before_it() -> None:
    memory = budget(limit_mib=210, largest=100)
    lengths = [10] * 8 + [500] * 8  # the short half fits; the long half must fit on top of it
    pieces, _ = memory.split_to_fit(range(16), row_positions(lengths), resident=200 * MIB)
    grown = 0
    largest = memory.largest_positions
    for piece in pieces:
        needed = tokens_in_flight([lengths[i] for i in piece], row_by_row=False)
        grown += memory.growth(needed, largest)
        largest = max(largest, needed)
    assert 200 * MIB + grown <= 210 * MIB


def test_a_call_no_larger_than_one_computed_grows_nothing() -> None:
    memory = budget(limit_mib=201, largest=1000)
    memory.record(20_000)
    pieces, refused = memory.split_to_fit(range(64), row_positions([254] * 64), resident=201 * MIB)
    assert pieces == [list(range(64))] and not refused


def test_a_row_that_fits_an_idle_replica_but_not_this_one_is_refused_retryably() -> None:
    memory = budget(limit_mib=260, largest=100)
    lengths = [10, 30_000]  # the long row: 36.6 MiB estimated; 60 MiB over idle, 20 over this replica
    pieces, refused = memory.split_to_fit(range(2), row_positions(lengths), resident=240 * MIB)
    assert pieces == [[0]] and set(refused) == {1}
    refusal = refused[1]
    assert refusal.retryable and "retry shortly" in refusal.message
    assert memory.refused_rows == 1


def test_a_row_no_replica_can_fit_is_refused_for_good_naming_estimate_and_budget() -> None:
    memory = budget(limit_mib=220, largest=100)
    lengths = [30_000]  # 36.6 MiB estimated > 20 MiB over idle
    pieces, refused = memory.split_to_fit([0], row_positions(lengths), resident=200 * MIB)
    assert not pieces and not refused[0].retryable
    message = refused[0].message
    assert "36.6 MiB" in message and "220 MiB" in message and "can never compute it" in message


def test_a_budget_below_idle_memory_is_a_configuration_error() -> None:
    memory = MemoryBudget(idle_bytes=300 * MIB)
    with pytest.raises(BudgetTooSmallError, match=r"memory_limit_mb=256 is below the 300 MiB"):
        memory.apply(256 * MIB)
    memory.apply(None)  # no budget: nothing to check
    assert memory.limit_bytes is None and memory.over_budget()[0] is False


def test_over_budget_compares_resident_memory() -> None:
    memory = MemoryBudget()
    memory.apply(64 * MIB)
    over, resident = memory.over_budget()
    assert resident > 64 * MIB and over  # a Python process with numpy and ONNX Runtime loaded


CALIBRATION = """
import json, sys
import numpy as np
from deployments.memory import MemoryBudget, resident_bytes
from deployments.runtime.ner import NerModel

model = NerModel.from_model_dir(sys.argv[1])
rows = [np.full(model.max_seq_length - 2, 100, dtype=np.int32)] * 8
memory = MemoryBudget()
before = resident_bytes()
memory.calibrate(lambda: (model.tag(rows), model.tokens_in_flight([len(r) for r in rows]))[1])
again = resident_bytes()
for _ in range(3):
    model.tag(rows[:4])
    model.tag(rows)
print(json.dumps({"grown": memory.idle_bytes - before, "per_token": memory.bytes_per_token,
                  "positions": memory.largest_positions, "later": resident_bytes() - again}))
"""


def test_calibration_measures_the_arena_growth_of_a_real_call_and_later_calls_reuse_it() -> None:
    """On the embedded NER model (padded batches), in a fresh process as in a replica just started
    (in this one, earlier tests left freed memory that a new session reuses unseen): the
    calibration call's growth gives the cost of a position; calls of that size and smaller
    afterwards grow resident memory by little (ONNX Runtime's arena kept the memory)."""
    import json
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", CALIBRATION, str(MODELS / "ner")], cwd=root, capture_output=True, text=True, check=True
    )
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["positions"] == 8 * 256
    assert figures["grown"] > 4 * MIB
    # the test reads its baseline a few Python frames before the calibration reads its own: the
    # two growths may differ by a page or so (a clean clone measured 4 KiB), never by a call's memory
    assert figures["per_token"] * figures["positions"] == pytest.approx(figures["grown"], abs=64 * 1024)
    assert figures["later"] < figures["grown"] / 4
