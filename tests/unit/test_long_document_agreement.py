"""A long document finds the same entities as its sentences one by one (embedded NER model, no Ray).

Documents are corpus sentences concatenated; the windows the ingress would plan are run through
the model core and merged. Context from neighbouring sentences in a window may legitimately change
a prediction, so the test reports the agreement and requires it to be high (≥ 0.93), not perfect.
"""

from __future__ import annotations

import json
from itertools import islice
from pathlib import Path

import pytest

from deployments.runtime.ner import NerModel
from serve_app import chunking
from tests.conftest import REPO_ROOT, embedded_ner

CORPUS = REPO_ROOT.parent / "shared" / "data" / "ner" / "msra_train.jsonl"
WEB_CORPUS = REPO_ROOT.parent / "shared" / "data" / "ner" / "cluener_train.jsonl"


def corpus_sentences(path: Path, count: int) -> list[str]:
    if not path.is_file():
        pytest.skip(f"corpus {path} not available")
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line)["text"] for line in islice(handle, 1000, 1000 + count)]


@pytest.fixture(scope="module")
def model() -> NerModel:
    return NerModel.from_model_dir(embedded_ner())


@pytest.mark.parametrize("corpus", [CORPUS, WEB_CORPUS], ids=["news", "web"])
def test_long_document_entities_agree_with_sentence_by_sentence(model: NerModel, corpus: Path) -> None:
    sentences = [s for s in corpus_sentences(corpus, 400) if s.strip()]
    # Sentences that end without punctuation would run into the next one; end each with 。
    sentences = [s if s[-1] in chunking.SENTENCE_TERMINATORS else s + "。" for s in sentences]
    document = "".join(sentences)
    expected: set[tuple[int, int, str]] = set()
    offset = 0
    for sentence in sentences:
        windows = chunking.plan_windows(sentence, model.tokenizer.count_tokens, max_tokens=model.max_seq_length)
        found = chunking.merge_entities(sentence, windows, model.predict([w.text for w in windows]))
        expected |= {(e.start + offset, e.end + offset, e.label) for e in found}
        offset += len(sentence)

    windows = chunking.plan_windows(document, model.tokenizer.count_tokens, max_tokens=model.max_seq_length)
    merged = chunking.merge_entities(document, windows, model.predict([w.text for w in windows]))
    for entity in merged:
        assert document[entity.start : entity.end] == entity.text
    actual = {(e.start, e.end, e.label) for e in merged}

    agreement = len(actual & expected) / max(1, len(actual | expected))
    print(
        f"\n{corpus.name}: {len(document):,} chars in {len(windows)} windows, {len(expected)} entities "
        f"sentence by sentence, {len(actual)} in the document; agreement (Jaccard) {agreement:.4f}"
    )
    assert len(windows) > 10
    assert agreement >= 0.93
