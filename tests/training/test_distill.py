"""Ensemble distillation for NER: the emission loss, the teachers' mean emissions, the CRF posterior loss
(checked against every tag path of short sequences), reloading teachers."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

from deployments.runtime.tokenizer import BertChineseTokenizer  # noqa: E402
from tests.training.test_models import SMALL  # noqa: E402
from training import data as D  # noqa: E402
from training.distill import (  # noqa: E402
    centred_squared_error,
    crf_from_model_dir,
    gold_posterior,
    load_ner_teacher,
    load_ner_teacher_crf,
    model_posteriors,
    teacher_emissions,
    teacher_posteriors,
)
from training.layers import SplitOptimizer, mark_sparse  # noqa: E402
from training.ner_model import CRF, NerConfig, NerNet  # noqa: E402

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


def random_crf(seed: int) -> CRF:
    torch.manual_seed(seed)
    crf = CRF(D.bioes_labels())
    with torch.no_grad():
        for parameter in crf.parameters():
            parameter.normal_()
    return crf


def path_distribution(crf: CRF, emissions: torch.Tensor, temperature: float = 1.0) -> dict[tuple, float]:
    """Every tag path of one short sequence ([T, K] emissions) with its probability, by enumeration."""
    start, end, trans = (p.detach().double() for p in crf.effective())
    em = emissions.double()
    scores = {}
    for path in itertools.product(range(em.shape[1]), repeat=em.shape[0]):
        score = start[path[0]] + end[path[-1]] + sum(em[t, k] for t, k in enumerate(path))
        score = score + sum(trans[a, b] for a, b in itertools.pairwise(path))
        scores[path] = float(score) / temperature
    top = max(scores.values())
    weights = {path: np.exp(score - top) for path, score in scores.items()}
    total = sum(weights.values())
    return {path: w / total for path, w in weights.items() if w / total > 0}


def test_crf_posterior_matches_every_path_enumerated() -> None:
    crf = random_crf(0)
    emissions = torch.randn(2, 3, 13)
    mask = torch.tensor([[True, True, True], [True, True, False]])
    for temperature in (1.0, 2.5):
        marginals, pairs = crf.posterior(emissions, mask, temperature)
        for row, length in enumerate((3, 2)):
            expected_marginals, expected_pairs = np.zeros((3, 13)), np.zeros((13, 13))
            for path, p in path_distribution(crf, emissions[row, :length], temperature).items():
                for t, k in enumerate(path):
                    expected_marginals[t, k] += p
                for a, b in itertools.pairwise(path):
                    expected_pairs[a, b] += p
            np.testing.assert_allclose(marginals[row].numpy(), expected_marginals, atol=1e-5)
            np.testing.assert_allclose(pairs[row].numpy(), expected_pairs, atol=1e-5)
    # A high temperature flattens it to the uniform distribution over the paths BIOES allows.
    uniform = CRF(D.bioes_labels()).posterior(torch.zeros(2, 3, 13), mask)[0]
    np.testing.assert_allclose(crf.posterior(emissions, mask, 100.0)[0].numpy(), uniform.numpy(), atol=0.03)
    assert np.abs((marginals - uniform).numpy()).max() > 0.1  # at temperature 2.5 it is not flat yet


def test_soft_likelihood_is_the_cross_entropy_from_a_mixture_of_crfs() -> None:
    student, teachers = random_crf(1), [random_crf(2), random_crf(3)]
    emissions = torch.randn(1, 3, 13)
    teacher_emissions_ = [torch.randn(1, 3, 13), torch.randn(1, 3, 13)]
    mask = torch.ones(1, 3, dtype=torch.bool)
    posteriors = [crf.posterior(em, mask) for crf, em in zip(teachers, teacher_emissions_, strict=True)]
    marginals = (posteriors[0][0] + posteriors[1][0]) / 2
    pairs = (posteriors[0][1] + posteriors[1][1]) / 2
    mixture: dict[tuple, float] = {}
    for crf, em in zip(teachers, teacher_emissions_, strict=True):
        for path, p in path_distribution(crf, em[0]).items():
            mixture[path] = mixture.get(path, 0.0) + p / 2
    own = path_distribution(student, emissions[0])
    cross_entropy = -sum(p * np.log(own[path]) for path, p in mixture.items())
    loss = student.soft_neg_log_likelihood(emissions, mask, marginals, pairs)
    assert loss.item() == pytest.approx(cross_entropy, rel=1e-4)
    tags = torch.tensor([[1, 3, 0]])  # B-PER E-PER O: a one-hot target is the gold likelihood
    one_hot = torch.nn.functional.one_hot(tags, 13).float()
    gold_pairs = torch.zeros(1, 13, 13)
    gold_pairs[0, 1, 3] = gold_pairs[0, 3, 0] = 1.0
    assert student.soft_neg_log_likelihood(emissions, mask, one_hot, gold_pairs).item() == pytest.approx(
        student.neg_log_likelihood(emissions, tags, mask).item(), rel=1e-5
    )


def test_soft_likelihood_trains_a_student_crf_towards_its_teacher() -> None:
    teacher, student = random_crf(4), CRF(D.bioes_labels())
    target_emissions = torch.randn(4, 6, 13)
    mask = torch.tensor([[True] * 6, [True] * 6, [True] * 4 + [False] * 2, [True] * 2 + [False] * 4])
    marginals, pairs = teacher.posterior(target_emissions, mask)
    emissions = torch.zeros(4, 6, 13, requires_grad=True)
    optimizer = torch.optim.Adam([emissions, *student.parameters()], lr=0.1)
    first = None
    for _ in range(300):
        optimizer.zero_grad()
        loss = student.soft_neg_log_likelihood(emissions, mask, marginals, pairs)
        first = loss.item() if first is None else first
        loss.backward()
        optimizer.step()
    reached = student.posterior(emissions, mask)[0]
    assert np.abs((reached - marginals).numpy()).max() < 0.05 and loss.item() < first


def test_teacher_posteriors_are_the_mixture_over_each_texts_real_tokens(tmp_path, tokenizer) -> None:
    nets = [tiny_net(1, tokenizer.vocab_size), tiny_net(2, tokenizer.vocab_size)]
    crfs = [random_crf(5), random_crf(6)]
    path = tmp_path / "ner_teacher1_best.pt"
    torch.save({"net": nets[0].state_dict(), "crf": crfs[0].state_dict(), "config": nets[0].config.to_dict()}, path)
    reloaded = load_ner_teacher_crf(str(path), D.bioes_labels())
    torch.testing.assert_close(reloaded.effective(), crfs[0].effective())
    batch = examples(tokenizer)
    marginals, pairs = teacher_posteriors(list(zip(nets, crfs, strict=True)), batch, tokenizer)
    assert pairs.shape == (3, 13, 13)
    for i, example in enumerate(batch):
        n = len(example.ids)
        assert marginals[i].dtype == np.float16 and marginals[i].shape == (n, 13)
        np.testing.assert_allclose(marginals[i].astype(np.float32).sum(-1), 1.0, atol=5e-3)
        assert pairs[i].sum() == pytest.approx(n - 1, rel=1e-4)
        ids, mask = (torch.from_numpy(a) for a in D.pad_batch([example.ids], tokenizer))
        alone_marginals, alone_pairs = 0.0, 0.0
        for net, crf in zip(nets, crfs, strict=True):  # each text alone, each teacher alone
            with torch.no_grad():
                em = net(ids, mask)[:, 1 : 1 + n]
            m, p = crf.posterior(em, torch.ones(1, n, dtype=torch.bool))
            alone_marginals, alone_pairs = alone_marginals + m[0] / 2, alone_pairs + p[0] / 2
        np.testing.assert_allclose(marginals[i].astype(np.float32), alone_marginals.numpy(), atol=2e-3)
        np.testing.assert_allclose(pairs[i], alone_pairs.numpy(), atol=1e-4)


MODELS = Path(__file__).resolve().parents[2] / "models"
TEACHER_ROWS = [
    {"text": "马云在杭州阿里巴巴总部会见了客人。", "entities": [{"start": 0, "end": 2, "label": "PER"}]},
    {"text": "他1998年去了北京。", "entities": [{"start": 9, "end": 11, "label": "LOC"}]},  # a WordPiece "1998"
    {"text": "上海" * 70, "entities": []},  # 140 characters: one window for the student, too long for the teacher
    {"text": "李明到了深圳。", "entities": [{"start": 0, "end": 2, "label": "PER"}]},
]


def test_gold_posterior_makes_the_soft_loss_the_gold_likelihood() -> None:
    crf = random_crf(7)
    emissions = torch.randn(1, 4, 13)
    tags = [9, 10, 11, 0]  # B-ORG I-ORG E-ORG O
    marginals, pairs = gold_posterior(tags, 13)
    loss = crf.soft_neg_log_likelihood(
        emissions,
        torch.ones(1, 4, dtype=torch.bool),
        torch.from_numpy(marginals[None].astype(np.float32)),
        torch.from_numpy(pairs[None]),
    )
    gold = crf.neg_log_likelihood(emissions, torch.tensor([tags]), torch.ones(1, 4, dtype=torch.bool))
    assert loss.item() == pytest.approx(gold.item(), rel=1e-5)


@pytest.mark.parametrize(
    ("teacher", "reads"),
    [
        ("ner-ensemble", [True, False, False, True]),  # characters, 126 tokens, one ONNX call per row
        ("ner", [True, True, True, True]),  # the student's own WordPieces, 254 tokens, padded batches
    ],
)
def test_a_shipped_model_teaches_the_examples_it_reads_token_for_token(tokenizer, teacher, reads) -> None:
    from deployments.runtime.ner import NerModel

    teacher_dir = MODELS / teacher
    labels = D.bioes_labels()
    crf = crf_from_model_dir(teacher_dir / "crf.npz", labels)
    with np.load(teacher_dir / "crf.npz") as shipped:
        for name, value in crf.export_arrays().items():
            np.testing.assert_allclose(value, shipped[name], rtol=1e-6)
    cut, posteriors = model_posteriors(
        teacher_dir, TEACHER_ROWS, tokenizer, labels, max_seq_length=256, temperature=1.0, threads=2
    )
    expected = D.ner_examples(TEACHER_ROWS, tokenizer, labels, max_seq_length=256)
    assert [(e.ids, e.target) for e in cut] == [(e.ids, e.target) for e in expected]
    assert [p is not None for p in posteriors] == reads
    served = NerModel.from_model_dir(teacher_dir)
    for row, posterior in zip(TEACHER_ROWS, posteriors, strict=True):
        if posterior is None:
            continue
        marginals, pairs = posterior
        (tokens,) = served.tokenizer.encode([row["text"]])
        n = len(tokens.ids)
        assert marginals.shape == (n, 13) and pairs.sum() == pytest.approx(n - 1, rel=1e-4)
        np.testing.assert_allclose(marginals.astype(np.float32).sum(-1), 1.0, atol=5e-3)
        # At temperature 1 they are the served model's own marginals: its confidence in each tag it decodes.
        ((path, confidences),) = served.tag([tokens.ids])
        np.testing.assert_allclose(marginals[np.arange(n), path].astype(np.float32), confidences, atol=2e-3)
    warm = model_posteriors(
        teacher_dir, TEACHER_ROWS[:1], tokenizer, labels, max_seq_length=256, temperature=2.0, threads=1
    )[1][0]
    assert (
        warm is not None
        and warm[0].astype(np.float32).max(-1).mean() < posteriors[0][0].astype(np.float32).max(-1).mean()
    )


def test_model_teachers_give_the_gold_path_where_they_cannot_read(tokenizer) -> None:
    from types import SimpleNamespace

    from training.config import NerRecipe
    from training.recipes.ner import NerData, _distil_from_models

    labels = D.bioes_labels()
    examples = D.ner_examples(TEACHER_ROWS, tokenizer, labels, max_seq_length=256)
    data = NerData(tokenizer, labels, TEACHER_ROWS, {}, TEACHER_ROWS)
    recipe = NerRecipe(distill=0, teacher_models=[str(MODELS / "ner-ensemble")] * 2)
    run = SimpleNamespace(settings=SimpleNamespace(threads=1))
    kept, soft, distillation = _distil_from_models(run, recipe, data, examples)  # type: ignore[arg-type]
    assert kept == examples and soft.gold_count is None and soft.pairs is not None
    assert distillation.taught_sequences == 2 and distillation.teachers == 2 and distillation.loss == "crf"
    for i in (1, 2):  # not read by the teachers: the gold path
        gold_marginals, gold_pairs = gold_posterior(examples[i].target, 13)  # type: ignore[arg-type]
        np.testing.assert_array_equal(soft.targets[i], gold_marginals)
        np.testing.assert_array_equal(soft.pairs[i], gold_pairs)
    alone = model_posteriors(
        MODELS / "ner-ensemble", TEACHER_ROWS, tokenizer, labels, max_seq_length=256, temperature=2.0, threads=1
    )[1]
    for i in (0, 3):  # two copies of one teacher: their mixture is that teacher
        one = alone[i]
        assert one is not None
        np.testing.assert_allclose(soft.targets[i].astype(np.float32), one[0].astype(np.float32), atol=1e-3)
        np.testing.assert_allclose(soft.pairs[i], one[1], atol=1e-5)
