"""Long documents: sentence split, window packing with overlap, entity merge, sentiment aggregation.

Pure Python (no Ray, no model): the ingress plans windows here, fans them out to the model
deployments, and maps their answers back to exact code-point offsets of the original text.

Token limits are checked with a ``TokenCounter`` only (for example
``BertChineseTokenizer.count_tokens``), so the rules below hold for any tokeniser: every window
this module plans is *counted*, never estimated, before it is returned.
"""

from __future__ import annotations

import math
import re
import unicodedata
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise

from deployments.runtime.spans import Entity

TokenCounter = Callable[[Sequence[str]], list[int]]
"""Tokens per text *without* [CLS]/[SEP], e.g. ``BertChineseTokenizer.count_tokens``."""

NUM_SPECIAL_TOKENS = 2  # [CLS] and [SEP] surround every window the model sees

SENTENCE_TERMINATORS = "。！？；!?"
CLOSING_MARKS = "”’」』）"
# The line boundaries of str.splitlines(), so "a line" means what it means everywhere in Python.
LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"

_SENTENCE = re.compile(
    f"[^{SENTENCE_TERMINATORS}{LINE_BREAKS}]*"
    f"(?:[{SENTENCE_TERMINATORS}]+[{CLOSING_MARKS}]*[{LINE_BREAKS}]*|[{LINE_BREAKS}]+)?"
)

# How far (in code points) a cut inside a long sentence may move to avoid splitting a word.
_MAX_SNAP = 32

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
    """A slice of the document sent to a model as one sequence: ``text == document[start:end]``."""

    index: int
    start: int
    end: int
    text: str


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


def plan_windows(text: str, count_tokens: TokenCounter, *, max_tokens: int, overlap_tokens: int = 32) -> list[Window]:
    """Windows that cover ``text`` and each fit the model: token count + 2 <= ``max_tokens``.

    Whole consecutive sentences are packed greedily into windows, which then do not overlap.
    A sentence that alone exceeds the budget is cut into windows overlapping by about
    ``overlap_tokens`` tokens (at most that many), preferring cuts between words. Windows are
    ordered, non-empty, and together cover every code point. Empty text gives ``[]``.

    Raises ``ValueError`` on impossible settings, or when a single code point alone is more
    tokens than a window holds.
    """
    budget = _check_limits(max_tokens, overlap_tokens)
    sentences = split_sentences(text)
    if not sentences:
        return []
    counts = count_tokens([text[start:end] for start, end in sentences])

    # Each planned span with the sentence range [first, last) it packs, or None for a piece of a
    # long sentence (already counted as cut).
    planned: list[tuple[int, int, tuple[int, int] | None]] = []
    group_first, group_tokens = 0, 0

    def flush(upto: int) -> None:
        if upto > group_first:
            planned.append((sentences[group_first][0], sentences[upto - 1][1], (group_first, upto)))

    for index, tokens in enumerate(counts):
        if tokens > budget:
            flush(index)
            start, end = sentences[index]
            pieces = _cut_long_span(text, start, end, tokens, count_tokens, budget, overlap_tokens)
            planned.extend((piece_start, piece_end, None) for piece_start, piece_end in pieces)
            group_first, group_tokens = index + 1, 0
        elif group_tokens + tokens <= budget:
            group_tokens += tokens
        else:
            flush(index)
            group_first, group_tokens = index, tokens
    flush(len(sentences))

    spans = _recount_packed(text, planned, sentences, count_tokens, budget)
    return [Window(index=i, start=start, end=end, text=text[start:end]) for i, (start, end) in enumerate(spans)]


