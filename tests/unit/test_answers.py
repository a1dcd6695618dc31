"""The model's answer on the wire (deployments.runtime.answers): encoded by the replica, decoded
by the ingress, row for row."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from deployments.runtime.answers import FailedRows, ItemError, ProbabilityRows, TagRows, decode, encode


def tag_rows(*lengths: int) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(np.arange(n, dtype=np.int64) % 7, np.linspace(0.5, 1.0, n)) for n in lengths]


@pytest.mark.parametrize("lengths", [(), (1,), (3, 0, 5), (128,) * 16])
def test_tag_rows_round_trip_through_pickle(lengths: tuple[int, ...]) -> None:
    rows = tag_rows(*lengths)
    answer = pickle.loads(pickle.dumps(encode(rows, TagRows.pack)))
    assert isinstance(answer, TagRows) and not answer.refused and len(answer) == len(rows)
    decoded = decode(answer, len(rows))
    for (tags, confidences), got in zip(rows, decoded, strict=True):
        assert isinstance(got, tuple)
        assert got[0].dtype == np.int16 and got[0].tolist() == tags.tolist()
        assert got[1].tolist() == confidences.tolist()


def test_probability_rows_round_trip() -> None:
    rows = [np.array([0.25, 0.75], dtype=np.float32), np.array([0.9, 0.1], dtype=np.float32)]
    answer = encode(rows, ProbabilityRows.pack)
    assert isinstance(answer, ProbabilityRows) and not answer.refused
    assert [row.tolist() for row in decode(answer, 2)] == [row.tolist() for row in rows]  # type: ignore[union-attr]


def test_a_failed_row_fails_the_group_into_failed_rows_in_place() -> None:
    rows = tag_rows(2, 3)
    failure = ItemError("the model failed on this window")
    answer = encode([rows[0], failure, rows[1]], TagRows.pack)
    assert isinstance(answer, FailedRows) and not answer.refused
    decoded = decode(answer, 3)
    assert decoded[1] is failure and decoded[0] is rows[0] and decoded[2] is rows[1]


def test_only_retryable_refusals_count_as_refused() -> None:
    assert FailedRows((ItemError("over its budget", retryable=True), ItemError("x"))).refused
    assert not FailedRows((ItemError("the model failed on this window"),)).refused


def test_a_wrong_row_count_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="answered 2 rows for a call of 3"):
        decode(ProbabilityRows(np.zeros((2, 2))), 3)
