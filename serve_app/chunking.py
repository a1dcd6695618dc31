"""Long documents: sentence split, windows planned on tokens, entity merge, sentiment aggregation.

Pure Python (no Ray, no model): the ingress tokenises a document once, plans its windows here on
those tokens, fans the windows' token ids out to the model deployments, and maps their answers
back to exact code-point offsets of the original text.

A window is a range of the document's tokens, so its size is known exactly, never re-counted or
estimated: every window fits the model by construction. Its character span runs from its first
token's start to its last token's end, so the offsets the model's tokens carry are document
offsets already.
"""

from __future__ import annotations

import math
import re
import unicodedata
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

import numpy as np

from deployments.runtime.spans import Entity
from deployments.runtime.tokenizer import Tokenized

NUM_SPECIAL_TOKENS = 2  # [CLS] and [SEP] surround every window the model sees

SENTENCE_TERMINATORS = "。！？；!?"
CLOSING_MARKS = "”’」』）"
# The line boundaries of str.splitlines(), so "a line" means what it means everywhere in Python.
LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"

_SENTENCE = re.compile(
    f"[^{SENTENCE_TERMINATORS}{LINE_BREAKS}]*"
    f"(?:[{SENTENCE_TERMINATORS}]+[{CLOSING_MARKS}]*[{LINE_BREAKS}]*|[{LINE_BREAKS}]+)?"
)

# How many tokens a cut inside a long sentence may move to avoid splitting a word.
_MAX_SNAP_TOKENS = 16

# The CJK ideograph blocks BERT-Chinese treats as one token each (as in BERT's _is_chinese_char).
_CJK_RANGES = (
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B820, 0x2CEAF),
    (0xF900, 0xFAFF),
    (0x2F800, 0x2FA1F),
)


@dataclass(frozen=True)
class Window:
    """A run of the document's tokens sent to a model as one sequence.

    Tokens ``token_start .. token_end`` (end exclusive); ``start .. end`` is their character span
    in the document (the first token's start to the last token's end).
    """

    index: int
    start: int
    end: int
    token_start: int
    token_end: int

    @property
    def num_tokens(self) -> int:
        return self.token_end - self.token_start


@dataclass(frozen=True)
class SentenceSentiment:
    """Sentiment of one unit (a sentence, or a window of a very long sentence) of a document."""

    start: int
    end: int
    label: str
    score: float
    probabilities: dict[str, float]

    def to_dict(self) -> dict[str, object]:
        return {"start": self.start, "end": self.end, "label": self.label, "score": self.score}


# --------------------------------------------------------------------------------------------
# Sentences


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Sentence spans ``(start, end)`` that tile ``text`` exactly.

    A sentence ends after a run of 。！？；!? together with any closing quotes or brackets
    (”’」』）) and line breaks right after it, or after a run of line breaks. Concatenating the
    spans' slices gives ``text`` back; no span is empty.
    """
    spans: list[tuple[int, int]] = []
    position, length = 0, len(text)
    while position < length:
        match = _SENTENCE.match(text, position)
        # The pattern consumes at least one code point wherever one is left (see the regex).
        end = match.end() if match else length
        spans.append((position, end))
        position = end
    return spans


def sentence_token_ranges(text: str, tokens: Tokenized) -> list[tuple[int, int]]:
    """Token ranges ``[first, last)`` of the document's sentences, in order, skipping sentences
    with no token (whitespace, controls). A token belongs to the sentence its first character
    is in, so the ranges tile the tokens."""
    if len(tokens) == 0:
        return []
    starts = tokens.offsets[:, 0]
    sentence_starts = np.fromiter((start for start, _ in split_sentences(text)), dtype=np.int64)
    bounds = [*np.searchsorted(starts, sentence_starts, side="left").tolist(), len(tokens)]
    return [(first, last) for first, last in pairwise(bounds) if last > first]


# --------------------------------------------------------------------------------------------
# Windows


def _check_limits(max_tokens: int, overlap_tokens: int) -> int:
    """The token budget of a window's text, after validating the settings."""
    budget = max_tokens - NUM_SPECIAL_TOKENS
    if budget < 1:
        raise ValueError(
            f"max_tokens is {max_tokens}; it must be at least {NUM_SPECIAL_TOKENS + 1} "
            f"({NUM_SPECIAL_TOKENS} special tokens plus one token of text)"
        )
    if not 0 <= overlap_tokens < budget:
        raise ValueError(
            f"overlap_tokens is {overlap_tokens}; with max_tokens={max_tokens} it must be between 0 and {budget - 1}"
        )
    return budget


