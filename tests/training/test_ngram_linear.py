"""The linear sentiment branch: the graph's hashed n-gram TF-IDF logit equals the numpy/scipy computation
used for training (same hash, counts, idf, L2 norm), alone and padded in a batch, FP32 and INT8 ONNX."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("scipy")

from deployments.runtime.tokenizer import BertChineseTokenizer  # noqa: E402
from training import ngram_linear as L  # noqa: E402
from training.onnx_io import export_onnx, quantize_int8, session  # noqa: E402
from training.sentiment_model import SentimentConfig, SentimentNet  # noqa: E402

VOCAB = Path(__file__).resolve().parents[2] / "models" / "sentiment" / "vocab.txt"
TEXTS = [
    "这家餐厅太难吃了，服务也很差",
    "服务很贴心😀，下次还来！！😀😀",
    "iPhone 15 Pro Max的屏幕 really good，电池 5000mAh 也不错 good good",
    "好好好好好好",
    "a",
    "房间很大，" * 30 + "早餐一般般，价格偏贵。" * 4,  # > 100 tokens, repeated n-grams
    "😀",
]


def tokenizer() -> BertChineseTokenizer:
    return BertChineseTokenizer.from_vocab_file(VOCAB, lowercase=True)


def random_model(config: L.LinearConfig, seed: int = 0) -> L.LinearModel:
    rng = np.random.default_rng(seed)
    idf = rng.uniform(1.0, 8.0, config.total_buckets).astype(np.float32)
    idf[rng.random(config.total_buckets) < 0.2] = 0.0  # buckets below min_df
    weight = rng.normal(0.0, 1.0, config.total_buckets).astype(np.float32)
    return L.LinearModel(config, idf, weight, bias=0.3, c=1.0)


def encode(tok: BertChineseTokenizer, texts: list[str]) -> tuple[list[list[int]], np.ndarray, np.ndarray]:
    sequences = [ids for ids, _ in tok.tokenize(texts)]
    batch = tok.encode_batch(texts, max_length=512).feeds(["input_ids", "attention_mask"])
    return sequences, batch["input_ids"], batch["attention_mask"]


# small bucket counts force hash collisions within a text; the default is the shipped size
CONFIGS = [{"buckets": {"2": 7, "3": 11}}, {}, {"orders": [1, 2, 3, 4], "buckets": {"2": 5, "3": 13, "4": 3}}]


def test_counts_match_a_direct_computation() -> None:
    tok = tokenizer()
    config = L.LinearConfig(vocab_size=tok.vocab_size)
    sequences, _, _ = encode(tok, TEXTS)
    counts = L.bucket_counts(config, sequences).toarray()
    offsets = config.offsets()
    for row, ids in enumerate(sequences):
        expected: dict[int, int] = {}
        for n in config.orders:
            for t in range(len(ids) - n + 1):
                gram = ids[t : t + n]
                if any(i in L.EXCLUDED_IDS for i in gram):
                    continue
                if n == 1:
                    bucket = gram[0]
                else:
                    h = n
                    for i in gram:
                        h = (h * L.HASH_A + i) % L.HASH_M
                    bucket = offsets[n] + h % config.buckets[str(n)]
                expected[bucket] = expected.get(bucket, 0) + 1
        nonzero = {int(b): int(counts[row, b]) for b in np.flatnonzero(counts[row])}
        assert nonzero == expected
    assert len(sequences[5]) > 100


@pytest.mark.parametrize("overrides", CONFIGS)
def test_graph_logit_equals_the_python_features(tmp_path, overrides: dict) -> None:
    tok = tokenizer()
    config = L.LinearConfig(vocab_size=tok.vocab_size, **overrides)
    model = random_model(config)
    sequences, input_ids, mask = encode(tok, TEXTS)
    expected = model.logits(sequences)
    x = L.features(config, sequences, model.idf)
    norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
    assert np.all((np.abs(norms - 1.0) < 1e-9) | (norms == 0.0))  # 0: no n-gram with an idf (a text of 1 token)
    module = L.HashedNgramLinear(model).eval()
    with torch.no_grad():
        torch_logit = module(torch.from_numpy(input_ids), torch.from_numpy(mask)).numpy()
    np.testing.assert_allclose(torch_logit, expected, rtol=1e-5, atol=1e-5)

    class Wrapped(torch.nn.Module):  # export_onnx wants a [B, 2] output
        def __init__(self) -> None:
            super().__init__()
            self.linear = module

        def forward(self, ids, attention_mask):
            z = self.linear(ids, attention_mask)
            return torch.stack([torch.zeros_like(z), z], dim=1)

    path = tmp_path / "linear.onnx"
    export_onnx(Wrapped().eval(), path, output_name="logits")
    sess = session(path)
    (batched,) = sess.run(None, {"input_ids": input_ids, "attention_mask": mask})
    np.testing.assert_allclose(batched[:, 1], expected, rtol=1e-5, atol=1e-5)
    for i, text in enumerate(TEXTS):  # alone: the same as padded in the batch
        alone = tok.encode_batch([text], max_length=512).feeds(["input_ids", "attention_mask"])
        (single,) = sess.run(None, alone)
        assert single[0, 1] == pytest.approx(float(batched[i, 1]), abs=1e-5)


def test_ensemble_graph_int8_matches_numpy_and_is_batch_independent(tmp_path) -> None:
    tok = tokenizer()
    torch.manual_seed(0)
    cnn = SentimentNet(
        SentimentConfig(
            vocab_size=tok.vocab_size,
            char_dim=16,
            bigram_buckets=101,
            bigram_dim=8,
            trigram_buckets=53,
            trigram_dim=8,
            hidden=24,
            dilations=[1, 2],
            dropout=0.0,
        )
    ).eval()
    config = L.LinearConfig(vocab_size=tok.vocab_size, buckets={"2": 1009, "3": 2003})
    linear = random_model(config, seed=1)
    sequences, input_ids, mask = encode(tok, TEXTS)
    for mode, alpha in (("prob", 0.4), ("logit", 0.7)):
        ensemble = L.SentimentEnsemble(cnn, L.HashedNgramLinear(linear), mode=mode, alpha=alpha).eval()
        fp32, int8 = tmp_path / f"{mode}.onnx", tmp_path / f"{mode}.int8.onnx"
        export_onnx(ensemble, fp32, output_name="logits")
        quantize_int8(fp32, int8)
        with torch.no_grad():
            cnn_logits = cnn(torch.from_numpy(input_ids), torch.from_numpy(mask)).numpy()
        expected = L.combine(cnn_logits[:, 1] - cnn_logits[:, 0], linear.logits(sequences), mode, alpha)
        (fp32_out,) = session(fp32).run(None, {"input_ids": input_ids, "attention_mask": mask})
        probabilities = np.exp(fp32_out) / np.exp(fp32_out).sum(axis=1, keepdims=True)
        np.testing.assert_allclose(probabilities[:, 1], np.clip(expected, 1e-7, 1 - 1e-7), atol=1e-5)
        sess = session(int8)
        (batched,) = sess.run(None, {"input_ids": input_ids, "attention_mask": mask})
        for i, text in enumerate(TEXTS):
            alone = tok.encode_batch([text], max_length=512).feeds(["input_ids", "attention_mask"])
            (single,) = sess.run(None, alone)
            np.testing.assert_allclose(single[0], batched[i], atol=1e-5)


def test_nb_scale_is_the_log_count_ratio_and_folds_into_the_weights() -> None:
    from sklearn.linear_model import LogisticRegression

    tok = tokenizer()
    config = L.LinearConfig(vocab_size=tok.vocab_size, buckets={"2": 101, "3": 211}, min_df=1, nb_power=1.0)
    texts = ["很好很好", "非常好", "好评", "很差很差", "非常差", "差评", "一般"]
    labels = np.array([1, 1, 1, 0, 0, 0, 1])
    sequences = [ids for ids, _ in tok.tokenize(texts)]
    counts = L.bucket_counts(config, sequences)
    idf = L.fit_idf(config, counts)
    scale = L.nb_scale(counts, labels, idf, 1.0)
    # 好 is in 3 of the 4 positive rows and in none of the 3 negative ones: r = log((4/|p|) / (1/|q|)).
    present = counts.toarray() > 0
    p = present[labels == 1].sum(0) + 1.0
    q = present[labels == 0].sum(0) + 1.0
    good = tok.tokenize(["好"])[0][0][0]
    assert (p[good], q[good]) == (4, 1)
    assert scale[good] == pytest.approx(abs(np.log((4 / p.sum()) / (1 / q.sum()))))
    assert np.all(scale[idf == 0] == 0) and np.all(L.nb_scale(counts, labels, idf, 0.0) == 1.0)
    # The trained model's logit on plain TF-IDF features equals the regression's on the scaled ones.
    model, _ = L.train_linear(config, sequences, labels, sequences, labels, cs=[4.0], log=lambda *_: None)
    x = L.tfidf(counts, idf).toarray()
    reference = LogisticRegression(C=4.0, solver="liblinear", max_iter=1000).fit(x * scale, labels)
    np.testing.assert_allclose(model.logits(sequences), reference.decision_function(x * scale), rtol=1e-5, atol=1e-5)
    assert model.logits(sequences)[0] > 0 > model.logits(sequences)[3]
