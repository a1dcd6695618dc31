"""NER ensemble distillation: the teachers' soft targets (mean emissions, or the mixture of their CRF path
posteriors) and the emission loss; reloading the teachers of an earlier run; a shipped model directory
(ONNX + ``crf.npz``) as a teacher.

The CRF's own soft loss (the cross-entropy from the teachers' path distribution) is
:meth:`training.ner_model.CRF.soft_neg_log_likelihood`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from deployments.runtime.tokenizer import NUM_SPECIAL_PER_SEQUENCE
from training import data as D
from training.ner_model import CRF, NerConfig, NerNet
from training.recipes.batches import ner_token_batch


def centred_squared_error(emissions: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Squared error between the emissions and the target's, each centred on its mean over the tags (a CRF
    ignores a per-token constant), averaged over the tags, summed over the real tokens and averaged over the
    batch like the CRF loss. ``emissions`` and ``target`` [B, T, K], ``mask`` [B, T] bool."""
    diff = (emissions - emissions.mean(-1, keepdim=True)) - (target - target.mean(-1, keepdim=True))
    return (diff.pow(2).mean(-1) * mask.to(diff.dtype)).sum() / emissions.shape[0]


def _teacher_batches(nets: Sequence[nn.Module], examples: Sequence[D.Example], tokenizer, desc: str):
    """Length-bucketed batches of ``examples`` with each net's emissions over their tag positions: yields
    ``(indices, tag_mask, [emissions of each net])``."""
    for net in nets:
        net.eval()
    batches = D.length_batches([len(e.ids) for e in examples], max_tokens=16000, max_batch=256, rng=None)
    for indices in tqdm(batches, desc=desc, mininterval=30.0, file=sys.stderr):
        ids, mask, tags, tag_mask = ner_token_batch(examples, indices, tokenizer)
        with torch.no_grad():  # left before yielding: the caller runs in its own grad mode
            emissions = [net(ids, mask)[:, 1 : 1 + tags.shape[1]] for net in nets]
        yield indices, tag_mask, emissions


def teacher_emissions(nets: Sequence[nn.Module], examples: Sequence[D.Example], tokenizer) -> list[np.ndarray]:
    """The mean emissions of ``nets`` over each example's real tokens ([len(target), tags], float16)."""
    out: list[np.ndarray] = [np.zeros(0, dtype=np.float16)] * len(examples)
    for indices, tag_mask, emissions in _teacher_batches(nets, examples, tokenizer, "teacher emissions"):
        mean = sum(emissions) / len(nets)
        for row, i in enumerate(indices):
            out[i] = mean[row, tag_mask[row]].numpy().astype(np.float16)
    return out


def teacher_posteriors(
    teachers: Sequence[tuple[nn.Module, CRF]],
    examples: Sequence[D.Example],
    tokenizer,
    temperature: float = 1.0,
) -> tuple[list[np.ndarray], np.ndarray]:
    """The uniform mixture of the teachers' path distributions (each network with its own CRF, scores divided
    by ``temperature``) over each example: its tag marginals ([len(target), tags], float16) and expected
    tag-pair counts ([examples, tags, tags], float32), the targets of :meth:`CRF.soft_neg_log_likelihood`."""
    nets, crfs = [net for net, _ in teachers], [crf for _, crf in teachers]
    tags_count = crfs[0].transitions.shape[0]
    marginals: list[np.ndarray] = [np.zeros(0, dtype=np.float16)] * len(examples)
    pairs = np.zeros((len(examples), tags_count, tags_count), dtype=np.float32)
    for indices, tag_mask, emissions in _teacher_batches(nets, examples, tokenizer, "teacher posteriors"):
        mean_marginals: torch.Tensor | float = 0.0
        mean_pairs: torch.Tensor | float = 0.0
        for crf, each in zip(crfs, emissions, strict=True):
            m, p = crf.posterior(each, tag_mask, temperature)
            mean_marginals, mean_pairs = mean_marginals + m / len(teachers), mean_pairs + p / len(teachers)
        assert isinstance(mean_marginals, torch.Tensor) and isinstance(mean_pairs, torch.Tensor)
        for row, i in enumerate(indices):
            marginals[i] = mean_marginals[row, tag_mask[row]].numpy().astype(np.float16)
            pairs[i] = mean_pairs[row].numpy()
    return marginals, pairs


def load_ner_teacher_crf(path: str, labels: Sequence[str]) -> CRF:
    """The CRF of an earlier run's ``ner_best.pt`` / ``ner_teacherK_best.pt``."""
    crf = CRF(labels)
    crf.load_state_dict(torch.load(path)["crf"])
    return crf.eval()


def load_ner_teacher(path: str) -> NerNet:
    """A NER network from the ``ner_best.pt`` of an earlier run (its lexicon tables included)."""
    checkpoint = torch.load(path)
    net = NerNet(NerConfig(**checkpoint["config"]))
    net.load_state_dict(checkpoint["net"])
    return net.eval()


