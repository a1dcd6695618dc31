"""Linear-chain CRF decoding in numpy.

The transitions follow the RaNER / pytorch-crf convention: ``transitions[prev, next]`` is the score
of moving from tag ``prev`` to tag ``next``; ``start_transitions[k]`` and ``end_transitions[k]``
score starting and ending in tag ``k``.
"""

from __future__ import annotations

from collections.abc import Sequence
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


def decode_batch(
    emissions: np.ndarray, lengths: Sequence[int], crf: CrfParams
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Best tag paths and the marginal of each path's tag, for a padded batch.

    ``emissions`` is [B, T, K] with row ``b`` valid for its first ``lengths[b]`` positions. Returns
    per row the Viterbi path [lengths[b]] and ``p(tag_t = path_t | x)`` [lengths[b]]. Vectorised
    over rows and tags, one loop over time: a batch of 16 costs about two sequences' worth.
    Neither paths nor marginals depend on the rest of the batch, to the bit (:func:`_rows_times`).
    """
    batch, width, num_tags = emissions.shape
    if num_tags != crf.num_tags:
        raise ValueError(f"emissions have {num_tags} tags; the CRF has {crf.num_tags}")
    lengths_array = np.asarray(lengths, dtype=np.int64)
    if batch == 0:
        return [], []
    if lengths_array.min() < 1 or lengths_array.max() > width:
        raise ValueError(f"lengths must be within 1..{width}, got {lengths_array.tolist()}")
    # Longest rows first, so the rows still running at any step are a prefix (slices, no masks).
    order = np.argsort(-lengths_array, kind="stable")
    width = int(lengths_array.max())
    ordered = emissions[order, :width].astype(np.float64)
    ordered_lengths = lengths_array[order]
    paths = _viterbi_batch(ordered, ordered_lengths, crf)
    marginals = _marginals_batch(ordered, ordered_lengths, crf)
    chosen = np.take_along_axis(marginals, paths[:, :, None], axis=2)[:, :, 0]  # [B, T]
    result_paths: list[np.ndarray] = [np.empty(0, dtype=np.int64)] * batch
    result_scores: list[np.ndarray] = [np.empty(0)] * batch
    for position, row in enumerate(order):
        length = ordered_lengths[position]
        result_paths[row] = paths[position, :length]
        result_scores[row] = chosen[position, :length]
    return result_paths, result_scores


def _viterbi_batch(emissions: np.ndarray, lengths: np.ndarray, crf: CrfParams) -> np.ndarray:
    """Viterbi paths [B, T] of a padded batch whose rows are sorted longest first (positions
    past a row's length are 0). At step ``t`` the rows still running are a prefix."""
    batch, width, num_tags = emissions.shape
    running = _running_rows(lengths, width)
    score = crf.start_transitions[None, :] + emissions[:, 0]  # [B, K]
    backpointers = np.zeros((batch, max(width - 1, 0), num_tags), dtype=np.int64)
    # [next, prev]: the reductions below run over the contiguous last axis
    transitions = np.ascontiguousarray(crf.transitions.T)[None, :, :]
    for t in range(1, width):
        rows = running[t]
        candidates = score[:rows, None, :] + transitions  # [rows, next, prev]
        backpointers[:rows, t - 1] = candidates.argmax(axis=2)
        score[:rows] = candidates.max(axis=2) + emissions[:rows, t]
    score += crf.end_transitions[None, :]
    paths = np.zeros((batch, width), dtype=np.int64)
    paths[np.arange(batch), lengths - 1] = score.argmax(axis=1)
    for t in range(width - 2, -1, -1):
        rows = running[t + 1]  # rows whose position t+1 is real
        paths[:rows, t] = backpointers[np.arange(rows), t, paths[:rows, t + 1]]
    return paths


def _running_rows(lengths: np.ndarray, width: int) -> list[int]:
    """``running[t]``: how many rows (sorted longest first) have a position ``t``."""
    return [int(np.count_nonzero(lengths > t)) for t in range(width)]


def _marginals_batch(emissions: np.ndarray, lengths: np.ndarray, crf: CrfParams) -> np.ndarray:
    """Tag posteriors [B, T, K] of a padded batch sorted longest first, by scaled
    forward-backward (see :func:`tag_marginals`); rows whose mass is lost are recomputed in log
    space."""
    batch, width, _ = emissions.shape
    running = _running_rows(lengths, width)
    step = np.exp(crf.transitions - crf.transitions.max())  # [prev, next]
    step_t = np.ascontiguousarray(step.T)
    emit = np.exp(emissions - emissions.max(axis=2, keepdims=True))
    alpha = np.zeros_like(emissions)
    beta = np.zeros_like(emissions)
    first = np.exp(crf.start_transitions - crf.start_transitions.max())[None, :] * emit[:, 0]
    alpha[:, 0] = first / first.sum(axis=1, keepdims=True)
    for t in range(1, width):
        rows = running[t]
        forward = _rows_times(alpha[:rows, t - 1], step) * emit[:rows, t]
        alpha[:rows, t] = forward / forward.sum(axis=1, keepdims=True)
    ending = np.exp(crf.end_transitions - crf.end_transitions.max())
    beta[np.arange(batch), lengths - 1] = ending
    for t in range(width - 2, -1, -1):
        rows = running[t + 1]  # rows whose position t+1 is real: beta[t] comes from beta[t+1]
        carried = emit[:rows, t + 1] * beta[:rows, t + 1]  # [rows, next]
        backward = _rows_times(carried, step_t)
        beta[:rows, t] = backward / backward.sum(axis=1, keepdims=True)
    joint = alpha * beta
    mass = joint.sum(axis=2, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        marginals = joint / mass
    for b in range(batch):
        valid = slice(0, int(lengths[b]))
        if not (np.all(np.isfinite(marginals[b, valid])) and np.all(mass[b, valid] > 0)):
            marginals[b, valid] = _log_tag_marginals(emissions[b, valid], crf)
    return marginals


def _rows_times(rows: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """``rows @ matrix`` ([R, K] × [K, K]) with each row's sums in a fixed order, whatever R is. A BLAS
    matrix product picks its kernel (and so its summation order) by the number of rows, which made a
    text's marginals differ in the last bit with the rest of its call."""
    return (rows[:, :, None] * matrix[None, :, :]).sum(axis=1)


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
