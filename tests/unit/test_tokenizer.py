"""BERT-Chinese tokenisation: token boundaries and code-point offsets into the original text."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from deployments.runtime.tokenizer import BertChineseTokenizer, TextTooLongError
from tests.support.tiny_models import write_vocab


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> BertChineseTokenizer:
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    write_vocab(path, [*list("马云在杭州阿里巴年月日𠀀"), "iphone", "##15", "20", "##24", "ab", "##c", "pro"])
    return BertChineseTokenizer.from_vocab_file(path)


def pieces(tokenizer: BertChineseTokenizer, text: str) -> list[str]:
    ((_, offsets),) = tokenizer.tokenize([text])
    return [text[start:end] for start, end in offsets]


def test_every_cjk_character_is_its_own_token(tokenizer: BertChineseTokenizer) -> None:
    assert pieces(tokenizer, "马云在杭州") == ["马", "云", "在", "杭", "州"]


def test_latin_and_digits_become_word_pieces_with_exact_offsets(tokenizer: BertChineseTokenizer) -> None:
    text = "马云2024年买iPhone15"
    ((ids, offsets),) = tokenizer.tokenize([text])
    assert [text[s:e] for s, e in offsets] == ["马", "云", "20", "24", "年", "买", "iPhone", "15"]
    # lowercased lookup: "iPhone" → "iphone", "15" → "##15"
    assert ids[6] == tokenizer.vocab["iphone"] and ids[7] == tokenizer.vocab["##15"]
    assert ids[5] == tokenizer.unk_id  # 买 is not in the vocabulary


def test_whitespace_yields_no_token_and_offsets_skip_it(tokenizer: BertChineseTokenizer) -> None:
    text = "马  云\t在\n杭\u3000州"
    ((_, offsets),) = tokenizer.tokenize([text])
    assert [text[s:e] for s, e in offsets] == ["马", "云", "在", "杭", "州"]
    assert offsets[1] == (3, 4)


def test_supplementary_plane_and_emoji_count_as_one_code_point(tokenizer: BertChineseTokenizer) -> None:
    text = "😀马𠀀云👍🏽杭"
    ((ids, offsets),) = tokenizer.tokenize([text])
    assert [text[s:e] for s, e in offsets] == ["😀", "马", "𠀀", "云", "👍🏽", "杭"]
    assert offsets[2] == (2, 3)  # 𠀀 (U+20000) is one code point in Python and in the offsets
    assert ids[2] == tokenizer.vocab["𠀀"]


def test_a_private_use_character_is_an_unknown_token_at_its_own_offset(tokenizer: BertChineseTokenizer) -> None:
    """BERT's clean_text deletes private-use characters (U+E000..U+F8FF, planes 15-16) as if they
    were controls; they are characters the model does not know, so they come back as [UNK]."""
    text = "\ue000马\U000f0000 云\uf8ff"
    ((ids, offsets),) = tokenizer.tokenize([text])
    assert [text[s:e] for s, e in offsets] == ["\ue000", "马", "\U000f0000", "云", "\uf8ff"]
    assert [ids[0], ids[2], ids[4]] == [tokenizer.unk_id] * 3
    assert tokenizer.count_tokens(["\ue000"]) == [1]
    assert pieces(tokenizer, "ab\ue000c") == ["ab", "\ue000", "c"]  # between a word's pieces too
    assert tokenizer.tokenize(["马云"]) == [([tokenizer.vocab["马"], tokenizer.vocab["云"]], [(0, 1), (1, 2)])]


def test_offsets_survive_normalisation_that_changes_length(tokenizer: BertChineseTokenizer) -> None:
    # "İ" lowercases to two code points; offsets must still point into the original text.
    text = "İab马"
    ((_, offsets),) = tokenizer.tokenize([text])
    assert offsets[-1] == (3, 4) and text[3:4] == "马"
    for start, end in offsets:
        assert 0 <= start < end <= len(text)


def test_encode_batch_pads_and_marks_special_tokens(tokenizer: BertChineseTokenizer) -> None:
    batch = tokenizer.encode_batch(["马云", "杭州阿里巴巴"], max_length=16)
    assert batch.input_ids.shape == (2, 8) and batch.input_ids.dtype == np.int64
    assert batch.input_ids[0, 0] == tokenizer.cls_id and batch.input_ids[0, 3] == tokenizer.sep_id
    assert batch.input_ids[0, 4:].tolist() == [tokenizer.pad_id] * 4
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1, 0, 0, 0, 0], [1] * 8]
    assert set(batch.feeds(["input_ids", "attention_mask"])) == {"input_ids", "attention_mask"}


def test_text_longer_than_the_model_is_refused_not_truncated(tokenizer: BertChineseTokenizer) -> None:
    with pytest.raises(TextTooLongError, match="11 tokens; the model takes at most 9"):
        tokenizer.encode_batch(["马云在杭州阿里巴年"], max_length=9)


def test_vocab_without_special_tokens_fails_fast(tmp_path: Path) -> None:
    path = tmp_path / "vocab.txt"
    path.write_text("[PAD]\n马\n", encoding="utf-8")
    with pytest.raises(ValueError, match="special tokens"):
        BertChineseTokenizer.from_vocab_file(path)
