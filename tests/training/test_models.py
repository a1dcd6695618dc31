"""The networks: batch independence (torch and FP32 ONNX), CRF correctness, export shapes."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

from training.data import bioes_labels  # noqa: E402
from training.ner_model import CRF, NerConfig, NerNet, bioes_constraints  # noqa: E402
from training.onnx_io import export_onnx, quantize_int8, session  # noqa: E402
from training.sentiment_model import SentimentConfig, SentimentNet  # noqa: E402

SMALL = {
    "char_dim": 16,
    "bigram_buckets": 101,
    "bigram_dim": 8,
    "trigram_buckets": 53,
    "trigram_dim": 8,
    "hidden": 24,
    "dropout": 0.0,
}


def batches() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A short text alone, and the same text padded in a batch after a longer one."""
    short = [2, 10, 11, 12, 3]
    long_ = [2, 20, 21, 22, 23, 24, 25, 26, 27, 28, 3]
    alone = np.array([short], dtype=np.int64)
    batch = np.array([long_, short + [0] * (len(long_) - len(short))], dtype=np.int64)
    return alone, (alone != 0).astype(np.int64), batch, (batch != 0).astype(np.int64)


def networks() -> list[tuple[torch.nn.Module, str]]:
    torch.manual_seed(0)
    ner = NerNet(NerConfig(vocab_size=40, num_tags=13, dilations=[1, 2, 4], **SMALL))
    sentiment = SentimentNet(SentimentConfig(vocab_size=40, dilations=[1, 2], **SMALL))
    with_fasttext = SentimentNet(
        SentimentConfig(
            vocab_size=40, dilations=[1, 2], fasttext_dim=8, ngram_dropout=0.1, fasttext_dropout=0.2, **SMALL
        )
    )
    with_attention = SentimentNet(
        SentimentConfig(vocab_size=40, dilations=[1, 2], attention_layers=2, attention_heads=4, **SMALL)
    )
    return [
        (ner.eval(), "emissions"),
        (sentiment.eval(), "logits"),
        (with_fasttext.eval(), "logits"),
        (with_attention.eval(), "logits"),
    ]


@pytest.mark.parametrize("index", [0, 1, 2, 3])
def test_onnx_fp32_output_does_not_depend_on_the_batch(tmp_path, index: int) -> None:
    net, output = networks()[index]
    path = tmp_path / "model.onnx"
    export_onnx(net, path, output_name=output)
    sess = session(path)
    alone_ids, alone_mask, batch_ids, batch_mask = batches()
    (alone,) = sess.run(None, {"input_ids": alone_ids, "attention_mask": alone_mask})
    (batched,) = sess.run(None, {"input_ids": batch_ids, "attention_mask": batch_mask})
    if output == "emissions":
        assert alone.shape == (1, 5, 13)
        np.testing.assert_allclose(alone[0], batched[1, :5], atol=1e-4)
    else:
        assert alone.shape == (1, 2)
        np.testing.assert_allclose(alone[0], batched[1], atol=1e-4)
    with torch.no_grad():
        reference = net(torch.from_numpy(batch_ids), torch.from_numpy(batch_mask)).numpy()
    np.testing.assert_allclose(batched, reference, atol=1e-4)
    quantized = tmp_path / "int8.onnx"
    quantize_int8(path, quantized)
    (int8,) = session(quantized).run(None, {"input_ids": batch_ids, "attention_mask": batch_mask})
    assert int8.shape == batched.shape


def test_bioes_constraints() -> None:
    labels = bioes_labels()
    start, end, trans = bioes_constraints(labels)
    index = {label: i for i, label in enumerate(labels)}
    assert start[index["B-PER"]] and not start[index["I-PER"]] and not start[index["E-LOC"]]
    assert end[index["E-ORG"]] and end[index["S-ORG"]] and not end[index["B-ORG"]]
    assert trans[index["B-PER"], index["E-PER"]] and not trans[index["B-PER"], index["E-LOC"]]
    assert not trans[index["O"], index["I-PER"]] and trans[index["E-PER"], index["B-LOC"]]


def brute_force(emissions: np.ndarray, start: np.ndarray, end: np.ndarray, trans: np.ndarray):
    scores = {}
    for path in itertools.product(range(emissions.shape[1]), repeat=emissions.shape[0]):
        s = start[path[0]] + end[path[-1]] + sum(emissions[t, k] for t, k in enumerate(path))
        s += sum(trans[a, b] for a, b in itertools.pairwise(path))
        scores[path] = s
    return scores


def test_crf_likelihood_and_viterbi_match_brute_force() -> None:
    labels = ["O", "B-PER", "E-PER", "S-PER"]
    crf = CRF(labels)
    torch.manual_seed(1)
    with torch.no_grad():
        crf.transitions.normal_()
        crf.start_transitions.normal_()
        crf.end_transitions.normal_()
    emissions = torch.randn(2, 4, 4)
    mask = torch.tensor([[True] * 4, [True, True, True, False]])
    tags = torch.tensor([[1, 2, 0, 3], [3, 1, 2, 0]])
    start, end, trans = (t.detach().numpy() for t in crf.effective())
    expected_nll = []
    for row in range(2):
        n = int(mask[row].sum())
        scores = brute_force(emissions[row, :n].numpy(), start, end, trans)
        log_z = np.logaddexp.reduce(np.array(list(scores.values())))
        expected_nll.append(log_z - scores[tuple(tags[row, :n].tolist())])
        assert crf.decode(emissions[row : row + 1, :n], mask[row : row + 1, :n])[0] == list(
            max(scores, key=scores.__getitem__)
        )
    nll = crf.neg_log_likelihood(emissions, tags, mask)
    assert float(nll) == pytest.approx(float(np.mean(expected_nll)), rel=1e-4)
    paths = crf.decode(emissions, mask)
    assert [len(p) for p in paths] == [4, 3]


def test_crf_export_arrays() -> None:
    arrays = CRF(bioes_labels()).export_arrays()
    assert arrays["transitions"].shape == (13, 13)
    assert arrays["start_transitions"].shape == arrays["end_transitions"].shape == (13,)
    assert arrays["transitions"][0, 2] < -1000  # O → I-PER is forbidden
