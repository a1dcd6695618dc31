"""A BERT-style ``vocab.txt`` built from the corpora.

Every character seen at least ``min_char_count`` times becomes a token (CJK characters are always
single tokens under BERT-Chinese normalisation), plus the most frequent Latin words and digit
runs (and their ``##`` continuation forms). ``##`` forms of
every ASCII letter and digit are included, so no Latin/digit word ever falls back to [UNK].
Built by counting, so the same text always gives the same file.
"""

from __future__ import annotations

import string
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from tokenizers import normalizers, pre_tokenizers

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
    wordpiece_size: int = 2000,
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
    # Latin words and digit runs: the most frequent whole words, and their ``##`` forms for words
    # glued to a preceding piece ("iphone15" → "iphone" "##15"); anything else falls back to the
    # single-character pieces above. Counting (not a trained WordPiece model) keeps the file
    # identical from run to run.
    frequent = [w for w, n in sorted(multi_char_words.items(), key=lambda kv: (-kv[1], kv[0])) if n >= 3]
    for word in frequent[:wordpiece_size]:
        add(word)
    for word in frequent[: wordpiece_size // 2]:
        add(f"##{word}")
    return tokens


def write_vocab(tokens: list[str], path: str | Path) -> None:
    Path(path).write_text("".join(f"{token}\n" for token in tokens), encoding="utf-8")
