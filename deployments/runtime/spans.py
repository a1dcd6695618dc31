"""Tag sequences → entities with exact code-point offsets."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

# ○ (a geometric symbol) is written for zero in Chinese numerals (一一○), so it may end a name.
_NUMERAL_SYMBOLS = frozenset("○")


@dataclass(frozen=True)
class Entity:
    """A named entity: ``text == document[start:end]`` (code points, end exclusive)."""

    text: str
    label: str
    start: int
    end: int
    score: float

    def shifted(self, delta: int, document: str) -> Entity:
        """The same entity with offsets moved by ``delta`` into ``document``."""
        start, end = self.start + delta, self.end + delta
        return Entity(text=document[start:end], label=self.label, start=start, end=end, score=self.score)

    def to_dict(self) -> dict[str, object]:
        return {
            "text": self.text,
            "label": self.label,
            "start": self.start,
            "end": self.end,
            "score": self.score,
        }


def tags_to_token_spans(tags: Sequence[str], scheme: str) -> list[tuple[int, int, str]]:
    """Decode a BIO or BIOES tag sequence to ``(first_token, last_token_exclusive, type)`` spans.

    Lenient like seqeval: an I/E that does not continue a span of its own type starts a new one,
    so a model's imperfect tag sequence still yields entities rather than being dropped.
    """
    spans: list[tuple[int, int, str]] = []
    current_start: int | None = None
    current_type = ""

    def close(end: int) -> None:
        nonlocal current_start, current_type
        if current_start is not None:
            spans.append((current_start, end, current_type))
        current_start, current_type = None, ""

    for index, tag in enumerate(tags):
        if tag == "O":
            close(index)
            continue
        prefix, _, entity_type = tag.partition("-")
        continues = current_start is not None and current_type == entity_type
        if prefix == "B" or (prefix in ("I", "E") and not continues):
            close(index)
            current_start, current_type = index, entity_type
        elif prefix == "S":
            close(index)
            spans.append((index, index + 1, entity_type))
            continue
        if prefix == "E" and scheme == "BIOES":
            close(index + 1)
    close(len(tags))
    return spans


def build_entities(
    text: str,
    tags: Sequence[str],
    offsets: Sequence[tuple[int, int]],
    token_scores: Sequence[float],
    scheme: str,
) -> list[Entity]:
    """Entities of one text from per-token tags, code-point offsets and per-token confidences.

    An entity's score is the lowest confidence among its tokens: a span is only as sure as its
    least sure token. A name never begins or ends with an emoji, a symbol or sentence punctuation
    (。，！): such edge tokens are left out of the entity (brackets and quotes stay, as in
    英国《金融时报》), and a span made only of them is no entity.
    """
    if not (len(tags) == len(offsets) == len(token_scores)):
        raise ValueError(
            f"tags ({len(tags)}), offsets ({len(offsets)}) and scores ({len(token_scores)}) differ in length"
        )
    entities = []
    for first, last, label in tags_to_token_spans(tags, scheme):
        while first < last and not _can_edge_a_name(text, offsets[first]):
            first += 1
        while last > first and not _can_edge_a_name(text, offsets[last - 1]):
            last -= 1
        if first == last:
            continue
        start, end = offsets[first][0], offsets[last - 1][1]
        score = float(min(token_scores[first:last]))
        entities.append(Entity(text=text[start:end], label=label, start=start, end=end, score=score))
    return entities


def _can_edge_a_name(text: str, offset: tuple[int, int]) -> bool:
    """Whether the token at ``offset`` may be the first or last token of an entity: it has a
    character that is not a symbol (emoji included), separator, control or sentence punctuation."""
    for char in text[offset[0] : offset[1]]:
        category = unicodedata.category(char)
        if char in _NUMERAL_SYMBOLS or not (category[0] in "SZC" or category == "Po"):
            return True
    return False
