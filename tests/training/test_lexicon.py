"""Lexicon-match features: the in-graph (torch and FP32/INT8 ONNX) matches equal a plain-Python
reference on a few strings, and a text's features do not depend on its batch."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

from deployments.runtime.tokenizer import SPECIAL_TOKENS, BertChineseTokenizer  # noqa: E402
from training.lexicon import (  # noqa: E402
    CLASSES,
    FIRST_REAL_ID,
    LexiconFeatures,
    build_tables,
    hash_pair,
    jieba_class,
    python_matches,
    python_roles,
)
from training.ner_model import NerConfig, NerNet  # noqa: E402
from training.onnx_io import export_onnx, quantize_int8, session  # noqa: E402

TEXTS = ["马云在杭州阿里巴巴总部", "北京大学的李明教授", "杭州", "阿里", "李明在北京大学读书读书读书"]
WORDS = [  # (word, class, frequency) as training.lexicon.jieba_words gives them
    ("马云", jieba_class("nr"), 10),
    ("李明", jieba_class("nr"), 10),
    ("杭州", jieba_class("ns"), 50),
    ("北京", jieba_class("ns"), 80),
    ("阿里巴巴", jieba_class("nrt"), 5),
    ("北京大学", jieba_class("nt"), 20),
    ("大学", jieba_class("n"), 90),
    ("教授", jieba_class("n"), 60),
    ("总部", jieba_class("n"), 40),
    ("读书", jieba_class("v"), 40),
    ("在杭州阿里巴巴总部", jieba_class("nt"), 1),  # longer than any looked-up length: never stored
    ("X光", jieba_class("n"), 3),  # "x" is not in the test vocabulary: not usable
]
LENGTHS = [2, 3, 4]
BUCKETS = 1009


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory) -> BertChineseTokenizer:
    chars = sorted({c for t in TEXTS for c in t} | {c for w, _, _ in WORDS for c in w if c != "X"} | {"光"})
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    path.write_text("".join(f"{t}\n" for t in [*SPECIAL_TOKENS, *chars]), encoding="utf-8")
    return BertChineseTokenizer.from_vocab_file(path, lowercase=True)


@pytest.fixture(scope="module")
def tables(tokenizer) -> tuple[np.ndarray, np.ndarray]:
    classes, check, stats = build_tables(WORDS, tokenizer, lengths=LENGTHS, buckets=BUCKETS)
    assert stats["usable"] == 10 and stats["stored"] + stats["collisions"] == 10
    return classes, check


def encode(tokenizer: BertChineseTokenizer, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    batch = tokenizer.encode_batch(texts, max_length=64)
    feeds = batch.feeds(["input_ids", "attention_mask"])
    return feeds["input_ids"], feeds["attention_mask"]


def naive_matches(text: str, words: dict[str, int], lengths: list[int]) -> np.ndarray:
    """Straightforward string matching over [CLS] + text + [SEP] (the graph's positions)."""
    out = np.zeros((len(text) + 2, len(lengths)), dtype=np.int64)
    for t in range(len(text)):
        for j, n in enumerate(lengths):
            if text[t : t + n] in words and t + n <= len(text):
                out[t + 1, j] = words[text[t : t + n]]
    return out


def test_hash_pair_fingerprint_is_never_zero() -> None:
    for ids in ([5, 6], [100, 200, 300], [8376] * 7):
        bucket, fingerprint = hash_pair(ids, BUCKETS)
        assert 0 <= bucket < BUCKETS and 1 <= fingerprint <= 255


def test_graph_matches_equal_python_reference(tokenizer, tables) -> None:
    classes, check = tables
    stored_words = {w: c for w, c, _ in WORDS if len(w) in LENGTHS and "X" not in w}
    features = LexiconFeatures(LENGTHS, BUCKETS)
    features.set_tables(classes, check)
    ids, _ = encode(tokenizer, TEXTS)
    starts = features.starts(torch.from_numpy(ids)).numpy()
    roles = features(torch.from_numpy(ids)).numpy()
    for row, text in enumerate(TEXTS):
        n = len(text) + 2
        reference = python_matches(ids[row, :n].tolist(), classes, check, LENGTHS)
        np.testing.assert_array_equal(starts[row, :n], reference)
        # The hashed lookup finds exactly the dictionary words (no false positive on these strings).
        np.testing.assert_array_equal(reference, naive_matches(text, stored_words, LENGTHS))
        expected_roles = python_roles(reference, LENGTHS).reshape(n, -1)
        np.testing.assert_array_equal(roles[row, :n], expected_roles)
        assert not starts[row, n:].any()  # pads never match
    # 杭州 (LOC) begins at 马云在|杭 and ends at 州; 北京大学 (ORG) has 京/大 in its middle.
    first = starts[0]
    assert first[4, LENGTHS.index(2)] == CLASSES.index("LOC") + 1
    assert first[6, LENGTHS.index(4)] == CLASSES.index("PER_TRANSLIT") + 1
    second = roles[1].reshape(-1, 3, len(LENGTHS), len(CLASSES))
    org = CLASSES.index("ORG")
    assert second[1, 0, 2, org] == 1 and second[2, 1, 2, org] == second[3, 1, 2, org] == 1
    assert second[4, 2, 2, org] == 1 and second[1, 2, 2, org] == 0


def test_gazetteer_types_share_the_tables(tokenizer) -> None:
    """Training entity strings add their type (value + 8 × type) to a dictionary word or on their own."""
    gazetteer = [("杭州", 2), ("李明", 1), ("阿里巴巴", 3), ("明教", 1), ("云在杭", 2)]
    classes, check, stats = build_tables(WORDS, tokenizer, lengths=LENGTHS, buckets=BUCKETS, entities=gazetteer)
    assert stats["gazetteer"] == 5
    features = LexiconFeatures(LENGTHS, BUCKETS, entity_types=3, entity_dropout=0.5)
    features.set_tables(classes, check)
    ids, _ = encode(tokenizer, TEXTS)
    features.eval()
    starts = features.starts(torch.from_numpy(ids)).numpy()
    roles = features(torch.from_numpy(ids)).numpy()
    words = {w: c for w, c, _ in WORDS if len(w) in LENGTHS and "X" not in w}
    for row, text in enumerate(TEXTS):
        n = len(text) + 2
        reference = python_matches(ids[row, :n].tolist(), classes, check, LENGTHS)
        np.testing.assert_array_equal(starts[row, :n], reference)
        expected = naive_matches(text, words, LENGTHS)
        expected += 8 * naive_matches(text, dict(gazetteer), LENGTHS)
        np.testing.assert_array_equal(reference, expected)
        np.testing.assert_array_equal(roles[row, :n], python_roles(reference, LENGTHS, 3).reshape(n, -1))
    # 杭州 is a LOC word (3) and a LOC training entity (2): 3 + 8 * 2.
    assert starts[0, 4, LENGTHS.index(2)] == CLASSES.index("LOC") + 1 + 8 * 2
    assert features.output_dim == 3 * len(LENGTHS) * (len(CLASSES) + 3) == roles.shape[-1]
    features.train()  # gazetteer dropout only hides entity types, never the word classes
    torch.manual_seed(0)
    dropped = features.starts(torch.from_numpy(ids))
    np.testing.assert_array_equal(dropped.numpy(), starts)
    trained = features(torch.from_numpy(ids)).numpy().reshape(*ids.shape, 3, len(LENGTHS), -1)
    evaluated = roles.reshape(trained.shape)
    np.testing.assert_array_equal(trained[..., : len(CLASSES)], evaluated[..., : len(CLASSES)])
    assert (trained[..., len(CLASSES) :] <= evaluated[..., len(CLASSES) :]).all()


def test_special_tokens_never_match(tables) -> None:
    classes, check = tables
    features = LexiconFeatures(LENGTHS, BUCKETS)
    features.set_tables(classes, check)
    ids = torch.arange(0, FIRST_REAL_ID).repeat(3).unsqueeze(0)
    assert not features.starts(ids).any()


def test_ner_with_lexicon_exports_and_does_not_depend_on_the_batch(tmp_path, tokenizer, tables) -> None:
    torch.manual_seed(0)
    config = NerConfig(
        vocab_size=tokenizer.vocab_size,
        num_tags=13,
        char_dim=16,
        bigram_buckets=101,
        bigram_dim=8,
        trigram_buckets=53,
        trigram_dim=8,
        hidden=24,
        dilations=[1, 2],
        dropout=0.0,
        lexicon_lengths=LENGTHS,
        lexicon_buckets=BUCKETS,
        lstm_hidden=8,
    )
    net = NerNet(config).eval()
    assert net.lexicon is not None
    net.lexicon.set_tables(*tables)
    path = tmp_path / "model.onnx"
    export_onnx(net, path, output_name="emissions")
    quantized = tmp_path / "int8.onnx"
    quantize_int8(path, quantized)
    ids, mask = encode(tokenizer, TEXTS)
    with torch.no_grad():
        reference = net(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
    for model in (path, quantized):
        sess = session(model)
        (batched,) = sess.run(None, {"input_ids": ids, "attention_mask": mask})
        if model == path:
            np.testing.assert_allclose(batched, reference, atol=1e-4)
        for row, text in enumerate(TEXTS):
            alone_ids, alone_mask = encode(tokenizer, [text])
            (alone,) = sess.run(None, {"input_ids": alone_ids, "attention_mask": alone_mask})
            np.testing.assert_allclose(alone[0], batched[row, : alone.shape[1]], atol=1e-4)


def test_people_daily_entities_join_surname_and_given_name(tmp_path) -> None:
    from training.lexicon import people_daily_entities

    corpus = tmp_path / "199801.txt"
    corpus.write_text(
        "中共中央/nt  总书记/n  江/nr  泽民/nr  在/p  北京/ns  会见/v  克林顿/nr  。/w\n"
        "北京/ns  的/u  华盛顿/ns  路/n  ，/w  华盛顿/nr  说/v  ，/w  华盛顿/ns\n",
        encoding="utf-8",
    )
    assert people_daily_entities(corpus) == [
        ("中共中央", 3, 1),
        ("克林顿", 1, 1),
        ("北京", 2, 2),
        ("华盛顿", 2, 3),  # the most frequent type wins
        ("江泽民", 1, 1),
    ]


def test_people_daily_sentences_are_the_plain_text_cut_after_full_stops(tmp_path) -> None:
    from training.lexicon import people_daily_sentences

    corpus = tmp_path / "199801.txt"
    corpus.write_text("江/nr  泽民/nr  讲话/v  。/w  他/r  说/v  ：/w  好/a  ！/w  完/v\n\n新年/t\n", encoding="utf-8")
    assert people_daily_sentences(corpus) == ["江泽民讲话。", "他说：好！", "完", "新年"]
