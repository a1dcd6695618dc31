"""Numpy Viterbi and marginals against brute-force enumeration of every tag path."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from deployments.runtime.crf import CrfParams, _log_tag_marginals, tag_marginals, viterbi_decode


def path_score(emissions: np.ndarray, crf: CrfParams, path: tuple[int, ...]) -> float:
    score = crf.start_transitions[path[0]] + emissions[0, path[0]]
    for t in range(1, len(path)):
        score += crf.transitions[path[t - 1], path[t]] + emissions[t, path[t]]
    return float(score + crf.end_transitions[path[-1]])


def random_crf(rng: np.random.Generator, num_tags: int) -> CrfParams:
    return CrfParams(
        start_transitions=rng.normal(size=num_tags),
        end_transitions=rng.normal(size=num_tags),
        transitions=rng.normal(size=(num_tags, num_tags)),
    )


@pytest.mark.parametrize("seed", range(30))
def test_viterbi_equals_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    num_tags, length = int(rng.integers(2, 5)), int(rng.integers(1, 6))
    crf = random_crf(rng, num_tags)
    emissions = rng.normal(size=(length, num_tags)) * 2
    paths = list(itertools.product(range(num_tags), repeat=length))
    scores = [path_score(emissions, crf, p) for p in paths]
    best_path, best_score = viterbi_decode(emissions, crf)
    assert tuple(best_path) == paths[int(np.argmax(scores))]
    assert best_score == pytest.approx(max(scores))


@pytest.mark.parametrize("seed", range(10))
def test_marginals_equal_brute_force(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    num_tags, length = 3, int(rng.integers(1, 5))
    crf = random_crf(rng, num_tags)
    emissions = rng.normal(size=(length, num_tags))
    paths = list(itertools.product(range(num_tags), repeat=length))
    weights = np.exp([path_score(emissions, crf, p) for p in paths])
    expected = np.zeros((length, num_tags))
    for path, weight in zip(paths, weights, strict=True):
        for t, tag in enumerate(path):
            expected[t, tag] += weight
    expected /= weights.sum()
    np.testing.assert_allclose(tag_marginals(emissions, crf), expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("seed", range(10))
def test_marginals_survive_extreme_scores_and_forbidden_transitions(seed: int) -> None:
    """Emissions hundreds of nats apart and BIOES-style forbidden transitions (-10000): the scaled
    algorithm must still agree with exact log-space forward-backward on long sequences."""
    rng = np.random.default_rng(200 + seed)
    num_tags, length = 5, 200
    crf = random_crf(rng, num_tags)
    forbidden = rng.random((num_tags, num_tags)) < 0.3
    forbidden[:, 0] = False  # every tag may still move to tag 0: a path always exists
    transitions = np.where(forbidden, -10000.0, crf.transitions)
    crf = CrfParams(crf.start_transitions, crf.end_transitions, transitions)
    emissions = rng.normal(size=(length, num_tags)) * 300
    marginals = tag_marginals(emissions, crf)
    np.testing.assert_allclose(marginals, _log_tag_marginals(emissions, crf), atol=1e-9)
    np.testing.assert_allclose(marginals.sum(axis=1), 1.0)


def test_transitions_are_prev_to_next() -> None:
    # Emissions are flat; only transitions decide. 0→1 is rewarded, 1→0 punished.
    crf = CrfParams(np.zeros(2), np.zeros(2), np.array([[0.0, 5.0], [-5.0, 0.0]]))
    path, _ = viterbi_decode(np.zeros((2, 2)), crf)
    assert path == [0, 1]


def test_shape_mismatch_is_rejected() -> None:
    with pytest.raises(ValueError, match="CRF shapes disagree"):
        CrfParams(np.zeros(3), np.zeros(2), np.zeros((3, 3)))
    crf = CrfParams(np.zeros(3), np.zeros(3), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="emissions have 2 tags"):
        viterbi_decode(np.zeros((4, 2)), crf)


def test_batched_decode_equals_one_sequence_at_a_time() -> None:
    """decode_batch over rows of different lengths gives each row's own Viterbi path and the
    marginal of each of its tags, as the per-sequence functions do."""
    from deployments.runtime.crf import decode_batch, tag_marginals

    rng = np.random.default_rng(7)
    num_tags = 5
    crf = CrfParams(rng.normal(size=num_tags), rng.normal(size=num_tags), rng.normal(size=(num_tags, num_tags)) * 3)
    crf.transitions[0, 3] = -1e4  # a forbidden move, as BIOES CRFs have
    for _ in range(50):
        rows = int(rng.integers(2, 9))
        width = int(rng.integers(1, 30))
        lengths = rng.integers(1, width + 1, size=rows)
        emissions = rng.normal(size=(rows, width, num_tags)) * rng.uniform(0.1, 20)
        paths, confidences = decode_batch(emissions, lengths, crf)
        for row in range(rows):
            alone = emissions[row, : lengths[row]]
            expected_path, _ = viterbi_decode(alone, crf)
            assert paths[row].tolist() == expected_path
            marginals = tag_marginals(alone, crf)
            np.testing.assert_allclose(confidences[row], marginals[np.arange(lengths[row]), expected_path], atol=1e-12)
