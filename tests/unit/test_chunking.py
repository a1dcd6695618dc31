"""Sentence split, window planning, entity merge and sentiment aggregation for long documents."""

from __future__ import annotations

import math
import random
import re
from collections.abc import Sequence
from itertools import pairwise

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deployments.runtime.spans import Entity
from deployments.runtime.tokenizer import SPECIAL_TOKENS, BertChineseTokenizer
from serve_app.chunking import (
    CLOSING_MARKS,
    LINE_BREAKS,
    SENTENCE_TERMINATORS,
    Window,
    aggregate_sentiment,
    merge_entities,
    plan_windows,
    sentence_sentiments,
    sentence_units,
    sentiment_units,
    split_sentences,
)

CJK = "我爱北京天安门上海人民中国长城今天气很好不错的他说再见银行"
FRAGMENTS = [
    *CJK,
    *SENTENCE_TERMINATORS,
    *CLOSING_MARKS,
    "\n",
    "\r\n",
    "\r",
    "\n\n",
    "\u2028",
    " ",
    "\t",
    "\u3000",
    "，",
    "、",
    "hello",
    "world",
    "Serve",
    "a",
    "2024",
    "e\u0301",
    "😀",
    "𠀀",
]

texts = st.lists(st.sampled_from(FRAGMENTS), max_size=80).map("".join)
# Runs without sentence ends, so some sentences outgrow small windows.
long_runs = st.lists(st.sampled_from([*CJK, " ", "hello", "😀", "𠀀", "，"]), min_size=20, max_size=120).map("".join)
documents = st.one_of(texts, st.tuples(texts, long_runs, texts).map("".join))


def _build_tokenizer() -> BertChineseTokenizer:
    pieces = [*SPECIAL_TOKENS, *CJK, "，", "、", "。", "！", "？", "；", "!", "?", *CLOSING_MARKS]
    pieces += [chr(code) for code in range(0x4E00, 0x4E00 + 300)]
    pieces += ["hello", "world", "serve", "a", "##s", "##e", "2024", "20", "##24", "e"]
    vocab: dict[str, int] = {}
    for piece in pieces:
        vocab.setdefault(piece, len(vocab))
    return BertChineseTokenizer(vocab)


TOKENIZER = _build_tokenizer()


def bert_counter(texts: Sequence[str]) -> list[int]:
    return TOKENIZER.count_tokens(texts)


def piece_counter(texts: Sequence[str]) -> list[int]:
    """One token per non-space code point; Latin letter/digit runs cost one per three letters."""
    counts = []
    for text in texts:
        words = re.findall(r"[A-Za-z0-9]+|\S", text)
        counts.append(sum(math.ceil(len(word) / 3) for word in words))
    return counts


