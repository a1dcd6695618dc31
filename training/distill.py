"""NER ensemble distillation: the teachers' soft targets (mean emissions, or the mixture of their CRF path
posteriors) and the emission loss; reloading the teachers of an earlier run.

The CRF's own soft loss (the cross-entropy from the teachers' path distribution) is
:meth:`training.ner_model.CRF.soft_neg_log_likelihood`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

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
