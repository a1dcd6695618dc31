"""The edges of Unicode through the real request pipeline and the embedded models, in process.

The rule (README, "Input"): offsets are code points into the exact text received; nothing is
normalised away before offsets are taken. A text is refused with 422 ``empty_text`` when the
models' tokenizer finds nothing in it to analyse — only whitespace, control characters (C0, C1,
NUL), format characters (zero-width space/joiners, BOM, bidi controls) or noncharacters. Anything
else is analysed (a lone combining mark too: the tokenizer keeps it; CJK newer than Python's
Unicode tables and private-use characters too), and every entity satisfies
``text[start:end] == entity["text"]``
while every sentence span lies inside the text.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from deployments.runtime.answers import ModelAnswer, ProbabilityRows, TagRows
from deployments.runtime.ner import NerModel
from deployments.runtime.rows import TokenRows
from deployments.runtime.sentiment import SentimentModel
from serve_app.config import EMBEDDED_NER_MODEL, EMBEDDED_SENTIMENT_MODEL
from serve_app.errors import EmptyTextError
from serve_app.model_client import ModelClient
from serve_app.pipeline import Pipeline
from serve_app.plan import Planner, PlanSettings, ServedModel
from serve_app.schemas import Task

SETTINGS = PlanSettings()

NOTHING_TO_ANALYSE = {
    "zero-width only": "\u200b\u200c\u200d\u2060",
    "NUL only": "\x00\x00\x00",
    "BOM only": "\ufeff",
    "bidi controls only": "\u202a\u202b\u202e\u2066\u2069\u200e\u200f",
    "C0 controls": "\x01\x02\x07\x1b\x7f",
    "C1 controls": "\x80\x85\x9f",
    "whitespace of every kind": " \t\n\r\u3000\u00a0\u2028\u2029",
    "mixed invisible": "\ufeff\u200b \x00\u202e\n",
    "noncharacters": "\ufffe\uffff\ufdd0\U0010ffff",
}

ANALYSABLE = {
    "BOM before text": "\ufeff马云在杭州会见了李明。",
    "zero-width inside an entity": "马\u200b云在杭州。",
    "bidi override around a name": "\u202e马云\u202c在北京大学演讲。",
    "C0 and C1 controls between words": "马云\x01在\x85杭州\x00。",
    "NUL-separated": "李明\x00在\x00上海工作。",
    "ZWJ emoji sequences": "👨\u200d👩\u200d👧\u200d👦马云在杭州很开心🏳\ufe0f\u200d🌈。",
    "combining marks": "Ame\u0301lie在巴黎见到了马云。a\u0308\u0301",
    "lone combining mark then text": "\u0301马云在杭州。",
    "supplementary-plane CJK": "𠀀𪚥马云在𡃁杭州会见了𠮷野家的李明。",
    "variation selectors": "马云\ufe0f在杭州\U000e0100。",
    "surrogate-free astral symbols": "𝔘𝔫𝔦𝔠𝔬𝔡𝔢马云在北京。",
    "line and paragraph separators": "马云在杭州。\u2028李明在北京。\u2029王芳在上海。",
    # Newer than Python 3.11's Unicode 14 tables, which call them unassigned (Cn): Extension H (15.0)
    # and I (15.1) CJK, alone and in a sentence; and private use (Co), alone and in a sentence.
    "CJK Extension H only": "\U00031350\U00031351",
    "CJK Extension I in a sentence": "马云在\U0002ebf0杭州\U00031350。",
    "private use only": "\ue000",
    "private use in a sentence": "马云在\ue000杭州\U000f0000会见了李明。",
}


class InProcess:
    """The pipeline with predict coroutines running the embedded models in this process."""

    def __init__(self) -> None:
        self.ner = NerModel.from_model_dir(EMBEDDED_NER_MODEL)
        self.sentiment = SentimentModel.from_model_dir(EMBEDDED_SENTIMENT_MODEL)
        served = {
            "ner": ServedModel.from_dir(str(EMBEDDED_NER_MODEL)),
            "sentiment": ServedModel.from_dir(str(EMBEDDED_SENTIMENT_MODEL)),
        }
        clients: dict[Task, ModelClient] = {
            "ner": ModelClient(self._ner, group_size=16, calls_in_flight=2),
            "sentiment": ModelClient(self._sentiment, group_size=16, calls_in_flight=2),
        }
        self.pipeline = Pipeline(Planner(served), clients)

    async def _ner(self, rows: TokenRows) -> ModelAnswer:
        return TagRows.pack(self.ner.tag(rows.rows()))

    async def _sentiment(self, rows: TokenRows) -> ModelAnswer:
        return ProbabilityRows(self.sentiment.probabilities_of_rows(rows.rows()))

    def analyze(self, text: str) -> dict[str, Any]:
        plan = self.pipeline.planner.plan(text, ["ner", "sentiment"], SETTINGS)
        (outcome,) = asyncio.run(self.pipeline.analyze_plans([plan], 30))
        return outcome.analysis.to_dict()


@pytest.fixture(scope="module")
def service() -> InProcess:
    return InProcess()


@pytest.mark.parametrize("text", NOTHING_TO_ANALYSE.values(), ids=NOTHING_TO_ANALYSE.keys())
def test_a_text_with_nothing_analysable_is_refused_for_every_task(service: InProcess, text: str) -> None:
    for task in ("ner", "sentiment"):
        with pytest.raises(EmptyTextError):
            service.pipeline.planner.plan(text, [task], SETTINGS)  # type: ignore[list-item]


@pytest.mark.parametrize("text", ANALYSABLE.values(), ids=ANALYSABLE.keys())
def test_edge_texts_are_analysed_with_exact_code_point_offsets(service: InProcess, text: str) -> None:
    results = service.analyze(text)
    for entity in results["ner"]["entities"]:
        assert 0 <= entity["start"] < entity["end"] <= len(text)
        assert text[entity["start"] : entity["end"]] == entity["text"]
    sentences = results["sentiment"]["sentences"]
    assert sentences, "sentiment of an analysable text has at least one unit"
    for sentence in sentences:
        assert 0 <= sentence["start"] < sentence["end"] <= len(text)
    assert results["sentiment"]["label"] in ("positive", "negative")


def test_invisible_characters_do_not_move_or_hide_entities(service: InProcess) -> None:
    """The same sentence with invisible characters sprinkled in finds the same names, at the
    code-point offsets of the text as sent (shifted by what was inserted before them)."""
    plain = "马云在杭州会见了李明。"
    marked = "\ufeff" + plain.replace("在", "\u200b在\x00")
    found_plain = [(e["text"], e["label"]) for e in service.analyze(plain)["ner"]["entities"]]
    entities = service.analyze(marked)["ner"]["entities"]
    assert [(e["text"], e["label"]) for e in entities] == found_plain
    assert ("马云", "PER") in found_plain
    first = entities[0]
    assert (first["start"], first["end"]) == (1, 3)  # after the BOM
    for entity in entities:
        assert marked[entity["start"] : entity["end"]] == entity["text"]


def test_supplementary_plane_characters_count_as_one_code_point(service: InProcess) -> None:
    text = "𠮷𠮷马云在杭州。"
    entities = service.analyze(text)["ner"]["entities"]
    names = {e["text"]: (e["start"], e["end"]) for e in entities}
    assert names.get("杭州") == (5, 7)  # two astral characters before it: two positions, not four
