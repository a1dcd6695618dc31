"""Tag sequences → entities with exact offsets."""

from __future__ import annotations

import pytest

from deployments.runtime.spans import build_entities, tags_to_token_spans


@pytest.mark.parametrize(
    ("tags", "scheme", "expected"),
    [
        (["B-PER", "E-PER", "O", "S-LOC"], "BIOES", [(0, 2, "PER"), (3, 4, "LOC")]),
        (["B-ORG", "I-ORG", "I-ORG", "E-ORG"], "BIOES", [(0, 4, "ORG")]),
        (["B-PER", "I-PER", "O", "B-LOC", "B-LOC"], "BIO", [(0, 2, "PER"), (3, 4, "LOC"), (4, 5, "LOC")]),
        # lenient: a stray I/E starts its own span instead of being dropped
        (["O", "I-PER", "E-PER"], "BIOES", [(1, 3, "PER")]),
        (["B-PER", "I-LOC"], "BIO", [(0, 1, "PER"), (1, 2, "LOC")]),
        # E closes a span, so a following I starts a new one
        (["B-PER", "E-PER", "I-PER"], "BIOES", [(0, 2, "PER"), (2, 3, "PER")]),
        (["B-PER"], "BIOES", [(0, 1, "PER")]),
        ([], "BIO", []),
    ],
)
def test_tags_to_spans(tags: list[str], scheme: str, expected: list[tuple[int, int, str]]) -> None:
    assert tags_to_token_spans(tags, scheme) == expected


def test_entities_use_code_point_offsets_and_min_score() -> None:
    text = "😀马 云在杭州"
    offsets = [(0, 1), (1, 2), (3, 4), (4, 5), (5, 6), (6, 7)]
    tags = ["O", "B-PER", "E-PER", "O", "B-LOC", "E-LOC"]
    entities = build_entities(text, tags, offsets, [0.9, 0.8, 0.7, 0.9, 0.95, 0.99], "BIOES")
    assert [(e.text, e.label, e.start, e.end) for e in entities] == [("马 云", "PER", 1, 4), ("杭州", "LOC", 5, 7)]
    assert entities[0].score == pytest.approx(0.7)
    for entity in entities:
        assert text[entity.start : entity.end] == entity.text


def test_length_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        build_entities("马云", ["B-PER"], [(0, 1), (1, 2)], [1.0, 1.0], "BIO")


@pytest.mark.parametrize(
    ("text", "tags", "expected"),
    [
        # an emoji the model folded into a name is left out, and so is the space after it
        ("😊 马云在", ["B-PER", "I-PER", "E-PER", "O"], [("马云", 2, 4)]),
        ("马云！", ["B-PER", "I-PER", "E-PER"], [("马云", 0, 2)]),
        ("🚀，", ["B-LOC", "E-LOC"], []),
        # brackets and quotes may bound a name; ○ is a numeral zero
        ("英国《金融时报》", ["B-ORG"] + ["I-ORG"] * 6 + ["E-ORG"], [("英国《金融时报》", 0, 8)]),
        ("一一○", ["B-ORG", "I-ORG", "E-ORG"], [("一一○", 0, 3)]),
    ],
)
def test_entities_do_not_begin_or_end_with_symbols_or_sentence_punctuation(
    text: str, tags: list[str], expected: list[tuple[str, int, int]]
) -> None:
    offsets = [(i, i + 1) for i, char in enumerate(text) if not char.isspace()]
    entities = build_entities(text, tags, offsets, [0.9] * len(offsets), "BIOES")
    assert [(e.text, e.start, e.end) for e in entities] == expected
    assert all(text[e.start : e.end] == e.text for e in entities)