def _windows(tokens: Tokenized, ranges: Sequence[tuple[int, int]]) -> list[Window]:
    offsets = tokens.offsets
    return [
        Window(index=i, start=int(offsets[first, 0]), end=int(offsets[last - 1, 1]), token_start=first, token_end=last)
        for i, (first, last) in enumerate(ranges)
    ]


def sentence_units(text: str, tokens: Tokenized, *, max_tokens: int, overlap_tokens: int = 32) -> list[Window]:
    """Every sentence its own window; a sentence longer than a window is cut into windows that
    overlap by at most ``overlap_tokens`` tokens (cuts between words where one is near).

    Models trained on single sentences see exactly what they were trained on, so a document's
    results equal its sentences' results. Sentences without tokens are skipped.
    """
    budget = _check_limits(max_tokens, overlap_tokens)
    ranges: list[tuple[int, int]] = []
    for first, last in sentence_token_ranges(text, tokens):
        ranges.extend(_cut(text, tokens, first, last, budget, overlap_tokens))
    return _windows(tokens, ranges)


def plan_windows(text: str, tokens: Tokenized, *, max_tokens: int, overlap_tokens: int = 32) -> list[Window]:
    """Windows that pack whole consecutive sentences up to the model's size; a sentence that
    alone exceeds it is cut as in :func:`sentence_units`. Windows of whole sentences do not
    overlap; together the windows cover every token, in order.
    """
    budget = _check_limits(max_tokens, overlap_tokens)
    ranges: list[tuple[int, int]] = []
    group: tuple[int, int] | None = None  # the sentences packed so far, as one token range
    for first, last in sentence_token_ranges(text, tokens):
        if last - first > budget:
            if group is not None:
                ranges.append(group)
                group = None
            ranges.extend(_cut(text, tokens, first, last, budget, overlap_tokens))
        elif group is not None and last - group[0] <= budget:
            group = (group[0], last)
        else:
            if group is not None:
                ranges.append(group)
            group = (first, last)
    if group is not None:
        ranges.append(group)
    return _windows(tokens, ranges)


def sentiment_units(text: str, tokens: Tokenized, *, max_tokens: int, overlap_tokens: int = 32) -> list[Window]:
    """The units sentiment is computed on: the whole text if it fits one window, otherwise every
    sentence (cut like :func:`sentence_units` where it is too long). No tokens gives ``[]``."""
    budget = _check_limits(max_tokens, overlap_tokens)
    if len(tokens) == 0:
        return []
    if len(tokens) <= budget:
        return _windows(tokens, [(0, len(tokens))])
    return sentence_units(text, tokens, max_tokens=max_tokens, overlap_tokens=overlap_tokens)


def _is_cjk(char: str) -> bool:
    code = ord(char)
    return any(low <= code <= high for low, high in _CJK_RANGES)


def _is_word_char(char: str) -> bool:
    """Whether BERT-style pre-tokenisation keeps ``char`` inside a word with its neighbours."""
    if _is_cjk(char):
        return False
    return char.isalnum() or unicodedata.category(char).startswith("M")


def _inside_word(text: str, position: int) -> bool:
    """Whether cutting ``text`` at ``position`` would split a word."""
    return 0 < position < len(text) and _is_word_char(text[position - 1]) and _is_word_char(text[position])


def _cut(
    text: str, tokens: Tokenized, first: int, last: int, budget: int, overlap_tokens: int
) -> list[tuple[int, int]]:
    """Token ranges covering ``[first, last)``, each at most ``budget`` tokens, consecutive ones
    overlapping by at most ``overlap_tokens``. A range that fits is returned whole.

    A cut is moved back (a window's end) or forward (the next window's start) by up to
    ``_MAX_SNAP_TOKENS`` tokens to fall between words, when that still leaves progress.
    """
    if last - first <= budget:
        return [(first, last)]
    starts = tokens.offsets[:, 0]

    def between_words(position: int) -> bool:  # a cut before token `position`
        return not _inside_word(text, int(starts[position]))

    ranges: list[tuple[int, int]] = []
    start = first
    while True:
        end = start + budget
        if end >= last:
            ranges.append((start, last))
            return ranges
        floor = max(start + 1, end - _MAX_SNAP_TOKENS, start + overlap_tokens + 1)
        end = next((p for p in range(end, floor - 1, -1) if between_words(p)), end)
        ranges.append((start, end))
        following = max(start + 1, end - overlap_tokens)
        ceiling = min(end, following + _MAX_SNAP_TOKENS)
        start = next((p for p in range(following, ceiling + 1) if p == end or between_words(p)), following)


# --------------------------------------------------------------------------------------------
# Entities


def _edge_distance(entity: Entity, window: Window) -> int:
    return min(entity.start - window.start, window.end - entity.end)


