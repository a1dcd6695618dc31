"""The numpy Viterbi zhserve serves with equals brute force and the torch reference decoder."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from deployments.runtime.crf import CrfParams, decode_batch, viterbi_decode  # noqa: E402
from training.export.modules import CrfParameters, torch_viterbi  # noqa: E402

pytestmark = pytest.mark.export


def brute_force(emissions: np.ndarray, crf: CrfParams) -> tuple[list[int], float]:
    length, num_tags = emissions.shape
    best_path, best_score = None, -np.inf
    for path in itertools.product(range(num_tags), repeat=length):
        score = crf.start_transitions[path[0]] + emissions[0, path[0]] + crf.end_transitions[path[-1]]
        for t in range(1, length):
            score += crf.transitions[path[t - 1], path[t]] + emissions[t, path[t]]
        if score > best_score:
            best_path, best_score = list(path), score
    assert best_path is not None
    return best_path, float(best_score)


def random_crf(rng: np.random.Generator, num_tags: int) -> CrfParams:
    return CrfParams(
        start_transitions=rng.normal(size=num_tags),
        end_transitions=rng.normal(size=num_tags),
        transitions=rng.normal(size=(num_tags, num_tags)) * 2,  # asymmetric: catches [prev,next] swaps
    )


@pytest.mark.parametrize("seed", range(25))
def test_viterbi_equals_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    num_tags, length = int(rng.integers(2, 5)), int(rng.integers(1, 6))
    crf = random_crf(rng, num_tags)
    emissions = rng.normal(size=(length, num_tags))
    path, score = viterbi_decode(emissions, crf)
    expected_path, expected_score = brute_force(emissions, crf)
    assert path == expected_path
    assert score == pytest.approx(expected_score)


def test_viterbi_equals_torch_reference_on_padded_batches() -> None:
    rng = np.random.default_rng(7)
    num_tags, batch, width = 13, 6, 40
    crf = random_crf(rng, num_tags)
    module = CrfParameters(num_tags)
    with torch.no_grad():
        module.start_transitions.copy_(torch.from_numpy(crf.start_transitions))
        module.end_transitions.copy_(torch.from_numpy(crf.end_transitions))
        module.transitions.copy_(torch.from_numpy(crf.transitions))
    emissions = rng.normal(size=(batch, width, num_tags))
    lengths = [40, 1, 17, 2, 33, 5]
    mask = torch.tensor([[i < n for i in range(width)] for n in lengths])
    reference = torch_viterbi(torch.from_numpy(emissions), mask, module)
    for row, length in enumerate(lengths):
        assert viterbi_decode(emissions[row, :length], crf)[0] == reference[row]


def test_a_rows_marginals_do_not_depend_on_its_batch_to_the_bit() -> None:
    """The served confidences are these marginals: the same text must get the same float whatever else
    its call carried (a matrix product's kernel, chosen by the number of rows, once moved the last bit)."""
    rng = np.random.default_rng(11)
    k = 13
    crf = CrfParams(rng.normal(size=k), rng.normal(size=k), rng.normal(size=(k, k)))
    rows = [rng.normal(size=(int(n), k)) * 3 for n in rng.integers(1, 60, size=40)]
    for index, row in enumerate(rows[:8]):
        (alone_path,), (alone_marginals,) = decode_batch(row[None], [len(row)], crf)
        for size in (2, 5, 17, 40):
            chosen = [int(i) for i in rng.choice(len(rows), size=size - 1, replace=False) if i != index]
            batch = [row, *(rows[i] for i in chosen)]
            width = max(len(r) for r in batch)
            padded = np.zeros((len(batch), width, k))
            for slot, r in enumerate(batch):
                padded[slot, : len(r)] = r
            paths, marginals = decode_batch(padded, [len(r) for r in batch], crf)
            assert np.array_equal(paths[0], alone_path)
            assert np.array_equal(marginals[0], alone_marginals), (index, size)
