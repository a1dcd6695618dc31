"""The events of ``/v1/analyze/stream``, one NDJSON line each: a :class:`StartEvent`, a
:class:`WindowEvent` as each window finishes, then a :class:`SummaryEvent` (the same results
``/v1/analyze`` returns), or an :class:`ErrorEvent` once the stream has begun. Frozen dataclasses,
each with one ``to_dict``: the line's JSON. Pure: no Ray, no handles.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from deployments.runtime.answers import ProbabilityRow, RowAnswer, TagRow
from deployments.runtime.spans import Entity
from serve_app import chunking
from serve_app.errors import ZhserveError
from serve_app.plan import DocumentPlan, TaskPlan
from serve_app.results import Analysis, unit_probabilities, window_entities
from serve_app.schemas import Task


@dataclass(frozen=True)
class StartEvent:
    """The text's length, its tasks (in the order asked) and how many windows each task has."""

    length: int
    tasks: tuple[Task, ...]
    ner_windows: int
    sentiment_windows: int

    @classmethod
    def of(cls, plan: DocumentPlan) -> StartEvent:
        counts = plan.window_counts()
        return cls(len(plan.text), tuple(plan.tasks), counts.get("ner", 0), counts.get("sentiment", 0))

    def to_dict(self) -> dict[str, object]:
        return {
            "event": "start",
            "length": self.length,
            "tasks": list(self.tasks),
            "windows": {"ner": self.ner_windows, "sentiment": self.sentiment_windows},
        }


@dataclass(frozen=True)
class WindowEvent:
    """One finished window: its character range, the count done so far, and what it found:
    ``entities`` (NER, document offsets, before cross-window merging) or ``sentences``."""

    task: Task
    window: chunking.Window
    done: int
    total: int
    entities: tuple[Entity, ...] = ()
    sentences: tuple[chunking.SentenceSentiment, ...] = ()

    @classmethod
    def of(cls, text: str, plan: TaskPlan, index: int, answer: RowAnswer, done: int, total: int) -> WindowEvent:
        window = plan.windows[index]
        if plan.task == "ner":
            entities = window_entities(text, plan, window, cast(TagRow, answer))
            return cls(plan.task, window, done, total, entities=tuple(entities))
        probabilities = unit_probabilities(plan, cast(ProbabilityRow, answer))
        sentences = chunking.sentence_sentiments([window], [probabilities])
        return cls(plan.task, window, done, total, sentences=tuple(sentences))

    def to_dict(self) -> dict[str, object]:
        window = self.window
        event: dict[str, object] = {
            "event": "window",
            "task": self.task,
            "index": window.index,
            "start": window.start,
            "end": window.end,
            "done": self.done,
            "total": self.total,
        }
        if self.task == "ner":
            event["entities"] = [entity.to_dict() for entity in self.entities]
        else:
            event["sentences"] = [unit.to_dict() for unit in self.sentences]
        return event


@dataclass(frozen=True)
class SummaryEvent:
    """The text's results, as ``/v1/analyze`` returns them, and the time the stream took."""

    analysis: Analysis
    elapsed_ms: float

    def to_dict(self) -> dict[str, object]:
        return {"event": "summary", **self.analysis.to_dict(), "elapsed_ms": self.elapsed_ms}


@dataclass(frozen=True)
class ErrorEvent:
    """A failure after the stream began: the error body of the API's error responses."""

    error: ZhserveError
    request_id: str | None

    def to_dict(self) -> dict[str, object]:
        return {"event": "error", **self.error.to_body(self.request_id)}


StreamEvent = StartEvent | WindowEvent | SummaryEvent | ErrorEvent
