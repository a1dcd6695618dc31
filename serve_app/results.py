"""Results: the models' window answers assembled into what the API returns.

Each result is a frozen dataclass with one ``to_dict``, which is the JSON the API sends (the
shapes ``serve_app.schemas`` describes): entities with exact document offsets, merged across
overlapping windows (:class:`DocumentEntities`), a length-weighted sentiment
(:class:`DocumentSentiment`), one text's results by task (:class:`Analysis`), and the responses
of ``/v1/analyze`` and ``/v1/batch``. Pure: no Ray, no handles.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, cast

from deployments.runtime.answers import ProbabilityRow, RowAnswer, TagRow
from deployments.runtime.spans import Entity, build_entities
from serve_app import chunking
from serve_app.plan import DocumentPlan, TaskPlan
from serve_app.schemas import Task


@dataclass(frozen=True)
class DocumentEntities:
    """The named entities of one text (``/v1/ner``), non-overlapping and sorted by start."""

    task: ClassVar[Task] = "ner"

    entities: tuple[Entity, ...]
    model: str

    def to_dict(self) -> dict[str, object]:
        return {"entities": [entity.to_dict() for entity in self.entities], "model": self.model}


@dataclass(frozen=True)
class DocumentSentiment:
    """The sentiment of one text (``/v1/sentiment``): the label of the length-weighted mean of its
    units' probabilities, and the units it was computed from."""

    task: ClassVar[Task] = "sentiment"

    label: str
    score: float
    positive: float
    negative: float
    sentences: tuple[chunking.SentenceSentiment, ...]
    model: str

    def to_dict(self) -> dict[str, object]:
        return {
            "label": self.label,
            "score": self.score,
            "scores": {"positive": self.positive, "negative": self.negative},
            "sentences": [unit.to_dict() for unit in self.sentences],
            "model": self.model,
        }


TaskResult = DocumentEntities | DocumentSentiment


@dataclass(frozen=True)
class Analysis:
    """One text's results, in the order its tasks were asked for (the order of the JSON keys)."""

    results: tuple[TaskResult, ...]

    @property
    def ner(self) -> DocumentEntities | None:
        for result in self.results:
            if isinstance(result, DocumentEntities):
                return result
        return None

    @property
    def sentiment(self) -> DocumentSentiment | None:
        for result in self.results:
            if isinstance(result, DocumentSentiment):
                return result
        return None

    def to_dict(self) -> dict[str, object]:
        return {result.task: result.to_dict() for result in self.results}


@dataclass(frozen=True)
class AnalyzeResult:
    """``/v1/analyze``: one text's results and the time the request took."""

    analysis: Analysis
    elapsed_ms: float

    def to_dict(self) -> dict[str, object]:
        return {**self.analysis.to_dict(), "elapsed_ms": self.elapsed_ms}


@dataclass(frozen=True)
class BatchResult:
    """``/v1/batch``: each text's results in request order, and the time the request took."""

    analyses: tuple[Analysis, ...]
    elapsed_ms: float

    def to_dict(self) -> dict[str, object]:
        return {"results": [analysis.to_dict() for analysis in self.analyses], "elapsed_ms": self.elapsed_ms}


# --------------------------------------------------------------------------------------------
# Assembly: window answers → results


def window_entities(text: str, plan: TaskPlan, window: chunking.Window, answer: TagRow) -> list[Entity]:
    """The entities one NER window's answer names, in document offsets (before merging)."""
    tags, confidences = answer
    labels = plan.model.manifest.labels
    return build_entities(
        text,
        [labels[tag] for tag in tags.tolist()],
        plan.tokens.offsets[window.token_start : window.token_end].tolist(),
        confidences.tolist(),
        plan.model.manifest.tag_scheme or "BIO",
    )


def unit_probabilities(plan: TaskPlan, answer: ProbabilityRow) -> dict[str, float]:
    """One sentiment unit's answer as a probability per label."""
    return dict(zip(plan.model.manifest.labels, answer.tolist(), strict=True))


def document_entities(text: str, plan: TaskPlan, answers: Sequence[TagRow]) -> DocumentEntities:
    per_window = [
        window_entities(text, plan, window, answer) for window, answer in zip(plan.windows, answers, strict=True)
    ]
    merged = chunking.merge_entities(text, plan.windows, per_window)
    return DocumentEntities(tuple(merged), plan.model.model_id)


def document_sentiment(plan: TaskPlan, answers: Sequence[ProbabilityRow]) -> DocumentSentiment:
    per_unit = [unit_probabilities(plan, answer) for answer in answers]
    label, score, mean = chunking.aggregate_sentiment(plan.windows, per_unit)
    return DocumentSentiment(
        label=label,
        score=score,
        positive=mean["positive"],
        negative=mean["negative"],
        sentences=tuple(chunking.sentence_sentiments(plan.windows, per_unit)),
        model=plan.model.model_id,
    )


def assemble(plan: DocumentPlan, answers: Mapping[Task, Sequence[RowAnswer]]) -> Analysis:
    """One text's results from its windows' answers (``answers[task][i]`` answers window ``i``
    of ``plan.tasks[task]``; a task's answers come from that task's model)."""
    results: list[TaskResult] = []
    for task, task_plan in plan.tasks.items():
        if task == "ner":
            results.append(document_entities(plan.text, task_plan, cast("Sequence[TagRow]", answers[task])))
        else:
            results.append(document_sentiment(task_plan, cast("Sequence[ProbabilityRow]", answers[task])))
    return Analysis(tuple(results))