def surcharge_counter(texts: Sequence[str]) -> list[int]:
    """A counter whose counts do not add up: longer texts cost extra, as if per-text overhead grew."""
    return [count + len(text) // 10 for count, text in zip(piece_counter(texts), texts, strict=True)]


COUNTERS = {"bert": bert_counter, "pieces": piece_counter, "surcharge": surcharge_counter}
counters = st.sampled_from(sorted(COUNTERS))


@st.composite
def limits(draw: st.DrawFn) -> tuple[int, int]:
    max_tokens = draw(st.integers(min_value=3, max_value=40))
    overlap = draw(st.integers(min_value=0, max_value=max_tokens - 3))
    return max_tokens, overlap


PROPERTY_SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def assert_valid_windows(text: str, windows: Sequence[Window], counter_name: str, max_tokens: int) -> None:
    if not text:
        assert windows == []
        return
    assert [window.index for window in windows] == list(range(len(windows)))
    for window in windows:
        assert window.start < window.end
        assert window.text == text[window.start : window.end]
    # Every character is covered: the first starts at 0, the last ends at the end, no gaps.
    assert windows[0].start == 0
    assert windows[-1].end == len(text)
    sentences = split_sentences(text)
    for before, after in pairwise(windows):
        assert before.start < after.start <= before.end < after.end
        if after.start < before.end:  # only pieces of one long sentence overlap
            assert any(s <= before.start and after.end <= e for s, e in sentences)
    counts = COUNTERS[counter_name]([window.text for window in windows])
    assert max(counts) + 2 <= max_tokens


# --------------------------------------------------------------------------------------------
# split_sentences


def test_split_sentences_ends_after_terminators_closers_and_line_breaks() -> None:
    text = "你好。”他说！\r\n好的？？」再见\n\n最后"
    spans = split_sentences(text)
    assert [text[s:e] for s, e in spans] == ["你好。”", "他说！\r\n", "好的？？」", "再见\n\n", "最后"]


def test_split_sentences_of_empty_and_blank_text() -> None:
    assert split_sentences("") == []
    assert split_sentences("   ") == [(0, 3)]
    assert split_sentences("\n\n") == [(0, 2)]


_SENTENCE_SHAPE = re.compile(
    f"[^{SENTENCE_TERMINATORS}{LINE_BREAKS}]*"
    f"(?:[{SENTENCE_TERMINATORS}]+[{CLOSING_MARKS}]*[{LINE_BREAKS}]*|[{LINE_BREAKS}]+)?"
)


@PROPERTY_SETTINGS
@given(documents)
def test_sentences_tile_the_text(text: str) -> None:
    spans = split_sentences(text)
    assert "".join(text[s:e] for s, e in spans) == text
    position = 0
    for start, end in spans:
        assert start == position < end
        assert _SENTENCE_SHAPE.fullmatch(text, start, end)
        position = end
    for _, end in spans[:-1]:  # every sentence but the last really ended
        assert text[end - 1] in SENTENCE_TERMINATORS + CLOSING_MARKS + LINE_BREAKS


# --------------------------------------------------------------------------------------------
# plan_windows


@PROPERTY_SETTINGS
@given(documents, limits(), counters)
def test_windows_cover_the_text_and_fit_the_model(text: str, limit: tuple[int, int], counter_name: str) -> None:
    max_tokens, overlap = limit
    windows = plan_windows(text, COUNTERS[counter_name], max_tokens=max_tokens, overlap_tokens=overlap)
    assert_valid_windows(text, windows, counter_name, max_tokens)


def test_short_sentences_are_packed_whole() -> None:
    text = "我爱北京。天安门上海！人民中国？"
    windows = plan_windows(text, bert_counter, max_tokens=13, overlap_tokens=2)  # 11 tokens of text
    assert [w.text for w in windows] == ["我爱北京。天安门上海！", "人民中国？"]


def test_packed_window_that_counts_more_than_its_sentences_is_split_again() -> None:
    def joining_costs(texts: Sequence[str]) -> list[int]:
        # Each sentence boundary inside a text costs 3 tokens more than its sentences alone.
        return [
            count + 3 * max(0, text.count("。") - 1) for count, text in zip(piece_counter(texts), texts, strict=True)
        ]

    text = "我爱。北京。天安门。"
    windows = plan_windows(text, joining_costs, max_tokens=10, overlap_tokens=2)
    assert [w.text for w in windows] == ["我爱。", "北京。", "天安门。"]
    assert [w.index for w in windows] == [0, 1, 2]


def test_long_sentence_is_cut_into_overlapping_windows() -> None:
    text = "我爱北京天安门" * 10  # 70 tokens, no sentence end
    windows = plan_windows(text, bert_counter, max_tokens=22, overlap_tokens=5)
    assert_valid_windows(text, windows, "bert", 22)
    assert len(windows) > 3
    for before, after in pairwise(windows):
        overlap = bert_counter([text[after.start : before.end]])[0]
        assert 1 <= overlap <= 5


def test_long_sentence_cuts_between_words_where_it_can() -> None:
    text = " ".join(["hello", "world", "serve"] * 20)
    windows = plan_windows(text, bert_counter, max_tokens=9, overlap_tokens=2)
    assert_valid_windows(text, windows, "bert", 9)
    for window in windows:
        assert re.fullmatch(r"\s*[a-z]+( [a-z]+)*\s*", window.text), window.text


def test_supplementary_plane_characters_and_mixed_newlines() -> None:
    text = "𠀀😀我爱北京。\r\n😀😀天安门！\r𠀀\n\n" + "😀上海𠀀" * 12 + "\u2028人民"
    for name in COUNTERS:
        for max_tokens, overlap in [(3, 0), (5, 2), (8, 3), (64, 8)]:
            windows = plan_windows(text, COUNTERS[name], max_tokens=max_tokens, overlap_tokens=overlap)
            assert_valid_windows(text, windows, name, max_tokens)


def test_whitespace_only_text_gives_valid_windows() -> None:
    for text in [" ", "\n\r\n", "\u3000 \t"]:
        windows = plan_windows(text, bert_counter, max_tokens=8, overlap_tokens=2)
        assert_valid_windows(text, windows, "bert", 8)


def test_empty_text_has_no_windows() -> None:
    assert plan_windows("", bert_counter, max_tokens=8, overlap_tokens=2) == []


def test_two_hundred_thousand_characters() -> None:
    rng = random.Random(7)
    parts: list[str] = []
    size = 0
    while size < 200_000:
        if rng.random() < 0.01:  # now and then a very long sentence with no sentence end
            part = "".join(rng.choice([*CJK, " hello", "😀", "，"]) for _ in range(rng.randint(2_000, 6_000)))
        else:
            part = "".join(rng.choice(FRAGMENTS[: len(CJK)]) for _ in range(rng.randint(3, 80)))
            part += rng.choice(["。", "！", "？”", "\n", "\r\n", "；"])
        parts.append(part)
        size += len(part)
    text = "".join(parts)
    windows = plan_windows(text, bert_counter, max_tokens=512, overlap_tokens=32)
    assert_valid_windows(text, windows, "bert", 512)
    units = sentiment_units(text, bert_counter, max_tokens=512, overlap_tokens=32)
    assert len(units) > 1000
    assert max(bert_counter([unit.text for unit in units])) <= 510


def test_impossible_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="max_tokens is 2"):
        plan_windows("我", bert_counter, max_tokens=2, overlap_tokens=0)
    with pytest.raises(ValueError, match="overlap_tokens is 6"):
        plan_windows("我", bert_counter, max_tokens=8, overlap_tokens=6)
    with pytest.raises(ValueError, match="overlap_tokens is -1"):
        plan_windows("我", bert_counter, max_tokens=8, overlap_tokens=-1)


