"""What every peer serves, on zhserve's model core (``deployments.runtime``), split the way batched
servers split work: tokenise each request, then run the model on a batch of token rows.

The answers are the ones ``NerModel.predict`` / ``SentimentModel.predict`` give (the same calls in
the same order), and the JSON shapes are the seed design's (``load_tests/seed_design.py``):
``/ner`` → ``{"entities": [...]}``, ``/predict`` → ``{"label", "score", "scores"}``, ``/analyze`` →
``{"ner": {"entities": [...]}, "sentiment": {...}}``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from deployments.runtime.model_dir import ModelDir  # noqa: E402
from deployments.runtime.ner import NerModel  # noqa: E402
from deployments.runtime.sentiment import SentimentModel  # noqa: E402
from deployments.runtime.spans import build_entities  # noqa: E402
from deployments.runtime.tokenizer import Tokenized, Tokenizer  # noqa: E402

DEFAULT_NER = str(REPO_ROOT / "models" / "ner")
DEFAULT_SENTIMENT = str(REPO_ROOT / "models" / "sentiment-e5")
ROUTES = ("/ner", "/predict", "/analyze")
TASKS = {"/ner": ("ner",), "/predict": ("sentiment",), "/analyze": ("ner", "sentiment")}


def tokenizer(model_dir: str) -> Tokenizer:
    """A model directory's tokenizer, without loading its ONNX session."""
    return Tokenizer.from_model_dir(ModelDir.load(model_dir, verify_checksums=False))


def ner_model(model_dir: str) -> NerModel:
    """One intra-op thread and rows one at a time: each worker process is one core's worth."""
    return NerModel.from_model_dir(model_dir, intra_op_threads=1)


def sentiment_model(model_dir: str) -> SentimentModel:
    return SentimentModel.from_model_dir(model_dir, intra_op_threads=1)


def text_of(request: Any) -> str:
    """The ``text`` of a request body, or ValueError."""
    if not isinstance(request, dict) or not isinstance(request.get("text"), str) or not request["text"]:
        raise ValueError('the body must be a JSON object with a non-empty string "text"')
    return str(request["text"])


def entities(model: NerModel, texts: Sequence[str], tokens: Sequence[Tokenized]) -> list[list[dict[str, Any]]]:
    """``NerModel.predict(texts)`` from already tokenised texts, as JSON-ready dicts."""
    tagged = model.tag([t.ids for t in tokens])
    scheme = model.manifest.tag_scheme or "BIO"
    return [
        [
            entity.to_dict()
            for entity in build_entities(
                text, [model.labels[tag] for tag in tags], token.offsets.tolist(), confidences.tolist(), scheme
            )
        ]
        for text, token, (tags, confidences) in zip(texts, tokens, tagged, strict=True)
    ]


def sentiments(model: SentimentModel, tokens: Sequence[Tokenized]) -> list[dict[str, Any]]:
    """``SentimentModel.predict(texts)`` from already tokenised texts, as JSON-ready dicts."""
    if not tokens:
        return []
    return [result.to_dict() for result in model.results(model.probabilities_of_rows([t.ids for t in tokens]))]


def analyze_answer(entities_of_text: list[dict[str, Any]], sentiment: dict[str, Any]) -> dict[str, Any]:
    return {"ner": {"entities": entities_of_text}, "sentiment": sentiment}
