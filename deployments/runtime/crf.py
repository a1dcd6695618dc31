"""Linear-chain CRF decoding in numpy.

The transitions follow the RaNER / pytorch-crf convention: ``transitions[prev, next]`` is the score
of moving from tag ``prev`` to tag ``next``; ``start_transitions[k]`` and ``end_transitions[k]``
score starting and ending in tag ``k``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class CrfParams:
    start_transitions: np.ndarray  # [K]
    end_transitions: np.ndarray  # [K]
    transitions: np.ndarray  # [K, K], [prev, next]

    def __post_init__(self) -> None:
        k = self.start_transitions.shape[0]
        if self.end_transitions.shape != (k,) or self.transitions.shape != (k, k):
            raise ValueError(
                "CRF shapes disagree: start "
                f"{self.start_transitions.shape}, end {self.end_transitions.shape}, "
                f"transitions {self.transitions.shape}"
            )

    @property
    def num_tags(self) -> int:
        return int(self.start_transitions.shape[0])

    @classmethod
    def load(cls, path: str | Path) -> CrfParams:
        with np.load(path) as data:
            return cls(
                start_transitions=np.asarray(data["start_transitions"], dtype=np.float64),
                end_transitions=np.asarray(data["end_transitions"], dtype=np.float64),
                transitions=np.asarray(data["transitions"], dtype=np.float64),
            )


def viterbi_decode(emissions: np.ndarray, crf: CrfParams) -> tuple[list[int], float]:
    """The best tag path for one sequence of ``emissions`` [T, K] and its score.

    Vectorised over tags, a loop over time: O(T·K²), which for K ≤ 13 and T ≤ 512 is microseconds.
    """
    length, num_tags = emissions.shape
    if num_tags != crf.num_tags:
        raise ValueError(f"emissions have {num_tags} tags; the CRF has {crf.num_tags}")
    if length == 0:
        return [], 0.0
    emissions = emissions.astype(np.float64, copy=False)
    score = crf.start_transitions + emissions[0]
    backpointers = np.empty((length - 1, num_tags), dtype=np.int64)
    for t in range(1, length):
        candidates = score[:, None] + crf.transitions  # [prev, next]
        backpointers[t - 1] = candidates.argmax(axis=0)
        score = candidates.max(axis=0) + emissions[t]
    score = score + crf.end_transitions
    best_last = int(score.argmax())
    path = [best_last]
    for t in range(length - 2, -1, -1):
        path.append(int(backpointers[t, path[-1]]))
    path.reverse()
    return path, float(score[best_last])


def tag_marginals(emissions: np.ndarray, crf: CrfParams) -> np.ndarray:
    """Per-position tag posteriors p(tag_t = k | x) [T, K] by forward-backward.

    Used as the confidence of each decoded tag, so entity scores mean the same thing for every
    CRF model. Runs the scaled forward-backward algorithm in probability space (one small matrix
    product per step, each step renormalised, so nothing under- or overflows); falls back to log
    space if a step's mass is nonetheless lost (transitions that forbid every path).
    """
    length, _ = emissions.shape
    emissions = emissions.astype(np.float64, copy=False)
    if length == 0:
        return np.empty_like(emissions)
    trans_peak = crf.transitions.max()
    step = np.exp(crf.transitions - trans_peak)  # [prev, next]
    emit = np.exp(emissions - emissions.max(axis=1, keepdims=True))  # each row's best tag is 1
    alpha = np.empty_like(emissions)
    beta = np.empty_like(emissions)
    alpha[0] = np.exp(crf.start_transitions - crf.start_transitions.max()) * emit[0]
    alpha[0] /= alpha[0].sum()
    for t in range(1, length):
        forward = (alpha[t - 1] @ step) * emit[t]
        alpha[t] = forward / forward.sum()
    beta[-1] = np.exp(crf.end_transitions - crf.end_transitions.max())
    for t in range(length - 2, -1, -1):
        backward = step @ (emit[t + 1] * beta[t + 1])
        beta[t] = backward / backward.sum()
    joint = alpha * beta
    mass = joint.sum(axis=1, keepdims=True)
    if not np.all(np.isfinite(joint)) or not np.all(mass > 0):
        return _log_tag_marginals(emissions, crf)
    return joint / mass


def _log_tag_marginals(emissions: np.ndarray, crf: CrfParams) -> np.ndarray:
    """``tag_marginals`` in log space: slower, but exact when the scaled version loses all mass."""
    alpha = np.empty_like(emissions)
    beta = np.empty_like(emissions)
    alpha[0] = crf.start_transitions + emissions[0]
    for t in range(1, len(emissions)):
        alpha[t] = _logsumexp(alpha[t - 1][:, None] + crf.transitions, axis=0) + emissions[t]
    beta[-1] = crf.end_transitions
    for t in range(len(emissions) - 2, -1, -1):
        beta[t] = _logsumexp(crf.transitions + (emissions[t + 1] + beta[t + 1])[None, :], axis=1)
    log_z = _logsumexp(alpha[-1] + beta[-1], axis=0)
    return np.exp(alpha + beta - log_z)


def _logsumexp(values: np.ndarray, axis: int) -> np.ndarray:
    peak = values.max(axis=axis, keepdims=True)
    return np.squeeze(peak, axis=axis) + np.log(np.exp(values - peak).sum(axis=axis))