def test_a_character_too_big_for_any_window_is_refused() -> None:
    def heavy(texts: Sequence[str]) -> list[int]:
        return [len(text) + 4 * text.count("X") for text in texts]

    with pytest.raises(ValueError, match="'X' at offset 3"):
        plan_windows("我爱北X京", heavy, max_tokens=5, overlap_tokens=1)


# --------------------------------------------------------------------------------------------
# merge_entities

LABELS = ["PER", "LOC", "ORG"]


@st.composite
def windows_with_entities(draw: st.DrawFn) -> tuple[str, list[Window], list[list[Entity]]]:
    text = draw(documents)
    max_tokens, overlap = draw(limits())
    windows = plan_windows(text, piece_counter, max_tokens=max_tokens, overlap_tokens=overlap)
    per_window = []
    for window in windows:
        entities = []
        for _ in range(draw(st.integers(0, 4))):
            start = draw(st.integers(0, len(window.text) - 1))
            end = draw(st.integers(start + 1, min(len(window.text), start + 6)))
            entities.append(
                Entity(
                    text=window.text[start:end],
                    label=draw(st.sampled_from(LABELS)),
                    start=start,
                    end=end,
                    score=draw(st.sampled_from([0.5, 0.9, 0.99])),
                )
            )
        per_window.append(entities)
    return text, windows, per_window


