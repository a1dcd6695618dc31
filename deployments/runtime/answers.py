"""A model's answer to one call: what a replica sends back to the ingress, encoded and decoded here.

One call carries a group of rows (``deployments.runtime.rows.TokenRows``); its answer is one of

- :class:`TagRows`: NER, every row answered: per token its tag id and that tag's marginal;
- :class:`ProbabilityRows`: sentiment, every row answered: class probabilities [rows, labels];
- :class:`FailedRows`: a row of the group failed; each row's answer or an :class:`ItemError`
  in its place, so the rows of other requests that shared the call are still answered.

The packed forms hold one array per output for the whole group, so the serialised answer stays
small and cheap whatever the number of rows; :func:`decode` gives the rows back as views of
those arrays (one tag/confidence pair or one probability vector per row).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import ClassVar, TypeVar

import numpy as np

TagRow = tuple[np.ndarray, np.ndarray]
"""One NER row's answer: tag ids (indices into the manifest's labels) and their marginals."""

ProbabilityRow = np.ndarray
"""One sentiment row's answer: a probability per label, in the manifest's label order."""

RowAnswer = TagRow | ProbabilityRow


@dataclass(frozen=True)
class ItemError:
    """One row of a batch failed; the others were answered. Carries a client-safe message.

    ``retryable`` marks refusals that say nothing about the input (the replica is over its memory
    budget): the API answers those 503 with Retry-After rather than 500. ``too_large`` marks a row
    no replica of the model can compute within its memory budget: the API answers 413 with the
    message, which names the estimate and the budget.
    """

    message: str
    retryable: bool = False
    too_large: bool = False


@dataclass(frozen=True)
class TagRows:
    """NER answers for packed rows: per token its tag id and that tag's marginal probability."""

    tags: np.ndarray  # int16 [sum(lengths)], indices into the manifest's labels
    confidences: np.ndarray  # float64 [sum(lengths)]
    lengths: np.ndarray  # int32 [rows]

    refused: ClassVar[bool] = False

    @classmethod
    def pack(cls, rows: Sequence[TagRow]) -> TagRows:
        lengths = np.fromiter((len(tags) for tags, _ in rows), dtype=np.int32, count=len(rows))
        if not rows:
            return cls(np.empty(0, dtype=np.int16), np.empty(0), lengths)
        tags = np.concatenate([tags for tags, _ in rows]).astype(np.int16, copy=False)
        confidences = np.concatenate([confidences for _, confidences in rows]).astype(np.float64, copy=False)
        return cls(tags=tags, confidences=confidences, lengths=lengths)

    def __len__(self) -> int:
        return int(self.lengths.shape[0])

    def rows(self) -> list[TagRow]:
        tags, confidences = self.tags, self.confidences
        bounds = pairwise([0, *np.cumsum(self.lengths).tolist()])
        return [(tags[start:end], confidences[start:end]) for start, end in bounds]


@dataclass(frozen=True)
class ProbabilityRows:
    """Sentiment answers for packed rows: one row of class probabilities per input row."""

    probabilities: np.ndarray  # float [rows, labels]

    refused: ClassVar[bool] = False

    @classmethod
    def pack(cls, rows: Sequence[ProbabilityRow]) -> ProbabilityRows:
        return cls(np.stack(rows))

    def __len__(self) -> int:
        return int(self.probabilities.shape[0])

    def rows(self) -> list[ProbabilityRow]:
        return list(self.probabilities)


@dataclass(frozen=True)
class FailedRows:
    """A group with at least one failed row: each row's answer, or an :class:`ItemError` in the
    place of a row that failed."""

    items: tuple[RowAnswer | ItemError, ...]

    def __len__(self) -> int:
        return len(self.items)

    @property
    def refused(self) -> bool:
        """Whether the replica refused the call for reasons that say nothing about its rows (over
        its memory budget): the same call may succeed on another replica a moment later."""
        return any(isinstance(item, ItemError) and item.retryable for item in self.items)

    def rows(self) -> list[RowAnswer | ItemError]:
        return list(self.items)


ModelAnswer = TagRows | ProbabilityRows | FailedRows
"""What one model call returns."""

R = TypeVar("R", bound=RowAnswer)


def encode(results: Sequence[R | ItemError], pack: Callable[[list[R]], TagRows | ProbabilityRows]) -> ModelAnswer:
    """One group's answer: packed by ``pack`` when every row was answered, else :class:`FailedRows`."""
    for item in results:
        if isinstance(item, ItemError):
            return FailedRows(tuple(results))
    return pack(results)  # type: ignore[arg-type]  # no ItemError among them (checked above)


def decode(answer: ModelAnswer, count: int) -> Sequence[RowAnswer | ItemError]:
    """The per-row answers of a call of ``count`` rows; a wrong number of rows is an error."""
    rows: Sequence[RowAnswer | ItemError] = answer.rows()
    if len(rows) != count:
        raise RuntimeError(f"a model answered {len(rows)} rows for a call of {count}")
    return rows