def _recount_packed(
    text: str,
    planned: list[tuple[int, int, tuple[int, int] | None]],
    sentences: list[tuple[int, int]],
    count_tokens: TokenCounter,
    budget: int,
) -> list[tuple[int, int]]:
    """The planned spans, after counting every window of several sentences whole.

    Token counts need not add up across sentence boundaries for every tokeniser; where a
    packed window turns out too long, its sentences (each known to fit) become windows of
    their own.
    """
    multi = [i for i, (_, _, group) in enumerate(planned) if group is not None and group[1] - group[0] > 1]
    recounted = count_tokens([text[planned[i][0] : planned[i][1]] for i in multi]) if multi else []
    too_long = {i for i, tokens in zip(multi, recounted, strict=True) if tokens > budget}
    spans: list[tuple[int, int]] = []
    for i, (start, end, group) in enumerate(planned):
        if i in too_long and group is not None:
            spans.extend(sentences[group[0] : group[1]])
        else:
            spans.append((start, end))
    return spans


def _is_cjk(char: str) -> bool:
    code = ord(char)
    return any(low <= code <= high for low, high in _CJK_RANGES)


def _is_word_char(char: str) -> bool:
    """Whether BERT-style pre-tokenisation keeps ``char`` inside a word with its neighbours."""
    if _is_cjk(char):
        return False
    return char.isalnum() or unicodedata.category(char).startswith("M")


def _inside_word(text: str, position: int) -> bool:
    """Whether cutting ``text`` at ``position`` would split a word (and so likely a token)."""
    return 0 < position < len(text) and _is_word_char(text[position - 1]) and _is_word_char(text[position])


def _snap_back(text: str, position: int, floor: int) -> int:
    """The nearest cut at or before ``position`` (and after ``floor``) that splits no word."""
    limit = max(floor + 1, position - _MAX_SNAP)
    for candidate in range(position, limit - 1, -1):
        if not _inside_word(text, candidate):
            return candidate
    return position


def _snap_forward(text: str, position: int, ceiling: int) -> int:
    """The nearest cut at or after ``position`` (and before ``ceiling``) that splits no word."""
    limit = min(ceiling - 1, position + _MAX_SNAP)
    for candidate in range(position, limit + 1):
        if not _inside_word(text, candidate):
            return candidate
    return position


def _cut_long_span(
    text: str,
    start: int,
    end: int,
    tokens: int,
    count_tokens: TokenCounter,
    budget: int,
    overlap_tokens: int,
) -> list[tuple[int, int]]:
    """Overlapping spans covering the over-long sentence ``text[start:end]``, each within ``budget``.

    Fast path: cut the sentence into small blocks between words, count all blocks in one call,
    and place windows on the running token sum; then count every window once to confirm it
    fits. A tokeniser whose counts do not add up across those cuts falls back to
    :func:`_cut_by_search`, which only ever trusts counted windows.
    """
    spans = _cut_by_blocks(text, start, end, tokens, count_tokens, budget, overlap_tokens)
    if spans is not None:
        counts = count_tokens([text[s:e] for s, e in spans])
        if all(count <= budget for count in counts):
            return spans
    return _cut_by_search(text, start, end, tokens, count_tokens, budget, overlap_tokens)


# Blocks hold about this many tokens: small enough that windows and overlaps land within a few
# tokens of their targets, large enough that counting them is one cheap batch.
_BLOCK_TOKENS = 8