@PROPERTY_SETTINGS
@given(windows_with_entities(), st.randoms(use_true_random=False))
def test_merged_entities_are_exact_idempotent_and_order_independent(
    case: tuple[str, list[Window], list[list[Entity]]], rng: random.Random
) -> None:
    text, windows, per_window = case
    merged = merge_entities(text, windows, per_window)

    candidates = [e.shifted(w.start, text) for w, es in zip(windows, per_window, strict=True) for e in es]
    for entity in merged:
        assert entity.text == text[entity.start : entity.end]
        assert entity in candidates
    for before, after in pairwise(merged):
        assert before.end <= after.start
    # Nothing is dropped without a reason: a dropped span overlaps a kept one at least as long.
    for candidate in candidates:
        if candidate not in merged:
            assert any(
                kept.start < candidate.end
                and candidate.start < kept.end
                and kept.end - kept.start >= candidate.end - candidate.start
                for kept in merged
            )

    whole = Window(index=0, start=0, end=len(text), text=text)
    assert merge_entities(text, [whole], [merged]) == merged

    order = list(range(len(windows)))
    rng.shuffle(order)
    shuffled = [rng.sample(per_window[i], len(per_window[i])) for i in order]
    assert merge_entities(text, [windows[i] for i in order], shuffled) == merged
    # The same window reported twice changes nothing: identical spans collapse.
    assert merge_entities(text, [*windows, *windows], [*per_window, *per_window]) == merged


def _entity(document: str, window: Window, start: int, end: int, label: str, score: float) -> Entity:
    """An entity at document offsets ``start..end``, expressed relative to ``window``."""
    return Entity(
        text=document[start:end], label=label, start=start - window.start, end=end - window.start, score=score
    )


def test_entity_in_an_overlap_comes_from_the_window_where_it_is_further_from_the_edge() -> None:
    document = CJK[:24]
    left = Window(index=0, start=0, end=16, text=document[0:16])
    right = Window(index=1, start=8, end=24, text=document[8:24])
    # Document span 12..14: 2 characters from the right edge of `left`, 4 from the left edge of `right`.
    from_left = _entity(document, left, 12, 14, "LOC", 0.99)
    from_right = _entity(document, right, 12, 14, "ORG", 0.6)
    merged = merge_entities(document, [left, right], [[from_left], [from_right]])
    assert merged == [Entity(text=document[12:14], label="ORG", start=12, end=14, score=0.6)]


def test_longer_span_wins_over_one_cut_by_a_window_edge() -> None:
    document = CJK[:24]
    left = Window(index=0, start=0, end=16, text=document[0:16])
    right = Window(index=1, start=8, end=24, text=document[8:24])
    truncated = _entity(document, left, 14, 16, "ORG", 0.99)
    whole = _entity(document, right, 14, 18, "ORG", 0.8)
    other = _entity(document, left, 2, 4, "PER", 0.9)
    merged = merge_entities(document, [left, right], [[truncated, other], [whole]])
    assert [(e.start, e.end, e.label) for e in merged] == [(2, 4, "PER"), (14, 18, "ORG")]
    assert all(e.text == document[e.start : e.end] for e in merged)


def test_merge_refuses_entities_that_do_not_match_their_window() -> None:
    document = "我爱北京天安门"
    window = Window(index=0, start=2, end=7, text=document[2:7])
    with pytest.raises(ValueError, match="outside window 0"):
        merge_entities(document, [window], [[Entity("门", "LOC", 4, 6, 0.9)]])
    with pytest.raises(ValueError, match="does not match window 0"):
        merge_entities(document, [window], [[Entity("天安", "LOC", 0, 2, 0.9)]])
    with pytest.raises(ValueError, match="1 windows but entities for 2"):
        merge_entities(document, [window], [[], []])
    with pytest.raises(ValueError, match="does not match the document"):
        merge_entities(document, [Window(index=0, start=0, end=2, text="北京")], [[]])


# --------------------------------------------------------------------------------------------
# Sentiment


def test_short_text_is_one_unit_without_surrounding_whitespace() -> None:
    text = "  今天天气很好。不错！\n"
    units = sentiment_units(text, bert_counter, max_tokens=64, overlap_tokens=8)
    assert units == [Window(index=0, start=2, end=len(text) - 1, text="今天天气很好。不错！")]
    assert sentiment_units(" \n\u3000", bert_counter, max_tokens=64, overlap_tokens=8) == []