def _preference(candidate: tuple[Entity, int]) -> tuple[int, int, int, str, float]:
    """Sort key, best first: longer span, further from its window's edge, then a fixed order."""
    entity, distance = candidate
    score = entity.score if not math.isnan(entity.score) else -math.inf
    return (-(entity.end - entity.start), -distance, entity.start, entity.label, -score)


def merge_entities(
    document: str, windows: Sequence[Window], window_entities: Sequence[Sequence[Entity]]
) -> list[Entity]:
    """Entities of the whole document from the entities each window found.

    ``window_entities[i]`` are in document offsets, inside ``windows[i]``'s span. Where spans
    overlap, the longer one is kept, on equal length the one further from its window's nearest
    edge (where the model saw more context), and remaining ties are broken by start, label and
    higher score, so the result does not depend on the order of windows or entities. Identical
    spans from two windows collapse to one.

    Returns non-overlapping entities sorted by start, with ``text == document[start:end]``.
    Merging is idempotent: the result, given back as one window over the whole document, comes
    out unchanged.
    """
    if len(windows) != len(window_entities):
        raise ValueError(f"got {len(windows)} windows but entities for {len(window_entities)}")
    candidates: list[tuple[Entity, int]] = []
    for window, entities in zip(windows, window_entities, strict=True):
        for entity in entities:
            if not window.start <= entity.start < entity.end <= window.end:
                raise ValueError(
                    f"entity {entity.text!r} at {entity.start}..{entity.end} lies outside window "
                    f"{window.index} ({window.start}..{window.end})"
                )
            if document[entity.start : entity.end] != entity.text:
                raise ValueError(
                    f"entity text {entity.text!r} does not match the document at "
                    f"{entity.start}..{entity.end} ({document[entity.start : entity.end]!r})"
                )
            candidates.append((entity, _edge_distance(entity, window)))

    candidates.sort(key=_preference)
    kept_starts: list[int] = []  # sorted, with kept_ends aligned; kept spans never overlap
    kept_ends: list[int] = []
    kept: list[Entity] = []
    for entity, _ in candidates:
        slot = bisect_left(kept_starts, entity.start)
        if slot > 0 and kept_ends[slot - 1] > entity.start:
            continue  # overlaps the kept span starting before it
        if slot < len(kept_starts) and kept_starts[slot] < entity.end:
            continue  # overlaps the kept span starting at or after it
        kept_starts.insert(slot, entity.start)
        kept_ends.insert(slot, entity.end)
        kept.insert(slot, entity)
    return kept


# --------------------------------------------------------------------------------------------
# Sentiment


def _argmax(probabilities: dict[str, float]) -> str:
    """The most probable label; on a tie, the first in the dict's order."""
    return max(probabilities, key=lambda label: probabilities[label])


def sentence_sentiments(units: Sequence[Window], probabilities: Sequence[dict[str, float]]) -> list[SentenceSentiment]:
    """The per-unit sentiment list: each unit's span, most probable label and its probability."""
    if len(units) != len(probabilities):
        raise ValueError(f"got {len(units)} units but probabilities for {len(probabilities)}")
    result = []
    for unit, probs in zip(units, probabilities, strict=True):
        label = _argmax(probs)
        result.append(
            SentenceSentiment(
                start=unit.start, end=unit.end, label=label, score=probs[label], probabilities=dict(probs)
            )
        )
    return result


def aggregate_sentiment(
    units: Sequence[Window], probabilities: Sequence[dict[str, float]]
) -> tuple[str, float, dict[str, float]]:
    """Document label, its score and per-label probabilities.

    The probabilities are the mean of the units' probabilities weighted by unit length in code
    points, so a long sentence counts for more than an interjection; the label is their argmax
    (on a tie, the first label in the order the units report them).
    """
    if not units:
        raise ValueError("cannot aggregate the sentiment of zero units")
    if len(units) != len(probabilities):
        raise ValueError(f"got {len(units)} units but probabilities for {len(probabilities)}")
    labels = list(probabilities[0])
    if not labels:
        raise ValueError("unit 0 has no label probabilities")
    totals = dict.fromkeys(labels, 0.0)
    total_weight = 0
    for unit, probs in zip(units, probabilities, strict=True):
        if probs.keys() != totals.keys():
            raise ValueError(f"unit {unit.index} has labels {sorted(probs)}; expected {sorted(totals)}")
        weight = unit.end - unit.start
        if weight <= 0:
            raise ValueError(f"unit {unit.index} ({unit.start}..{unit.end}) is empty")
        total_weight += weight
        for label, probability in probs.items():
            totals[label] += weight * probability
    mean = {label: total / total_weight for label, total in totals.items()}
    label = _argmax(mean)
    return label, mean[label], mean
