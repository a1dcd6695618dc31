from __future__ import annotations

import random
from pathlib import Path

import pytest

from deployments.runtime.tokenizer import BertChineseTokenizer
from training.data import (
    ONLINE_SHOPPING_CATEGORIES,
    bioes_labels,
    char_spans_to_tags,
    length_batches,
    ner_examples,
    online_shopping_categories,
    pad_batch,
    split_dev,
    windows,
)
from training.vocab import build_vocab


def small_tokenizer() -> BertChineseTokenizer:
    tokens = build_vocab(["马云在杭州 iPhone15发布", "北京大学的李明教授"] * 3, wordpiece_size=100)
    return BertChineseTokenizer({t: i for i, t in enumerate(tokens)}, lowercase=True)


def test_vocab_specials_first_and_every_char_kept() -> None:
    tokens = build_vocab(["马云在杭州", "马云"] * 2, wordpiece_size=50)
    assert tokens[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert {"马", "云", "杭", "州", "a", "##a", "0", "##9"} <= set(tokens)
    assert len(tokens) == len(set(tokens))


def test_bioes_labels() -> None:
    labels = bioes_labels()
    assert labels[0] == "O" and len(labels) == 13
    assert labels[1:5] == ["B-PER", "I-PER", "E-PER", "S-PER"]


def test_char_spans_to_tags_cjk_and_wordpieces() -> None:
    tokenizer = small_tokenizer()
    labels = bioes_labels()
    text = "马云在杭州 iPhone15发布"
    entities = [
        {"start": 0, "end": 2, "label": "PER"},
        {"start": 3, "end": 4, "label": "LOC"},
        {"start": 6, "end": 14, "label": "ORG"},
    ]
    [(_, offsets)] = tokenizer.tokenize([text])
    tags = [labels[t] for t in char_spans_to_tags(offsets, entities, {label: i for i, label in enumerate(labels)})]
    assert tags[:5] == ["B-PER", "E-PER", "O", "S-LOC", "O"]
    latin = [tag for (s, e), tag in zip(offsets, tags, strict=True) if 6 <= s < 14]
    assert latin[0] in ("B-ORG", "S-ORG") and latin[-1] in ("E-ORG", "S-ORG")
    assert tags[-2:] == ["O", "O"]


def test_ner_examples_window_long_texts() -> None:
    tokenizer = small_tokenizer()
    rows = [{"text": "马云" * 20, "entities": [{"start": 0, "end": 2, "label": "PER"}]}]
    examples = ner_examples(rows, tokenizer, bioes_labels(), max_seq_length=12)
    assert all(len(e.ids) <= 10 for e in examples)
    assert sum(len(e.ids) for e in examples) >= 40


def test_windows_clip_the_entities_they_cut() -> None:
    from training.data import clip_bioes

    labels = bioes_labels()
    ids = lambda *names: [labels.index(n) for n in names]  # noqa: E731
    assert clip_bioes(ids("I-ORG", "E-ORG", "O", "B-PER", "I-PER"), labels) == ids(
        "B-ORG", "E-ORG", "O", "B-PER", "E-PER"
    )
    assert clip_bioes(ids("E-LOC", "O", "B-LOC"), labels) == ids("S-LOC", "O", "S-LOC")
    assert clip_bioes(ids("I-PER"), labels) == ids("S-PER")
    assert clip_bioes(ids("B-PER", "E-PER"), labels) == ids("B-PER", "E-PER")
    # A long text cut into windows: every window is a valid BIOES path.
    tok = small_tokenizer()
    row = {"text": "李" * 300, "entities": [{"start": 100, "end": 200, "label": "PER"}]}
    for example in ner_examples([row], tok, labels, max_seq_length=130):
        tags = [labels[t] for t in example.target]
        assert tags[0][0] in "OBS" and tags[-1][0] in "OES"


def test_windows_cover_everything() -> None:
    assert list(windows(5, 10, 5)) == [(0, 5)]
    spans = list(windows(25, 10, 5))
    assert spans[0] == (0, 10) and spans[-1][1] == 25


def test_split_dev_is_deterministic_and_disjoint() -> None:
    rows = [{"text": str(i)} for i in range(100)]
    train, dev = split_dev(rows, 0.1, seed=7)
    assert len(dev) == 10 and len(train) == 90
    assert split_dev(rows, 0.1, seed=7)[1] == dev
    assert not {r["text"] for r in dev} & {r["text"] for r in train}


def test_pad_batch_layout() -> None:
    tokenizer = small_tokenizer()
    ids, mask = pad_batch([[10, 11, 12], [13]], tokenizer)
    assert ids.shape == (2, 5)
    assert ids[1].tolist() == [tokenizer.cls_id, 13, tokenizer.sep_id, 0, 0]
    assert mask.sum(1).tolist() == [5, 3]


def test_length_batches_respect_token_budget() -> None:
    lengths = [random.Random(i).randint(1, 50) for i in range(300)]
    batches = length_batches(lengths, max_tokens=400, max_batch=32, rng=random.Random(0))
    assert sorted(i for b in batches for i in b) == list(range(300))
    for batch in batches:
        assert len(batch) <= 32
        assert len(batch) == 1 or max(lengths[i] + 2 for i in batch) * len(batch) <= 400


def _row(text: str, *spans: tuple[str, str]) -> dict:
    entities, cursor = [], 0
    for name, label in spans:
        start = text.index(name, cursor)
        entities.append({"start": start, "end": start + len(name), "label": label})
        cursor = start + len(name)
    return {"text": text, "entities": entities}


def test_split_location_prefixed_orgs() -> None:
    from training.data import split_location_prefixed_orgs

    rows = [_row("杭州很美", ("杭州", "LOC"))] * 3 + [_row("阿里巴巴上市", ("阿里巴巴", "ORG"))] * 3
    rows += [_row("杭州大学招生", ("杭州大学", "ORG"))] * 3 + [_row("大学", ("大学", "ORG"))]
    rows += [_row("他去了杭州阿里巴巴总部", ("杭州阿里巴巴总部", "ORG"))]
    result, changed = split_location_prefixed_orgs(rows)
    last = result[-1]
    assert [(last["text"][e["start"] : e["end"]], e["label"]) for e in last["entities"]] == [
        ("杭州", "LOC"),
        ("阿里巴巴", "ORG"),
    ]
    # 大学 mostly appears inside longer names: a generic head, so 杭州大学 stays one ORG.
    assert result[6]["entities"] == rows[6]["entities"]
    assert changed == 1


def test_augment_location_prefixes() -> None:
    from training.data import augment_location_prefixes

    rows = [_row("杭州很美", ("杭州", "LOC"))] * 20 + [
        _row("据阿里巴巴称李明来了", ("阿里巴巴", "ORG"), ("李明", "PER"))
    ] * 3
    augmented = augment_location_prefixes(rows, count=2, seed=1)
    assert len(augmented) == 2
    row = augmented[0]
    assert row["text"] == "据杭州阿里巴巴称李明来了"
    spans = [(row["text"][e["start"] : e["end"]], e["label"]) for e in row["entities"]]
    assert spans == [("杭州", "LOC"), ("阿里巴巴", "ORG"), ("李明", "PER")]


def test_headquarters_convention_splits_only_before_zongbu() -> None:
    from training.data import split_location_prefixed_orgs

    rows = [_row("杭州很美", ("杭州", "LOC"))] * 3 + [_row("阿里巴巴上市", ("阿里巴巴", "ORG"))] * 6
    rows += [_row("他去了杭州阿里巴巴", ("杭州阿里巴巴", "ORG"))]
    rows += [_row("他去了杭州阿里巴巴总部", ("杭州阿里巴巴总部", "ORG"))]
    rows += [_row("他去了杭州阿里巴巴总部", ("杭州阿里巴巴", "ORG"))]  # 总部 outside the span
    result, changed = split_location_prefixed_orgs(rows, headquarters_only=True)
    spans = [[(r["text"][e["start"] : e["end"]], e["label"]) for e in r["entities"]] for r in result[-3:]]
    assert spans == [
        [("杭州阿里巴巴", "ORG")],  # no 总部: the corpus's fused name stays
        [("杭州", "LOC"), ("阿里巴巴", "ORG")],
        [("杭州", "LOC"), ("阿里巴巴", "ORG")],
    ]
    assert changed == 2
    # The default convention splits the name without 总部 too.
    assert split_location_prefixed_orgs(rows)[0][-3]["entities"][0]["label"] == "LOC"


def test_augment_location_prefixes_with_suffix() -> None:
    from training.data import augment_location_prefixes

    rows = [_row("杭州很美", ("杭州", "LOC"))] * 20 + [
        _row("据阿里巴巴称李明来了", ("阿里巴巴", "ORG"), ("李明", "PER"))
    ] * 3
    row = augment_location_prefixes(rows, count=1, seed=1, suffix="总部")[0]
    assert row["text"] == "据杭州阿里巴巴总部称李明来了"
    spans = [(row["text"][e["start"] : e["end"]], e["label"]) for e in row["entities"]]
    assert spans == [("杭州", "LOC"), ("阿里巴巴", "ORG"), ("李明", "PER")]


def test_extend_gazetteer_skips_names_the_training_text_leaves_unlabelled() -> None:
    from training.data import extend_gazetteer

    rows = [_row("丁伟来了"), _row("丁伟走了"), _row("李明到了", ("李明", "PER"))]
    gazetteer = [("李明", 1)]
    extra = [("李明", 2), ("丁伟", 1), ("王芳", 1), ("上海", 2)]
    # 李明 keeps its training type; 丁伟 occurs twice unlabelled and is dropped; unseen names join.
    assert extend_gazetteer(gazetteer, extra, rows) == [("上海", 2), ("李明", 1), ("王芳", 1)]
    assert ("丁伟", 1) in extend_gazetteer(gazetteer, extra, rows, max_unlabelled=2)


def test_online_shopping_categories_from_label_runs() -> None:
    rows = []
    for category in ONLINE_SHOPPING_CATEGORIES:
        rows += [{"text": f"{category}好", "label": "positive"}] * 2 + [{"text": f"{category}差", "label": "negative"}]
    categories = online_shopping_categories(rows)
    assert categories == [c for c in ONLINE_SHOPPING_CATEGORIES for _ in range(3)]
    try:
        online_shopping_categories(rows[:-3])
    except ValueError:
        pass
    else:
        raise AssertionError("a missing category block must be reported")


def test_entity_gazetteer_keeps_strings_mostly_labelled_as_entities() -> None:
    from training.data import entity_gazetteer

    rows = [
        {
            "text": "马云在杭州大学",
            "entities": [{"start": 0, "end": 2, "label": "PER"}, {"start": 3, "end": 7, "label": "ORG"}],
        },
        {"text": "杭州很美", "entities": [{"start": 0, "end": 2, "label": "LOC"}]},
        {"text": "大学生", "entities": [{"start": 0, "end": 2, "label": "ORG"}]},  # 大学: 1 label / 2 occurrences
        {"text": "上大学", "entities": []},
        {"text": "大学很好", "entities": []},
    ]
    assert entity_gazetteer(rows) == [("杭州", 2), ("杭州大学", 3), ("马云", 1)]
    assert entity_gazetteer(rows, min_count=2) == []


def test_written_dev_splits_are_the_rows_training_holds_out(tmp_path: Path) -> None:
    import json

    from training.data import load_ner_corpora, load_sentiment_corpora, write_dev_splits

    data = Path(__file__).resolve().parents[2].parent / "shared" / "data"
    if not (data / "ner" / "msra_train.jsonl").is_file():
        pytest.skip(f"corpora not available at {data}")
    written = write_dev_splits(data, tmp_path)
    ner, sentiment = load_ner_corpora(data), load_sentiment_corpora(data, hold_out_fruit=False)
    assert set(written) == set(ner.dev) | set(sentiment.dev) >= {"news_msra", "web_cluener", "review_chnsenticorp"}
    for name, path in written.items():
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        assert rows == {**ner.dev, **sentiment.dev}[name]
    training_texts = {row["text"] for row in ner.train}
    news = [json.loads(line)["text"] for line in written["news_msra"].read_text(encoding="utf-8").splitlines()]
    assert len(news) > 1000 and not training_texts & set(news)