def test_long_text_gives_one_unit_per_sentence() -> None:
    text = "今天天气很好。\n\n \n他说：不错！  我爱北京天安门上海人民中国长城"
    units = sentiment_units(text, bert_counter, max_tokens=9, overlap_tokens=2)
    assert [u.text for u in units[:2]] == ["今天天气很好。", "他说：不错！"]
    assert all(bert_counter([u.text])[0] <= 7 for u in units)
    assert units[-1].end == len(text)
    assert all(u.text == text[u.start : u.end] for u in units)


def test_sentence_units_split_even_a_short_text_into_its_sentences() -> None:
    text = "  今天天气很好。不错！\n"
    units = sentence_units(text, bert_counter, max_tokens=64, overlap_tokens=8)
    assert [(u.start, u.end, u.text) for u in units] == [(2, 9, "今天天气很好。"), (9, 12, "不错！")]
    assert sentence_units(" \n\u3000", bert_counter, max_tokens=64, overlap_tokens=8) == []


@PROPERTY_SETTINGS
@given(documents, limits(), counters)
def test_sentence_units_cover_all_content_fit_and_never_straddle_sentences(
    text: str, limit: tuple[int, int], counter_name: str
) -> None:
    max_tokens, overlap = limit
    counter = COUNTERS[counter_name]
    units = sentence_units(text, counter, max_tokens=max_tokens, overlap_tokens=overlap)
    covered: set[int] = set()
    for unit in units:
        assert unit.text == text[unit.start : unit.end] and unit.text.strip() == unit.text
        covered.update(range(unit.start, unit.end))
        assert any(s <= unit.start and unit.end <= e for s, e in split_sentences(text))
    assert {i for i, char in enumerate(text) if not char.isspace()} <= covered
    if units:
        assert max(counter([u.text for u in units])) + 2 <= max_tokens


@PROPERTY_SETTINGS
@given(documents, limits(), counters)
def test_sentiment_units_cover_all_content_and_fit(text: str, limit: tuple[int, int], counter_name: str) -> None:
    max_tokens, overlap = limit
    counter = COUNTERS[counter_name]
    units = sentiment_units(text, counter, max_tokens=max_tokens, overlap_tokens=overlap)
    covered: set[int] = set()
    for unit in units:
        assert unit.text == text[unit.start : unit.end]
        assert unit.text and not unit.text[0].isspace() and not unit.text[-1].isspace()
        covered.update(range(unit.start, unit.end))
    assert {i for i, char in enumerate(text) if not char.isspace()} <= covered
    if units:
        assert max(counter([u.text for u in units])) + 2 <= max_tokens
        assert [u.start for u in units] == sorted(u.start for u in units)


def test_aggregate_sentiment_is_the_length_weighted_mean() -> None:
    units = [Window(0, 0, 2, "好的"), Window(1, 3, 9, "这太糟糕了啊")]
    probabilities = [{"positive": 0.9, "negative": 0.1}, {"positive": 0.2, "negative": 0.8}]
    label, score, mean = aggregate_sentiment(units, probabilities)
    # positive: (2 * 0.9 + 6 * 0.2) / 8 = 0.375; negative: (2 * 0.1 + 6 * 0.8) / 8 = 0.625
    assert label == "negative"
    assert score == pytest.approx(0.625)
    assert mean == pytest.approx({"positive": 0.375, "negative": 0.625})
    per_sentence = sentence_sentiments(units, probabilities)
    assert [s.to_dict() for s in per_sentence] == [
        {"start": 0, "end": 2, "label": "positive", "score": 0.9},
        {"start": 3, "end": 9, "label": "negative", "score": 0.8},
    ]


def test_aggregate_sentiment_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="zero units"):
        aggregate_sentiment([], [])
    unit = Window(0, 0, 2, "好的")
    with pytest.raises(ValueError, match="1 units but probabilities for 2"):
        aggregate_sentiment([unit], [{"positive": 1.0}, {"positive": 1.0}])
    with pytest.raises(ValueError, match="has labels"):
        aggregate_sentiment([unit, unit], [{"positive": 1.0}, {"negative": 1.0}])
    with pytest.raises(ValueError, match="1 units but probabilities for 0"):
        sentence_sentiments([unit], [])
