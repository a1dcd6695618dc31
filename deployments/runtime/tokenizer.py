"""BERT-Chinese tokenisation with offsets in code points of the original text.

Built on Hugging Face ``tokenizers`` (BertNormalizer, BertPreTokenizer, WordPiece), which reports
offsets in characters of the *original* string — Python code points, so supplementary-plane
characters and emoji count as one — even where normalisation changed the text. Serving and
training both use this module, so a model is served exactly as it was trained.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
NUM_SPECIAL_PER_SEQUENCE = 2  # [CLS] and [SEP]


@dataclass(frozen=True)
class EncodedBatch:
    """A padded batch ready for ONNX Runtime, with the offset map of every real token.

    Position 0 of each row is [CLS]; the real tokens of text ``i`` sit at positions
    ``1 .. len(offsets[i])``, followed by [SEP] and padding.
    """

    input_ids: np.ndarray
    attention_mask: np.ndarray
    token_type_ids: np.ndarray
    offsets: list[list[tuple[int, int]]]

    def feeds(self, input_names: Sequence[str]) -> dict[str, np.ndarray]:
        """The ONNX feed dict for a model taking ``input_names``."""
        available = {
            "input_ids": self.input_ids,
            "attention_mask": self.attention_mask,
            "token_type_ids": self.token_type_ids,
        }
        return {name: available[name] for name in input_names}


class TextTooLongError(ValueError):
    """A text has more tokens than the model's maximum sequence length allows."""

    def __init__(self, num_tokens: int, max_tokens: int) -> None:
        super().__init__(
            f"text has {num_tokens} tokens; the model takes at most {max_tokens} (split it into windows first)"
        )
        self.num_tokens = num_tokens
        self.max_tokens = max_tokens


class BertChineseTokenizer:
    """WordPiece tokeniser in the BERT-Chinese style over a ``vocab.txt``.

    Every CJK character is its own token, Latin words and digit runs become word pieces,
    whitespace yields no token. Construct with :meth:`from_vocab_file`.
    """

    def __init__(self, vocab: dict[str, int], *, lowercase: bool = True) -> None:
        missing = [token for token in SPECIAL_TOKENS if token not in vocab]
        if missing:
            raise ValueError(f"vocabulary lacks the special tokens {missing}")
        self.vocab = vocab
        self.lowercase = lowercase
        self.pad_id = vocab["[PAD]"]
        self.cls_id = vocab["[CLS]"]
        self.sep_id = vocab["[SEP]"]
        self.unk_id = vocab["[UNK]"]
        tokenizer = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
        tokenizer.normalizer = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=True, strip_accents=False, lowercase=lowercase
        )
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        self._tokenizer = tokenizer

    @classmethod
    def from_vocab_file(cls, path: str | Path, *, lowercase: bool = True) -> BertChineseTokenizer:
        """Read a BERT ``vocab.txt`` (one token per line; the line number is the id)."""
        vocab: dict[str, int] = {}
        with open(path, encoding="utf-8") as handle:
            for index, line in enumerate(handle):
                token = line.rstrip("\n").rstrip("\r")
                if token and token not in vocab:
                    vocab[token] = index
        return cls(vocab, lowercase=lowercase)

    @property
    def vocab_size(self) -> int:
        return max(self.vocab.values()) + 1

    def tokenize(self, texts: Sequence[str]) -> list[tuple[list[int], list[tuple[int, int]]]]:
        """Token ids and code-point offsets of each text, without special tokens."""
        encodings = self._tokenizer.encode_batch(list(texts), add_special_tokens=False)
        return [(list(enc.ids), [tuple(o) for o in enc.offsets]) for enc in encodings]  # type: ignore[misc]

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """How many tokens each text has, without [CLS]/[SEP]."""
        encodings = self._tokenizer.encode_batch(list(texts), add_special_tokens=False)
        return [len(enc.ids) for enc in encodings]

    def encode_batch(self, texts: Sequence[str], *, max_length: int) -> EncodedBatch:
        """Encode ``texts`` as one padded batch of ``[CLS] tokens [SEP]`` rows.

        Raises :class:`TextTooLongError` when a text needs more than ``max_length`` positions:
        truncating would silently drop text, so callers split long documents into windows.
        """
        tokenized = self.tokenize(texts)
        longest = max((len(ids) for ids, _ in tokenized), default=0)
        for ids, _ in tokenized:
            if len(ids) + NUM_SPECIAL_PER_SEQUENCE > max_length:
                raise TextTooLongError(len(ids) + NUM_SPECIAL_PER_SEQUENCE, max_length)
        width = longest + NUM_SPECIAL_PER_SEQUENCE
        input_ids = np.full((len(tokenized), width), self.pad_id, dtype=np.int64)
        attention_mask = np.zeros((len(tokenized), width), dtype=np.int64)
        for row, (ids, _) in enumerate(tokenized):
            input_ids[row, 0] = self.cls_id
            input_ids[row, 1 : 1 + len(ids)] = ids
            input_ids[row, 1 + len(ids)] = self.sep_id
            attention_mask[row, : len(ids) + NUM_SPECIAL_PER_SEQUENCE] = 1
        return EncodedBatch(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=np.zeros_like(input_ids),
            offsets=[offsets for _, offsets in tokenized],
        )
