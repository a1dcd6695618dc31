"""The pure model core on tiny real ONNX models: tokenise → ONNX Runtime → decode."""

from __future__ import annotations

from pathlib import Path

import pytest

from deployments.batching import split_by_token_budget
from deployments.runtime.ner import NerModel
from deployments.runtime.sentiment import SentimentModel
from deployments.runtime.tokenizer import TextTooLongError
from tests.support.tiny_models import build_tiny_ner, build_tiny_sentiment

LEXICON = {"马云": "PER", "杭州": "LOC", "腾讯公司": "ORG", "京": "LOC"}


@pytest.fixture(scope="module", params=["crf", "argmax"])
def ner(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> NerModel:
    root = build_tiny_ner(
        tmp_path_factory.mktemp(request.param), LEXICON, extra_chars="在的了和", crf=request.param == "crf"
    )
    return NerModel.from_model_dir(root)


def test_ner_finds_lexicon_words_with_exact_offsets(ner: NerModel) -> None:
    text = "😀马云在杭州的腾讯公司和京 𠀀"
    (entities,) = ner.predict([text])
    assert [(e.text, e.label, e.start, e.end) for e in entities] == [
        ("马云", "PER", 1, 3),
        ("杭州", "LOC", 4, 6),
        ("腾讯公司", "ORG", 7, 11),
        ("京", "LOC", 12, 13),
    ]
    for entity in entities:
        assert text[entity.start : entity.end] == entity.text
        assert 0.0 < entity.score <= 1.0


def test_ner_batch_equals_one_by_one(ner: NerModel) -> None:
    texts = ["马云在杭州", "腾讯公司", "", "   ", "和和和和和和和和和马云"]
    batched = ner.predict(texts)
    alone = [ner.predict([t])[0] for t in texts]
    # Spans are identical; confidences agree to floating-point rounding (batched forward-backward).
    assert [[(e.text, e.label, e.start, e.end) for e in entities] for entities in batched] == [
        [(e.text, e.label, e.start, e.end) for e in entities] for entities in alone
    ]
    for batch_entities, alone_entities in zip(batched, alone, strict=True):
        for b, a in zip(batch_entities, alone_entities, strict=True):
            assert b.score == pytest.approx(a.score, rel=1e-12, abs=1e-12)
    assert ner.predict([]) == []


def test_ner_refuses_text_longer_than_its_window(ner: NerModel) -> None:
    with pytest.raises(TextTooLongError):
        ner.predict(["马" * 40])


def test_sentiment_probabilities(tmp_path: Path) -> None:
    model = SentimentModel.from_model_dir(build_tiny_sentiment(tmp_path / "s", "好棒", "差烂"))
    good, bad = model.predict(["好好棒", "差烂了"])
    assert good.label == "positive" and bad.label == "negative"
    assert good.scores["positive"] + good.scores["negative"] == pytest.approx(1.0)
    assert good.score == good.scores["positive"] > 0.5


def test_token_budget_groups_by_length_and_keeps_order() -> None:
    lengths = [5, 100, 6, 90, 7]
    groups = split_by_token_budget(lengths, max_batch_tokens=200)
    assert sorted(i for g in groups for i in g) == list(range(5))
    for group in groups:
        assert len(group) == 1 or max(lengths[i] for i in group) * len(group) <= 200
    assert groups[0] == [0, 2, 4]  # the short ones travel together


def test_ner_over_a_tokenizers_json_directory(tmp_path: Path) -> None:
    """A pretrained-encoder layout: tokenizer.json with <s>/</s>/<pad> (pad id 1), served by the
    same core with exact offsets."""
    root = build_tiny_ner(tmp_path / "json", LEXICON, extra_chars="在的了和", tokenizer_json=True)
    model = NerModel.from_model_dir(root)
    assert (model.tokenizer.cls_id, model.tokenizer.pad_id, model.tokenizer.sep_id) == (0, 1, 2)
    text = "马云 在杭州的腾讯公司😀和京"
    (entities,) = model.predict([text])
    assert [(e.text, e.label, e.start, e.end) for e in entities] == [
        ("马云", "PER", 0, 2),
        ("杭州", "LOC", 4, 6),
        ("腾讯公司", "ORG", 7, 11),
        ("京", "LOC", 13, 14),
    ]
    batch = model.tokenizer.pad([model.tokenizer.encode(["马云"])[0].ids], max_length=8)
    assert batch.input_ids.tolist() == [
        [0, model.tokenizer.encode(["马"])[0].ids[0], model.tokenizer.encode(["云"])[0].ids[0], 2]
    ]


def test_rows_of_a_dynamic_int8_model_run_at_once_on_row_threads_with_the_same_answers() -> None:
    """``row_threads`` runs the rows of a row-by-row model's batch concurrently; every row is still
    its own call, so the answers are those of one thread, row for row and in order."""
    import threading

    import numpy as np

    from tests.conftest import embedded_sentiment

    texts = ["这家酒店的服务很贴心。", "手机电池不耐用，非常失望。", "快递很快。", "房间太小了，隔音很差。"] * 3
    alone = SentimentModel.from_model_dir(embedded_sentiment(), row_threads=1)
    assert alone.row_by_row and alone.rows_executor is None
    pooled = SentimentModel.from_model_dir(embedded_sentiment(), row_threads=2)
    assert pooled.rows_executor is not None
    callers: set[str] = set()
    run = pooled.session.run

    def recording_run(*args, **kwargs):  # type: ignore[no-untyped-def]
        callers.add(threading.current_thread().name)
        return run(*args, **kwargs)

    pooled.session = type("Recording", (), {"run": staticmethod(recording_run)})()  # type: ignore[assignment]
    np.testing.assert_array_equal(pooled.probabilities(texts), alone.probabilities(texts))
    assert callers and all(name.startswith("onnx-rows") for name in callers)


def test_row_threads_leave_batched_models_alone(tmp_path: Path) -> None:
    model = SentimentModel.from_model_dir(build_tiny_sentiment(tmp_path / "s", "好棒", "差烂"), row_threads=4)
    assert not model.row_by_row and model.rows_executor is None
