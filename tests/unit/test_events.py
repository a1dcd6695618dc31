"""Stream events (serve_app.events): one NDJSON line each, its keys in the order the API sends."""

from __future__ import annotations

import numpy as np
import pytest

from serve_app.errors import OverloadedError
from serve_app.events import ErrorEvent, StartEvent, SummaryEvent, WindowEvent
from serve_app.plan import DocumentPlan, Planner, PlanSettings
from serve_app.results import Analysis, DocumentEntities
from tests.support.fake_ingress import FakeModels

TEXT = "马云在杭州。好"


@pytest.fixture(scope="module")
def plan(tmp_path_factory: pytest.TempPathFactory) -> DocumentPlan:
    served = FakeModels(tmp_path_factory.mktemp("models")).served()
    return Planner(served).plan(TEXT, ["sentiment", "ner"], PlanSettings())


def test_the_start_event_counts_windows_for_both_tasks_whatever_was_asked(plan: DocumentPlan) -> None:
    assert StartEvent.of(plan).to_dict() == {
        "event": "start",
        "length": len(TEXT),
        "tasks": ["sentiment", "ner"],
        "windows": {"ner": 2, "sentiment": 1},
    }
    ner_only = DocumentPlan(plan.text, {"ner": plan.tasks["ner"]})
    assert StartEvent.of(ner_only).to_dict()["windows"] == {"ner": 2, "sentiment": 0}


def test_a_window_event_carries_what_its_window_found(plan: DocumentPlan) -> None:
    ner = plan.tasks["ner"]
    labels = ner.model.manifest.labels
    tags = np.array([labels.index(tag) for tag in ("B-PER", "E-PER", "O", "B-LOC", "E-LOC", "O")], dtype=np.int16)
    event = WindowEvent.of(TEXT, ner, 0, (tags, np.full(6, 0.5)), 1, 3).to_dict()
    assert list(event) == ["event", "task", "index", "start", "end", "done", "total", "entities"]
    assert [(e["text"], e["start"], e["end"]) for e in event["entities"]] == [("马云", 0, 2), ("杭州", 3, 5)]  # type: ignore[attr-defined]

    sentiment = plan.tasks["sentiment"]
    probabilities = np.array([0.5, 0.5])  # a tie goes to the first label, as in the document's label
    event = WindowEvent.of(TEXT, sentiment, 0, probabilities, 2, 3).to_dict()
    first = sentiment.model.manifest.labels[0]
    assert event == {
        "event": "window",
        "task": "sentiment",
        "index": 0,
        "start": 0,
        "end": len(TEXT),
        "done": 2,
        "total": 3,
        "sentences": [{"start": 0, "end": len(TEXT), "label": first, "score": 0.5}],
    }


def test_summary_and_error_events() -> None:
    analysis = Analysis((DocumentEntities((), "tiny-ner@0.0.1"),))
    assert SummaryEvent(analysis, 3.25).to_dict() == {
        "event": "summary",
        "ner": {"entities": [], "model": "tiny-ner@0.0.1"},
        "elapsed_ms": 3.25,
    }
    error = ErrorEvent(OverloadedError("busy", retry_after_s=1), "r-1").to_dict()
    assert error == {"event": "error", "error": {"code": "overloaded", "message": "busy", "request_id": "r-1"}}