def crf_from_model_dir(path: str | Path, labels: Sequence[str]) -> CRF:
    """A shipped model directory's CRF (``crf.npz``, its effective parameters) as a training CRF."""
    from deployments.runtime.crf import CrfParams

    params = CrfParams.load(path)
    crf = CRF(labels)
    with torch.no_grad():
        crf.start_transitions.copy_(torch.from_numpy(params.start_transitions))
        crf.end_transitions.copy_(torch.from_numpy(params.end_transitions))
        crf.transitions.copy_(torch.from_numpy(params.transitions))
    return crf.eval()


def gold_posterior(target: Sequence[int], tags_count: int) -> tuple[np.ndarray, np.ndarray]:
    """The path distribution that is certain of the gold path: one-hot marginals and its tag-pair counts
    (with it, :meth:`CRF.soft_neg_log_likelihood` is the gold path's negative log-likelihood)."""
    marginals = np.zeros((len(target), tags_count), dtype=np.float16)
    marginals[np.arange(len(target)), list(target)] = 1.0
    pairs = np.zeros((tags_count, tags_count), dtype=np.float32)
    np.add.at(pairs, (list(target[:-1]), list(target[1:])), 1.0)
    return marginals, pairs


def model_posteriors(
    model_dir: str | Path,
    rows: Sequence[dict],
    tokenizer,
    labels: Sequence[str],
    *,
    max_seq_length: int,
    temperature: float,
    threads: int,
) -> tuple[list[D.Example], list[tuple[np.ndarray, np.ndarray] | None]]:
    """A shipped NER model directory as a teacher (e.g. ``models/ner-ensemble``: no torch network).

    Cuts ``rows`` into examples for the student's ``tokenizer`` exactly as :func:`training.data.ner_examples`
    does, and gives each example the teacher's path posterior at ``temperature`` (tag marginals [n, K] as
    float16, tag-pair counts [K, K]) where the teacher reads the very same tokens: its tokenizer cuts the
    row's text at the same character offsets and the row fits the teacher whole. Elsewhere ``None``: a
    teacher that tags characters cannot say what a student's multi-character WordPiece (a number, a
    Latin word) is, and this does not guess.
    """
    from deployments.runtime.ner import NerModel

    teacher = NerModel.from_model_dir(model_dir, row_threads=threads)
    if list(teacher.labels) != list(labels):
        raise ValueError(f"the teacher {model_dir} tags {teacher.labels}, the student {list(labels)}")
    if teacher.crf is None or teacher.manifest.crf is None:
        raise ValueError(f"the teacher {model_dir} decodes by argmax; a path posterior needs its CRF")
    crf = crf_from_model_dir(teacher.model_dir.file(teacher.manifest.crf), labels)
    fits = teacher.max_seq_length - NUM_SPECIAL_PER_SEQUENCE
    student_size = max_seq_length - NUM_SPECIAL_PER_SEQUENCE
    texts = [row["text"] for row in rows]
    examples = D.ner_examples(rows, tokenizer, labels, max_seq_length=max_seq_length)
    results: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(examples)
    taught: list[tuple[int, np.ndarray]] = []  # (example index, teacher token ids)
    position = 0
    for (ids, offsets), theirs in zip(tokenizer.tokenize(texts), teacher.tokenizer.encode(texts), strict=True):
        if not ids:
            continue
        cut = len(list(D.windows(len(ids), student_size, student_size // 2)))
        same = len(ids) <= fits and [tuple(o) for o in theirs.offsets.tolist()] == [tuple(o) for o in offsets]
        if cut == 1 and same:
            taught.append((position, theirs.ids))
        position += cut
    if position != len(examples):
        raise AssertionError(f"cut {position} examples, ner_examples cut {len(examples)}")
    chunk = 256
    for start in tqdm(range(0, len(taught), chunk), desc="teacher model posteriors", mininterval=30.0, file=sys.stderr):
        part = taught[start : start + chunk]
        emissions = teacher.emissions([ids for _, ids in part])
        # one padded [B, T, K] array, or (a row-by-row model) one [1, T_i, K] array per row
        per_row = list(emissions) if isinstance(emissions, np.ndarray) else [each[0] for each in emissions]
        lengths = [len(ids) for _, ids in part]
        scores = torch.zeros(len(part), max(lengths), len(labels))
        mask = torch.zeros(len(part), max(lengths), dtype=torch.bool)
        for row, (length, each) in enumerate(zip(lengths, per_row, strict=True)):
            scores[row, :length] = torch.from_numpy(np.ascontiguousarray(each[1 : 1 + length], dtype=np.float32))
            mask[row, :length] = True
        marginals, pairs = crf.posterior(scores, mask, temperature)
        for row, ((index, _), length) in enumerate(zip(part, lengths, strict=True)):
            results[index] = (marginals[row, :length].numpy().astype(np.float16), pairs[row].numpy())
    return examples, results
