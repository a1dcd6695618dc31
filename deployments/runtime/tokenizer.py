"""Tokenisation with offsets in code points of the original text.

Built on Hugging Face ``tokenizers``, which reports offsets in characters of the *original*
string — Python code points, so supplementary-plane characters and emoji count as one — even
where normalisation changed the text. Two kinds of model directory are read (see
docs/model-directory.md):

- ``wordpiece``: BERT-Chinese (BertNormalizer, BertPreTokenizer, WordPiece over ``vocab.txt``);
- ``tokenizers-json``: any ``tokenizer.json`` serialisation, e.g. a SentencePiece vocabulary of a
  pretrained encoder; its special tokens are named in the manifest.

Serving and training both use this module, so a model is served exactly as it was trained. The
serving path tokenises each text once (:meth:`Tokenizer.encode`): the ingress plans windows on
those tokens and sends the models token ids, which :meth:`Tokenizer.pad` turns into ONNX feeds.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tokenizers import Tokenizer as HfTokenizer
from tokenizers import models, normalizers, pre_tokenizers

if TYPE_CHECKING:
    from deployments.runtime.model_dir import ModelDir

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
NUM_SPECIAL_PER_SEQUENCE = 2  # [CLS] and [SEP]

PRIVATE_USE = re.compile("[\ue000-\uf8ff\U000f0000-\U000ffffd\U00100000-\U0010fffd]")
"""Private-use code points (category Co): characters by agreement (company logos, the CJK glyphs of
a font's private area), which BERT's ``clean_text`` deletes along with control characters."""


@dataclass(frozen=True)
class EncodedBatch:
    """A padded batch ready for ONNX Runtime, with the offset map of every real token.

    Position 0 of each row is [CLS]; the real tokens of text ``i`` sit at positions
    ``1 .. len(offsets[i])``, followed by [SEP] and padding. ``offsets`` is empty for a batch
    padded from token ids alone (:meth:`Tokenizer.pad`).
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


@dataclass(frozen=True)
class Tokenized:
    """One text's tokens without special tokens: ``ids`` [n] and code-point ``offsets`` [n, 2]
    (start, end-exclusive) into the text."""

    ids: np.ndarray
    offsets: np.ndarray

    def __len__(self) -> int:
        return int(self.ids.shape[0])


class TextTooLongError(ValueError):
    """A text has more tokens than the model's maximum sequence length allows."""

    def __init__(self, num_tokens: int, max_tokens: int) -> None:
        super().__init__(
            f"text has {num_tokens} tokens; the model takes at most {max_tokens} (split it into windows first)"
        )
        self.num_tokens = num_tokens
        self.max_tokens = max_tokens


class Tokenizer:
    """A ``tokenizers`` pipeline plus the special tokens every sequence is wrapped in.

    Rows are ``cls + tokens + sep``, padded with ``pad``; the pipeline itself must add no special
    tokens (the model directory's tokenizer has no post-processor, or it is not used).
    """

    def __init__(self, backend: HfTokenizer, *, cls_token: str, sep_token: str, pad_token: str) -> None:
        ids = {name: backend.token_to_id(name) for name in (cls_token, sep_token, pad_token)}
        missing = [name for name, index in ids.items() if index is None]
        if missing:
            raise ValueError(f"vocabulary lacks the special tokens {missing}")
        self._tokenizer = backend
        self.cls_id = int(ids[cls_token])  # type: ignore[arg-type]
        self.sep_id = int(ids[sep_token])  # type: ignore[arg-type]
        self.pad_id = int(ids[pad_token])  # type: ignore[arg-type]

    @classmethod
    def from_model_dir(cls, model_dir: ModelDir) -> Tokenizer:
        """The tokenizer a model directory's manifest describes (``tokenizer.type``)."""
        spec = model_dir.manifest.tokenizer
        if spec.type == "wordpiece":
            return BertChineseTokenizer.from_vocab_file(model_dir.file(spec.vocab), lowercase=spec.lowercase)
        backend = HfTokenizer.from_file(str(model_dir.file(spec.file)))
        # Serving adds the special tokens itself and never truncates or pads through the pipeline.
        backend.no_truncation()
        backend.no_padding()
        return cls(backend, cls_token=spec.cls_token, sep_token=spec.sep_token, pad_token=spec.pad_token)

    @property
    def vocab_size(self) -> int:
        return int(self._tokenizer.get_vocab_size(with_added_tokens=True))

    def encode(self, texts: Sequence[str]) -> list[Tokenized]:
        """Token ids and code-point offsets of each text, without special tokens."""
        if len(texts) == 1:  # one text: skip the batch API's thread pool
            encodings = [self._tokenizer.encode(texts[0], add_special_tokens=False)]
        else:
            encodings = self._tokenizer.encode_batch(list(texts), add_special_tokens=False)
        return [
            Tokenized(
                ids=np.asarray(enc.ids, dtype=np.int64),
                offsets=np.asarray(enc.offsets, dtype=np.int64).reshape(-1, 2),
            )
            for enc in encodings
        ]

    def tokenize(self, texts: Sequence[str]) -> list[tuple[list[int], list[tuple[int, int]]]]:
        """Token ids and code-point offsets of each text as Python lists, without special tokens."""
        encodings = self._tokenizer.encode_batch(list(texts), add_special_tokens=False)
        return [(list(enc.ids), [tuple(o) for o in enc.offsets]) for enc in encodings]  # type: ignore[misc]

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """How many tokens each text has, without [CLS]/[SEP]."""
        encodings = self._tokenizer.encode_batch(list(texts), add_special_tokens=False)
        return [len(enc.ids) for enc in encodings]

    def pad(self, rows: Sequence[np.ndarray], *, max_length: int) -> EncodedBatch:
        """``cls + ids + sep`` rows of token ids, padded into one batch.

        Raises :class:`TextTooLongError` when a row needs more than ``max_length`` positions:
        truncating would silently drop text, so callers split long documents into windows.
        """
        longest = max((len(ids) for ids in rows), default=0)
        if longest + NUM_SPECIAL_PER_SEQUENCE > max_length:
            raise TextTooLongError(longest + NUM_SPECIAL_PER_SEQUENCE, max_length)
        width = longest + NUM_SPECIAL_PER_SEQUENCE
        input_ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        attention_mask = np.zeros((len(rows), width), dtype=np.int64)
        input_ids[:, 0] = self.cls_id
        for row, ids in enumerate(rows):
            length = len(ids)
            input_ids[row, 1 : 1 + length] = ids
            input_ids[row, 1 + length] = self.sep_id
            attention_mask[row, : length + NUM_SPECIAL_PER_SEQUENCE] = 1
        return EncodedBatch(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=np.zeros_like(input_ids),
            offsets=[],
        )

    def encode_batch(self, texts: Sequence[str], *, max_length: int) -> EncodedBatch:
        """Encode ``texts`` as one padded batch of ``[CLS] tokens [SEP]`` rows, with offsets."""
        tokenized = self.encode(texts)
        padded = self.pad([t.ids for t in tokenized], max_length=max_length)
        offsets = [[(int(s), int(e)) for s, e in t.offsets] for t in tokenized]
        return EncodedBatch(padded.input_ids, padded.attention_mask, padded.token_type_ids, offsets)


class BertChineseTokenizer(Tokenizer):
    """WordPiece tokeniser in the BERT-Chinese style over a ``vocab.txt``.

    Every CJK character is its own token, Latin words and digit runs become word pieces,
    whitespace and control characters yield no token, a private-use character is ``[UNK]``.
    Construct with :meth:`from_vocab_file`.
    """

    def __init__(self, vocab: dict[str, int], *, lowercase: bool = True) -> None:
        missing = [token for token in SPECIAL_TOKENS if token not in vocab]
        if missing:
            raise ValueError(f"vocabulary lacks the special tokens {missing}")
        self.vocab = vocab
        self.lowercase = lowercase
        backend = HfTokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
        backend.normalizer = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=True, strip_accents=False, lowercase=lowercase
        )
        backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        super().__init__(backend, cls_token="[CLS]", sep_token="[SEP]", pad_token="[PAD]")
        self.unk_id = vocab["[UNK]"]

    def encode(self, texts: Sequence[str]) -> list[Tokenized]:
        """As :meth:`Tokenizer.encode`, with a private-use character that BERT's normaliser deleted
        kept as ``[UNK]`` at its own offset: it is a character the model does not know, like a rare
        CJK one, not an invisible control character. Texts without one are tokenised unchanged."""
        encoded = super().encode(texts)
        return [
            self._keep_private_use(text, tokens) if PRIVATE_USE.search(text) else tokens
            for text, tokens in zip(texts, encoded, strict=True)
        ]

    def tokenize(self, texts: Sequence[str]) -> list[tuple[list[int], list[tuple[int, int]]]]:
        return [
            (tokens.ids.tolist(), [(int(start), int(end)) for start, end in tokens.offsets])
            for tokens in self.encode(texts)
        ]

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(tokens) for tokens in self.encode(texts)]

    def _keep_private_use(self, text: str, tokens: Tokenized) -> Tokenized:
        """``[UNK]`` for each private-use character no token covers (one inside a word piece stays
        in it), in offset order."""
        starts, ends = tokens.offsets[:, 0], tokens.offsets[:, 1]
        missing = []
        for match in PRIVATE_USE.finditer(text):
            position = match.start()
            before = int(np.searchsorted(starts, position, side="right")) - 1
            if before < 0 or ends[before] <= position:
                missing.append(position)
        if not missing:
            return tokens
        added = np.asarray(missing, dtype=np.int64)
        ids = np.concatenate([tokens.ids, np.full(len(added), self.unk_id, dtype=np.int64)])
        offsets = np.concatenate([tokens.offsets, np.stack([added, added + 1], axis=1)])
        order = np.argsort(offsets[:, 0], kind="stable")
        return Tokenized(ids=ids[order], offsets=offsets[order])

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
