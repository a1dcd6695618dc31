"""The NER network (char + hashed n-gram embeddings → dilated gated CNN → emissions) and its CRF.

Only the emissions network is exported to ONNX; the CRF's transitions go to ``crf.npz``, decoded
by serving over the real tokens (positions ``1..n``, without [CLS]/[SEP]) — which is also the span
the CRF is trained on here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from training.layers import CharNgramEmbedding, ConvEncoder

FORBIDDEN = -10000.0  # transition score of a tag pair BIOES does not allow


@dataclass
class NerConfig:
    vocab_size: int
    num_tags: int
    char_dim: int = 128
    bigram_buckets: int = 150001
    bigram_dim: int = 64
    trigram_buckets: int = 100003
    trigram_dim: int = 32
    hidden: int = 128
    dilations: list[int] = field(default_factory=lambda: [1, 2, 4, 1])
    dropout: float = 0.2

    def to_dict(self) -> dict:
        return asdict(self)


class NerNet(nn.Module):
    """``(input_ids, attention_mask) → emissions`` [batch, seq, num_tags], zero-independent of pads."""

    def __init__(self, config: NerConfig) -> None:
        super().__init__()
        self.config = config
        embedding = CharNgramEmbedding(
            config.vocab_size,
            char_dim=config.char_dim,
            bigram_buckets=config.bigram_buckets,
            bigram_dim=config.bigram_dim,
            trigram_buckets=config.trigram_buckets,
            trigram_dim=config.trigram_dim,
            dropout=config.dropout,
        )
        self.encoder = ConvEncoder(embedding, hidden=config.hidden, dilations=config.dilations, dropout=config.dropout)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(config.hidden, config.num_tags)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.encoder(input_ids, attention_mask)))


def bioes_constraints(labels: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boolean masks of allowed ``(start [K], end [K], transitions [K, K] as [prev, next])``."""
    k = len(labels)
    parts = [(tag, "") if tag == "O" else tuple(tag.split("-", 1)) for tag in labels]
    start = np.array([p in ("O", "B", "S") for p, _ in parts])
    end = np.array([p in ("O", "E", "S") for p, _ in parts])
    trans = np.zeros((k, k), dtype=bool)
    for i, (prev, prev_type) in enumerate(parts):
        for j, (nxt, nxt_type) in enumerate(parts):
            if prev in ("B", "I"):
                trans[i, j] = nxt in ("I", "E") and nxt_type == prev_type
            else:  # O, E, S: an entity is closed
                trans[i, j] = nxt in ("O", "B", "S")
    return start, end, trans


class CRF(nn.Module):
    """Linear-chain CRF (pytorch-crf convention) with the BIOES-forbidden moves pinned at -10000."""

    def __init__(self, labels: Sequence[str]) -> None:
        super().__init__()
        k = len(labels)
        start, end, trans = bioes_constraints(labels)
        self.start_transitions = nn.Parameter(torch.zeros(k))
        self.end_transitions = nn.Parameter(torch.zeros(k))
        self.transitions = nn.Parameter(torch.zeros(k, k))
        self.register_buffer("start_penalty", torch.tensor(np.where(start, 0.0, FORBIDDEN), dtype=torch.float32))
        self.register_buffer("end_penalty", torch.tensor(np.where(end, 0.0, FORBIDDEN), dtype=torch.float32))
        self.register_buffer("trans_penalty", torch.tensor(np.where(trans, 0.0, FORBIDDEN), dtype=torch.float32))

    def effective(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        allowed_start = torch.where(self.start_penalty < 0, self.start_penalty, self.start_transitions)
        allowed_end = torch.where(self.end_penalty < 0, self.end_penalty, self.end_transitions)
        allowed_trans = torch.where(self.trans_penalty < 0, self.trans_penalty, self.transitions)
        return allowed_start, allowed_end, allowed_trans

    def neg_log_likelihood(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean NLL over the batch. ``emissions`` [B, T, K], ``tags`` [B, T], ``mask`` [B, T] bool, left-aligned."""
        start, end, trans = self.effective()
        batch, length, _ = emissions.shape
        maskf = mask.to(emissions.dtype)
        rows = torch.arange(batch)
        # Gold path score.
        score = start[tags[:, 0]] + emissions[rows, 0, tags[:, 0]]
        for t in range(1, length):
            step = trans[tags[:, t - 1], tags[:, t]] + emissions[rows, t, tags[:, t]]
            score = score + step * maskf[:, t]
        last = mask.sum(1).long() - 1
        score = score + end[tags[rows, last]]
        # Partition function.
        alpha = start.unsqueeze(0) + emissions[:, 0]
        for t in range(1, length):
            candidate = torch.logsumexp(alpha.unsqueeze(2) + trans.unsqueeze(0), dim=1) + emissions[:, t]
            alpha = torch.where(mask[:, t : t + 1], candidate, alpha)
        log_z = torch.logsumexp(alpha + end.unsqueeze(0), dim=1)
        return (log_z - score).mean()

    @torch.no_grad()
    def decode(self, emissions: torch.Tensor, mask: torch.Tensor) -> list[list[int]]:
        """Viterbi paths (lists of length ``mask.sum()``) for a batch."""
        start, end, trans = self.effective()
        batch, length, _ = emissions.shape
        score = start.unsqueeze(0) + emissions[:, 0]
        history = []
        for t in range(1, length):
            candidate = score.unsqueeze(2) + trans.unsqueeze(0)  # [B, prev, next]
            best, index = candidate.max(dim=1)
            history.append(index)
            score = torch.where(mask[:, t : t + 1], best + emissions[:, t], score)
        score = score + end.unsqueeze(0)
        lengths = mask.sum(1).tolist()
        paths = []
        for b in range(batch):
            n = int(lengths[b])
            best_tag = int(score[b].argmax())
            path = [best_tag]
            for t in range(n - 1, 0, -1):
                best_tag = int(history[t - 1][b, best_tag])
                path.append(best_tag)
            path.reverse()
            paths.append(path)
        return paths

    def export_arrays(self) -> dict[str, np.ndarray]:
        """``crf.npz`` contents: the effective (constraint-pinned) parameters as float32."""
        start, end, trans = self.effective()
        return {
            "start_transitions": start.detach().numpy().astype(np.float32),
            "end_transitions": end.detach().numpy().astype(np.float32),
            "transitions": trans.detach().numpy().astype(np.float32),
        }
