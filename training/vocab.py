"""A BERT-style ``vocab.txt`` built from the corpora.

Every character seen at least ``min_char_count`` times becomes a token (CJK characters are always
single tokens under BERT-Chinese normalisation), plus WordPiece pieces for Latin words and digit
runs trained with Hugging Face ``tokenizers`` on the non-CJK words of the same text. ``##`` forms of
every ASCII letter and digit are included, so no Latin/digit word ever falls back to [UNK].
"""

from __future__ import annotations

import string
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

from deployments.runtime.tokenizer import SPECIAL_TOKENS


def _pre_tokenized_words(texts: Iterable[str], *, lowercase: bool) -> Iterable[str]:
    normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=False, lowercase=lowercase
    )
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    for text in texts:
        for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)):
            yield word


def build_vocab(
    texts: Iterable[str],
    *,
    lowercase: bool = True,
    min_char_count: int = 2,
    wordpiece_size: int = 3000,
) -> list[str]:
    """Tokens in id order: the specials ([PAD]=0), characters, then Latin/digit word pieces."""
    char_counts: Counter[str] = Counter()
    multi_char_words: Counter[str] = Counter()
    for word in _pre_tokenized_words(texts, lowercase=lowercase):
        if len(word) == 1:
            char_counts[word] += 1
        else:
            multi_char_words[word] += 1
            char_counts.update(word)
    tokens: list[str] = list(SPECIAL_TOKENS)
    seen = set(tokens)

    def add(token: str) -> None:
        if token not in seen:
            seen.add(token)
            tokens.append(token)

    for char, count in sorted(char_counts.items(), key=lambda kv: (-kv[1], kv[0])):
        if count >= min_char_count:
            add(char)
    for char in string.ascii_lowercase + string.digits + ("" if lowercase else string.ascii_uppercase):
        add(char)
        add(f"##{char}")
    if multi_char_words:
        trainer = trainers.WordPieceTrainer(
            vocab_size=wordpiece_size, min_frequency=3, special_tokens=[], continuing_subword_prefix="##"
        )
        wordpiece = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        corpus = [word for word, count in multi_char_words.items() for _ in range(min(count, 50))]
        wordpiece.train_from_iterator(corpus, trainer=trainer)
        pieces = sorted(wordpiece.get_vocab().items(), key=lambda kv: kv[1])
        for piece, _ in pieces:
            add(piece)
    return tokens


def write_vocab(tokens: list[str], path: str | Path) -> None:
    Path(path).write_text("".join(f"{token}\n" for token in tokens), encoding="utf-8")
