"""Sentence split, token-window planning, entity merge and sentiment aggregation for long documents."""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from itertools import pairwise

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Regex, Tokenizer, models, pre_tokenizers

from deployments.runtime.spans import Entity
from deployments.runtime.tokenizer import SPECIAL_TOKENS, BertChineseTokenizer, Tokenized
from deployments.runtime.tokenizer import Tokenizer as ZhTokenizer
from serve_app.chunking import (
    CLOSING_MARKS,
    LINE_BREAKS,
    SENTENCE_TERMINATORS,
    Window,
    aggregate_sentiment,
    merge_entities,
    plan_windows,
    sentence_sentiments,
    sentence_token_ranges,
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
    "\u200b",
    "\x1c",
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


def _build_bert() -> BertChineseTokenizer:
    pieces = [*SPECIAL_TOKENS, *CJK, "，", "、", "。", "！", "？", "；", "!", "?", *CLOSING_MARKS]
    pieces += [chr(code) for code in range(0x4E00, 0x4E00 + 300)]
    pieces += ["hello", "world", "serve", "a", "##s", "##e", "2024", "20", "##24", "e", "##l", "##o", "h"]
    vocab: dict[str, int] = {}
    for piece in pieces:
        vocab.setdefault(piece, len(vocab))
    return BertChineseTokenizer(vocab)


def _build_pieces() -> ZhTokenizer:
    """A tokenizer of another shape: every non-space code point its own token (SentencePiece-like
    encoders served with one piece per character)."""
    backend = Tokenizer(models.WordLevel({"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(Regex("."), behavior="isolated")]
    )
    return ZhTokenizer(backend, cls_token="<s>", sep_token="</s>", pad_token="<pad>")


TOKENIZERS = {"bert": _build_bert(), "pieces": _build_pieces()}
tokenizer_names = st.sampled_from(sorted(TOKENIZERS))


def encode(text: str, name: str = "bert") -> Tokenized:
    return TOKENIZERS[name].encode([text])[0]


@st.composite
def limits(draw: st.DrawFn) -> tuple[int, int]:
    max_tokens = draw(st.integers(min_value=3, max_value=40))
    overlap = draw(st.integers(min_value=0, max_value=max_tokens - 3))
    return max_tokens, overlap


PROPERTY_SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def in_one_sentence(text: str, tokens: Tokenized, window: Window) -> bool:
    return any(
        first <= window.token_start and window.token_end <= last for first, last in sentence_token_ranges(text, tokens)
    )


def assert_valid_windows(
    text: str, tokens: Tokenized, windows: Sequence[Window], max_tokens: int, overlap: int
) -> None:
    """Windows fit, carry exact spans, are in order, and together hold every token; only the
    pieces of one long sentence overlap, by at most ``overlap`` tokens."""
    if len(tokens) == 0:
        assert windows == []
        return
    assert [window.index for window in windows] == list(range(len(windows)))
    covered: set[int] = set()
    for window in windows:
        assert 1 <= window.num_tokens <= max_tokens - 2
        assert window.start == tokens.offsets[window.token_start, 0]
        assert window.end == tokens.offsets[window.token_end - 1, 1]
        covered.update(range(window.token_start, window.token_end))
    assert covered == set(range(len(tokens)))
    for before, after in pairwise(windows):
        assert before.token_start < after.token_start and before.token_end < after.token_end
        shared = before.token_end - after.token_start
        assert shared <= overlap
        if shared > 0:  # only pieces of one long sentence overlap
            assert in_one_sentence(text, tokens, before) and in_one_sentence(text, tokens, after)


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


def test_sentence_token_ranges_tile_the_tokens_and_skip_empty_sentences() -> None:
    text = "我爱。 \n\u200b\n北京！"
    tokens = encode(text)
    ranges = sentence_token_ranges(text, tokens)
    assert ranges == [(0, 3), (3, 6)]  # the blank and zero-width-only sentences have no tokens
    assert sentence_token_ranges("", encode("")) == []
    assert sentence_token_ranges(" \u200b\x00", encode(" \u200b\x00")) == []


# --------------------------------------------------------------------------------------------
# Windows


@PROPERTY_SETTINGS
@given(documents, limits(), tokenizer_names)
def test_packed_windows_cover_the_tokens_and_fit_the_model(text: str, limit: tuple[int, int], name: str) -> None:
    max_tokens, overlap = limit
    tokens = encode(text, name)
    windows = plan_windows(text, tokens, max_tokens=max_tokens, overlap_tokens=overlap)
    assert_valid_windows(text, tokens, windows, max_tokens, overlap)


@PROPERTY_SETTINGS
@given(documents, limits(), tokenizer_names)
def test_sentence_units_cover_the_tokens_fit_and_never_straddle_sentences(
    text: str, limit: tuple[int, int], name: str
) -> None:
    max_tokens, overlap = limit
    tokens = encode(text, name)
    units = sentence_units(text, tokens, max_tokens=max_tokens, overlap_tokens=overlap)
    assert_valid_windows(text, tokens, units, max_tokens, overlap)
    assert all(in_one_sentence(text, tokens, unit) for unit in units)


@PROPERTY_SETTINGS
@given(documents, limits(), tokenizer_names)
def test_sentiment_units_cover_the_tokens_and_fit(text: str, limit: tuple[int, int], name: str) -> None:
    max_tokens, overlap = limit
    tokens = encode(text, name)
    units = sentiment_units(text, tokens, max_tokens=max_tokens, overlap_tokens=overlap)
    assert_valid_windows(text, tokens, units, max_tokens, overlap)
    if 0 < len(tokens) <= max_tokens - 2:
        assert [(u.token_start, u.token_end) for u in units] == [(0, len(tokens))]


def test_short_sentences_are_packed_whole() -> None:
    text = "我爱北京。天安门上海！人民中国？"
    windows = plan_windows(text, encode(text), max_tokens=13, overlap_tokens=2)  # 11 tokens of text
    assert [text[w.start : w.end] for w in windows] == ["我爱北京。天安门上海！", "人民中国？"]


def test_long_sentence_is_cut_into_overlapping_windows() -> None:
    text = "我爱北京天安门" * 10  # 70 tokens, no sentence end
    tokens = encode(text)
    windows = plan_windows(text, tokens, max_tokens=22, overlap_tokens=5)
    assert_valid_windows(text, tokens, windows, 22, 5)
    assert len(windows) > 3
    for before, after in pairwise(windows):
        assert before.token_end - after.token_start == 5  # no words to snap to: exactly the overlap


def test_long_sentence_cuts_between_words_where_it_can() -> None:
    text = " ".join(["hello", "world", "serve"] * 20)
    tokens = encode(text)  # serve is s + ##e + ... pieces, so words span several tokens
    windows = plan_windows(text, tokens, max_tokens=9, overlap_tokens=2)
    assert_valid_windows(text, tokens, windows, 9, 2)
    for window in windows:
        assert re.fullmatch(r"[a-z]+( [a-z]+)*", text[window.start : window.end]), text[window.start : window.end]


def test_supplementary_plane_characters_and_mixed_newlines() -> None:
    text = "𠀀😀我爱北京。\r\n😀😀天安门！\r𠀀\n\n" + "😀上海𠀀" * 12 + "\u2028人民"
    for name in TOKENIZERS:
        tokens = encode(text, name)
        for max_tokens, overlap in [(3, 0), (5, 2), (8, 3), (64, 8)]:
            windows = plan_windows(text, tokens, max_tokens=max_tokens, overlap_tokens=overlap)
            assert_valid_windows(text, tokens, windows, max_tokens, overlap)
            for window in windows:  # spans are code points: an emoji or 𠀀 is one
                assert text[window.start : window.end].strip()


def test_text_without_tokens_has_no_windows() -> None:
    for text in ["", " ", "\n\r\n", "\u3000 \t", "\u200b\u200b", "\x00\x00"]:
        tokens = encode(text)
        assert plan_windows(text, tokens, max_tokens=8, overlap_tokens=2) == []
        assert sentence_units(text, tokens, max_tokens=8, overlap_tokens=2) == []
        assert sentiment_units(text, tokens, max_tokens=8, overlap_tokens=2) == []


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
    tokens = encode(text)
    windows = plan_windows(text, tokens, max_tokens=512, overlap_tokens=32)
    assert_valid_windows(text, tokens, windows, 512, 32)
    units = sentiment_units(text, tokens, max_tokens=512, overlap_tokens=32)
    assert len(units) > 1000
    assert max(unit.num_tokens for unit in units) <= 510


def test_impossible_settings_are_refused() -> None:
    tokens = encode("我")
    with pytest.raises(ValueError, match="max_tokens is 2"):
        plan_windows("我", tokens, max_tokens=2, overlap_tokens=0)
    with pytest.raises(ValueError, match="overlap_tokens is 6"):
        plan_windows("我", tokens, max_tokens=8, overlap_tokens=6)
    with pytest.raises(ValueError, match="overlap_tokens is -1"):
        sentence_units("我", tokens, max_tokens=8, overlap_tokens=-1)


# --------------------------------------------------------------------------------------------
# merge_entities

LABELS = ["PER", "LOC", "ORG"]


@st.composite
def windows_with_entities(draw: st.DrawFn) -> tuple[str, list[Window], list[list[Entity]]]:
    text = draw(documents)
    max_tokens, overlap = draw(limits())
    tokens = encode(text, "pieces")
    windows = plan_windows(text, tokens, max_tokens=max_tokens, overlap_tokens=overlap)
    per_window = []
    for window in windows:
        entities = []
        for _ in range(draw(st.integers(0, 4))):
            start = draw(st.integers(window.start, window.end - 1))
            end = draw(st.integers(start + 1, min(window.end, start + 6)))
            entities.append(
                Entity(
                    text=text[start:end],
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

    candidates = [e for es in per_window for e in es]
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

    whole = Window(index=0, start=0, end=len(text), token_start=0, token_end=1)
    assert merge_entities(text, [whole], [merged]) == merged

    order = list(range(len(windows)))
    rng.shuffle(order)
    shuffled = [rng.sample(per_window[i], len(per_window[i])) for i in order]
    assert merge_entities(text, [windows[i] for i in order], shuffled) == merged
    # The same window reported twice changes nothing: identical spans collapse.
    assert merge_entities(text, [*windows, *windows], [*per_window, *per_window]) == merged


def _window(index: int, start: int, end: int) -> Window:
    return Window(index=index, start=start, end=end, token_start=start, token_end=end)


def _entity(document: str, start: int, end: int, label: str, score: float) -> Entity:
    return Entity(text=document[start:end], label=label, start=start, end=end, score=score)


def test_entity_in_an_overlap_comes_from_the_window_where_it_is_further_from_the_edge() -> None:
    document = CJK[:24]
    left, right = _window(0, 0, 16), _window(1, 8, 24)
    # Document span 12..14: 2 characters from the right edge of `left`, 4 from the left edge of `right`.
    from_left = _entity(document, 12, 14, "LOC", 0.99)
    from_right = _entity(document, 12, 14, "ORG", 0.6)
    merged = merge_entities(document, [left, right], [[from_left], [from_right]])
    assert merged == [Entity(text=document[12:14], label="ORG", start=12, end=14, score=0.6)]


def test_longer_span_wins_over_one_cut_by_a_window_edge() -> None:
    document = CJK[:24]
    left, right = _window(0, 0, 16), _window(1, 8, 24)
    truncated = _entity(document, 14, 16, "ORG", 0.99)
    whole = _entity(document, 14, 18, "ORG", 0.8)
    other = _entity(document, 2, 4, "PER", 0.9)
    merged = merge_entities(document, [left, right], [[truncated, other], [whole]])
    assert [(e.start, e.end, e.label) for e in merged] == [(2, 4, "PER"), (14, 18, "ORG")]
    assert all(e.text == document[e.start : e.end] for e in merged)


def test_merge_refuses_entities_that_do_not_match_their_window() -> None:
    document = "我爱北京天安门"
    window = _window(0, 2, 7)
    with pytest.raises(ValueError, match="outside window 0"):
        merge_entities(document, [window], [[Entity("爱北", "LOC", 1, 3, 0.9)]])
    with pytest.raises(ValueError, match="does not match the document"):
        merge_entities(document, [window], [[Entity("天安", "LOC", 2, 4, 0.9)]])
    with pytest.raises(ValueError, match="1 windows but entities for 2"):
        merge_entities(document, [window], [[], []])


# --------------------------------------------------------------------------------------------
# Sentiment


def test_short_text_is_one_unit_without_surrounding_whitespace() -> None:
    text = "  今天天气很好。不错！\n"
    (unit,) = sentiment_units(text, encode(text), max_tokens=64, overlap_tokens=8)
    assert (unit.start, unit.end) == (2, len(text) - 1)


def test_long_text_gives_one_unit_per_sentence() -> None:
    text = "今天天气很好。\n\n \n他说：不错！  我爱北京天安门上海人民中国长城"
    tokens = encode(text)
    units = sentiment_units(text, tokens, max_tokens=9, overlap_tokens=2)
    assert [text[u.start : u.end] for u in units[:2]] == ["今天天气很好。", "他说：不错！"]
    assert all(u.num_tokens <= 7 for u in units)
    assert units[-1].end == len(text)


def test_sentence_units_split_even_a_short_text_into_its_sentences() -> None:
    text = "  今天天气很好。不错！\n"
    units = sentence_units(text, encode(text), max_tokens=64, overlap_tokens=8)
    assert [(u.start, u.end, text[u.start : u.end]) for u in units] == [(2, 9, "今天天气很好。"), (9, 12, "不错！")]


def test_aggregate_sentiment_is_the_length_weighted_mean() -> None:
    units = [_window(0, 0, 2), _window(1, 3, 9)]
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
    unit = _window(0, 0, 2)
    with pytest.raises(ValueError, match="1 units but probabilities for 2"):
        aggregate_sentiment([unit], [{"positive": 1.0}, {"positive": 1.0}])
    with pytest.raises(ValueError, match="has labels"):
        aggregate_sentiment([unit, unit], [{"positive": 1.0}, {"negative": 1.0}])
    with pytest.raises(ValueError, match="1 units but probabilities for 0"):
        sentence_sentiments([unit], [])


def test_token_ranges_follow_the_tokens_even_where_a_removed_control_joins_two_words() -> None:
    """``abc\\x1cdef``: the control character ends a sentence but BERT's normaliser drops it, so
    one word piece straddles the boundary. It belongs to the sentence it starts in; spans stay exact."""
    text = "hello\x1cworld。好"
    tokens = encode(text)
    units = sentence_units(text, tokens, max_tokens=16, overlap_tokens=2)
    assert_valid_windows(text, tokens, units, 16, 2)
    assert np.all(np.diff(tokens.offsets[:, 0]) >= 0)
