"""The encoder recipes on a tiny random encoder: a resumed fine-tune equals an uninterrupted one, NER's
character pieces keep offsets exact and its model directory is served by the runtime, and the n-gram
branch works over a vocabulary whose special ids are not BERT-Chinese's."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from deployments.runtime.ner import NerModel  # noqa: E402
from training import ngram_linear as L  # noqa: E402
from training.encoder import ner as N  # noqa: E402
from training.encoder.convert import E5Config, Pieces  # noqa: E402
from training.encoder.finetune import encode_rows, train  # noqa: E402
from training.encoder.fit import FinetuneConfig, decayed, pass_batches  # noqa: E402
from training.encoder.model import Encoder, SentimentClassifier, unpruned_embeddings  # noqa: E402
from training.encoder.tokenizer import build_tokenizer, pieces_used, pruned_ids, tokenizer_spec  # noqa: E402
from training.report import FitHistory  # noqa: E402

TINY = E5Config(hidden=32, layers=2, heads=4, ffn=64, vocab_rows=40, max_positions=160, type_vocab=2, eps=1e-12)
CHARS = list("马云在杭州阿里巴巴会见李明教授北京大学好很差酒店㈱株()")


def char_vocab() -> Pieces:
    pieces = ["<s>", "<pad>", "</s>", "<unk>", "▁", *CHARS, "▁马云", "杭州"]
    scores = np.asarray([0, 0, 0, 0, -2] + [-5] * len(CHARS) + [-3, -3], dtype=np.float32)
    return Pieces(pieces, scores, bos=0, eos=2, pad=1, unk=3, normalization={0x9: " "})


def test_char_tokenizer_gives_every_character_its_own_piece_with_exact_offsets() -> None:
    pieces = build_tokenizer(char_vocab())
    assert "▁马云" in pieces.encode("马云在杭州", add_special_tokens=False).tokens  # the sentence tokenizer merges
    tokenizer = N.runtime_tokenizer(N.char_tokenizer(pieces))
    text = "马云\t在 杭州，㈱X"
    ((ids, offsets),) = tokenizer.tokenize([text])
    spelled = [text[s:e] for s, e in offsets]
    assert spelled[:5] == ["马", "云", "在", "杭", "州"]  # whitespace gives no piece
    assert all(e > s for s, e in offsets)
    assert spelled.count("㈱") == 3  # NFKC "(株)": three pieces, each with the character's own offsets
    assert ids[spelled.index("，")] == pieces.token_to_id("<unk>")


def tiny_sentiment_examples(n: int = 40) -> list[tuple[list[int], int]]:
    rng = np.random.default_rng(0)
    return [([0, *rng.integers(5, 30, size=int(rng.integers(3, 12))).tolist(), 2], i % 2) for i in range(n)]


def run_fit(model: SentimentClassifier, examples, config: FinetuneConfig, out) -> FitHistory:  # type: ignore[no-untyped-def]
    return train(
        model, examples, [], config, pad_id=1, out=out, log=lambda _: None,
        evaluate=lambda: float(len(list(out.glob("*.pt")))),  # any score: the loop only compares them
    )  # fmt: skip


def test_a_resumed_fine_tune_ends_where_an_uninterrupted_one_does(tmp_path) -> None:
    torch.manual_seed(1)
    start = SentimentClassifier(Encoder(TINY, vocab_size=40))
    examples = tiny_sentiment_examples()
    config = FinetuneConfig(batch_size=4, budget_rows=96, eval_every=32, max_minutes=60)
    whole = copy.deepcopy(start)
    (tmp_path / "a").mkdir()
    history = run_fit(whole, examples, config, tmp_path / "a")
    assert history.finished and [e.rows for e in history.evals] == [32, 64, 96]

    (tmp_path / "b").mkdir()
    stopped = copy.deepcopy(start)
    first = run_fit(stopped, examples, FinetuneConfig(**{**config.__dict__, "max_minutes": 0.0}), tmp_path / "b")
    assert not first.finished and first.evals[-1].step == 1  # the sitting ended after one step
    with pytest.raises(ValueError, match="another config"):
        run_fit(
            copy.deepcopy(start), examples, FinetuneConfig(**{**config.__dict__, "budget_rows": 64}), tmp_path / "b"
        )
    # A new process builds the model from scratch: resume into a fresh copy of the initial weights.
    resumed = copy.deepcopy(start)
    second = run_fit(resumed, examples, config, tmp_path / "b")
    assert second.finished
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert pass_batches([3, 1, 2, 5] * 5, config, 0) == pass_batches([3, 1, 2, 5] * 5, config, 0)
    assert pass_batches([3, 1, 2, 5] * 5, config, 0) != pass_batches([3, 1, 2, 5] * 5, config, 1)


def test_fine_tuning_on_the_pruned_vocabulary_is_the_full_vocabulary_fine_tune_on_the_kept_rows(tmp_path) -> None:
    """What makes `python -m training.encoder unprune` measure what pruning costs without a second fine-tune."""
    vocab = char_vocab()
    full_tokenizer = build_tokenizer(vocab)
    texts = ["马云很好", "李明教授很差", "酒店很好", "北京大学会见李明很差", "阿里巴巴很好", "马云在北京很差"]
    rows = [{"text": t, "label": "positive" if "好" in t else "negative"} for t in texts]
    keep = pruned_ids(vocab, pieces_used(full_tokenizer, texts))
    hangzhou = vocab.pieces.index("杭州")
    assert hangzhou not in keep and vocab.pieces.index("▁马云") in keep  # a multi-character piece no text uses goes
    pruned_tokenizer = build_tokenizer(vocab, keep=keep)
    assert pruned_tokenizer.encode("马云在杭州", add_special_tokens=False).tokens[-2:] == ["杭", "州"]
    encode = {"bos": 0, "eos": 2, "max_tokens": 16, "head_fraction": 0.5}
    full_examples = encode_rows(full_tokenizer, rows, **encode)
    pruned_examples = encode_rows(pruned_tokenizer, rows, **encode)
    assert [[keep[i] for i in ids] for ids, _ in pruned_examples] == [ids for ids, _ in full_examples]

    torch.manual_seed(2)
    full = SentimentClassifier(Encoder(TINY, vocab_size=len(vocab.pieces)))
    pretrained = full.encoder.word.weight.detach().numpy().copy()
    state = full.state_dict()
    state["encoder.word.weight"] = state["encoder.word.weight"][keep].clone()
    pruned = SentimentClassifier(Encoder(TINY, vocab_size=len(keep)))
    pruned.load_state_dict(state)
    config = FinetuneConfig(batch_size=2, budget_rows=24, eval_every=12, learning_rate=1e-3, weight_decay=0.5)
    for model, examples, name in ((full, full_examples, "full"), (pruned, pruned_examples, "pruned")):
        (tmp_path / name).mkdir()
        assert run_fit(model, examples, config, tmp_path / name).finished

    tuned = pruned.encoder.word.weight.detach()
    assert (tuned - torch.from_numpy(pretrained[keep])).abs().max() > 1e-3  # the kept rows were trained
    start = decayed(torch.from_numpy(pretrained), config, 12)
    word = unpruned_embeddings(tuned, start, keep)
    assert torch.equal(full.encoder.word.weight[hangzhou], start[hangzhou])  # bit for bit: only decayed
    assert not torch.equal(start[hangzhou], torch.from_numpy(pretrained[hangzhou]))  # and it did decay
    torch.testing.assert_close(word, full.encoder.word.weight.detach(), rtol=1e-5, atol=1e-6)
    for (name, a), b in zip(full.state_dict().items(), pruned.state_dict().values(), strict=True):
        if name != "encoder.word.weight":
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def test_ner_model_directory_is_served_by_the_runtime(tmp_path) -> None:
    from deployments.runtime.model_dir import Manifest, OnnxSpec, write_manifest
    from training.encoder.model import export_example
    from training.onnx_io import export_onnx

    pieces = build_tokenizer(char_vocab())
    chars = N.char_tokenizer(pieces)
    tokenizer = N.runtime_tokenizer(chars)
    torch.manual_seed(0)
    model = N.NerTraining(N.NerTagger(Encoder(TINY, vocab_size=pieces.get_vocab_size())))
    rows = [
        {
            "text": "马云在杭州会见李明",
            "entities": [{"start": 0, "end": 2, "label": "PER"}, {"start": 3, "end": 5, "label": "LOC"}],
        }
    ]
    examples = N.examples(rows * 4, tokenizer)
    # Overfit one sentence: the tags must come back through ONNX + CRF + offsets. At lr 1e-2 the loss
    # falls steadily to ~1e-3 (measured); at the former 3e-2 Adam overshot and the loss swung between
    # 0.03 and 3 to the last step, so where it stopped (and the spans: 李明 tagged LOC with one torch
    # thread, not with two) depended on the float rounding of the machine's thread count.
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        ids, mask, tags, tag_mask = N.batch_tensors(examples, tokenizer)
        loss = model.crf.neg_log_likelihood(N.token_emissions(model, ids, mask), tags, tag_mask)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05, f"the tiny tagger did not fit its one sentence (loss {loss.item():.4f})"
    model.eval()
    assert N.predict_spans(model, rows, tokenizer) == [[(0, 2, "PER"), (3, 5, "LOC")]]
    export_onnx(model.tagger, tmp_path / "model.onnx", output_name="emissions", example=export_example(1))
    chars.save(str(tmp_path / "tokenizer.json"))
    np.savez(tmp_path / "crf.npz", **model.crf.export_arrays())
    write_manifest(
        tmp_path,
        Manifest(
            name="tiny-ner-e5",
            version="0",
            task="ner",
            labels=N.LABELS,
            tag_scheme="BIOES",
            decoder="crf",
            crf="crf.npz",
            max_seq_length=N.MAX_SEQ_LENGTH,
            tokenizer=tokenizer_spec(),
            onnx=OnnxSpec(output="emissions"),
        ),
    )
    served = NerModel.from_model_dir(tmp_path)
    text = "  马云在杭州会见李明"  # leading spaces: offsets still index the text received
    (entities,) = served.predict([text])
    assert [(e.start, e.end, e.label, e.text) for e in entities] == [(2, 4, "PER", "马云"), (5, 7, "LOC", "杭州")]
    assert all(text[e.start : e.end] == e.text for e in entities)
    assert json.loads((tmp_path / "manifest.json").read_text())["tokenizer"]["type"] == "tokenizers-json"


def test_ngram_branch_skips_the_vocabularys_own_special_ids() -> None:
    config = L.LinearConfig(vocab_size=40, buckets={"2": 7, "3": 11}, excluded_ids=[1, 0, 2])
    sequences = [[0, 5, 6, 1, 1], [5, 6]]  # <s> 5 6 <pad> <pad>: only "5", "6", "5 6" count
    counts = L.bucket_counts(config, sequences).toarray()
    np.testing.assert_array_equal(counts[0], counts[1])
    assert counts[1].sum() == 3
    rng = np.random.default_rng(0)
    idf = rng.uniform(1.0, 4.0, config.total_buckets).astype(np.float32)
    model = L.LinearModel(config, idf, rng.normal(size=config.total_buckets).astype(np.float32), bias=0.1, c=1.0)
    module = L.HashedNgramLinear(model).eval()
    ids = torch.tensor([[0, 5, 6, 7, 2, 1], [0, 7, 6, 2, 1, 1]])
    mask = (ids != 1).long()
    with torch.no_grad():
        graph = module(ids, mask).numpy()
    np.testing.assert_allclose(graph, model.logits([[5, 6, 7], [7, 6]]), rtol=1e-5, atol=1e-5)


def test_a_tagger_comes_back_from_its_int8_graph(tmp_path) -> None:
    """The warm start of a continued NER fine-tune (training/encoder/warm.py): every parameter of the tagger
    read back from its INT8 graph — float initialisers exactly, quantised weights within half a step — and
    the CRF from crf.npz."""
    from training.encoder.model import QUANTIZED_OPS, export_example
    from training.encoder.warm import crf_state, tagger_state
    from training.onnx_io import export_onnx, quantize_int8

    torch.manual_seed(3)
    trained = N.NerTraining(N.NerTagger(Encoder(TINY, vocab_size=len(char_vocab().pieces))))
    with torch.no_grad():
        for p in trained.parameters():
            p.normal_(0, 0.5)
    fp32, int8 = tmp_path / "fp32.onnx", tmp_path / "int8.onnx"
    export_onnx(trained.tagger, fp32, output_name="emissions", example=export_example(char_vocab().pad))
    quantize_int8(fp32, int8, op_types=QUANTIZED_OPS)
    np.savez(tmp_path / "crf.npz", **trained.crf.export_arrays())

    fresh = N.NerTraining(N.NerTagger(Encoder(TINY, vocab_size=len(char_vocab().pieces))))
    state = tagger_state(fresh.tagger, int8, pad_id=char_vocab().pad)
    assert set(state) == set(trained.tagger.state_dict())
    quantised = 0
    for name, original in trained.tagger.state_dict().items():
        back = state[name]
        assert back.shape == original.shape, name
        error = float((back - original).abs().max())
        if error == 0.0:
            continue
        step = float(original.abs().max()) * 2 / 254  # symmetric per-tensor int8
        assert error <= step, (name, error, step)
        quantised += 1
    assert quantised >= TINY.layers * 6 + 2  # six matrices a layer, the head and the embeddings went through int8
    fresh.tagger.load_state_dict(state)
    fresh.crf.load_state_dict({**fresh.crf.state_dict(), **crf_state(tmp_path / "crf.npz")})
    start, end, trans = fresh.crf.effective()
    expected = trained.crf.export_arrays()
    np.testing.assert_array_equal(trans.detach().numpy(), expected["transitions"])
    np.testing.assert_array_equal(start.detach().numpy(), expected["start_transitions"])
    np.testing.assert_array_equal(end.detach().numpy(), expected["end_transitions"])
