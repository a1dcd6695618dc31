"""The encoder recipe's pieces on a tiny random encoder: truncation, pruning, ONNX export and INT8."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from training.encoder.convert import E5Config, Pieces  # noqa: E402
from training.encoder.export import onnx_logits  # noqa: E402
from training.encoder.finetune import pad, predict_logits, truncate  # noqa: E402
from training.encoder.fit import bucketed_batches  # noqa: E402
from training.encoder.model import QUANTIZED_OPS, Encoder, SentimentClassifier, export_example  # noqa: E402
from training.encoder.tokenizer import build_tokenizer, pieces_used, pruned_ids  # noqa: E402
from training.onnx_io import export_onnx, quantize_int8, session  # noqa: E402


def export(model: torch.nn.Module, fp32, int8, *, pad_id: int) -> None:  # type: ignore[no-untyped-def]
    export_onnx(model, fp32, output_name="logits", example=export_example(pad_id))
    quantize_int8(fp32, int8, op_types=QUANTIZED_OPS)


TINY = E5Config(hidden=32, layers=2, heads=4, ffn=64, vocab_rows=40, max_positions=64, type_vocab=2, eps=1e-12)


def test_truncate_keeps_head_and_tail() -> None:
    ids = list(range(10))
    assert truncate(ids, content=10, head_fraction=0.5) == ids
    assert truncate(ids, content=4, head_fraction=0.5) == [0, 1, 8, 9]
    assert truncate(ids, content=4, head_fraction=0.25) == [0, 7, 8, 9]
    assert truncate(ids, content=3, head_fraction=1.0) == [0, 1, 2]


def test_batches_cover_every_example_once() -> None:
    import random

    lengths = list(range(1, 100))
    batches = bucketed_batches(lengths, batch_size=8, rng=random.Random(0), bucket=3)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))


def _vocab() -> Pieces:
    pieces = [
        "<s>",
        "<pad>",
        "</s>",
        "<unk>",
        "▁",
        "酒店",
        "酒",
        "店",
        "很",
        "好",
        "▁很好",
        "不",
        "差",
        "<",
        "s",
        ">",
        "<mask>",
    ]
    scores = np.asarray([0, 0, 0, 0, -2, -3, -6, -6, -4, -4, -3.5, -4, -5, -7, -7, -7, 0], dtype=np.float32)
    return Pieces(pieces, scores, bos=0, eos=2, pad=1, unk=3, normalization={0x9: " ", 0x1: ""})


def test_pruned_tokenizer_segments_seen_text_alike() -> None:
    vocab = _vocab()
    full = build_tokenizer(vocab)
    texts = ["酒店很好", "很差"]
    counts = pieces_used(full, texts)
    keep = pruned_ids(vocab, counts)
    pruned = build_tokenizer(vocab, keep=keep)
    for text in texts:
        a = full.encode(text, add_special_tokens=False)
        b = pruned.encode(text, add_special_tokens=False)
        assert a.tokens == b.tokens
        assert [keep[i] for i in b.ids] == a.ids
    # Single characters are always kept, so unseen text still has no <unk>.
    assert "<unk>" not in pruned.encode("不好", add_special_tokens=False).tokens


def test_specials_are_never_chosen_and_normalisation_applies() -> None:
    tokenizer = build_tokenizer(_vocab())
    assert "<s>" not in tokenizer.encode("<s>酒店", add_special_tokens=False).tokens
    assert tokenizer.normalizer.normalize_str("很\t\x01好") == "很 好"
    assert Counter(pieces_used(tokenizer, ["好好"]))


def _tiny_classifier() -> SentimentClassifier:
    torch.manual_seed(0)
    return SentimentClassifier(Encoder(TINY, vocab_size=TINY.vocab_rows)).eval()


def test_padding_does_not_change_logits() -> None:
    model = _tiny_classifier()
    short = ([0, 5, 6, 2], 0)
    long = ([0, *range(5, 30), 2], 1)
    alone = predict_logits(model, [short], pad_id=1)
    together = predict_logits(model, [short, long], pad_id=1)
    np.testing.assert_allclose(alone[0], together[0], atol=1e-5)


def test_onnx_export_and_int8_agree(tmp_path) -> None:
    model = _tiny_classifier()
    fp32, int8 = tmp_path / "fp32.onnx", tmp_path / "int8.onnx"
    export(model, fp32, int8, pad_id=1)
    examples = [([0, *range(5, 5 + n), 2], 0) for n in (1, 7, 20)]
    reference = predict_logits(model, examples, pad_id=1)
    np.testing.assert_allclose(onnx_logits(session(fp32), examples, pad_id=1), reference, atol=1e-4)
    np.testing.assert_allclose(onnx_logits(session(int8), examples, pad_id=1), reference, atol=0.1)
    # Padded FP32 batch = rows alone.
    ids, mask = pad([e[0] for e in examples], 1)
    (batched,) = session(fp32).run(["logits"], {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})
    np.testing.assert_allclose(batched, reference, atol=1e-4)


def test_model_dir_is_served_by_the_runtime(tmp_path) -> None:
    """The exported directory loads through ``deployments.runtime`` (tokenizers-json, <s>/</s>/<pad>)
    and the runtime's answer equals the INT8 ONNX run on the same ids."""
    from deployments.runtime.sentiment import SentimentModel
    from training.encoder.export import write_candidate_dir

    vocab = _vocab()
    tokenizer = build_tokenizer(vocab)
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    tiny = E5Config(**{**TINY.__dict__, "vocab_rows": len(vocab.pieces)})
    torch.manual_seed(0)
    model = SentimentClassifier(Encoder(tiny, vocab_size=len(vocab.pieces))).eval()
    fp32, int8 = tmp_path / "fp32.onnx", tmp_path / "int8.onnx"
    export(model, fp32, int8, pad_id=vocab.pad)
    report = {"accuracy": {"review_chnsenticorp": {"int8": 0.5}}}
    model_dir = tmp_path / "candidate"
    write_candidate_dir(model_dir, out=tmp_path, int8=int8, report=report)
    served = SentimentModel.from_model_dir(model_dir)
    text = "酒店很好"
    probabilities = served.probabilities([text])
    ids = [vocab.bos, *tokenizer.encode(text, add_special_tokens=False).ids, vocab.eos]
    logits = onnx_logits(session(int8), [(ids, 0)], pad_id=vocab.pad)
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)
    assert served.predict([text])[0].label in {"negative", "positive"}


def test_export_command_passes_every_option(monkeypatch, tmp_path) -> None:
    import training.encoder.export as export_module
    from training.encoder.__main__ import main

    seen = {}
    monkeypatch.setattr(export_module, "export_all", lambda out, **kwargs: seen.update(kwargs, out=out))
    main(["export", "--out", str(tmp_path), "--tfidf-c", "8", "--fruit-rows", "100", "--max-tokens", "64"])
    assert seen["tfidf_c"] == 8.0
    assert seen["fruit_rows"] == 100
    assert seen["max_tokens"] == 64
    assert seen["out"] == tmp_path
