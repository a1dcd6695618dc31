"""Results (serve_app.results): window answers assembled into the API's JSON, one ``to_dict`` each,
with the keys in the order the API has always sent them."""

from __future__ import annotations

import numpy as np
import pytest

from deployments.runtime.spans import Entity
from serve_app.chunking import SentenceSentiment
from serve_app.plan import Planner, PlanSettings
from serve_app.results import (
    Analysis,
    AnalyzeResult,
    BatchResult,
    DocumentEntities,
    DocumentSentiment,
    assemble,
)
from tests.support.fake_ingress import FakeModels

MA_YUN = Entity(text="马云", label="PER", start=0, end=2, score=0.75)
UNIT = SentenceSentiment(
    start=0, end=3, label="positive", score=0.875, probabilities={"positive": 0.875, "negative": 0.125}
)
NER = DocumentEntities((MA_YUN,), "tiny-ner@0.0.1")
SENTIMENT = DocumentSentiment("positive", 0.875, 0.875, 0.125, (UNIT,), "tiny-sentiment@0.0.1")


def test_each_result_is_the_json_of_its_route_key_for_key() -> None:
    entity = {"text": "马云", "label": "PER", "start": 0, "end": 2, "score": 0.75}
    assert NER.to_dict() == {"entities": [entity], "model": "tiny-ner@0.0.1"}
    sentiment = SENTIMENT.to_dict()
    assert list(sentiment) == ["label", "score", "scores", "sentences", "model"]
    assert sentiment["scores"] == {"positive": 0.875, "negative": 0.125}
    assert sentiment["sentences"] == [{"start": 0, "end": 3, "label": "positive", "score": 0.875}]


def test_an_analysis_keeps_the_order_of_its_tasks() -> None:
    analysis = Analysis((SENTIMENT, NER))
    assert list(analysis.to_dict()) == ["sentiment", "ner"]
    assert analysis.ner is NER and analysis.sentiment is SENTIMENT
    assert Analysis((NER,)).sentiment is None
    assert AnalyzeResult(analysis, 1.5).to_dict() == {
        "sentiment": SENTIMENT.to_dict(),
        "ner": NER.to_dict(),
        "elapsed_ms": 1.5,
    }
    batch = BatchResult((analysis, Analysis((NER,))), 2.5).to_dict()
    assert batch == {"results": [analysis.to_dict(), {"ner": NER.to_dict()}], "elapsed_ms": 2.5}


@pytest.fixture(scope="module")
def planner(tmp_path_factory: pytest.TempPathFactory) -> Planner:
    return Planner(FakeModels(tmp_path_factory.mktemp("models")).served())


def test_window_answers_are_assembled_into_document_offsets_and_a_weighted_sentiment(planner: Planner) -> None:
    text = "和马云。杭州好"
    plan = planner.plan(text, ["ner", "sentiment"], PlanSettings(ner_context="sentence"))
    labels = plan.tasks["ner"].model.manifest.labels
    ner_windows = plan.tasks["ner"].windows
    assert [(w.start, w.end) for w in ner_windows] == [(0, 4), (4, 7)]

    def tags(*names: str) -> tuple[np.ndarray, np.ndarray]:
        return np.array([labels.index(name) for name in names], dtype=np.int16), np.full(len(names), 0.5)

    ner_answers = [tags("O", "B-PER", "E-PER", "O"), tags("B-LOC", "E-LOC", "O")]
    sentiment_answers = [np.array([0.25, 0.75])]
    analysis = assemble(plan, {"ner": ner_answers, "sentiment": sentiment_answers})
    assert analysis.ner is not None and analysis.sentiment is not None
    assert [(e.text, e.label, e.start, e.end) for e in analysis.ner.entities] == [
        ("马云", "PER", 1, 3),
        ("杭州", "LOC", 4, 6),
    ]
    sentiment_labels = plan.tasks["sentiment"].model.manifest.labels
    expected = dict(zip(sentiment_labels, [0.25, 0.75], strict=True))
    assert analysis.sentiment.label == max(expected, key=lambda label: expected[label])
    assert (analysis.sentiment.positive, analysis.sentiment.negative) == (expected["positive"], expected["negative"])
    assert [(unit.start, unit.end) for unit in analysis.sentiment.sentences] == [(0, len(text))]