def _cut_by_blocks(
    text: str,
    start: int,
    end: int,
    tokens: int,
    count_tokens: TokenCounter,
    budget: int,
    overlap_tokens: int,
) -> list[tuple[int, int]] | None:
    """Windows placed on block boundaries by summed block counts (unverified), or ``None``
    when some block alone exceeds the budget."""
    chars_per_token = (end - start) / max(tokens, 1)
    # Finer blocks when the budget or the overlap is small, so both are still met closely.
    overlap_precision = overlap_tokens // 4 if overlap_tokens else _BLOCK_TOKENS
    block_tokens = max(1, min(_BLOCK_TOKENS, budget // 32, overlap_precision))
    block_chars = max(1, int(block_tokens * chars_per_token))
    cuts = [start]
    while cuts[-1] < end:
        cut = min(end, cuts[-1] + block_chars)
        while cut < end and _inside_word(text, cut):
            cut += 1
        cuts.append(cut)
    counts = count_tokens([text[a:b] for a, b in pairwise(cuts)])
    if any(count > budget for count in counts):
        return None
    running = [0]  # running[i]: tokens before block i
    for count in counts:
        running.append(running[-1] + count)

    blocks = len(counts)
    spans: list[tuple[int, int]] = []
    first = 0
    while True:
        last = bisect_right(running, running[first] + budget) - 1  # blocks [first, last) fit
        spans.append((cuts[first], cuts[last]))
        if last == blocks:
            return spans
        # The next window starts at the earliest block from which at most overlap_tokens
        # tokens remain up to ``last``, provided it can then take in at least block ``last``.
        following = bisect_left(running, running[last] - overlap_tokens, first + 1, last)
        if running[last + 1] - running[following] > budget:
            following = last
        first = following


def _cut_by_search(
    text: str,
    start: int,
    end: int,
    tokens: int,
    count_tokens: TokenCounter,
    budget: int,
    overlap_tokens: int,
) -> list[tuple[int, int]]:
    """Overlapping spans covering ``text[start:end]``, each within ``budget`` tokens, for any counter.

    Each window's end is the furthest position whose prefix still fits (found by galloping
    then bisecting on counted prefixes, so the cost grows with the window, not the sentence),
    pulled back to a word boundary if one is near. The next window starts where the last
    ``overlap_tokens`` tokens of the previous one begin.
    """
    chars_per_token = (end - start) / max(tokens, 1)

    def fits(window_start: int, window_end: int) -> bool:
        return count_tokens([text[window_start:window_end]])[0] <= budget

    spans: list[tuple[int, int]] = []
    window_start, covered = start, start
    while covered < end:
        # Invariant: text[window_start:covered] fits (it is the overlap, or empty).
        if not fits(window_start, covered + 1):
            if window_start == covered:
                raise ValueError(
                    f"the character {text[covered]!r} at offset {covered} alone has more than "
                    f"{budget} tokens; no window of max_tokens={budget + NUM_SPECIAL_TOKENS} can hold it"
                )
            window_start = covered  # the overlap leaves no room for progress: drop it
            continue
        window_end = _furthest_fitting_end(fits, window_start, covered + 1, end, chars_per_token * budget)
        if window_end < end:
            snapped = _snap_back(text, window_end, covered)
            if snapped != window_end and snapped > covered and fits(window_start, snapped):
                window_end = snapped
        spans.append((window_start, window_end))
        covered = window_end
        if covered < end:
            window_start = _overlap_start(text, count_tokens, window_start, covered, overlap_tokens, chars_per_token)
    return spans


def _furthest_fitting_end(
    fits: Callable[[int, int], bool], window_start: int, low: int, limit: int, estimate: float
) -> int:
    """The largest end in ``[low, limit]`` such that the window fits, given that ``low`` does."""
    step = max(1, int(estimate) - (low - window_start))
    high = None
    probe = low
    while high is None:  # gallop: grow the step until a probe no longer fits
        probe = min(limit, probe + step)
        if fits(window_start, probe):
            low = probe
            if probe == limit:
                return limit
            step *= 2
        else:
            high = probe
    while high - low > 1:
        middle = (low + high) // 2
        if fits(window_start, middle):
            low = middle
        else:
            high = middle
    return low


def _overlap_start(
    text: str,
    count_tokens: TokenCounter,
    window_start: int,
    window_end: int,
    overlap_tokens: int,
    chars_per_token: float,
) -> int:
    """Where the next window starts: the earliest position after ``window_start`` from which
    ``text[position:window_end]`` has at most ``overlap_tokens`` tokens, moved forward to a
    word boundary if one is near."""
    if overlap_tokens == 0:
        return window_end

    def within(position: int) -> bool:
        return count_tokens([text[position:window_end]])[0] <= overlap_tokens

    floor = window_start + 1  # always move forward, so the cutting terminates
    # Gallop backwards from the end while the suffix stays within the overlap.
    high, step = window_end, max(1, int(overlap_tokens * chars_per_token))
    low = None
    while low is None:
        probe = max(floor, high - step)
        if within(probe):
            high = probe
            if probe == floor:
                return _snap_forward(text, floor, window_end)
            step *= 2
        else:
            low = probe
    while high - low > 1:
        middle = (low + high) // 2
        if within(middle):
            high = middle
        else:
            low = middle
    return _snap_forward(text, high, window_end)


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
    """Entities of the whole document from the entities of each window.

    ``window_entities[i]`` has offsets relative to ``windows[i].text``. They are shifted to
    document offsets; where spans overlap, the longer one is kept, on equal length the one
    further from its window's nearest edge (where the model saw more context), and remaining
    ties are broken by start, label and higher score, so the result does not depend on the
    order of windows or entities. Identical spans from two windows collapse to one.

    Returns non-overlapping entities sorted by start, with ``text == document[start:end]``.
    Merging is idempotent: the result, given back as one window over the whole document,
    comes out unchanged.
    """
    if len(windows) != len(window_entities):
        raise ValueError(f"got {len(windows)} windows but entities for {len(window_entities)}")
    candidates: list[tuple[Entity, int]] = []
    for window, entities in zip(windows, window_entities, strict=True):
        if document[window.start : window.end] != window.text:
            raise ValueError(f"window {window.index} ({window.start}..{window.end}) does not match the document")
        for entity in entities:
            if not 0 <= entity.start < entity.end <= len(window.text):
                raise ValueError(
                    f"entity {entity.text!r} at {entity.start}..{entity.end} lies outside window "
                    f"{window.index}, which has {len(window.text)} characters"
                )
            if window.text[entity.start : entity.end] != entity.text:
                raise ValueError(
                    f"entity text {entity.text!r} does not match window {window.index} at "
                    f"{entity.start}..{entity.end} ({window.text[entity.start : entity.end]!r})"
                )
            shifted = entity.shifted(window.start, document)
            candidates.append((shifted, _edge_distance(shifted, window)))

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


def _content_span(text: str, start: int, end: int) -> tuple[int, int]:
    """``(start, end)`` narrowed to exclude leading and trailing whitespace (empty if all is)."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def sentiment_units(
    text: str, count_tokens: TokenCounter, *, max_tokens: int, overlap_tokens: int = 32
) -> list[Window]:
    """The units sentiment is computed on.

    If the text without surrounding whitespace fits one window, it is the only unit. Otherwise
    every sentence (without its surrounding whitespace) is a unit; whitespace-only sentences are
    skipped, and a sentence longer than a window is cut into overlapping windows as in
    :func:`plan_windows`. Whitespace-only text gives ``[]``.
    """
    budget = _check_limits(max_tokens, overlap_tokens)
    start, end = _content_span(text, 0, len(text))
    if start == end:
        return []
    if count_tokens([text[start:end]])[0] <= budget:
        return [Window(index=0, start=start, end=end, text=text[start:end])]

    return sentence_units(text, count_tokens, max_tokens=max_tokens, overlap_tokens=overlap_tokens)


def sentence_units(text: str, count_tokens: TokenCounter, *, max_tokens: int, overlap_tokens: int = 32) -> list[Window]:
    """Every sentence its own unit, without its surrounding whitespace.

    Whitespace-only sentences are skipped; a sentence longer than a window is cut into
    overlapping windows as in :func:`plan_windows`. Models trained on single sentences see
    exactly what they were trained on, so a document's results equal its sentences' results.
    """
    budget = _check_limits(max_tokens, overlap_tokens)
    sentences = [_content_span(text, s, e) for s, e in split_sentences(text)]
    sentences = [(s, e) for s, e in sentences if s < e]
    if not sentences:
        return []
    counts = count_tokens([text[s:e] for s, e in sentences])
    spans: list[tuple[int, int]] = []
    for (s, e), tokens in zip(sentences, counts, strict=True):
        if tokens <= budget:
            spans.append((s, e))
        else:
            # A cut may fall next to whitespace; a unit's span is its content, as for sentences.
            pieces = _cut_long_span(text, s, e, tokens, count_tokens, budget, overlap_tokens)
            spans.extend(piece for piece in (_content_span(text, a, b) for a, b in pieces) if piece[0] < piece[1])
    return [Window(index=i, start=s, end=e, text=text[s:e]) for i, (s, e) in enumerate(spans)]


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
