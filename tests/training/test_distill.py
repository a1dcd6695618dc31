"""Ensemble distillation for NER: the emission loss, the teachers' mean emissions, reloading teachers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

from deployments.runtime.tokenizer import BertChineseTokenizer  # noqa: E402
from tests.training.test_models import SMALL  # noqa: E402
from training import data as D  # noqa: E402
from training.layers import SplitOptimizer, mark_sparse  # noqa: E402
from training.ner_model import NerConfig, NerNet  # noqa: E402
from training.train import centred_squared_error, load_ner_teacher, teacher_emissions  # noqa: E402

VOCAB = Path(__file__).resolve().parents[2] / "models" / "ner" / "vocab.txt"
# The small network of test_models, with the lexicon features and a BiLSTM the shipped NER has.
TINY = {**SMALL, "dilations": [1, 2], "lexicon_lengths": [2, 3], "lexicon_buckets": 1009, "lstm_hidden": 8}


def tiny_net(seed: int, vocab_size: int) -> NerNet:
    torch.manual_seed(seed)
    net = NerNet(NerConfig(vocab_size=vocab_size, num_tags=13, **TINY))
    assert net.lexicon is not None
    rng = np.random.default_rng(seed)
    net.lexicon.set_tables(rng.integers(0, 8, 1009).astype(np.uint8), rng.integers(0, 255, 1009).astype(np.uint8))
    return net.eval()


@pytest.fixture(scope="module")
def tokenizer() -> BertChineseTokenizer:
    return BertChineseTokenizer.from_vocab_file(VOCAB, lowercase=True)


def examples(tokenizer: BertChineseTokenizer) -> list[D.Example]:
    texts = ["马云在杭州。", "北京大学的李明教授来自上海，今天到了深圳。", "好"]
    return [D.Example(ids=ids, target=[0] * len(ids)) for ids, _ in tokenizer.tokenize(texts)]


def test_centred_squared_error_ignores_per_token_shifts_and_pads() -> None:
    torch.manual_seed(0)
    emissions = torch.randn(2, 4, 5)
    mask = torch.tensor([[True, True, True, False], [True, True, False, False]])
    shift = torch.randn(2, 4, 1)
    assert centred_squared_error(emissions, emissions + shift, mask).item() == pytest.approx(0.0, abs=1e-6)
    target = emissions.clone()
    target[0, 3] += torch.arange(5.0)  # a pad position: not counted
    assert centred_squared_error(emissions, target, mask).item() == pytest.approx(0.0, abs=1e-6)
    target[1, 0, 2] += 5.0  # one real token: centred diff is 5 at tag 2 and -1 elsewhere → mean (16 + 4·1)/5 = 4
    assert centred_squared_error(emissions, target, mask).item() == pytest.approx(4.0 / 2, rel=1e-5)


def test_emission_loss_pulls_a_student_to_its_teacher(tokenizer) -> None:
    teacher, student = tiny_net(1, tokenizer.vocab_size), tiny_net(2, tokenizer.vocab_size)
    batch = examples(tokenizer)
    (soft,) = [teacher_emissions([teacher], batch, tokenizer)]
    ids, mask = (torch.from_numpy(a) for a in D.pad_batch([e.ids for e in batch], tokenizer))
    longest = max(len(e.ids) for e in batch)
    target = torch.from_numpy(D.pad_arrays(soft, longest))
    tag_mask = torch.zeros(len(batch), longest, dtype=torch.bool)
    for row, example in enumerate(batch):
        tag_mask[row, : len(example.ids)] = True
    student.train()
    mark_sparse(student)
    optimizer = SplitOptimizer([(list(student.parameters()), 1e-2)])  # the training loop's (sparse tables)

    def loss() -> torch.Tensor:
        return centred_squared_error(student(ids, mask)[:, 1 : 1 + longest], target, tag_mask)

    before = loss().item()
    for _ in range(60):
        optimizer.zero_grad()
        value = loss()
        value.backward()
        optimizer.step()
    assert loss().item() < 0.2 * before


def test_teacher_emissions_are_the_mean_over_each_texts_real_tokens(tokenizer) -> None:
    nets = [tiny_net(1, tokenizer.vocab_size), tiny_net(2, tokenizer.vocab_size)]
    batch = examples(tokenizer)
    soft = teacher_emissions(nets, batch, tokenizer)
    for example, array in zip(batch, soft, strict=True):
        assert array.dtype == np.float16 and array.shape == (len(example.ids), 13)
        ids, mask = (torch.from_numpy(a) for a in D.pad_batch([example.ids], tokenizer))
        with torch.no_grad():  # each text alone: the batched mean must not depend on its neighbours
            alone = sum(net(ids, mask)[0, 1 : 1 + len(example.ids)] for net in nets) / 2
        np.testing.assert_allclose(array.astype(np.float32), alone.numpy(), atol=2e-2, rtol=2e-3)
    padded = D.pad_arrays(soft, 30)
    assert padded.shape == (3, 30, 13) and padded.dtype == np.float32
    assert not padded[0, len(batch[0].ids) :].any()


def test_a_teacher_reloads_with_its_lexicon_tables(tmp_path, tokenizer) -> None:
    net = tiny_net(3, tokenizer.vocab_size)
    path = tmp_path / "ner_best.pt"
    torch.save({"net": net.state_dict(), "crf": {}, "config": net.config.to_dict()}, path)
    loaded = load_ner_teacher(str(path))
    assert not loaded.training
    assert loaded.lexicon is not None and net.lexicon is not None
    assert torch.equal(loaded.lexicon.classes, net.lexicon.classes)
    ids, mask = (torch.from_numpy(a) for a in D.pad_batch([e.ids for e in examples(tokenizer)], tokenizer))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids, mask), net(ids, mask))


def test_crf_weights_drop_the_unlabelled_sequences_from_the_likelihood() -> None:
    from training.ner_model import CRF

    torch.manual_seed(0)
    crf = CRF(D.bioes_labels())
    with torch.no_grad():
        crf.transitions.normal_()
    emissions = torch.randn(3, 5, 13)
    tags = torch.zeros(3, 5, dtype=torch.int64)
    mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2, [True] * 4 + [False]])
    each = torch.stack(
        [crf.neg_log_likelihood(emissions[i : i + 1], tags[i : i + 1], mask[i : i + 1]) for i in range(3)]
    )
    assert crf.neg_log_likelihood(emissions, tags, mask).item() == pytest.approx(each.mean().item(), rel=1e-5)
    weighted = crf.neg_log_likelihood(emissions, tags, mask, weights=torch.tensor([1.0, 0.0, 1.0]))
    assert weighted.item() == pytest.approx((each[0] + each[2]).item() / 3, rel=1e-5)
